"""Requests by endpoint and status, and their latency, measured as ASGI middleware.

The endpoint is the route's path template (``/v1/models/{name}/predict``), so a label never
holds a value from a request; a path no route matched counts as ``other``. A streamed response
is timed to its last byte.
"""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tensorsmith.serving.metrics import ServerMetrics

__all__ = ["RequestMetrics"]


class RequestMetrics:
    def __init__(self, app: ASGIApp, metrics: ServerMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def watched(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, watched)
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or "other"
            if endpoint.startswith("/static"):
                endpoint = "/static"
            self.metrics.requests.labels(endpoint, str(status)).inc()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - start)
