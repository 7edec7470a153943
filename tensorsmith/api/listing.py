"""``models``: the store's versions, without importing torch (the command answers at once)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tensorsmith.store.artifact import list_models, store_root


def models(name: str | None = None, store: str | Path | None = None) -> list[dict[str, Any]]:
    """The stored versions, newest last."""
    return list_models(store_root(store), name)
