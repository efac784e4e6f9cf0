"""Everything a running server holds, built in the lifespan and reached through `app.state.services`."""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import anyio.to_thread

from .. import metrics
from ..cache.durable import SqlTier
from ..cache.hot import HotTier, MemoryTier, RedisTier
from ..cache.tiered import TieredCache
from ..db.engine import make_engine, migrate
from ..embedding.backend import TransformerBackend, device_name
from ..embedding.options import EmbedOptions
from ..embedding.queue import BatchQueue, Replica
from ..pipeline import EmbedPipeline
from ..proxies.measure import ProxyMeasurer
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
    proxies: ProxyMeasurer | None = None  # zero-cost proxies: needs the stores, not the model
    startup_error: str | None = None
    loader: asyncio.Task | None = field(default=None, repr=False)
    stopping: bool = False  # the server was told to stop (SIGTERM / SIGINT)
    schema_ok: bool = False  # the database was found migrated to this code's head (see /ready)

    @property
    def ready(self) -> bool:
        return self.pipeline is not None

    def begin_shutdown(self) -> None:
        """The server stops taking connections and waits `timeout_graceful_shutdown_s` for the requests in
        flight. Plan to give up the queued work shortly before that wait ends (see `give_up_queued_work`)."""
        if self.stopping:
            return
        self.stopping = True
        delay = drain_deadline_s(self.settings.timeout_graceful_shutdown_s)
        log.info("shutting down: queued embeddings not computed within %.1f s will be answered with 503", delay)
        asyncio.get_running_loop().call_later(delay, self.give_up_queued_work)

    def give_up_queued_work(self) -> None:
        """Fail every item not yet computed, so its request answers 503 with Retry-After while it still can.

        Without this, the server cancels such requests when its grace period ends and the client gets a
        bare 500 (or a reset). Vectors already computed were committed as their forwards finished."""
        if self.queue is None:
            return
        failed = self.queue.abandon(
            "server shutting down: not computed within the shutdown grace period; retry "
            "(the vectors computed so far are stored)"
        )
        if failed:
            log.warning("shutdown grace period ending: %d queued item(s) answered with 503", failed)


def drain_deadline_s(grace_s: float) -> float:
    """Seconds after the stop signal at which queued work is given up: a margin (10% of the grace period,
    0.5 to 3 s) before the server cancels what is still running, so the 503s are written first."""
    return max(0.0, grace_s - min(3.0, max(0.5, 0.1 * grace_s)))


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def on_stop_signal(callback: Callable[[], None]) -> Callable[[], None]:
    """Run `callback` in the event loop when the server receives SIGTERM or SIGINT, then its own handler.

    uvicorn installs its handlers (with `signal.signal`) before the app starts and has no hook for the
    start of a shutdown, so the app chains onto them; this works with `--workers` too (each worker has
    its own server and app). Returns a function that puts the previous handlers back."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None  # signals reach only the main thread (an app run in a test client's thread)
    loop = asyncio.get_running_loop()
    installed: dict[int, tuple[Callable, Callable]] = {}
    for sig in STOP_SIGNALS:
        previous = signal.getsignal(sig)
        if not callable(previous):  # SIG_DFL / SIG_IGN: no server handler to chain onto
            continue

        def chained(signum, frame, _previous=previous):
            try:
                loop.call_soon_threadsafe(callback)
            except RuntimeError:  # the loop is closed: nothing left to drain
                pass
            _previous(signum, frame)

        signal.signal(sig, chained)
        installed[sig] = (chained, previous)

    def restore() -> None:
        for sig, (chained, previous) in installed.items():
            if signal.getsignal(sig) is chained:
                signal.signal(sig, previous)

    return restore


def make_hot_tier(settings: Settings) -> HotTier:
    if settings.redis_url:
        return RedisTier(
            settings.redis_url,
            settings.redis_prefix,
            settings.redis_ttl_s,
            timeout_s=settings.redis_timeout_s,
            cooldown_s=settings.redis_cooldown_s,
        )
    return MemoryTier(settings.memory_cache_mb * 1024 * 1024)


async def open_stores(settings: Settings) -> TieredCache:
    url = settings.resolved_database_url
    if settings.migrate_on_start:
        await anyio.to_thread.run_sync(migrate, url)
    return TieredCache(make_hot_tier(settings), SqlTier(make_engine(url)))


def make_proxy_measurer(settings: Settings, cache: TieredCache) -> ProxyMeasurer:
    return ProxyMeasurer(
        cache, workers=settings.proxy_workers, batch_size=settings.proxy_batch_size, inputs=settings.proxy_inputs
    )


def default_embed_options(settings: Settings) -> EmbedOptions:
    return EmbedOptions(
        pooling=settings.pooling, layer=settings.layer, max_length=settings.max_length, normalize=settings.normalize
    )


async def load_model(services: Services, backend: TransformerBackend | None = None) -> None:
    """Load and warm the model on every device off the event loop (replicas in parallel), then open the
    pipeline: the server is ready only when all replicas are."""
    settings = services.settings
    try:
        if backend is None:
            backends = await anyio.to_thread.run_sync(TransformerBackend.load_replicas, settings)
        else:
            backends = [backend]
        await asyncio.gather(*(anyio.to_thread.run_sync(b.warmup) for b in backends))
        devices = [b.device for b in backends]
        replicas = [Replica(device_name(b.device, i, devices), b.embed) for i, b in enumerate(backends)]
        for replica in replicas:
            metrics.DEVICE_UP.labels(replica.name).set(1)
        backend = backends[0]  # tokenizer and identity (the same on every replica)
        queue = BatchQueue(
            replicas,
            max_batch_tokens=settings.max_batch_tokens,
            max_batch_size=settings.max_batch_size,
            batch_forward_cost=settings.batch_forward_cost,
            batch_wait_ms=settings.batch_wait_ms,
            max_queue_items=settings.max_queue_items,
            on_batch=metrics.record_batch,
            on_replica=metrics.record_replica,
        )
        queue.start()
        services.backend, services.queue = backend, queue
        pipeline = EmbedPipeline(backend, queue, services.cache, default_embed_options(settings))
        services.studies = StudyService(
            StudyRepository(services.cache.durable.engine),
            pipeline,
            settings.max_code_chars,
            reference_recheck_s=settings.reference_recheck_s,
            proxies=services.proxies,
            max_pending_predictions=settings.max_pending_predictions,
        )
        services.pipeline = pipeline
        log.info(
            "ready: %s (%s, dim %d), backend %s, on %s",
            backend.identity.model,
            backend.identity.revision,
            backend.identity.dim,
            backend.identity.backend,
            ", ".join(r.name for r in replicas),
        )
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
    if services.proxies is not None:
        services.proxies.close()
    await services.cache.close()
