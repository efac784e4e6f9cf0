"""Request ids, timing headers, Prometheus request metrics and one JSON access-log line per request."""

from __future__ import annotations

import logging
import time
import uuid

from fastapi import APIRouter, Depends
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import metrics
from ..logging import request_id
from .deps import get_services
from .state import Services

log = logging.getLogger("colecache.access")


class ObservabilityMiddleware:
    """Outermost layer: sees every request, including those refused by auth or body limits."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        rid = headers.get(b"x-request-id", b"").decode("latin-1")[:128] or uuid.uuid4().hex
        token = request_id.set(rid)
        started = time.perf_counter()
        status = 500

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                elapsed_ms = (time.perf_counter() - started) * 1000
                message.setdefault("headers", [])
                message["headers"] = [
                    *message["headers"],
                    (b"x-request-id", rid.encode("latin-1")),
                    (b"server-timing", f"app;dur={elapsed_ms:.2f}".encode()),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            seconds = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            method = scope["method"]
            metrics.REQUESTS.labels(method, route, str(status)).inc()
            metrics.LATENCY.labels(method, route).observe(seconds)
            log.info(
                "%s %s %s",
                method,
                route,
                status,
                extra={
                    "method": method,
                    "path": scope["path"],
                    "status": status,
                    "duration_ms": round(seconds * 1000, 2),
                },
            )
            request_id.reset(token)


router = APIRouter(tags=["operations"])


@router.get(
    "/metrics",
    summary="Prometheus metrics of this process (with API keys set, it needs one unless COLECACHE_METRICS_AUTH=false)",
    response_class=PlainTextResponse,
    responses={200: {"description": "Prometheus text exposition format", "content": {"text/plain": {}}}},
)
async def prometheus_metrics(services: Services = Depends(get_services)) -> Response:
    if services.queue is not None:
        metrics.QUEUE_DEPTH.set(services.queue.depth)
        for replica in services.queue.replicas:
            metrics.DEVICE_UP.labels(replica.name).set(1 if replica.up else 0)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
