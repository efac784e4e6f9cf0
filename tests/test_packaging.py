"""Packaging invariants that are easy to break silently."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parents[1]


def test_every_package_folder_is_listed_in_pyproject():
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        "colecache." + ".".join(p.parent.relative_to(REPO / "service" / "colecache").parts)
        if p.parent != REPO / "service" / "colecache"
        else "colecache"
        for p in (REPO / "service" / "colecache").rglob("__init__.py")
    }
    found |= {"colecache.migrations", "colecache.migrations.versions"}
    assert found == listed


def test_client_package_imports_without_torch():
    # The SDK and the search spaces must work where torch is not installed.
    code = (
        "import sys, builtins\n"
        "real = builtins.__import__\n"
        "def guard(name, *a, **k):\n"
        "    if name.split('.')[0] in ('torch', 'transformers', 'numpy', 'colecache'):\n"
        "        raise ImportError('blocked ' + name)\n"
        "    return real(name, *a, **k)\n"
        "builtins.__import__ = guard\n"
        "import colecache_client, colecache_client.spaces\n"
        "from colecache_client.spaces import get_space\n"
        "print(get_space('nb201').parse([3, 3, 3, 1, 3, 3]).to_string())\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith("|nor_conv_3x3~0|")


def test_wheel_ships_the_templates_and_migrations(tmp_path):
    # Non-Python files reach an installed server only through package-data: build the wheel and look.
    import zipfile

    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(REPO)],
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = tmp_path.glob("colecache-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for template in ("base.html", "login.html", "not_found.html", "report.html", "studies.html"):
        assert f"colecache/report/templates/{template}" in names
    assert "colecache/migrations/script.py.mako" in names
    assert "colecache/migrations/versions/0005_prequential.py" in names
