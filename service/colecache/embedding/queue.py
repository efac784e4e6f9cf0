"""The batching queue between HTTP handlers and the model.

Items from concurrent requests are merged into forwards bounded by a padded-token budget and
a batch size, sorted by length so rows of similar length share a forward (less padding). Each
model replica (one per device: `COLECACHE_DEVICE=cuda:0,cuda:1`) runs in its own worker thread and
takes the next planned forward whenever it is free, so the event loop keeps serving cached requests
meanwhile and every device stays busy.
The queue is bounded: when it is full new work is refused at once (the API answers 429 with
Retry-After) instead of letting latency grow without limit.

A forward that raises is retried in halves down to single items, so only the item at fault fails
(as ItemFailed when the model works on other items, with the original error when the model itself
is broken). Items that arrive while a window is being worked off join its plan, so a small request
is not held behind every forward of a large one; an older item is overtaken at most MAX_OVERTAKES
times by later arrivals. A replica that fails even on the known-good probe item is taken out of
rotation and its unfinished items run on the others; only the last replica standing fails requests.
"""

from __future__ import annotations

import asyncio
import itertools
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
    """The server is shutting down and takes no new work (the API answers 503 with Retry-After)."""


class ItemFailed(ValueError):
    """The model failed on this item on its own while it works on others: the input, not the server, is at fault."""

    def __init__(self, cause: Exception):
        self.cause = cause
        super().__init__(f"the model could not embed this item ({type(cause).__name__}: {cause})")


MAX_OVERTAKES = 8
"""How many forwards of later arrivals may run before an item that was already planned."""

_sequence = itertools.count()


@dataclass(eq=False, slots=True)
class _Pending:
    item: BatchItem
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)
    seq: int = field(default_factory=lambda: next(_sequence))  # arrival order
    admitted: int = 0  # the admission round that put it into the plan
    overtaken: int = 0  # forwards of later-admitted items that ran while it waited in the plan


@dataclass(slots=True)
class _Isolation:
    """What one failing batch has shown so far about the model."""

    succeeded: bool = False  # some forward of this batch worked
    probed: bool | None = None  # the known-good probe item: worked / failed / not tried
    fault: Exception | None = None  # the model itself is failing: fail the rest without more forwards
    undecided: list = field(default_factory=list)  # lone failures to classify once the batch is done


def _is_capacity_error(exc: Exception) -> bool:
    """Out of memory is the server's limit, not the input's fault (torch.OutOfMemoryError by name: no torch here)."""
    return isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError"


class _ReplicaDown(Exception):
    """Raised inside a batch when its replica fails on the known-good probe while others are up."""

    def __init__(self, cause: Exception):
        self.cause = cause
        super().__init__(str(cause))


@dataclass(eq=False)
class Replica:
    """One copy of the model the queue feeds: its forward (items -> (n, dim) float32) and its device."""

    name: str
    embed_fn: Callable[[Sequence[BatchItem]], np.ndarray]
    up: bool = True
    batches: int = 0
    items: int = 0
    busy_s: float = 0.0
    running: list = field(default_factory=list)  # entries in its forward now
    executor: ThreadPoolExecutor | None = field(default=None, repr=False)

    @property
    def free(self) -> bool:
        return self.up and not self.running


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
        replicas: Callable[[Sequence[BatchItem]], np.ndarray] | Sequence[Replica],
        *,
        max_batch_tokens: int,
        max_batch_size: int,
        batch_wait_ms: float,
        batch_forward_cost: int = 512,
        max_queue_items: int,
        on_batch: Callable[[int, int, float], None] | None = None,
        on_replica: Callable[[Replica, int, float], None] | None = None,
    ):
        """`replicas`: one forward function (a single device) or one Replica per device. `on_batch(size,
        padded tokens, seconds)` and `on_replica(replica, size, seconds)` see every successful forward."""
        self.replicas = [Replica("model", replicas)] if callable(replicas) else list(replicas)
        if not self.replicas:
            raise ValueError("a batch queue needs at least one model replica")
        for index, replica in enumerate(self.replicas):
            replica.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"colecache-model-{index}")
        self._on_replica = on_replica
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_size = max_batch_size
        self.batch_forward_cost = batch_forward_cost
        self.batch_wait_s = batch_wait_ms / 1000.0
        self.max_queue_items = max_queue_items
        self._on_batch = on_batch
        self._pending: deque[_Pending] = deque()
        self._wakeup = asyncio.Event()
        self._freed = asyncio.Event()  # a replica finished a batch
        self._worker: asyncio.Task | None = None
        self._batches: set[asyncio.Task] = set()
        self._closing = False
        self._plan: list[list[_Pending]] = []  # planned forwards of the current window, in run order
        self._admissions = 0
        # A small item the model has embedded: run alone when a lone item fails, to tell a poison input
        # (the probe works) from a broken model (it fails too). The pipeline seeds it; forwards refresh it.
        self.probe_item: BatchItem | None = None
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
        if self._batches:
            await asyncio.gather(*self._batches, return_exceptions=True)
        for replica in self.replicas:
            replica.executor.shutdown(wait=True)

    def abandon(self, reason: str) -> int:
        """Stop taking work and fail every item not yet computed with QueueClosed(reason), at once.

        For the end of a shutdown's grace period: the requests waiting on these items answer 503 with
        Retry-After before the server has to cancel them, and items already computed have been handed
        back (and stored by their requests). The forward running now finishes in its thread, unused.
        Returns how many items were failed."""
        self._closing = True
        running = [entry for replica in self.replicas for entry in replica.running]
        entries = [*self._pending, *(entry for batch in self._plan for entry in batch), *running]
        self._pending.clear()
        self._plan = []
        failed = 0
        for entry in entries:
            if not entry.future.done():
                entry.future.set_exception(QueueClosed(reason))
                failed += 1
        self._wakeup.set()
        return failed

    @property
    def closing(self) -> bool:
        return self._closing

    @property
    def depth(self) -> int:
        """Items waiting (queued or planned) or running."""
        running = sum(len(replica.running) for replica in self.replicas)
        return len(self._pending) + sum(len(batch) for batch in self._plan) + running

    # --- submission ----------------------------------------------------------------------------
    def enqueue(self, items: Sequence[BatchItem]) -> list[asyncio.Future]:
        """Queue all items (or none, if they do not fit: QueueFull) and return one future per item, in order.

        Each future resolves as soon as the forward holding its item is done, so a caller can store results
        batch by batch; a future the caller cancels is skipped by the worker."""
        if self._closing:
            raise QueueClosed("server shutting down")
        if not items:
            return []
        if len(self._pending) + len(items) > self.max_queue_items:
            backlog = len(self._pending) + sum(len(replica.running) for replica in self.replicas)
            raise QueueFull(backlog, self.max_queue_items, retry_after=max(1.0, backlog / self._items_per_second))
        loop = asyncio.get_running_loop()
        entries = [_Pending(item, loop.create_future()) for item in items]
        self._pending.extend(entries)
        self._wakeup.set()
        return [entry.future for entry in entries]

    async def submit(self, items: Sequence[BatchItem], return_exceptions: bool = False) -> list:
        """Queue all items (or none, if they do not fit) and wait for their vectors, in order.

        With return_exceptions, an item that failed has its exception in its place (ItemFailed when the
        item is at fault) and the others still get their vectors; without, the first failure is raised.
        """
        futures = self.enqueue(items)
        return list(await asyncio.gather(*futures, return_exceptions=return_exceptions))

    # --- worker --------------------------------------------------------------------------------
    def _queued_tokens(self) -> int:
        return sum(entry.item.tokens.n_tokens for entry in self._pending)

    async def _free_replica(self) -> Replica | None:
        """The first replica that is up and idle, waiting for one; None when the queue is closing and idle."""
        while True:
            for replica in self.replicas:
                if replica.free:
                    return replica
            if not any(replica.up for replica in self.replicas):
                return self.replicas[0]  # none left: the first one reports the failure
            self._freed.clear()
            await self._freed.wait()

    async def _run(self) -> None:
        while True:
            replica = await self._free_replica()
            if not self._plan:
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
                # A window of the oldest items (FIFO between windows), planned length-sorted.
                self._plan = self._planned(self._admit(self.max_batch_size * 8))
            elif self._pending:
                # Later arrivals join the window's plan in length order, so a short one runs next instead
                # of after every remaining forward of the window. Planned alone, they cost a small DP.
                room = self.max_batch_size * 8 - sum(len(batch) for batch in self._plan)
                fresh = self._admit(room)
                if fresh:
                    merged = self._plan + self._planned(fresh)
                    self._plan = sorted(merged, key=lambda b: max(e.item.tokens.n_tokens for e in b))
            if not self._plan:
                continue
            if not replica.free and any(r.up for r in self.replicas):
                continue  # the chosen replica went down meanwhile: pick again
            batch = self._plan.pop(self._next_batch())
            replica.running = batch  # busy from now: the next loop turn picks another replica
            task = asyncio.get_running_loop().create_task(self._run_batch(replica, batch))
            self._batches.add(task)
            task.add_done_callback(self._batch_done)
            newest = max(entry.admitted for entry in batch)
            for waiting in self._plan:
                for entry in waiting:
                    if entry.admitted < newest:
                        entry.overtaken += 1

    def _batch_done(self, task: asyncio.Task) -> None:
        self._batches.discard(task)
        self._freed.set()

    def _admit(self, room: int) -> list[_Pending]:
        """Move up to `room` of the oldest queued items into the plan (skipping cancelled ones)."""
        self._admissions += 1
        taken: list[_Pending] = []
        while self._pending and len(taken) < room:
            entry = self._pending.popleft()
            if not entry.future.cancelled():
                entry.admitted = self._admissions
                taken.append(entry)
        return taken

    def _planned(self, entries: list[_Pending]) -> list[list[_Pending]]:
        lengths = [entry.item.tokens.n_tokens for entry in entries]
        plan = plan_batches(lengths, self.max_batch_tokens, self.max_batch_size, self.batch_forward_cost)
        return [[entries[i] for i in batch] for batch in plan]

    def _next_batch(self) -> int:
        """The first planned forward, unless an item was overtaken too often: then the one holding the oldest."""
        overdue = [
            (entry.seq, index)
            for index, batch in enumerate(self._plan)
            for entry in batch
            if entry.overtaken >= MAX_OVERTAKES
        ]
        return min(overdue)[1] if overdue else 0

    async def _run_batch(self, replica: Replica, batch: list[_Pending]) -> None:
        state = _Isolation()
        try:
            await self._run_or_split(replica, batch, state)
        except _ReplicaDown as down:
            replica.up = False
            undone = [entry for entry in batch if not entry.future.done()]
            log.error(
                "replica %s failed on a known-good item too (%s: %s): out of rotation; %d item(s) move to the "
                "other replicas",
                replica.name,
                type(down.cause).__name__,
                down.cause,
                len(undone),
            )
            if undone:
                self._plan.insert(0, undone)
                self._wakeup.set()
            return
        except Exception as exc:  # a bug here must not leave requests waiting forever
            log.exception("batch on %s failed unexpectedly", replica.name)
            for entry in batch:
                if not entry.future.done():
                    entry.future.set_exception(exc)
            return
        finally:
            replica.running = []
        for entry, exc in state.undecided:  # no probe was available: decide by this batch alone
            if not entry.future.done():
                entry.future.set_exception(ItemFailed(exc) if state.succeeded else exc)

    async def _run_or_split(self, replica: Replica, entries: list[_Pending], state: _Isolation) -> None:
        """One forward over `entries`; if it raises, the halves again, down to the single item at fault."""
        live = [entry for entry in entries if not entry.future.done()]
        if not live:
            return
        if state.fault is not None:
            for entry in live:
                entry.future.set_exception(state.fault)
            return
        try:
            vectors = await self._forward(replica, live)
        except Exception as exc:
            self.stats.failed_batches += 1
            if len(live) > 1:
                log.warning(
                    "a forward of %d items on %s failed (%s: %s); retrying in halves to find the item at fault",
                    len(live),
                    replica.name,
                    type(exc).__name__,
                    exc,
                )
                middle = len(live) // 2
                await self._run_or_split(replica, live[:middle], state)
                await self._run_or_split(replica, live[middle:], state)
            else:
                await self._fail_one(replica, live[0], exc, state)
            return
        state.succeeded = True
        for entry, vector in zip(live, vectors):
            if not entry.future.done():
                entry.future.set_result(vector)

    async def _fail_one(self, replica: Replica, entry: _Pending, exc: Exception, state: _Isolation) -> None:
        """A forward of this item alone failed: blame the item if the model works, else the server."""
        if _is_capacity_error(exc):
            log.error("model forward ran out of memory on one item of %d tokens", entry.item.tokens.n_tokens)
            if not entry.future.done():
                entry.future.set_exception(exc)
            return
        if not state.succeeded and state.probed is None and self.probe_item is not None:
            try:
                await asyncio.get_running_loop().run_in_executor(replica.executor, replica.embed_fn, [self.probe_item])
                state.probed = True
            except Exception:
                state.probed = False
        if entry.future.done():  # abandoned (shutdown) while the probe ran
            return
        if state.succeeded or state.probed:
            log.warning(
                "the model failed on one item of %d tokens (%s: %s); failing only that item",
                entry.item.tokens.n_tokens,
                type(exc).__name__,
                exc,
            )
            entry.future.set_exception(ItemFailed(exc))
        elif state.probed is False and any(other.up for other in self.replicas if other is not replica):
            raise _ReplicaDown(exc)  # this device is broken, not the model: the others take its items
        elif state.probed is False:
            log.error("model forward failed, and on a known-good item too: the model is failing", exc_info=exc)
            state.fault = exc
            entry.future.set_exception(exc)
        else:
            state.undecided.append((entry, exc))

    async def _forward(self, replica: Replica, live: list[_Pending]) -> np.ndarray:
        replica.running = live
        started = time.perf_counter()
        vectors = await asyncio.get_running_loop().run_in_executor(
            replica.executor, replica.embed_fn, [e.item for e in live]
        )
        elapsed = time.perf_counter() - started
        tokens = len(live) * max(e.item.tokens.n_tokens for e in live)
        self.stats.batches += 1
        self.stats.items += len(live)
        self.stats.last_batch_sizes.append(len(live))
        replica.batches += 1
        replica.items += len(live)
        replica.busy_s += elapsed
        if elapsed > 0:
            rate = len(live) / elapsed * sum(r.up for r in self.replicas)
            self._items_per_second = 0.8 * self._items_per_second + 0.2 * rate
        if self._on_batch is not None:
            self._on_batch(len(live), tokens, elapsed)
        if self._on_replica is not None:
            self._on_replica(replica, len(live), elapsed)
        shortest = min(live, key=lambda e: e.item.tokens.n_tokens).item
        if self.probe_item is None or shortest.tokens.n_tokens < self.probe_item.tokens.n_tokens:
            self.probe_item = shortest
        return vectors
