"""The batching queue between HTTP handlers and the model.

Items from concurrent requests are merged into forwards bounded by a padded-token budget and
a batch size, sorted by length so rows of similar length share a forward (less padding). The
model runs in one worker thread, so the event loop keeps serving cached requests meanwhile.
The queue is bounded: when it is full new work is refused at once (the API answers 429 with
Retry-After) instead of letting latency grow without limit.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from .backend import BatchItem

log = logging.getLogger(__name__)


class QueueFull(RuntimeError):
    """The queue holds too many items; the caller should retry after `retry_after` seconds."""

    def __init__(self, queued: int, limit: int, retry_after: float):
        self.queued, self.limit, self.retry_after = queued, limit, retry_after
        super().__init__(f"embedding queue is full ({queued} items queued, limit {limit}); retry later")


class QueueClosed(RuntimeError):
    """The server is shutting down and takes no new work."""


@dataclass(eq=False, slots=True)
class _Pending:
    item: BatchItem
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)


@dataclass
class QueueStats:
    batches: int = 0
    items: int = 0
    failed_batches: int = 0
    last_batch_sizes: deque = field(default_factory=lambda: deque(maxlen=1000))


def plan_batches(lengths: Sequence[int], max_tokens: int, max_size: int, forward_cost: int = 512) -> list[list[int]]:
    """Split item indices into forwards of length-sorted neighbours, with the fewest padded tokens.

    Cost of a plan = sum over forwards of (size x longest item) + `forward_cost` per forward (the
    fixed price of a forward, in token-equivalents). Cutting a sorted list into contiguous runs
    is solved exactly by dynamic programming: O(n x max_size). Greedy filling to `max_size`
    wastes padding when the lengths in a window spread widely (81% real tokens against 94% on
    100 NB201 cells). Every forward keeps size <= max_size and size x longest <= max_tokens; an
    item longer than the budget on its own still gets a forward of one.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    sorted_lengths = [lengths[i] for i in order]
    n = len(order)
    best = [0.0] + [float("inf")] * n  # best[k]: cheapest plan for the k shortest items
    start = [0] * (n + 1)
    for end in range(1, n + 1):
        longest = sorted_lengths[end - 1]
        for size in range(1, min(max_size, end) + 1):
            if size > 1 and size * longest > max_tokens:
                break
            cost = best[end - size] + size * longest + forward_cost
            if cost < best[end]:
                best[end], start[end] = cost, end - size
    batches: list[list[int]] = []
    end = n
    while end > 0:
        batches.append(order[start[end] : end])
        end = start[end]
    return batches[::-1]


class BatchQueue:
    """Collects BatchItems from many requests and feeds the model in token-budgeted batches."""

    def __init__(
        self,
        embed_fn: Callable[[Sequence[BatchItem]], np.ndarray],
        *,
        max_batch_tokens: int,
        max_batch_size: int,
        batch_wait_ms: float,
        batch_forward_cost: int = 512,
        max_queue_items: int,
        on_batch: Callable[[int, int, float], None] | None = None,
    ):
        self._embed_fn = embed_fn
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_size = max_batch_size
        self.batch_forward_cost = batch_forward_cost
        self.batch_wait_s = batch_wait_ms / 1000.0
        self.max_queue_items = max_queue_items
        self._on_batch = on_batch
        self._pending: deque[_Pending] = deque()
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="colecache-model")
        self._worker: asyncio.Task | None = None
        self._closing = False
        self._running = 0  # items inside the forward now
        self._items_per_second = 50.0  # refreshed from real batches; sizes Retry-After
        self.stats = QueueStats()

    # --- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._run(), name="colecache-batch-queue")

    async def close(self, drain: bool = True) -> None:
        """Stop taking work; with drain, finish everything already queued first."""
        self._closing = True
        if not drain:
            while self._pending:
                entry = self._pending.popleft()
                if not entry.future.done():
                    entry.future.set_exception(QueueClosed("server shutting down"))
        self._wakeup.set()
        if self._worker is not None:
            await self._worker
            self._worker = None
        self._executor.shutdown(wait=True)

    @property
    def depth(self) -> int:
        """Items waiting or running."""
        return len(self._pending) + self._running

    # --- submission ----------------------------------------------------------------------------
    async def submit(self, items: Sequence[BatchItem]) -> list[np.ndarray]:
        """Queue all items (or none, if they do not fit) and wait for their vectors, in order."""
        if self._closing:
            raise QueueClosed("server shutting down")
        if not items:
            return []
        if len(self._pending) + len(items) > self.max_queue_items:
            backlog = len(self._pending) + self._running
            raise QueueFull(backlog, self.max_queue_items, retry_after=max(1.0, backlog / self._items_per_second))
        loop = asyncio.get_running_loop()
        entries = [_Pending(item, loop.create_future()) for item in items]
        self._pending.extend(entries)
        self._wakeup.set()
        return list(await asyncio.gather(*(entry.future for entry in entries)))

    # --- worker --------------------------------------------------------------------------------
    def _queued_tokens(self) -> int:
        return sum(entry.item.tokens.n_tokens for entry in self._pending)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            # A short wait lets concurrent requests join the forward, unless one is already full.
            if self.batch_wait_s and len(self._pending) < self.max_batch_size and not self._closing:
                if self._queued_tokens() < self.max_batch_tokens:
                    await asyncio.sleep(self.batch_wait_s)
            # Take a window of the oldest items (FIFO between windows, length-sorted inside).
            window: list[_Pending] = []
            while self._pending and len(window) < self.max_batch_size * 8:
                entry = self._pending.popleft()
                if not entry.future.cancelled():
                    window.append(entry)
            lengths = [entry.item.tokens.n_tokens for entry in window]
            for batch in plan_batches(lengths, self.max_batch_tokens, self.max_batch_size, self.batch_forward_cost):
                await self._run_batch(loop, [window[i] for i in batch])

    async def _run_batch(self, loop: asyncio.AbstractEventLoop, batch: list[_Pending]) -> None:
        live = [entry for entry in batch if not entry.future.done()]
        if not live:
            return
        self._running = len(live)
        started = time.perf_counter()
        try:
            vectors = await loop.run_in_executor(self._executor, self._embed_fn, [e.item for e in live])
        except Exception as exc:  # a failing batch fails only its own rows
            self.stats.failed_batches += 1
            log.exception("model forward failed for a batch of %d items", len(live))
            for entry in live:
                if not entry.future.done():
                    entry.future.set_exception(exc)
            return
        finally:
            self._running = 0
        elapsed = time.perf_counter() - started
        tokens = len(live) * max(e.item.tokens.n_tokens for e in live)
        self.stats.batches += 1
        self.stats.items += len(live)
        self.stats.last_batch_sizes.append(len(live))
        if elapsed > 0:
            self._items_per_second = 0.8 * self._items_per_second + 0.2 * (len(live) / elapsed)
        if self._on_batch is not None:
            self._on_batch(len(live), tokens, elapsed)
        for entry, vector in zip(live, vectors):
            if not entry.future.done():
                entry.future.set_result(vector)
