"""Shutdown past the grace period (issue 11, item 11): a request the server cannot finish answers 503 with
Retry-After (never a 500 or a reset), and the vectors computed before it gave up stay stored."""

from __future__ import annotations

import asyncio
import signal
import threading
import time

import httpx
import numpy as np
import pytest
from colecache.api.app import CancelledRequestMiddleware
from colecache.api.state import Services, drain_deadline_s, load_model, open_stores, shutdown
from colecache.cache.durable import SqlTier
from colecache.cache.keys import cache_key
from colecache.db.engine import make_engine
from colecache.embedding.backend import BatchItem, Tokens
from colecache.embedding.options import EmbedOptions
from colecache.embedding.queue import BatchQueue, QueueClosed
from colecache.render import RAW_CODE_VERSION, RenderOptions
from colecache.settings import Settings
from colecache.specs import CodeSpec


def _code(i: int, lines: int = 12) -> str:
    """Distinct code texts of about the same length (so every forward holds the same number of them)."""
    body = "".join(f"        x = self.layer{j}_{i}(x)\n" for j in range(lines))
    return f"class Net{i}(nn.Module):\n    def forward(self, x):\n{body}        return x\n"


# --- the queue gives up what it has not computed, at once --------------------------------------------------------
def _item(tag: int) -> BatchItem:
    return BatchItem(Tokens([tag, 0, 0, 0], False), "mean", 0, False)


async def test_abandon_fails_queued_and_running_items_and_leaves_finished_ones():
    started, release = threading.Event(), threading.Event()
    forwards = []

    def model(items):
        forwards.append([i.tokens.ids[0] for i in items])
        if len(forwards) == 2:  # the second forward hangs until released
            started.set()
            release.wait(10)
        return np.array([[i.tokens.ids[0]] for i in items], dtype=np.float32)

    queue = BatchQueue(model, max_batch_tokens=1000, max_batch_size=2, batch_wait_ms=0, max_queue_items=100)
    queue.start()
    futures = queue.enqueue([_item(tag) for tag in range(6)])
    while not started.is_set():
        await asyncio.sleep(0.01)
    assert queue.abandon("shutting down") == 4  # 2 running in the hung forward + 2 queued
    finished = [f for f in futures if f.done() and f.exception() is None]
    assert sorted(int(f.result()[0]) for f in finished) == sorted(forwards[0])
    failed = [f for f in futures if f not in finished]
    assert len(failed) == 4 and all(isinstance(f.exception(), QueueClosed) for f in failed)
    with pytest.raises(QueueClosed):
        queue.enqueue([_item(99)])
    release.set()
    await queue.close()
    assert len(forwards) == 2  # nothing more was computed after giving up


@pytest.mark.parametrize("grace_s", [0, 2, 30, 600])
def test_the_queue_is_given_up_before_the_server_cancels(grace_s):
    deadline = drain_deadline_s(grace_s)
    assert 0 <= deadline <= grace_s
    assert grace_s == 0 or grace_s - deadline >= 0.5  # time left to write the 503s


# --- the pipeline stores each forward as it finishes ---------------------------------------------------------------
async def test_vectors_are_stored_forward_by_forward_and_kept_when_the_request_is_given_up(
    tmp_path, tiny_bert, monkeypatch
):
    """Grace 0 s: the stop signal gives the queue up at once. The forwards finished by then are in SQL; the
    request fails with QueueClosed (the API's 503 + Retry-After); the forward cut short is not stored."""
    settings = Settings(
        model="unused",
        data_dir=tmp_path,
        device="cpu",
        batch_wait_ms=0,
        max_batch_size=4,
        timeout_graceful_shutdown_s=0,
    )
    hold, held = threading.Event(), threading.Event()
    forwards = []
    embed = tiny_bert.embed

    def gated(items):
        forwards.append(len(items))
        if len(forwards) == 3:
            held.set()
            hold.wait(30)
        return embed(items)

    monkeypatch.setattr(tiny_bert, "embed", gated)
    services = Services(settings=settings, cache=await open_stores(settings))
    await load_model(services, tiny_bert)
    forwards.clear()  # the model's warm-up is not a forward of this request
    pipeline = services.pipeline
    specs = [CodeSpec(_code(i)) for i in range(20)]
    fingerprint = pipeline.readout(EmbedOptions()).fingerprint
    keys = [k.key for k in pipeline.keyed(specs, RenderOptions(), fingerprint)]
    request = asyncio.create_task(pipeline.embed(specs, RenderOptions(), EmbedOptions()))
    while not held.is_set():
        await asyncio.sleep(0.01)
    durable = services.cache.durable
    while len(durable.existing(keys)) < 8:  # forwards 1 and 2 (4 items each) are committed while 3 runs
        await asyncio.sleep(0.01)
    services.begin_shutdown()
    with pytest.raises(QueueClosed):
        await request
    hold.set()
    stored = durable.existing(keys)
    assert len(stored) == 8 and forwards[:2] == [4, 4]
    # What is stored is what the model computes for those items.
    again = await pipeline.embed([specs[keys.index(k)] for k in stored], RenderOptions(), EmbedOptions())
    assert {item.source for item in again.items} == {"memory"}
    await shutdown(services)


# --- the last resort: a request cancelled by the server ------------------------------------------------------------
async def test_a_request_the_server_cancels_answers_503_with_retry_after():
    entered = asyncio.Event()

    async def slow_app(scope, receive, send):
        entered.set()
        await asyncio.sleep(3600)

    sent = []

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    scope = {"type": "http", "method": "POST", "path": "/studies/x/predict", "headers": []}
    task = asyncio.create_task(CancelledRequestMiddleware(slow_app)(scope, receive, send))
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    start = sent[0]
    headers = {k.decode(): v.decode() for k, v in start["headers"]}
    assert start["status"] == 503 and int(headers["retry-after"]) > 0 and headers["connection"] == "close"
    assert b"shutting down" in sent[1]["body"]


# --- on a real server -----------------------------------------------------------------------------------------------
def _scrape(url: str) -> dict[str, float]:
    values = {}
    for line in httpx.get(url + "/metrics", timeout=30).text.splitlines():
        if line.startswith("colecache_batch_size_"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


@pytest.mark.integration
@pytest.mark.slow
def test_sigterm_during_a_long_cold_embed_answers_503_and_keeps_the_computed_vectors(server_factory):
    env = {"COLECACHE_TIMEOUT_GRACEFUL_SHUTDOWN_S": "2", "COLECACHE_MAX_BATCH_SIZE": "8", "COLECACHE_LOG_LEVEL": "info"}
    server = server_factory(**env)
    # Size the request to this machine: about 10 s of model time, far past the 2 s grace period.
    warmup = [{"code": _code(100_000 + i)} for i in range(64)]
    with server.client() as client:
        began = time.perf_counter()
        warmed = client.post("/embed", json={"specs": warmup}).json()
        per_second = len(warmup) / (time.perf_counter() - began)
    n = int(min(4000, max(400, 10 * per_second)))
    specs = [{"code": _code(i)} for i in range(n)]
    before = _scrape(server.url)
    outcome = {}

    def send():
        try:
            with server.client() as client:
                outcome["response"] = client.post("/embed", json={"specs": specs})
        except httpx.HTTPError as exc:  # a reset would land here
            outcome["error"] = exc

    thread = threading.Thread(target=send)
    thread.start()
    while True:  # signal once a few forwards of this request are done
        computed = _scrape(server.url)
        if computed["colecache_batch_size_count"] - before["colecache_batch_size_count"] >= 3:
            break
        time.sleep(0.05)
    server.proc.send_signal(signal.SIGTERM)
    thread.join(120)
    response = outcome.get("response")
    assert response is not None, outcome.get("error")
    assert response.status_code == 503, response.text
    assert int(response.headers["retry-after"]) > 0
    assert "shutting down" in response.json()["detail"]
    server.proc.wait(60)
    log = server.log_path.read_text()
    assert "Application shutdown complete" in log
    assert "Exception in ASGI application" not in log and "Traceback" not in log

    # Which of the request's vectors reached SQL: the keys are the cache keys of the code texts.
    fingerprint = warmed["fingerprint"]["id"]
    key_of = {cache_key(fingerprint, RAW_CODE_VERSION, spec["code"]): spec for spec in specs}
    engine = make_engine(f"sqlite:///{server.env['COLECACHE_DATA_DIR']}/colecache.db")
    stored = SqlTier(engine).existing(list(key_of))
    engine.dispose()
    computed_before_signal = computed["colecache_batch_size_sum"] - before["colecache_batch_size_sum"]
    assert n > len(stored) >= computed_before_signal > 0  # all computed before the signal, not everything

    restarted = server_factory(**env)  # same data directory: those vectors are served from SQL, not computed
    kept = [key_of[key] for key in stored]
    with restarted.client() as client:
        again = client.post("/embed", json={"specs": kept})
    assert again.status_code == 200
    assert again.json()["counts"] == {"sql": len(kept)}
    assert {bytes.fromhex(item["key"]) for item in again.json()["items"]} == stored
