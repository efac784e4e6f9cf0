"""Concurrent requests for the same missing key share one computation (per process)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SingleFlight(Generic[K, V]):
    def __init__(self) -> None:
        self._inflight: dict[K, asyncio.Future] = {}

    def __len__(self) -> int:
        return len(self._inflight)

    async def run(self, keys: Sequence[K], compute: Callable[[list[K]], Awaitable[dict[K, V]]]) -> dict[K, V]:
        """Values for `keys`: computes those nobody is computing, waits for the rest."""
        loop = asyncio.get_running_loop()
        mine: dict[K, asyncio.Future] = {}
        theirs: dict[K, asyncio.Future] = {}
        for key in dict.fromkeys(keys):
            if key in self._inflight:
                theirs[key] = self._inflight[key]
            else:
                mine[key] = self._inflight[key] = loop.create_future()
        result: dict[K, V] = {}
        if mine:
            try:
                result = await compute(list(mine))
                for key, future in mine.items():
                    if not future.done():
                        future.set_result(result[key])
            except BaseException as exc:
                shared = exc if isinstance(exc, Exception) else RuntimeError("computation was cancelled")
                for future in mine.values():
                    if not future.done():
                        future.set_exception(shared)
                        future.exception()  # mark retrieved: there may be no other waiter
                raise
            finally:
                for key in mine:
                    self._inflight.pop(key, None)
        if theirs:
            # shield: a waiter that gives up must not cancel the owner's shared future
            values = await asyncio.gather(*(asyncio.shield(f) for f in theirs.values()))
            result.update(zip(theirs, values))
        return result
