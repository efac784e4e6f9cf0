"""Deployment files: the compose file validates, the Dockerfile has the shape we promise, and the
README's settings table lists every setting (no drift)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from colecache.settings import Settings

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed (.ci/run installs it)")
def test_compose_file_validates_for_both_profiles(tmp_path):
    env = tmp_path / ".env"
    env.write_text((REPO / ".env.example").read_text())
    base = [
        "docker-compose",
        "--project-directory",
        str(REPO),
        "--env-file",
        str(env),
        "-f",
        str(REPO / "docker-compose.yml"),
    ]
    assert subprocess.run([*base, "config", "-q"], capture_output=True, text=True).returncode == 0
    services = subprocess.run([*base, "config", "--services"], capture_output=True, text=True).stdout.split()
    assert {"api", "api-cpu", "migrate", "redis", "postgres", "gateway"} <= set(services)
    rendered = subprocess.run([*base, "config"], capture_output=True, text=True).stdout
    assert "driver: nvidia" in rendered and "allkeys-lru" in rendered and "service_completed_successfully" in rendered
    # GPU: one api container with every GPU and a replica per device (compose cannot give replicas different GPUs).
    api = yaml.safe_load(rendered)["services"]["api"]
    (gpus,) = api["deploy"]["resources"]["reservations"]["devices"]
    assert gpus["count"] == "all" and api["environment"]["COLECACHE_DEVICE"] == "cuda:all"
    assert api["environment"]["COLECACHE_DATABASE_URL"].startswith("postgresql://")  # the shared settings stay
    # Secrets must come from .env, never defaults in the file.
    env.write_text("COMPOSE_PROFILES=cpu\n")
    missing = subprocess.run([*base, "config", "-q"], capture_output=True, text=True)
    assert missing.returncode != 0 and "POSTGRES_PASSWORD" in missing.stderr


def test_dockerfile_shape():
    text = (REPO / "Dockerfile").read_text()
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, flags=re.MULTILINE)
    names = {name for _, name in stages}
    assert {"base-cpu", "base-cuda", "build", "runtime"} <= names  # multi-stage, one base per variant
    assert re.search(r"^ARG VARIANT=cpu$", text, flags=re.MULTILINE)
    assert "FROM base-${VARIANT} AS runtime" in text and "nvidia/cuda" in text
    runtime = text.split("AS runtime", 1)[1]
    user = re.findall(r"^USER\s+(\S+)", runtime, flags=re.MULTILINE)
    assert user and user[-1] not in ("root", "0")
    assert "HEALTHCHECK" in runtime and "BAKE_MODEL" in text
    for line in re.findall(r"^(?:ARG|ENV)\s+.*$", text, flags=re.MULTILINE):  # no secrets in layers
        assert not re.search(r"(KEY|SECRET|PASSWORD|TOKEN)\w*=", line, flags=re.IGNORECASE), line
    ignored = (REPO / ".dockerignore").read_text().split()
    assert ".env" in ignored and ".git" in ignored and ".venv" in ignored


def test_readme_lists_every_setting():
    readme = (REPO / "README.md").read_text()
    documented = set(re.findall(r"`(COLECACHE_[A-Z0-9_]+)`", readme))
    declared = {f"COLECACHE_{name.upper()}" for name in Settings.model_fields}
    assert declared <= documented, f"undocumented settings: {sorted(declared - documented)}"
