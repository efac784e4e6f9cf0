"""Prometheus metrics, defined once; modules record through the small helpers below."""

from __future__ import annotations

from collections import Counter as _Tally
from collections.abc import Sequence

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics

disable_created_metrics()  # the *_created series double the output and nobody graphs them

REQUESTS = Counter("colecache_http_requests_total", "HTTP requests", ["method", "route", "status"])
LATENCY = Histogram(
    "colecache_http_request_seconds",
    "HTTP request latency",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
CACHE = Counter("colecache_cache_lookups_total", "Embedding cache lookups by tier and result", ["tier", "result"])
HOT_TIER_ERRORS = Counter(
    "colecache_hot_tier_errors_total",
    "Hot-tier operations that failed and were served as misses / skipped",
    ["tier", "op"],
)
HOT_TIER_SKIPPED = Counter(
    "colecache_hot_tier_skipped_total", "Hot-tier operations skipped while its circuit breaker was open", ["tier", "op"]
)
HOT_TIER_AVAILABLE = Gauge(
    "colecache_hot_tier_available", "1 while the hot tier is in use, 0 while it is skipped", ["tier"]
)
QUEUE_DEPTH = Gauge("colecache_queue_depth", "Items waiting for or inside a model forward")
BATCH_SIZE = Histogram("colecache_batch_size", "Items per model forward", buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
BATCH_TOKENS = Histogram(
    "colecache_batch_tokens",
    "Padded tokens per model forward",
    buckets=(256, 1024, 2048, 4096, 8192, 16384, 32768, 65536),
)
FORWARD_SECONDS = Histogram(
    "colecache_model_forward_seconds",
    "Model forward time per batch",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
FIT_SECONDS = Histogram(
    "colecache_surrogate_fit_seconds", "Surrogate fit time", buckets=(0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60)
)
DEVICE_FORWARDS = Counter("colecache_device_forwards_total", "Model forwards per device replica", ["device"])
DEVICE_ITEMS = Counter("colecache_device_items_total", "Items embedded per device replica", ["device"])
DEVICE_BUSY = Counter(
    "colecache_device_busy_seconds_total", "Seconds each device replica spent in forwards", ["device"]
)
DEVICE_UP = Gauge("colecache_device_up", "1 while a device replica is in rotation, 0 once taken out", ["device"])
PREDICTIONS_NOT_RECORDED = Counter(
    "colecache_predictions_not_recorded_total",
    "Out-of-sample predictions answered but not kept for the study report (the SQL write failed)",
)


def record_lookup(sources: Sequence[str | None]) -> None:
    """Count one batch lookup: hits per answering tier; misses went through every tier."""
    tally = _Tally(s or "miss" for s in sources)
    for tier, n in tally.items():
        if tier == "miss":
            CACHE.labels("all", "miss").inc(n)
        else:
            CACHE.labels(tier, "hit").inc(n)


def record_replica(replica, size: int, seconds: float) -> None:
    """Count one successful forward on a device replica (embedding.queue.Replica)."""
    DEVICE_FORWARDS.labels(replica.name).inc()
    DEVICE_ITEMS.labels(replica.name).inc(size)
    DEVICE_BUSY.labels(replica.name).inc(seconds)


def record_batch(size: int, tokens: int, seconds: float) -> None:
    BATCH_SIZE.observe(size)
    BATCH_TOKENS.observe(tokens)
    FORWARD_SECONDS.observe(seconds)
