"""Issue 11 item 9: where data is looked for never depends on the current directory.

The server's default cache and the NAS-Bench-201 lookup use fixed, documented places (overridable
by environment), so a command run from another folder finds the same cache and the same table; and
the example says loudly when it has no table and scores architectures with a made-up objective.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from colecache.settings import Settings
from colecache_client import benchmarks
from colecache_client.benchmarks import CSV_NAME, find_nb201_dir, nb201_locations, read_naslib_pool, read_nb201
from conftest import ServerProcess

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "client" / "examples" / "bananas_nb201.py"
CHECKOUT_NB201 = REPO.parent / "shared" / "data" / "nb201"
CELL = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"


def _env_without(*names: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in names}
    env.update(extra)
    return env


# --- the server's data dir ------------------------------------------------------------------------
def test_default_data_dir_is_one_fixed_place_whatever_the_cwd(tmp_path, monkeypatch):
    monkeypatch.delenv("COLECACHE_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    seen = set()
    for folder in ("a", "b/c"):
        (tmp_path / folder).mkdir(parents=True)
        monkeypatch.chdir(tmp_path / folder)
        settings = Settings(_env_file=None)
        seen.add((settings.data_dir, settings.resolved_database_url))
    assert seen == {(tmp_path / "xdg" / "colecache", f"sqlite:///{tmp_path / 'xdg' / 'colecache' / 'colecache.db'}")}

    # Without XDG_DATA_HOME (or with a relative one, which the XDG spec says to ignore): ~/.local/share.
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for xdg in (None, "relative/xdg"):
        if xdg is None:
            monkeypatch.delenv("XDG_DATA_HOME")
        else:
            monkeypatch.setenv("XDG_DATA_HOME", xdg)
        assert Settings(_env_file=None).data_dir == tmp_path / "home" / ".local" / "share" / "colecache"

    # COLECACHE_DATA_DIR overrides it; a relative value is pinned to an absolute folder once, at start.
    monkeypatch.setenv("COLECACHE_DATA_DIR", str(tmp_path / "custom"))
    assert Settings(_env_file=None).data_dir == tmp_path / "custom"
    monkeypatch.chdir(tmp_path / "a")
    monkeypatch.setenv("COLECACHE_DATA_DIR", "rel")
    assert Settings(_env_file=None).data_dir == tmp_path / "a" / "rel"


@pytest.mark.integration
def test_cli_and_server_started_from_other_folders_share_one_cache(tmp_path, tiny_bert_dir, monkeypatch):
    """The reported failure: run from another folder, the default cache was a new, empty one."""
    xdg = tmp_path / "xdg"
    env = _env_without(
        "COLECACHE_DATA_DIR",
        XDG_DATA_HOME=str(xdg),
        COLECACHE_MODEL=str(tiny_bert_dir),
        COLECACHE_DEVICE="cpu",
        COLECACHE_LOG_LEVEL="warning",
    )
    sources = []
    for folder in ("one", "two/deeper"):
        cwd = tmp_path / folder
        cwd.mkdir(parents=True)
        run = subprocess.run(
            [sys.executable, "-m", "colecache.cli", "embed", CELL], capture_output=True, text=True, env=env, cwd=cwd
        )
        assert run.returncode == 0, run.stderr
        sources.append(json.loads(run.stdout.splitlines()[0])["source"])
    assert sources == ["computed", "sql"]
    assert (xdg / "colecache" / "colecache.db").is_file()
    assert not any(p.name == ".colecache" for p in tmp_path.rglob(".colecache"))

    # A server started from a third folder serves the same vector from that cache.
    third = tmp_path / "three"
    third.mkdir()
    monkeypatch.delenv("COLECACHE_DATA_DIR", raising=False)
    monkeypatch.chdir(third)  # the server process inherits this working directory
    settings = {k: env[k] for k in ("XDG_DATA_HOME", "COLECACHE_MODEL", "COLECACHE_DEVICE")}
    server = ServerProcess({**settings, "COLECACHE_LOG_LEVEL": "info"}, tmp_path / "server.log")
    try:
        server.start()
        monkeypatch.chdir(tmp_path)
        answer = httpx.post(server.url + "/embed", json={"specs": [CELL]}, timeout=60)
        assert answer.status_code == 200, answer.text
        assert answer.json()["items"][0]["source"] == "sql"
    finally:
        server.stop()
    log = server.log_path.read_text()
    assert str(xdg / "colecache" / "colecache.db") in log, log[-2000:]  # `serve` names the store it uses


# --- the NAS-Bench-201 table -------------------------------------------------------------------------
def _table(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CSV_NAME).write_text("ArchitectureString,UniqueString\n")
    return folder


def test_nb201_lookup_does_not_depend_on_the_cwd(tmp_path, monkeypatch):
    monkeypatch.delenv("COLECACHE_NB201_DATA", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    places = []
    for folder in ("x", "y/z"):
        (tmp_path / folder).mkdir(parents=True)
        monkeypatch.chdir(tmp_path / folder)
        places.append(nb201_locations())
    assert places[0] == places[1]
    # From a source checkout: beside the checkout first, then the user data folder.
    assert [folder for _, folder in places[0]] == [CHECKOUT_NB201, tmp_path / "xdg" / "colecache" / "nb201"]

    # An installed SDK (no checkout) finds a table in the user data folder, from any directory.
    monkeypatch.setattr(benchmarks, "source_checkout", lambda: None)
    home_table = _table(tmp_path / "xdg" / "colecache" / "nb201")
    assert find_nb201_dir() == home_table


@pytest.mark.skipif(not (CHECKOUT_NB201 / CSV_NAME).is_file(), reason=f"no {CSV_NAME} beside this checkout")
def test_nb201_beside_the_checkout_is_found_from_any_folder(tmp_path, monkeypatch):
    """The reported failure: from another folder the table was not found and the example went synthetic."""
    monkeypatch.delenv("COLECACHE_NB201_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    assert find_nb201_dir() == CHECKOUT_NB201


def test_explicit_nb201_location_is_authoritative_and_misses_name_every_place(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    _table(tmp_path / "xdg" / "colecache" / "nb201")  # a fallback that must not be used silently
    given, empty = _table(tmp_path / "given"), tmp_path / "empty"
    empty.mkdir()

    monkeypatch.setenv("COLECACHE_NB201_DATA", str(empty))
    assert find_nb201_dir(given) == given  # the argument first
    assert find_nb201_dir() is None  # a wrong setting is not replaced by another copy
    with pytest.raises(FileNotFoundError) as info:
        read_nb201()
    assert str(empty) in str(info.value) and "$COLECACHE_NB201_DATA" in str(info.value)
    with pytest.raises(FileNotFoundError) as info:
        read_naslib_pool("nb101", tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(info.value) and "argument" in str(info.value)

    # Nothing configured and nothing found: the message lists every fixed place it looked.
    monkeypatch.delenv("COLECACHE_NB201_DATA")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "other-xdg"))
    monkeypatch.setattr(benchmarks, "source_checkout", lambda: tmp_path / "checkout")
    with pytest.raises(FileNotFoundError) as info:
        read_nb201()
    message = str(info.value)
    assert str(tmp_path / "shared" / "data" / "nb201") in message
    assert str(tmp_path / "other-xdg" / "colecache" / "nb201") in message and "COLECACHE_NB201_DATA" in message


# --- the example -----------------------------------------------------------------------------------
def _example(url: str, *args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, EXAMPLE, "--url", url, "--budget", "2", "--batch-size", "2", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=600,
    )


@pytest.mark.integration
def test_example_says_loudly_when_it_falls_back_to_a_synthetic_objective(default_server, tmp_path):
    empty = tmp_path / "no-table"
    empty.mkdir()
    env = _env_without("COLECACHE_NB201_DATA", COLECACHE_NB201_DATA=str(empty))
    run = _example(default_server.url, env=env, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "WARNING: SYNTHETIC OBJECTIVE" in run.stderr and str(empty) in run.stderr
    result = run.stdout.split("best after", 1)[1]
    assert "SYNTHETIC OBJECTIVE" in result and "objective: synthetic" in result

    # A table asked for with --data that is not there is an error naming the folder, not a stand-in.
    refused = _example(default_server.url, "--data", str(tmp_path / "typo"), env=env, cwd=tmp_path)
    assert refused.returncode == 2 and str(tmp_path / "typo") in refused.stderr
    assert "best after" not in refused.stdout

    if (CHECKOUT_NB201 / CSV_NAME).is_file():  # the real table, found from another folder: no warning
        real = _example(default_server.url, env=_env_without("COLECACHE_NB201_DATA"), cwd=tmp_path)
        assert real.returncode == 0, real.stderr
        assert "SYNTHETIC" not in real.stderr + real.stdout and "objective: NAS-Bench-201" in real.stdout
