"""Batching across requests: concurrent predict requests for one model share a forward pass.

Each request is checked and encoded on its own (``Task.prepare_request``) before it joins the
queue, so a bad request fails alone with its own 4xx. The batcher waits up to ``max_wait_s`` for
more requests, up to ``max_rows`` rows, runs ``Task.predict_prepared`` once in the model's own
thread, and hands each request its own frame. Should a batch still fail, each of its requests
runs alone, so one request's failure never becomes another's.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from tensorsmith.serving.metrics import ServerMetrics

__all__ = ["MicroBatcher", "QueueFull"]

Run = Callable[[list[Any]], list[Any]]  # prepared requests → one result per request


class QueueFull(Exception):
    """The model's queue holds ``max_queue`` requests: the server answers 503."""


@dataclass
class _Item:
    prepared: Any
    rows: int
    future: asyncio.Future[Any] = field(repr=False)


class MicroBatcher:
    """One per model; ``submit`` from the event loop, forward passes in one worker thread."""

    def __init__(
        self,
        name: str,
        run: Run,
        metrics: ServerMetrics,
        max_rows: int = 32,
        max_wait_s: float = 0.005,
        max_queue: int = 256,
    ) -> None:
        self.name, self.run, self.metrics = name, run, metrics
        self.max_rows, self.max_wait_s, self.max_queue = max_rows, max_wait_s, max_queue
        self.queue: asyncio.Queue[_Item] = asyncio.Queue()
        self.executor = ThreadPoolExecutor(1, thread_name_prefix=f"batch-{name}")
        self.task: asyncio.Task[None] | None = None
        self.held: _Item | None = None  # took too many rows for the last batch: heads the next

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        self.executor.shutdown(wait=True)

    async def submit(self, prepared: Any, rows: int) -> Any:
        """The request's result once its batch ran; QueueFull when the queue is full."""
        if self.queue.qsize() >= self.max_queue:
            raise QueueFull(self.name)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.queue.put_nowait(_Item(prepared, rows, future))
        self.metrics.queue_depth.labels(self.name).set(self.queue.qsize())
        return await future

    async def _loop(self) -> None:
        while True:
            batch = await self._gather()
            batch = [item for item in batch if not item.future.done()]  # timed out meanwhile
            self.metrics.queue_depth.labels(self.name).set(self.queue.qsize())
            if not batch:
                continue
            self.metrics.batch_size.labels(self.name).observe(sum(i.rows for i in batch))
            loop = asyncio.get_running_loop()
            results = await loop.run_in_executor(self.executor, self._run_batch, batch)
            for item, (ok, value) in zip(batch, results, strict=True):
                if item.future.done():
                    continue
                if ok:
                    item.future.set_result(value)
                else:
                    item.future.set_exception(value)

    async def _gather(self) -> list[_Item]:
        """The first waiting request, then whatever else arrives within ``max_wait_s``."""
        first, self.held = self.held, None
        batch = [first if first is not None else await self.queue.get()]
        rows = batch[0].rows
        deadline = time.monotonic() + self.max_wait_s
        while rows < self.max_rows:
            if self.queue.empty():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self.queue.get(), left)
                except TimeoutError:
                    break
            else:
                item = self.queue.get_nowait()
            if rows + item.rows > self.max_rows:
                self.held = item
                break
            batch.append(item)
            rows += item.rows
        return batch

    def _run_batch(self, batch: list[_Item]) -> list[tuple[bool, Any]]:
        try:
            return [(True, r) for r in self.run([item.prepared for item in batch])]
        except Exception as exc:
            if len(batch) == 1:
                return [(False, exc)]
            return [self._run_one(item) for item in batch]

    def _run_one(self, item: _Item) -> tuple[bool, Any]:
        try:
            return True, self.run([item.prepared])[0]
        except Exception as exc:
            return False, exc
