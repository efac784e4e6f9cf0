"""`/metrics` is behind the API key by default (issue 11, item 11), and the scrape configuration the README
documents is one that works: Prometheus sends a key as a bearer token."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
import yaml
from colecache.api.app import create_app
from colecache.settings import Settings

pytestmark = pytest.mark.integration

README = Path(__file__).resolve().parents[1] / "README.md"
KEY, SCRAPER_KEY = "key-tenant-3c1f8a", "key-scraper-9d2e4b"


def documented_scrape_config() -> dict:
    """The README's Prometheus job (the yaml block holding `scrape_configs`)."""
    blocks = re.findall(r"```yaml\n(.*?)```", README.read_text(), flags=re.S)
    configs = [yaml.safe_load(block) for block in blocks if "scrape_configs" in block]
    assert len(configs) == 1, "the README documents one Prometheus scrape config"
    (job,) = configs[0]["scrape_configs"]
    return job


def test_metrics_needs_a_key_by_default():
    assert Settings(_env_file=None).metrics_auth is True


def test_metrics_is_refused_without_a_key_and_scraped_with_the_documented_config(server_factory, tmp_path):
    server = server_factory(COLECACHE_API_KEYS=f"{KEY},{SCRAPER_KEY}")
    job = documented_scrape_config()
    path, auth = job.get("metrics_path", "/metrics"), job["authorization"]
    assert auth["type"] == "Bearer" and "credentials_file" in auth
    credentials = tmp_path / "colecache-key"  # what the scraper's credentials_file holds
    credentials.write_text(SCRAPER_KEY + "\n")
    with httpx.Client(base_url=server.url, timeout=60) as client:
        anonymous = client.get(path)
        assert anonymous.status_code == 401 and "colecache_" not in anonymous.text
        assert anonymous.headers["www-authenticate"].startswith("Bearer")
        assert client.get(path, headers={"Authorization": "Bearer not-a-key"}).status_code == 401
        # Prometheus reads the file, trims it and sends `Authorization: <type> <credentials>`.
        scraped = client.get(path, headers={"Authorization": f"{auth['type']} {credentials.read_text().strip()}"})
        assert scraped.status_code == 200
        assert scraped.headers["content-type"].startswith("text/plain")
        assert "colecache_http_requests_total" in scraped.text
        assert client.get("/health").status_code == 200  # liveness stays open for the orchestrator


def test_metrics_can_be_opened_explicitly(server_factory):
    server = server_factory(COLECACHE_API_KEYS=KEY, COLECACHE_METRICS_AUTH="false")
    with server.client() as client:
        assert client.get("/metrics").status_code == 200
        assert client.get("/info").status_code == 401


@pytest.mark.parametrize("metrics_auth", [True, False])
def test_the_document_says_which_routes_need_a_key(metrics_auth):
    """With keys set, every operation but /health and /ready (and /metrics when opened) declares the bearer
    scheme and its 401; without keys, none does."""
    keyed = create_app(Settings(_env_file=None, api_keys=KEY, metrics_auth=metrics_auth)).openapi()
    assert keyed["components"]["securitySchemes"]["apiKey"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "One of COLECACHE_API_KEYS (or COLECACHE_API_KEYS_FILE).",
    }
    open_paths = {"/health", "/ready"} | (set() if metrics_auth else {"/metrics"})
    for path, operations in keyed["paths"].items():
        for operation in operations.values():
            guarded = "401" in operation["responses"] and operation.get("security") == [{"apiKey": []}]
            assert guarded == (path not in open_paths), (path, operation.get("security"))
    public = create_app(Settings(_env_file=None)).openapi()
    assert "securitySchemes" not in public.get("components", {})
    assert not any("401" in op["responses"] for ops in public["paths"].values() for op in ops.values())


def test_probes_need_no_key_and_ready_waits_for_the_schema(tmp_path):
    """Compose healthchecks and Kubernetes probes send no key: /ready answers them; and a replica that starts on
    a database not migrated to its schema stays out of rotation until `colecache migrate` has run."""

    from conftest import ServerProcess

    data = tmp_path / "fresh"
    server = ServerProcess(
        {
            "COLECACHE_API_KEYS": KEY,
            "COLECACHE_MIGRATE_ON_START": "false",
            "COLECACHE_DATA_DIR": str(data),
            "COLECACHE_LOG_LEVEL": "warning",
        },
        tmp_path / "server.log",
    )
    server.launch()
    try:
        _schema_gate(server, data)
    finally:
        server.stop()


def _schema_gate(server, data) -> None:
    import os
    import subprocess
    import sys
    import time

    import httpx

    deadline = time.monotonic() + 120
    while True:  # the model loads first ("model is loading"), then the schema is checked
        assert time.monotonic() < deadline, server.log_path.read_text()[-3000:]
        try:
            ready = httpx.get(server.url + "/ready", timeout=5)
        except httpx.HTTPError:
            time.sleep(0.3)
            continue
        if "loading" not in ready.text:
            break
        time.sleep(0.3)
    assert ready.status_code == 503 and "not migrated" in ready.json()["detail"] and "colecache migrate" in ready.text
    assert httpx.get(server.url + "/info", timeout=10).status_code == 401  # everything else still needs a key
    migrated = subprocess.run(
        [sys.executable, "-m", "colecache.cli", "migrate"],
        env={**os.environ, "COLECACHE_DATA_DIR": str(data)},
        capture_output=True,
        text=True,
    )
    assert migrated.returncode == 0, migrated.stderr
    ready = httpx.get(server.url + "/ready", timeout=10)
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    health = subprocess.run(
        [sys.executable, "-m", "colecache.cli", "healthcheck", "--ready", "--url", server.url], capture_output=True
    )
    assert health.returncode == 0
