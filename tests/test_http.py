"""HTTP against real uvicorn processes on the embedded default: SQLite, in-process cache, bundled MiniLM."""

from __future__ import annotations

import base64
import json
import time

import httpx
import numpy as np
import pytest
from colecache_client.spaces import get_space

pytestmark = pytest.mark.integration

SPACE = get_space("nb201")
CELLS = [c.to_string() for c in list(SPACE.all_cells())[7::997][:8]]


def _post(server, body, **kwargs) -> httpx.Response:
    with server.client() as client:
        return client.post("/embed", json=body, **kwargs)


def test_health_ready_info_and_docs(default_server):
    with default_server.client() as client:
        assert client.get("/health").json() == {"status": "ok"}
        ready = client.get("/ready").json()
        assert ready["status"] == "ready" and ready["stores"] == {"memory": True, "sql": True}
        info = client.get("/info").json()
        assert info["model"]["model"] == "sentence-transformers/all-MiniLM-L6-v2" and info["model"]["dim"] == 384
        assert info["model"]["revision"].startswith("sha256:")
        assert client.get("/docs").status_code == 200
        assert "/embed" in client.get("/openapi.json").json()["paths"]


def test_repeat_is_served_from_cache_bit_identical(default_server):
    first = _post(default_server, {"specs": CELLS[:4]}).json()
    assert first["dim"] == 384 and first["counts"] == {"computed": 4}
    assert [item["arch"] for item in first["items"]] == CELLS[:4]
    assert all(item["n_tokens"] > 50 and not item["truncated"] for item in first["items"])
    second = _post(default_server, {"specs": CELLS[:4], "encoding": "base64"}).json()
    assert second["counts"] == {"memory": 4}
    for a, b in zip(first["items"], second["items"]):
        assert a["key"] == b["key"]
        raw = np.frombuffer(base64.b64decode(b["embedding"]), dtype="<f4")
        assert raw.tobytes() == np.asarray(a["embedding"], dtype=np.float32).tobytes()
    assert first["fingerprint"] == second["fingerprint"]


def test_sql_tier_serves_after_restart(server_factory):
    server = server_factory()
    first = _post(server, {"specs": CELLS[4:7], "encoding": "base64"}).json()
    assert first["counts"] == {"computed": 3}
    server.stop()
    restarted = server_factory()  # same data dir, fresh process and in-process hot tier
    again = _post(restarted, {"specs": CELLS[4:7], "encoding": "base64"}).json()
    assert again["counts"] == {"sql": 3}
    assert [i["embedding"] for i in again["items"]] == [i["embedding"] for i in first["items"]]
    assert _post(restarted, {"specs": CELLS[4:7]}).json()["counts"] == {"memory": 3}


def test_render_and_embedder_options_shape_the_key(default_server):
    base = _post(default_server, {"specs": CELLS[:1]}).json()["items"][0]
    for body in (
        {"render": {"context": "comment", "dataset": "cifar100"}},
        {"render": {"primitives": "inline"}},
        {"embedder": {"pooling": "cls"}},
        {"embedder": {"layer": 3}},
        {"embedder": {"max_length": 64}},
        {"embedder": {"normalize": True}},
    ):
        item = _post(default_server, {"specs": CELLS[:1], **body}).json()["items"][0]
        assert item["key"] != base["key"], body
    truncated = _post(default_server, {"specs": CELLS[:1], "embedder": {"max_length": 64}}).json()["items"][0]
    assert truncated["truncated"] and truncated["n_tokens"] == 64
    same = _post(default_server, {"specs": CELLS[:1], "embedder": {"layer": -1, "max_length": 512}}).json()
    assert same["items"][0]["key"] == base["key"] and same["counts"] == {"memory": 1}


def test_code_specs_and_mixed_forms(default_server):
    body = {
        "specs": [
            {"code": "class Net(nn.Module):\n    pass\n"},
            list(SPACE.parse(CELLS[0]).indices),
            {"arch": CELLS[0], "space": "nb201"},
        ]
    }
    items = _post(default_server, body).json()["items"]
    assert items[0]["renderer_version"] == "raw-code/1" and items[0]["arch"] is None
    assert items[1]["key"] == items[2]["key"]


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"specs": [CELLS[0], "|bogus~0|+|none~0|none~1|+|none~0|none~1|none~2|"]}, 422, "item 1: unknown op 'bogus'"),
        ({"specs": [CELLS[0], [1, 2, 3]]}, 422, "item 1: expected 6 ops"),
        ({"specs": [{"code": ""}]}, 422, "item 0: 'code' must be a non-empty string"),
        (
            {"specs": [{"arch": CELLS[0], "space": "nope"}]},
            422,
            "unknown search space 'nope' (known: darts, einspace, graph, nb101, nb201",
        ),
        ({"specs": [42]}, 422, "body.specs[0]: a spec is a string, a list or an object"),
        ({"specs": []}, 422, "specs"),
        ({"specs": CELLS[:1], "embedder": {"layer": 99}}, 422, "layer 99 is out of range"),
        ({"specs": CELLS[:1], "embedder": {"max_length": 4096}}, 422, "exceeds the model's limit of 512"),
        ({"specs": CELLS[:1], "embedder": {"model": "codellama/CodeLlama-7b-hf"}}, 422, "this server embeds with"),
        ({"specs": CELLS[:1], "embedder": {"pooling": "max"}}, 422, "pooling"),
        ({"specs": CELLS[:1], "render": {"primitives": "fancy"}}, 422, "primitives"),
        ({"specs": CELLS[:1], "unexpected": 1}, 422, "unexpected"),
    ],
)
def test_bad_input_is_a_clear_4xx(default_server, body, status, needle):
    response = _post(default_server, body)
    assert response.status_code == status
    assert needle in response.text


def test_invalid_item_errors_list_every_bad_index(default_server):
    response = _post(default_server, {"specs": ["x", CELLS[0], [9] * 6, {"code": "ok"}]})
    assert response.status_code == 422
    assert [e["index"] for e in response.json()["errors"]] == [0, 2]


def test_reject_truncated_is_422_and_keeps_the_cache(default_server):
    _post(default_server, {"specs": CELLS[:2]})
    response = _post(default_server, {"specs": CELLS[:2], "embedder": {"max_length": 40, "reject_truncated": True}})
    assert response.status_code == 422 and [e["index"] for e in response.json()["errors"]] == [0, 1]
    assert _post(default_server, {"specs": CELLS[:2]}).json()["counts"] == {"memory": 2}


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"[]",
        b'{"specs": "abc"}',
        b'{"specs": [null]}',
        b'{"specs": [{"code": 5}]}',
        b'{"specs": [[1, 2, 3, 4, 5, 999999999999999999999]]}',
        b'{"specs": [{"arch": {"x": 1}}]}',
        b"\xff\xfe",
        b'{"specs": [["none", "none", "none", "none", "none", []]]}',
        b'{"specs": [{}]}',
    ],
)
def test_garbage_never_yields_a_500(default_server, raw):
    with default_server.client() as client:
        response = client.post("/embed", content=raw, headers={"content-type": "application/json"})
    assert 400 <= response.status_code < 500, response.text


def test_request_limits_are_413(server_factory):
    server = server_factory(COLECACHE_MAX_ITEMS_PER_REQUEST="3", COLECACHE_MAX_BODY_BYTES="4096")
    too_many = _post(server, {"specs": CELLS[:4]})
    assert too_many.status_code == 413 and "4 specs in one request exceed the limit of 3" in too_many.text
    big = {"specs": [{"code": "x" * 5000}]}
    assert _post(server, big).status_code == 413
    # A chunked body (no Content-Length) is counted as it arrives.
    payload = json.dumps(big).encode()
    with server.client() as client:
        chunked = client.post(
            "/embed", content=iter([payload[:2000], payload[2000:]]), headers={"content-type": "application/json"}
        )
    assert chunked.status_code == 413 and "exceeds the limit of 4096 bytes" in chunked.text
    assert _post(server, {"specs": CELLS[:3]}).status_code == 200


def test_full_queue_is_429_with_retry_after(server_factory):
    server = server_factory(COLECACHE_MAX_QUEUE_ITEMS="4")
    response = _post(server, {"specs": [c.to_string() for c in list(SPACE.all_cells())[9::1601][:6]]})
    assert response.status_code == 429
    assert int(response.headers["retry-after"]) >= 1 and "queue is full" in response.json()["detail"]
    assert _post(server, {"specs": CELLS[:3]}).status_code == 200  # smaller requests still get through


def test_model_that_fails_to_load_keeps_health_up_and_explains_ready(tmp_path):
    from conftest import ServerProcess

    broken = tmp_path / "not-a-model"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    server = ServerProcess(
        {"COLECACHE_DATA_DIR": str(tmp_path / "data"), "COLECACHE_MODEL": str(broken), "HF_HUB_OFFLINE": "1"},
        tmp_path / "server.log",
    )
    server.launch()
    try:
        deadline = time.monotonic() + 60
        while True:
            assert time.monotonic() < deadline, "the server never reported the load failure"
            try:
                health = httpx.get(server.url + "/health", timeout=2)
                ready = httpx.get(server.url + "/ready", timeout=2)
            except httpx.HTTPError:
                time.sleep(0.3)
                continue
            if ready.status_code == 503 and "loading" not in ready.text:
                break
            time.sleep(0.3)
        assert health.status_code == 200  # the process is alive...
        assert ready.headers["retry-after"] and "not ready" in ready.json()["detail"]  # ...and says why it is not ready
        assert _post(server, {"specs": CELLS[:1]}).status_code == 503
    finally:
        server.stop()
