"""Several model replicas (one per device) behind one batching queue: dispatch, order, isolation of a
broken replica; and a real server with COLECACHE_DEVICE=cpu,cpu."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest
import torch
from colecache.embedding.backend import BatchItem, Tokens, device_name, resolve_devices
from colecache.embedding.queue import BatchQueue, Replica


def _item(tag: int, length: int = 8) -> BatchItem:
    return BatchItem(Tokens([tag] + [0] * (length - 1), False), "mean", 0, False)


class SlowEcho:
    """Echoes each item's tag after `delay` seconds; records how many forwards overlap across replicas."""

    active = 0
    peak = 0
    lock = threading.Lock()

    def __init__(self, delay: float = 0.05, broken: bool = False):
        self.delay, self.broken, self.forwards = delay, broken, 0

    def __call__(self, items):
        with SlowEcho.lock:
            SlowEcho.active += 1
            SlowEcho.peak = max(SlowEcho.peak, SlowEcho.active)
        try:
            time.sleep(self.delay)
            self.forwards += 1
            if self.broken:
                raise RuntimeError("CUDA error: an illegal memory access was encountered")
            return np.array([[item.tokens.ids[0]] for item in items], dtype=np.float32)
        finally:
            with SlowEcho.lock:
                SlowEcho.active -= 1


def _queue(replicas, **overrides) -> BatchQueue:
    options = {"max_batch_tokens": 1000, "max_batch_size": 4, "batch_wait_ms": 2, "max_queue_items": 10_000}
    return BatchQueue(replicas, **{**options, **overrides})


@pytest.fixture(autouse=True)
def _reset_peak():
    SlowEcho.active = SlowEcho.peak = 0


async def test_batches_spread_over_every_replica_and_results_keep_request_order():
    models = [SlowEcho(), SlowEcho(), SlowEcho()]
    seen: list[tuple[str, int]] = []
    queue = _queue(
        [Replica(f"cpu#{i}", m) for i, m in enumerate(models)], on_replica=lambda r, n, s: seen.append((r.name, n))
    )
    queue.start()
    requests = [[_item(100 * r + i) for i in range(10)] for r in range(6)]
    results = await asyncio.gather(*(queue.submit(items) for items in requests))
    for r, vectors in enumerate(results):
        assert [int(v[0]) for v in vectors] == [100 * r + i for i in range(10)]
    assert all(m.forwards > 0 for m in models)  # every replica took work ...
    assert SlowEcho.peak == 3  # ... at the same time
    assert sum(n for _, n in seen) == 60 and {name for name, _ in seen} == {"cpu#0", "cpu#1", "cpu#2"}
    assert queue.depth == 0
    await queue.close()


async def test_a_broken_replica_leaves_rotation_and_its_items_run_elsewhere():
    good, bad = SlowEcho(), SlowEcho(broken=True)
    queue = _queue([Replica("cuda:0", bad), Replica("cuda:1", good)])
    queue.probe_item = _item(999)
    queue.start()
    results = await asyncio.gather(*(queue.submit([_item(10 * r + i) for i in range(4)]) for r in range(8)))
    assert [[int(v[0]) for v in vectors] for vectors in results] == [[10 * r + i for i in range(4)] for r in range(8)]
    assert [r.up for r in queue.replicas] == [False, True]
    assert bad.forwards >= 2  # its batch, split down to one item, then the probe
    # Later work goes only to the good replica.
    before = bad.forwards
    assert [int(v[0]) for v in await queue.submit([_item(7), _item(8)])] == [7, 8]
    assert bad.forwards == before
    await queue.close()


async def test_when_every_replica_is_broken_requests_fail_with_the_error():
    queue = _queue([Replica("cuda:0", SlowEcho(broken=True)), Replica("cuda:1", SlowEcho(broken=True))])
    queue.probe_item = _item(999)
    queue.start()
    outcome = await asyncio.wait_for(queue.submit([_item(i) for i in range(6)], return_exceptions=True), 30)
    assert all(isinstance(o, RuntimeError) and "illegal memory access" in str(o) for o in outcome)
    await queue.close()


async def test_a_poison_item_fails_alone_whichever_replica_runs_it():
    class Poisoned(SlowEcho):
        def __call__(self, items):
            if any(item.tokens.ids[0] == 13 for item in items):
                raise ValueError("poison")
            return super().__call__(items)

    queue = _queue([Replica("cpu#0", Poisoned(0.01)), Replica("cpu#1", Poisoned(0.01))])
    queue.probe_item = _item(999)
    queue.start()
    outcome = await queue.submit([_item(i) for i in range(20)], return_exceptions=True)
    assert isinstance(outcome[13], ValueError) and "poison" in str(outcome[13])
    assert [int(o[0]) for i, o in enumerate(outcome) if i != 13] == [i for i in range(20) if i != 13]
    assert all(r.up for r in queue.replicas)  # an item's fault never takes a device out
    await queue.close()


def test_device_lists():
    assert resolve_devices("cpu") == [torch.device("cpu")]
    assert resolve_devices("cpu, cpu") == [torch.device("cpu")] * 2
    with pytest.raises(ValueError, match="mixes device types"):
        resolve_devices("cpu,cuda:0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            resolve_devices("cuda:all")
    devices = resolve_devices("cpu,cpu")
    assert [device_name(d, i, devices) for i, d in enumerate(devices)] == ["cpu#0", "cpu#1"]
    assert device_name(torch.device("cuda", 1), 1, [torch.device("cuda", 0), torch.device("cuda", 1)]) == "cuda:1"


@pytest.mark.integration
def test_server_with_two_cpu_replicas_serves_the_same_vectors(server_factory, default_server):
    import random

    from colecache_client.spaces import get_space

    space = get_space("nb201")
    rng = random.Random(5)
    cells = [c.to_string() for c in space.dedupe(space.sample(rng) for _ in range(300))[:120]]
    two = server_factory(COLECACHE_DEVICE="cpu,cpu", COLECACHE_TORCH_THREADS="1", COLECACHE_MAX_BATCH_SIZE="8")
    with two.client() as client:
        info = client.get("/info").json()["model"]
        assert [d["name"] for d in info["devices"]] == ["cpu#0", "cpu#1"]
        # Several concurrent requests, so both replicas have work at once.
        from concurrent.futures import ThreadPoolExecutor

        def embed(part):
            response = client.post("/embed", json={"specs": part, "encoding": "float"})
            assert response.status_code == 200, response.text
            return response.json()

        with ThreadPoolExecutor(4) as pool:
            bodies = list(pool.map(embed, [cells[i : i + 30] for i in range(0, 120, 30)]))
        info = client.get("/info").json()["model"]
        assert all(d["up"] and d["forwards"] > 0 for d in info["devices"]), info["devices"]
        metrics = client.get("/metrics").text
        assert 'colecache_device_forwards_total{device="cpu#0"}' in metrics
        assert 'colecache_device_up{device="cpu#1"} 1.0' in metrics
        assert client.get("/ready").json()["status"] == "ready"
    with default_server.client() as client:  # one replica, the default threads
        single = embed.__wrapped__ if hasattr(embed, "__wrapped__") else None  # noqa: F841
        response = client.post("/embed", json={"specs": cells, "encoding": "float"}).json()
    mine = [item for body in bodies for item in body["items"]]
    assert bodies[0]["fingerprint"] == response["fingerprint"]  # one cache key space for both
    for a, b in zip(mine, response["items"]):
        assert a["key"] == b["key"]
        np.testing.assert_allclose(a["embedding"], b["embedding"], atol=1e-5)


def test_device_names_that_cannot_run_a_model_are_refused_with_the_reason():
    with pytest.raises(ValueError, match="not meta"):
        resolve_devices("meta")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device is visible"):
            resolve_devices("cuda")  # not torch's bare AssertionError from deep inside the load
