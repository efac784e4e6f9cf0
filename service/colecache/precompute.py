"""Embed a whole search space into the service's own cache: resumable, length-sorted, several read-outs per forward."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import anyio.to_thread
from colecache_client.spaces import get_space

from .api.state import Services
from .cache.keys import cache_key
from .cache.record import EmbeddingRecord
from .embedding.options import EmbedOptions
from .embedding.queue import plan_batches
from .render import RenderOptions, render
from .specs import ArchSpec


@dataclass
class PrecomputeReport:
    cells: int
    already_cached: int
    computed: int
    seconds: float
    fingerprints: list[str]

    @property
    def cells_per_second(self) -> float:
        return self.computed / self.seconds if self.seconds > 0 else 0.0


async def precompute_space(
    services: Services,
    space_name: str,
    render_options: RenderOptions,
    readouts: Sequence[EmbedOptions],
    *,
    on_progress: Callable[[int], None] | None = None,
    on_total: Callable[[int], None] | None = None,
    limit: int | None = None,
    archs: Sequence | None = None,
) -> PrecomputeReport:
    """Make sure every cell of the space is cached under every read-out; compute only what is missing.

    Safe to stop and rerun: finished batches are committed, and the next run starts by asking SQL
    which keys exist. All read-outs must share max_length (they share one tokenization).
    `limit` takes only the first cells of the space's enumeration (for smoke runs and tests);
    `archs` replaces the enumeration (spaces too large to enumerate: a candidate pool).
    """
    started = time.perf_counter()
    pipeline, backend, cache = services.pipeline, services.backend, services.cache
    fingerprints = [pipeline.readout(options).fingerprint for options in readouts]
    if len({fp.max_length for fp in fingerprints}) != 1:
        raise ValueError("all read-outs of one precompute run must share max_length")
    space = get_space(space_name)
    cells = list(archs if archs is not None else space.all_cells())[:limit]
    rendered = [render(ArchSpec(space_name, cell), render_options) for cell in cells]
    # Canonical rendering maps isomorphic cells onto one text: embed each distinct text once.
    rendered = list({(r.renderer_version, r.code): r for r in rendered}.values())
    keys = [[cache_key(fp.id, r.renderer_version, r.code) for r in rendered] for fp in fingerprints]

    done = [await anyio.to_thread.run_sync(cache.durable.existing, fp_keys) for fp_keys in keys]
    todo = [i for i in range(len(rendered)) if any(keys[f][i] not in done[f] for f in range(len(fingerprints)))]
    if on_total is not None:
        on_total(len(todo))
    tokens = await anyio.to_thread.run_sync(
        backend.tokenize, [rendered[i].code for i in todo], fingerprints[0].max_length
    )
    settings = services.settings
    batches = plan_batches(
        [t.n_tokens for t in tokens], settings.max_batch_tokens, settings.max_batch_size, settings.batch_forward_cost
    )
    specs = [(fp.pooling, fp.layer, fp.normalize) for fp in fingerprints]
    for batch in batches:
        batch_tokens = [tokens[j] for j in batch]
        vectors = await anyio.to_thread.run_sync(backend.embed_readouts, batch_tokens, specs)
        for f, fp in enumerate(fingerprints):
            rows = [
                (keys[f][todo[j]], EmbeddingRecord(vectors[f][n], batch_tokens[n].n_tokens, batch_tokens[n].truncated))
                for n, j in enumerate(batch)
            ]
            versions = [rendered[todo[j]].renderer_version for j in batch]
            await cache.put_many(rows, fp.as_dict(), versions)
        if on_progress is not None:
            on_progress(len(batch))
    return PrecomputeReport(
        cells=len(rendered),
        already_cached=len(rendered) - len(todo),
        computed=len(todo),
        seconds=time.perf_counter() - started,
        fingerprints=[fp.id for fp in fingerprints],
    )
