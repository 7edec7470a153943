"""What ``tensorsmith serve`` was asked for, passed to each worker process as JSON."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field

__all__ = ["ENV", "ServeConfig", "threads_per_worker"]

ENV = "TENSORSMITH_SERVE_CONFIG"  # how `--workers N` hands the settings to each process


@dataclass
class ServeConfig:
    models: list[str]  # NAME, NAME@N, NAME@alias or a version folder
    store: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    max_batch_size: int = 32  # predict rows gathered into one forward pass
    max_wait_ms: float = 5.0  # how long a batch waits for more requests
    max_queue: int = 256  # waiting requests per model; past it: 503 with Retry-After
    timeout: float = 60.0  # seconds per request; past it: 504
    max_body: int = 1 << 20  # bytes; past it: 413
    max_rows: int = 1024  # rows in one predict request; past it: 422
    max_tokens: int = 2048  # the most `max_tokens` a completion may ask for
    max_streams: int = 32  # completions decoded together in one step
    api_key: str | None = field(default=None, repr=False)
    threads: int | None = None  # torch intra-op threads per worker (default: cores / workers)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ServeConfig:
        return cls(**json.loads(text))


def threads_per_worker(workers: int, threads: int | None = None) -> int:
    """Workers x threads never exceeds the cores this process may use."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    most = max(1, (cores or 1) // max(1, workers))
    return min(threads, most) if threads else most
