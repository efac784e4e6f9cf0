"""The batching queue: token budget, routing of results, back-pressure and failure isolation."""

from __future__ import annotations

import asyncio
import random
import threading

import numpy as np
import pytest
from colecache.embedding.backend import BatchItem, Tokens
from colecache.embedding.queue import BatchQueue, QueueClosed, QueueFull, plan_batches


def _item(tag: int, length: int) -> BatchItem:
    # The first token id carries a tag so the fake model can echo it back.
    return BatchItem(Tokens([tag] + [0] * (length - 1), False), "mean", 0, False)


class EchoModel:
    """Returns each item's tag as its vector and records every batch it was given."""

    def __init__(self, fail_on: int | None = None, gate: threading.Event | None = None):
        self.batches: list[list[int]] = []  # token counts per forward
        self.tags: list[list[int]] = []
        self.fail_on = fail_on
        self.gate = gate

    def __call__(self, items):
        if self.gate is not None:
            self.gate.wait(10)
        self.batches.append([item.tokens.n_tokens for item in items])
        tags = [item.tokens.ids[0] for item in items]
        self.tags.append(tags)
        if self.fail_on in tags:
            raise RuntimeError("boom")
        return np.array([[tag] for tag in tags], dtype=np.float32)


def _queue(model, **overrides) -> BatchQueue:
    options = {"max_batch_tokens": 1000, "max_batch_size": 8, "batch_wait_ms": 5, "max_queue_items": 10_000}
    return BatchQueue(model, **{**options, **overrides})


def test_plan_respects_budget_size_and_sorts_by_length():
    rng = random.Random(0)
    lengths = [rng.randint(1, 300) for _ in range(200)] + [5000]
    batches = plan_batches(lengths, max_tokens=1000, max_size=8)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for batch in batches:
        widths = [lengths[i] for i in batch]
        assert len(batch) <= 8
        assert len(batch) * max(widths) <= 1000 or len(batch) == 1
        assert widths == sorted(widths)
    assert [len(lengths) - 1] in batches  # the oversized item runs alone


def _padded(lengths, batches) -> int:
    return sum(len(b) * max(lengths[i] for i in b) for b in batches)


def test_plan_minimises_padding_plus_forward_cost():
    # Two length clusters: greedy filling to 8 mixes them; the plan keeps them apart.
    lengths = [10] * 4 + [200] * 4
    batches = plan_batches(lengths, max_tokens=10_000, max_size=8, forward_cost=50)
    assert sorted(map(sorted, batches)) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    # A high forward cost merges them again (one forward is cheaper than the padding it saves).
    assert len(plan_batches(lengths, max_tokens=10_000, max_size=8, forward_cost=10_000)) == 1
    # Never worse than filling greedily, on random lengths.
    rng = random.Random(1)
    lengths = [rng.randint(20, 400) for _ in range(300)]
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    greedy = [order[i : i + 16] for i in range(0, len(order), 16)]
    planned = plan_batches(lengths, max_tokens=1 << 20, max_size=16, forward_cost=512)
    assert _padded(lengths, planned) + 512 * len(planned) <= _padded(lengths, greedy) + 512 * len(greedy)


async def test_results_return_to_the_right_request_in_order():
    model = EchoModel()
    queue = _queue(model)
    queue.start()
    rng = random.Random(1)
    requests = [[(r * 1000 + i, rng.randint(1, 200)) for i in range(rng.randint(1, 20))] for r in range(30)]
    results = await asyncio.gather(*(queue.submit([_item(t, n) for t, n in req]) for req in requests))
    for req, vectors in zip(requests, results):
        assert [int(v[0]) for v in vectors] == [t for t, _ in req]
    # Concurrent requests were merged, and every forward respected the token budget.
    assert any(len({tag // 1000 for tag in tags}) > 1 for tags in model.tags)
    assert all(len(b) * max(b) <= 1000 or len(b) == 1 for b in model.batches)
    await queue.close()


async def test_full_queue_refuses_with_retry_after():
    gate = threading.Event()
    queue = _queue(EchoModel(gate=gate), max_queue_items=10, batch_wait_ms=0)
    queue.start()
    first = asyncio.create_task(queue.submit([_item(i, 4) for i in range(8)]))
    await asyncio.sleep(0.05)  # the worker takes these and blocks inside the model
    queued = asyncio.create_task(queue.submit([_item(100 + i, 4) for i in range(10)]))
    await asyncio.sleep(0.05)
    with pytest.raises(QueueFull) as info:
        await queue.submit([_item(999, 4)])
    assert info.value.retry_after >= 1 and info.value.limit == 10
    gate.set()
    assert len(await first) == 8 and len(await queued) == 10
    await queue.close()


async def test_a_failing_batch_fails_only_its_own_requests():
    queue = _queue(EchoModel(fail_on=7), max_batch_tokens=1000)
    queue.start()
    # 2 x 600 tokens cannot share a forward, so the requests land in different batches.
    bad = queue.submit([_item(7, 600)])
    good = queue.submit([_item(8, 600)])
    outcomes = await asyncio.gather(bad, good, return_exceptions=True)
    assert isinstance(outcomes[0], RuntimeError)
    assert int(outcomes[1][0][0]) == 8
    await queue.close()


async def test_close_drains_queued_work_then_refuses():
    model = EchoModel()
    queue = _queue(model, batch_wait_ms=20)
    queue.start()
    pending = asyncio.create_task(queue.submit([_item(i, 10) for i in range(20)]))
    await asyncio.sleep(0)
    await queue.close(drain=True)
    assert [int(v[0]) for v in await pending] == list(range(20))
    with pytest.raises(QueueClosed):
        await queue.submit([_item(1, 1)])
