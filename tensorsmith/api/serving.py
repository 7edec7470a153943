"""``tensorsmith serve``: models from the store behind HTTP (serving/ does the work)."""

from __future__ import annotations

import os
from pathlib import Path

from tensorsmith.errors import RecipeError
from tensorsmith.serving.config import ENV, ServeConfig, threads_per_worker
from tensorsmith.serving.loaded import resolve_ref
from tensorsmith.store.artifact import store_root

__all__ = ["serve"]


def serve(config: ServeConfig, store: str | Path | None = None) -> None:
    """Check the models resolve (a wrong name fails now, not in a worker), then run uvicorn.

    ``config.workers`` processes, each with cores / workers torch threads; each loads every
    model. Blocks until the server is stopped (Ctrl-C or SIGTERM finish in-flight requests).
    """
    import uvicorn

    if not config.models:
        raise RecipeError("name at least one model: `tensorsmith serve NAME [NAME@N …]`")
    if config.workers < 1:
        raise RecipeError(f"--workers must be >= 1, got {config.workers}")
    root = store_root(store)
    for ref in config.models:
        resolve_ref(ref, root)
    config.store = str(root.resolve())
    config.api_key = config.api_key or os.environ.get("TENSORSMITH_API_KEY") or None
    config.threads = threads_per_worker(config.workers, config.threads)
    os.environ[ENV] = config.to_json()
    # the tokenizers' own thread pool would go past the worker's share of the cores
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    uvicorn.run(
        "tensorsmith.serving.app:app_from_env",
        factory=True,
        host=config.host,
        port=config.port,
        workers=config.workers,
        timeout_graceful_shutdown=int(config.timeout) + 5,
        log_level="info",
    )
