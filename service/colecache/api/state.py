"""Everything a running server holds, built in the lifespan and reached through `app.state.services`."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import anyio.to_thread

from .. import metrics
from ..cache.durable import SqlTier
from ..cache.hot import HotTier, MemoryTier, RedisTier
from ..cache.tiered import TieredCache
from ..db.engine import make_engine, migrate
from ..embedding.backend import TransformerBackend
from ..embedding.options import EmbedOptions
from ..embedding.queue import BatchQueue
from ..pipeline import EmbedPipeline
from ..settings import Settings
from ..studies.repository import StudyRepository
from ..studies.service import StudyService

log = logging.getLogger(__name__)


@dataclass
class Services:
    settings: Settings
    cache: TieredCache
    backend: TransformerBackend | None = None
    queue: BatchQueue | None = None
    pipeline: EmbedPipeline | None = None
    studies: StudyService | None = None
    startup_error: str | None = None
    loader: asyncio.Task | None = field(default=None, repr=False)

    @property
    def ready(self) -> bool:
        return self.pipeline is not None


def make_hot_tier(settings: Settings) -> HotTier:
    if settings.redis_url:
        return RedisTier(settings.redis_url, settings.redis_prefix, settings.redis_ttl_s)
    return MemoryTier(settings.memory_cache_mb * 1024 * 1024)


async def open_stores(settings: Settings) -> TieredCache:
    url = settings.resolved_database_url
    if settings.migrate_on_start:
        await anyio.to_thread.run_sync(migrate, url)
    return TieredCache(make_hot_tier(settings), SqlTier(make_engine(url)))


def default_embed_options(settings: Settings) -> EmbedOptions:
    return EmbedOptions(
        pooling=settings.pooling, layer=settings.layer, max_length=settings.max_length, normalize=settings.normalize
    )


async def load_model(services: Services, backend: TransformerBackend | None = None) -> None:
    """Load and warm the model off the event loop, then open the pipeline (the server is ready)."""
    settings = services.settings
    try:
        if backend is None:
            backend = await anyio.to_thread.run_sync(TransformerBackend.load, settings)
        await anyio.to_thread.run_sync(backend.warmup)
        queue = BatchQueue(
            backend.embed,
            max_batch_tokens=settings.max_batch_tokens,
            max_batch_size=settings.max_batch_size,
            batch_forward_cost=settings.batch_forward_cost,
            batch_wait_ms=settings.batch_wait_ms,
            max_queue_items=settings.max_queue_items,
            on_batch=metrics.record_batch,
        )
        queue.start()
        services.backend, services.queue = backend, queue
        pipeline = EmbedPipeline(backend, queue, services.cache, default_embed_options(settings))
        services.studies = StudyService(
            StudyRepository(services.cache.durable.engine), pipeline, settings.max_code_chars
        )
        services.pipeline = pipeline
        log.info("ready: %s (%s, dim %d)", backend.identity.model, backend.identity.revision, backend.identity.dim)
    except Exception as exc:  # keep the process up so /ready can say why
        services.startup_error = f"{type(exc).__name__}: {exc}"
        log.exception("model failed to load")


async def shutdown(services: Services) -> None:
    """Stop taking work, finish the batches in flight, close the stores."""
    if services.loader is not None and not services.loader.done():
        services.loader.cancel()
    queue, services.pipeline, services.studies = services.queue, None, None
    if queue is not None:
        await queue.close(drain=True)
    await services.cache.close()
