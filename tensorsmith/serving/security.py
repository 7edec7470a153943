"""The API key and the request body limit.

The key is OpenAI's ``Authorization: Bearer KEY``, compared in constant time, on every ``/v1``
route (a router dependency, so the OpenAPI page shows it); health, readiness, metrics and the
page are open. The body limit is ASGI middleware: it counts the bytes as they arrive, so neither a
false ``content-length`` nor a chunked body gets past it.
"""

from __future__ import annotations

import hmac
import json
from typing import Any

from fastapi import Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tensorsmith.serving.schemas import BadRequest

__all__ = ["BodyLimit", "bearer", "check_key", "error_body"]

bearer = HTTPBearer(auto_error=False, description="the server's --api-key, when it has one")


def error_body(message: str, status: int, field: str | None = None) -> dict[str, Any]:
    """OpenAI's error shape, which its client reads."""
    kind = "invalid_request_error" if status < 500 else "server_error"
    return {"error": {"message": message, "type": kind, "param": field, "code": status}}


def check_key(
    key: str | None, request: Request, given: HTTPAuthorizationCredentials | None
) -> None:
    if key is None:
        return
    token = given.credentials if given is not None else ""
    if not hmac.compare_digest(token.encode(), key.encode()):
        raise BadRequest(
            "missing or wrong API key: send the header `Authorization: Bearer KEY`",
            "authorization",
            status=401,
        )


class _TooLarge(Exception):
    pass


class BodyLimit:
    """Answers 413 to a request body past ``max_body`` bytes."""

    def __init__(self, app: ASGIApp, max_body: int) -> None:
        self.app, self.max_body = app, max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            await self._refuse(send)
            return
        seen = 0
        started = False

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_body:
                raise _TooLarge
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except _TooLarge:
            if not started:
                await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        body = json.dumps(
            error_body(f"request body is larger than {self.max_body} bytes", 413, "body")
        ).encode()
        headers = [(b"content-type", b"application/json"), (b"connection", b"close")]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})
