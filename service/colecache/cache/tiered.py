"""Hot tier in front of the durable tier: batch lookups in request order, back-fill, write-through."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import anyio
import anyio.to_thread

from .durable import SqlTier
from .hot import HotTier
from .record import EmbeddingRecord


class TieredCache:
    def __init__(self, hot: HotTier, durable: SqlTier):
        self.hot = hot
        self.durable = durable
        self.registered: set[str] = set()

    async def get_many(self, keys: Sequence[bytes]) -> tuple[list[EmbeddingRecord | None], list[str | None]]:
        """Records and the tier that answered ('redis' / 'memory' / 'sql'), aligned with `keys`.

        Hot misses go to SQL in one batch; SQL hits are copied into the hot tier.
        """
        records = await self.hot.get_many(keys)
        sources: list[str | None] = [self.hot.name if r is not None else None for r in records]
        missing = [i for i, r in enumerate(records) if r is None]
        if missing:
            found = await anyio.to_thread.run_sync(self.durable.get_many, [keys[i] for i in missing])
            backfill = []
            for i in missing:
                record = found.get(keys[i])
                if record is not None:
                    records[i], sources[i] = record, self.durable.name
                    backfill.append((keys[i], record))
            await self.hot.put_many(backfill)
        return records, sources

    async def put_many(
        self,
        rows: Sequence[tuple[bytes, EmbeddingRecord]],
        fingerprint: dict,
        renderer_versions: Sequence[str],
    ) -> dict[bytes, EmbeddingRecord]:
        """Commit to SQL first (the durable copy is the truth), then fill the hot tier.

        Returns the record to serve per key: another process's committed vector where it won the race.
        """
        fingerprint_id = fingerprint["id"]
        if fingerprint_id not in self.registered:
            await anyio.to_thread.run_sync(self.durable.register_fingerprint, fingerprint_id, fingerprint)
            self.registered.add(fingerprint_id)
        winners = await anyio.to_thread.run_sync(
            partial(self.durable.put_many, rows, fingerprint_id, renderer_versions)
        )
        final = {key: winners.get(key, record) for key, record in rows}
        await self.hot.put_many(list(final.items()))
        return final

    async def ping(self, timeout_s: float = 1.0) -> dict[str, bool]:
        """Reachability per tier, both asked at once; a tier that has not answered within `timeout_s` is down.

        Readiness probes call this, so it must answer in time even when a store hangs: the SQL
        ping's thread is abandoned (the engine's connect timeout ends it later).
        """
        status = {self.hot.name: False, self.durable.name: False}

        async def check(name: str, probe) -> None:
            with anyio.move_on_after(timeout_s):
                try:
                    status[name] = bool(await probe())
                except Exception:
                    status[name] = False

        async with anyio.create_task_group() as group:
            group.start_soon(check, self.hot.name, self.hot.ping)
            group.start_soon(
                check, self.durable.name, partial(anyio.to_thread.run_sync, self.durable.ping, abandon_on_cancel=True)
            )
        return status

    async def close(self) -> None:
        await self.hot.close()
        self.durable.engine.dispose()
