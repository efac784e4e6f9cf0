"""Hot tier: Redis when configured (shared by replicas), else an in-process LRU bounded by bytes."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from .record import EmbeddingRecord, pack_record, unpack_record


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


class RedisTier:
    """Packed records under `<prefix>:emb:<hex key>`: one MGET per lookup, one pipeline per write."""

    name = "redis"

    def __init__(self, url: str, prefix: str = "colecache", ttl_s: int = 0):
        import redis.asyncio as redis

        self._redis = redis.Redis.from_url(url, decode_responses=False)
        self._prefix = f"{prefix}:emb:".encode()
        self._ttl = ttl_s or None

    def _name(self, key: bytes) -> bytes:
        return self._prefix + key.hex().encode()

    async def get_many(self, keys: Sequence[bytes]) -> list[EmbeddingRecord | None]:
        if not keys:
            return []
        blobs = await self._redis.mget([self._name(k) for k in keys])
        return [None if blob is None else unpack_record(blob) for blob in blobs]

    async def put_many(self, items: Sequence[tuple[bytes, EmbeddingRecord]]) -> None:
        if not items:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for key, record in items:
                pipe.set(self._name(key), pack_record(record), ex=self._ttl)
            await pipe.execute()

    async def ping(self) -> bool:
        return bool(await self._redis.ping())

    async def close(self) -> None:
        await self._redis.aclose()
