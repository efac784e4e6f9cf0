"""Hot tier: Redis when configured (shared by replicas), else an in-process LRU bounded by bytes."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np

from .. import metrics
from .record import EmbeddingRecord, pack_record, unpack_record

log = logging.getLogger(__name__)


class HotTier(Protocol):
    name: str

    async def get_many(self, keys: Sequence[bytes]) -> list[EmbeddingRecord | None]: ...

    async def put_many(self, items: Sequence[tuple[bytes, EmbeddingRecord]]) -> None: ...

    async def ping(self) -> bool: ...

    async def close(self) -> None: ...


class MemoryTier:
    """Least-recently-used dict of records, evicting by total bytes.

    Records are kept as read-only float32 arrays (no decoding on a hit); the byte budget counts
    the vector bytes plus a fixed overhead per entry.
    """

    name = "memory"
    OVERHEAD = 160  # dict slot, key, record object: measured order of magnitude

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._entries: OrderedDict[bytes, EmbeddingRecord] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def _size(self, record: EmbeddingRecord) -> int:
        return record.vector.nbytes + self.OVERHEAD

    async def get_many(self, keys: Sequence[bytes]) -> list[EmbeddingRecord | None]:
        entries = self._entries
        out: list[EmbeddingRecord | None] = []
        for key in keys:
            record = entries.get(key)
            if record is not None:
                entries.move_to_end(key)
            out.append(record)
        return out

    async def put_many(self, items: Sequence[tuple[bytes, EmbeddingRecord]]) -> None:
        for key, record in items:
            vector = np.array(record.vector, dtype=np.float32)  # a private, read-only copy
            vector.setflags(write=False)
            record = EmbeddingRecord(vector, record.n_tokens, record.truncated)
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= self._size(old)
            if self._size(record) > self.max_bytes:
                continue
            self._entries[key] = record
            self._bytes += self._size(record)
        while self._bytes > self.max_bytes and self._entries:
            _, evicted = self._entries.popitem(last=False)
            self._bytes -= self._size(evicted)

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        self._entries.clear()
        self._bytes = 0


class CircuitBreaker:
    """Skip a failing dependency for `cooldown_s` after an error, then let one call through to try it again.

    Closed: every call goes through. Open: calls are skipped until the cool-down ends; the first
    caller after that is the trial (the cool-down restarts for the others, so a dead dependency
    costs one timeout per cool-down, not one per request); a success closes the breaker.
    """

    def __init__(self, cooldown_s: float, clock: Callable[[], float] = time.monotonic):
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._open_until: float | None = None

    @property
    def is_open(self) -> bool:
        return self._open_until is not None

    def allow(self) -> bool:
        if self._open_until is None:
            return True
        now = self._clock()
        if now < self._open_until:
            return False
        self._open_until = now + self.cooldown_s
        return True

    def success(self) -> bool:
        """Close; True when it was open (the dependency is back)."""
        was_open, self._open_until = self._open_until is not None, None
        return was_open

    def failure(self) -> bool:
        """(Re)open for a cool-down; True when it was closed (the dependency just failed)."""
        was_closed = self._open_until is None
        self._open_until = self._clock() + self.cooldown_s
        return was_closed


class RedisTier:
    """Packed records under `<prefix>:emb:<hex key>`: one MGET per lookup, one pipeline per write.

    Redis is an optimisation, never a dependency: any error or timeout on a lookup is a miss and
    on a write a skipped (logged, counted) fill, and after an error the breaker skips Redis for
    `cooldown_s`. Socket timeouts are short (`timeout_s`; `socket_timeout` / `socket_connect_timeout`
    in the URL's query string override them) and only a broken connection is retried (once, on a
    fresh one: that is what a restarted Redis leaves in the pool), never a timeout.
    """

    name = "redis"

    def __init__(
        self, url: str, prefix: str = "colecache", ttl_s: int = 0, timeout_s: float = 1.0, cooldown_s: float = 2.0
    ):
        import redis.asyncio as redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
        from redis.exceptions import ConnectionError as RedisConnectionError

        self._redis = redis.Redis.from_url(
            url,
            decode_responses=False,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        )
        self._prefix = f"{prefix}:emb:".encode()
        self._ttl = ttl_s or None
        # Bounds a call whatever the socket options say (a retried connect included).
        self._deadline_s = 2 * timeout_s + 0.5
        self.breaker = CircuitBreaker(cooldown_s)
        metrics.HOT_TIER_AVAILABLE.labels(self.name).set(1)

    def _name(self, key: bytes) -> bytes:
        return self._prefix + key.hex().encode()

    def _succeeded(self) -> None:
        if self.breaker.success():
            metrics.HOT_TIER_AVAILABLE.labels(self.name).set(1)
            log.warning("redis hot tier is reachable again; using it")

    def _failed(self, op: str, exc: BaseException) -> None:
        metrics.HOT_TIER_ERRORS.labels(self.name, op).inc()
        if self.breaker.failure():
            metrics.HOT_TIER_AVAILABLE.labels(self.name).set(0)
            log.warning(
                "redis hot tier failed on %s (%s: %s); serving from SQL and retrying in %.1f s",
                op,
                type(exc).__name__,
                exc,
                self.breaker.cooldown_s,
            )
        else:
            log.debug("redis hot tier still failing on %s: %s: %s", op, type(exc).__name__, exc)

    def _skip(self, op: str) -> bool:
        if self.breaker.allow():
            return False
        metrics.HOT_TIER_SKIPPED.labels(self.name, op).inc()
        return True

    async def get_many(self, keys: Sequence[bytes]) -> list[EmbeddingRecord | None]:
        if not keys or self._skip("get"):
            return [None] * len(keys)
        try:
            async with asyncio.timeout(self._deadline_s):
                blobs = await self._redis.mget([self._name(k) for k in keys])
        except Exception as exc:
            self._failed("get", exc)
            return [None] * len(keys)
        self._succeeded()
        return [self._unpack(blob) for blob in blobs]

    def _unpack(self, blob: bytes | None) -> EmbeddingRecord | None:
        if blob is None:
            return None
        try:
            return unpack_record(blob)
        except Exception as exc:  # a foreign or truncated value under our prefix: a miss, SQL has the truth
            metrics.HOT_TIER_ERRORS.labels(self.name, "decode").inc()
            log.warning("undecodable redis hot-tier entry ignored (%s: %s)", type(exc).__name__, exc)
            return None

    async def put_many(self, items: Sequence[tuple[bytes, EmbeddingRecord]]) -> None:
        if not items or self._skip("put"):
            return
        try:
            async with asyncio.timeout(self._deadline_s):
                async with self._redis.pipeline(transaction=False) as pipe:
                    for key, record in items:
                        pipe.set(self._name(key), pack_record(record), ex=self._ttl)
                    await pipe.execute()
        except Exception as exc:
            self._failed("put", exc)
            return
        self._succeeded()

    async def ping(self) -> bool:
        """Always asks Redis (open breaker or not), so readiness sees a recovery at once; never raises."""
        try:
            async with asyncio.timeout(self._deadline_s):
                await self._redis.ping()
        except Exception as exc:
            self._failed("ping", exc)
            return False
        self._succeeded()
        return True

    async def close(self) -> None:
        try:
            await self._redis.aclose()
        except Exception as exc:  # closing a pool whose server is gone must not fail shutdown
            log.debug("closing redis: %s: %s", type(exc).__name__, exc)
