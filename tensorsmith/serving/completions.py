"""``POST /v1/completions``: OpenAI's completions API over the decode scheduler.

Each prompt x ``n`` becomes one ``Completion`` with its own generator (``seed + index``) and stop
strings. Events come back from the scheduler thread into an asyncio queue. Streaming answers
server-sent events, ``data: {chunk}``, and always ends with ``data: [DONE]``, after an error too.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import torch
from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from tensorsmith.serving.batcher import QueueFull
from tensorsmith.serving.scheduler import Completion, Event
from tensorsmith.serving.schemas import BadRequest, CompletionRequest, CompletionResponse
from tensorsmith.serving.security import error_body
from tensorsmith.tasks.generation import GenerationNotes, TextStream

if TYPE_CHECKING:
    from tensorsmith.serving.app import Server

__all__ = ["completion_routes"]

MAX_STOPS = 4  # as OpenAI


def completion_routes(server: Server) -> APIRouter:
    router = APIRouter(prefix="/v1")

    @router.post(
        "/completions",
        response_model=CompletionResponse,
        summary="OpenAI-compatible completions (language models); `stream` answers SSE",
        responses={200: {"content": {"text/event-stream": {}}}},
    )
    async def completions(body: CompletionRequest) -> Any:
        served = server.model(body.model)
        if not served.generates:
            raise BadRequest(
                f"{body.model} is a {served.task} model: use /v1/models/{body.model}/predict",
                "model",
            )
        if body.max_tokens > server.config.max_tokens:
            raise BadRequest(
                f"max_tokens {body.max_tokens} is past this server's limit of "
                f"{server.config.max_tokens}",
                "max_tokens",
            )
        run = _Run(server, body)
        if body.stream:
            return StreamingResponse(run.events(), media_type="text/event-stream")
        try:
            return await run.collect()
        finally:
            run.cancel()

    return router


class _Run:
    """The completions of one request: submitted at once, followed to the end."""

    def __init__(self, server: Server, body: CompletionRequest) -> None:
        self.body = body
        self.model = body.model
        self.deadline = time.monotonic() + server.config.timeout
        self.id = f"cmpl-{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())
        served = server.model(body.model)
        task = served.predictor.task
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        if not prompts:
            raise BadRequest("prompt is an empty list; give a string or strings", "prompt")
        stops = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
        if len(stops) > MAX_STOPS:
            raise BadRequest(f"at most {MAX_STOPS} stop strings, got {len(stops)}", "stop")
        scheduler = server.schedulers[body.model]
        if scheduler.inbox.qsize() >= server.config.max_queue:
            raise QueueFull(body.model)
        loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[tuple[int, Event]] = asyncio.Queue()
        self.notes = GenerationNotes()
        self.prompt_tokens = 0
        self.runs: list[Completion] = []
        for p, prompt in enumerate(prompts):
            ids = task.prompt_ids(prompt, self.notes)  # type: ignore[attr-defined]
            for i in range(body.n):
                index = p * body.n + i
                self.prompt_tokens += len(ids)
                self.runs.append(self._completion(ids, index, stops, loop, task))
        for c in self.runs:
            scheduler.submit(c)

    def _completion(
        self, ids: list[int], index: int, stops: list[str], loop: Any, task: Any
    ) -> Completion:
        seed = self.body.seed
        generator = torch.Generator().manual_seed(seed + index) if seed is not None else None
        top_p = self.body.top_p if self.body.top_p < 1.0 else None

        def emit(event: Event) -> None:
            loop.call_soon_threadsafe(self.queue.put_nowait, (index, event))

        return Completion(
            ids,
            self.body.max_tokens,
            self.body.temperature,
            top_p,
            generator,
            TextStream(task.tokenizer, stops),
            emit,
        )

    def cancel(self) -> None:
        for c in self.runs:
            c.cancelled = True

    async def _follow(self) -> AsyncIterator[tuple[int, Event]]:
        left = len(self.runs)
        while left:
            wait = self.deadline - time.monotonic()
            if wait <= 0:
                raise TimeoutError
            index, event = await asyncio.wait_for(self.queue.get(), wait)
            if event.done:
                left -= 1
            yield index, event

    async def collect(self) -> dict[str, Any]:
        texts = ["" for _ in self.runs]
        reasons: list[str | None] = [None for _ in self.runs]
        generated = 0
        async for index, event in self._follow():
            if event.error:
                raise RuntimeError(f"generation failed: {event.error}")
            texts[index] += event.text
            if event.done:
                reasons[index], generated = event.finish_reason, generated + event.tokens
        choices = [
            {"text": t, "index": i, "logprobs": None, "finish_reason": r}
            for i, (t, r) in enumerate(zip(texts, reasons, strict=True))
        ]
        return {**self._head(), "choices": choices, "usage": self._usage(generated)}

    async def events(self) -> AsyncIterator[str]:
        generated = 0
        try:
            async for index, event in self._follow():
                if event.error:
                    yield _sse(error_body(f"generation failed: {event.error}", 500))
                    break
                generated += event.tokens if event.done else 0
                choice = {
                    "text": event.text,
                    "index": index,
                    "logprobs": None,
                    "finish_reason": event.finish_reason,
                }
                yield _sse({**self._head(), "choices": [choice]})
            options = self.body.stream_options or {}
            if options.get("include_usage"):
                yield _sse({**self._head(), "choices": [], "usage": self._usage(generated)})
        except TimeoutError:  # the stream has started: the error is an event, then [DONE]
            yield _sse(error_body("the completion took longer than the server's --timeout", 504))
        except Exception as exc:
            yield _sse(error_body(f"{type(exc).__name__}: {exc}", 500))
        finally:
            self.cancel()
        yield "data: [DONE]\n\n"

    def _head(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "text_completion",
            "created": self.created,
            "model": self.model,
        }

    def _usage(self, generated: int) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": generated,
            "total_tokens": self.prompt_tokens + generated,
        }


def _sse(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data)}\n\n"
