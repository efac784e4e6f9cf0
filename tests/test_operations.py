"""Operations on real server processes: API keys on every route, study isolation, metrics, the OpenAI
route with the official client, graceful shutdown."""

from __future__ import annotations

import re
import signal
import threading
import time

import httpx
import pytest
from colecache.api.app import create_app
from colecache.settings import Settings
from colecache_client.spaces import get_space

pytestmark = pytest.mark.integration

SPACE = get_space("nb201")
KEY_A, KEY_B = "key-a-7f3c9d1e", "key-b-2b8e4a6f"
CELL = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"


def route_table(**settings) -> list[tuple[str, str]]:
    """(method, path) of every route the app serves, read from the app itself: its OpenAPI paths
    (every API route) plus the routes mounted on the app directly (docs, schema)."""
    app = create_app(Settings(**settings))
    out = {(method.upper(), path) for path, ops in app.openapi()["paths"].items() for method in ops}
    for route in app.routes:
        for method in getattr(route, "methods", None) or []:
            if method != "HEAD":
                out.add((method, route.path))
    return sorted(out)


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "0123456789abcdef0123456789abcdef", path)


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory):
    from conftest import ServerProcess

    folder = tmp_path_factory.mktemp("keyed")
    keys_file = folder / "keys.txt"
    keys_file.write_text(f"# two tenants\n{KEY_B}\n")
    server = ServerProcess(
        {
            "COLECACHE_DATA_DIR": str(folder / "data"),
            "COLECACHE_API_KEYS": KEY_A,
            "COLECACHE_API_KEYS_FILE": str(keys_file),
            "COLECACHE_LOG_LEVEL": "info",
        },
        folder / "server.log",
    )
    yield server.start()
    server.stop()


def test_every_route_but_the_probes_needs_a_key(keyed_server):
    routes = route_table(api_keys=KEY_A)
    assert len(routes) >= 12 and ("POST", "/embed") in routes and ("GET", "/docs") in routes
    with httpx.Client(base_url=keyed_server.url, timeout=60) as client:
        for method, path in routes:
            url = concrete(path)
            if path in ("/health", "/ready"):  # what orchestrators probe, without a key
                assert client.request(method, url).status_code == 200, path
                continue
            anonymous = client.request(method, url)
            assert anonymous.status_code == 401, (method, path)
            assert anonymous.headers["www-authenticate"].startswith("Bearer")
            wrong = client.request(method, url, headers={"Authorization": "Bearer not-a-key"})
            assert wrong.status_code == 401, (method, path)
            good = client.request(method, url, headers={"Authorization": f"Bearer {KEY_B}"})
            assert good.status_code != 401, (method, path)


def test_metrics_can_require_a_key(server_factory):
    server = server_factory(COLECACHE_API_KEYS=KEY_A, COLECACHE_METRICS_AUTH="true")
    with server.client() as client:
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers={"Authorization": f"Bearer {KEY_A}"}).status_code == 200
        assert client.get("/health").status_code == 200


def test_studies_are_private_to_the_key_that_made_them(keyed_server):
    a = httpx.Client(base_url=keyed_server.url, timeout=120, headers={"Authorization": f"Bearer {KEY_A}"})
    b = httpx.Client(base_url=keyed_server.url, timeout=120, headers={"Authorization": f"Bearer {KEY_B}"})
    study = a.post("/studies", json={"name": "tenant-a"}).json()["id"]
    rng = __import__("random").Random(0)
    observations = [{"spec": SPACE.sample(rng).to_string(), "value": float(i)} for i in range(5)]
    assert a.post(f"/studies/{study}/observations", json={"observations": observations}).status_code == 200
    assert b.get(f"/studies/{study}").status_code == 404
    assert b.get(f"/studies/{study}/observations").status_code == 404
    assert b.post(f"/studies/{study}/observations", json={"observations": observations}).status_code == 404
    assert b.post(f"/studies/{study}/predict", json={"specs": [CELL]}).status_code == 404
    assert b.delete(f"/studies/{study}").status_code == 404
    assert study not in [s["id"] for s in b.get("/studies").json()["studies"]]
    assert study in [s["id"] for s in a.get("/studies").json()["studies"]]
    assert a.get(f"/studies/{study}").json()["n_observations"] == 5
    a.close()
    b.close()


def test_keys_never_reach_the_logs(keyed_server):
    with httpx.Client(base_url=keyed_server.url, timeout=60) as client:
        client.get("/info", headers={"Authorization": f"Bearer {KEY_A}"})
        client.get("/info", headers={"Authorization": "Bearer a-wrong-key-xyz"})
    time.sleep(0.5)
    log = keyed_server.log_path.read_text()
    assert '"logger": "colecache.access"' in log  # the access log is on...
    assert KEY_A not in log and KEY_B not in log and "a-wrong-key-xyz" not in log  # ...and carries no keys


def test_metrics_count_requests_cache_tiers_batches_and_fits(default_server):
    def scrape() -> dict[str, float]:
        text = httpx.get(default_server.url + "/metrics").text
        values = {}
        for line in text.splitlines():
            if line.startswith("colecache_"):
                name, _, value = line.rpartition(" ")
                values[name] = float(value)
        return values

    before = scrape()
    cells = [c.to_string() for c in list(SPACE.all_cells())[11::3001][:4]]
    with default_server.client() as client:
        client.post("/embed", json={"specs": cells})
        client.post("/embed", json={"specs": cells})
        study = client.post("/studies", json={"name": "metrics", "surrogate": {"head": {"epochs": 20}}}).json()["id"]
        client.post(
            f"/studies/{study}/observations",
            json={"observations": [{"spec": c, "value": 1.0 + i} for i, c in enumerate(cells)]},
        )
        client.post(f"/studies/{study}/predict", json={"specs": cells[:2]})
    after = scrape()

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    assert delta('colecache_http_requests_total{method="POST",route="/embed",status="200"}') == 2
    assert delta('colecache_http_request_seconds_count{method="POST",route="/studies/{study_id}/predict"}') == 1
    assert delta('colecache_cache_lookups_total{result="hit",tier="memory"}') >= 4
    assert delta('colecache_cache_lookups_total{result="miss",tier="all"}') >= 4
    assert delta("colecache_batch_size_count") >= 1 and delta("colecache_batch_tokens_sum") > 0
    assert delta("colecache_model_forward_seconds_count") >= 1
    assert delta("colecache_surrogate_fit_seconds_count") == 1
    assert "colecache_queue_depth" in after


def test_request_ids_and_timing_headers(default_server):
    with default_server.client() as client:
        echoed = client.get("/health", headers={"X-Request-ID": "trace-123"})
        fresh = client.get("/health")
    assert echoed.headers["x-request-id"] == "trace-123"
    assert re.fullmatch(r"[0-9a-f]{32}", fresh.headers["x-request-id"])
    assert re.fullmatch(r"app;dur=\d+\.\d+", fresh.headers["server-timing"])


def test_official_openai_client_round_trip(default_server):
    import numpy as np
    import openai

    client = openai.OpenAI(base_url=default_server.url + "/v1", api_key="unused", max_retries=0)
    texts = ["class Net(nn.Module):\n    pass\n", "def forward(self, x):\n    return x\n"]
    created = client.embeddings.create(model="sentence-transformers/all-MiniLM-L6-v2", input=texts)  # base64 wire
    assert [d.index for d in created.data] == [0, 1] and len(created.data[0].embedding) == 384
    assert created.usage.prompt_tokens == created.usage.total_tokens > 0
    with default_server.client() as raw:
        native = raw.post("/embed", json={"specs": [{"code": t} for t in texts]}).json()
    assert native["counts"] == {"memory": 2}  # the OpenAI route filled the same cache
    assert (
        np.array(created.data[0].embedding, dtype=np.float32).tobytes()
        == np.array(native["items"][0]["embedding"], dtype=np.float32).tobytes()
    )
    short = client.embeddings.create(model="all-MiniLM-L6-v2", input=texts[0], dimensions=16, encoding_format="float")
    assert len(short.data[0].embedding) == 16
    assert abs(float(np.linalg.norm(short.data[0].embedding)) - 1.0) < 1e-5
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="text-embedding-3-small", input="x")
    with pytest.raises(openai.UnprocessableEntityError):
        client.embeddings.create(model="all-MiniLM-L6-v2", input=[""])
    assert client.models.list().data[0].id == "sentence-transformers/all-MiniLM-L6-v2"


def test_shutdown_drains_requests_in_flight(server_factory):
    server = server_factory(COLECACHE_LOG_LEVEL="info")
    cells = [c.to_string() for c in list(SPACE.all_cells())[5::211][:48]]  # cold: several seconds of model time
    outcome = {}

    def send():
        with server.client() as client:
            outcome["response"] = client.post("/embed", json={"specs": cells})

    thread = threading.Thread(target=send)
    thread.start()
    time.sleep(1.0)  # the request is inside the batch queue now
    server.proc.send_signal(signal.SIGTERM)
    thread.join(120)
    assert outcome["response"].status_code == 200
    assert outcome["response"].json()["counts"] == {"computed": 48}
    server.proc.wait(60)  # uvicorn re-raises SIGTERM after its graceful shutdown, so the code is -15
    log = server.log_path.read_text()
    assert "Application shutdown complete" in log and "Traceback" not in log
