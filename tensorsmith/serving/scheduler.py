"""Continuous batching of completions: many requests share the model, one decoding step at a time.

A scheduler thread owns the language model. Between steps, new requests join the running batch
(each prefilled alone into its own KV cache) and finished ones leave it; each step decodes one
token for every running request in one batched call (``GPT.decode_step``), then samples each
with its own settings and generator and checks its own stop strings. A request whose context
has filled ``block_size`` is stepped alone with a full recompute, as ``generate_tokens`` does.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from tensorsmith.models.gpt import GPT, KVCache
from tensorsmith.serving.metrics import ServerMetrics
from tensorsmith.tasks.generation import SINGLE_THREAD_WIDTH, TextStream

__all__ = ["Completion", "DecodeScheduler", "Event"]


@dataclass
class Event:
    """What one step gave a request: new text, and whether (and why) it is finished."""

    text: str
    done: bool = False
    finish_reason: str | None = None  # "stop" (a stop string) or "length" (max_tokens)
    tokens: int = 0  # generated so far
    error: str | None = None


@dataclass
class Completion:
    """One request: prompt ids, sampling settings, stop strings, and where its events go."""

    ids: list[int]
    max_tokens: int
    temperature: float
    top_p: float | None
    generator: torch.Generator | None
    stream: TextStream
    emit: Callable[[Event], None]  # called from the scheduler thread
    cancelled: bool = False
    submitted: float = field(default_factory=time.monotonic)
    caches: list[KVCache] = field(default_factory=list)
    context: list[int] = field(default_factory=list)  # the last block_size + 1 tokens
    generated: int = 0
    finished: bool = False


class DecodeScheduler:
    """One per language model; ``submit`` from any thread."""

    def __init__(
        self, name: str, module: Any, metrics: ServerMetrics, max_streams: int, threads: int
    ) -> None:
        self.name, self.module, self.metrics = name, module, metrics
        self.threads = threads
        self.max_streams = max_streams
        self.block = module.config.block_size if isinstance(module, GPT) else module.block_size
        width = module.config.n_embd if isinstance(module, GPT) else SINGLE_THREAD_WIDTH + 1
        self.narrow = width <= SINGLE_THREAD_WIDTH
        self.inbox: queue.SimpleQueue[Completion | None] = queue.SimpleQueue()
        self.running: list[Completion] = []
        self.thread = threading.Thread(target=self._run, name=f"decode-{name}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        """Finish the running requests, then end the thread."""
        self.inbox.put(None)
        self.thread.join(timeout=60)

    def submit(self, completion: Completion) -> None:
        self.inbox.put(completion)

    # ------------------------------------------------------------------ the thread

    def _run(self) -> None:
        stopping = False
        while not (stopping and not self.running):
            if not self.running and not stopping:
                first = self.inbox.get()  # idle: wait for work
                if first is None:
                    return
                self._admit(first)
            while len(self.running) < self.max_streams and not stopping:
                try:
                    item = self.inbox.get_nowait()  # joins between steps
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
                else:
                    self._admit(item)
            self.metrics.queue_depth.labels(self.name).set(self.inbox.qsize())
            with self._threads():
                self._step()

    @contextlib.contextmanager
    def _threads(self) -> Iterator[None]:
        """One torch thread for a step of a narrow model: a few (B x C) products are too small
        to split, and handing them between threads costs more than it saves (measured in
        tasks/generation.py). The worker's own count (``threads``) is back after the step."""
        if not self.narrow:
            yield
            return
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(self.threads)

    def _admit(self, c: Completion) -> None:
        if c.cancelled:
            return
        if c.max_tokens == 0:
            c.emit(Event("", True, "length"))
            return
        try:
            if not hasattr(self.module, "decode_step"):
                self._alone(c)  # a decoder without batched steps: one request at a time
                return
            with torch.no_grad():
                c.caches = self.module.new_kv_caches()
                c.context = list(c.ids[-self.block :])
                logits = self.module(torch.tensor([c.context]), c.caches)[0, -1]  # prefill
            self._advance(c, logits)
        except Exception as exc:  # a failed request ends alone
            c.emit(Event("", True, error=f"{type(exc).__name__}: {exc}"))
            return
        if not c.finished:
            self.running.append(c)

    def _step(self) -> None:
        live = [c for c in self.running if not c.cancelled]
        cached = [c for c in live if c.caches[0].length < self.block]
        try:
            with torch.no_grad():
                if cached:
                    self.metrics.decode_batch.labels(self.name).observe(len(cached))
                    last = torch.tensor([c.context[-1] for c in cached])
                    logits = self.module.decode_step(last, [c.caches for c in cached])  # (B, V)
                    for c, row in zip(cached, logits, strict=True):
                        self._advance(c, row)
                full = [c for c in live if c not in cached]
                if full:  # contexts past block_size: recompute each one's last block, together
                    windows = torch.tensor([c.context[-self.block :] for c in full])  # (B, T)
                    logits = self.module(windows)[:, -1]  # (B, V)
                    for c, row in zip(full, logits, strict=True):
                        self._advance(c, row)
        except Exception as exc:
            for c in live:
                if not c.finished:
                    c.finished = True
                    c.emit(Event("", True, error=f"{type(exc).__name__}: {exc}"))
        self.running = [c for c in live if not c.finished]

    def _alone(self, c: Completion) -> None:
        tokens = self.module.generate_tokens(
            torch.tensor([c.ids[-self.block :]]),
            c.max_tokens,
            c.temperature,
            None,
            c.top_p,
            c.generator,
        )
        for token in tokens:
            self._push(c, token)
            if c.finished or c.cancelled:
                return

    def _advance(self, c: Completion, logits: torch.Tensor) -> None:
        """Sample the next token from logits (V,), decode it, tell the request."""
        self._push(c, GPT.sample(logits.float(), c.temperature, None, c.top_p, c.generator))

    def _push(self, c: Completion, token: int) -> None:
        c.generated += 1
        c.context = [*c.context[-self.block :], token]
        if c.generated == 1:
            self.metrics.first_token.labels(self.name).observe(time.monotonic() - c.submitted)
        text = c.stream.add(token)
        done = c.stream.stopped or c.generated >= c.max_tokens
        if done and not c.stream.stopped:
            text += c.stream.finish()
        if done:
            c.finished = True
            self._finished(c)
        if text or done:
            reason = ("stop" if c.stream.stopped else "length") if done else None
            c.emit(Event(text, done, reason, c.generated))

    def _finished(self, c: Completion) -> None:
        seconds = max(time.monotonic() - c.submitted, 1e-9)
        self.metrics.tokens_per_second.labels(self.name).observe(c.generated / seconds)
        self.metrics.tokens.labels(self.name).inc(c.generated)
