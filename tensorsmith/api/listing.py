"""``models``: the store's versions, without importing torch (the command answers at once)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tensorsmith.errors import StoreError
from tensorsmith.store.aliases import lineage as chain
from tensorsmith.store.aliases import set_alias
from tensorsmith.store.artifact import list_models, resolve, store_root
from tensorsmith.tasks.files import read_json_file


def models(name: str | None = None, store: str | Path | None = None) -> list[dict[str, Any]]:
    """The stored versions, newest last."""
    return list_models(store_root(store), name)


def promote(ref: str, alias: str = "production", store: str | Path | None = None) -> dict[str, Any]:
    """Point ``alias`` of a model at the version ``ref`` names; returns the model's aliases."""
    path = resolve(ref, store_root(store))
    config = read_json_file(path / "config.json")  # a damaged version is not promoted
    run = read_json_file(path / "run.json")
    gate = run.get("gate") if isinstance(run, dict) else None
    if not isinstance(config, dict) or "version" not in config:
        raise StoreError(f"{path} is not a version folder of the store; promote NAME@N")
    return {
        "name": config["name"],
        "version": int(config["version"]),
        "aliases": set_alias(path.parent, alias, int(config["version"])),
        "gate": gate,
    }


def lineage(ref: str, store: str | Path | None = None) -> list[dict[str, Any]]:
    """The version ``ref`` names, then its parent, its parent's parent … down to the start."""
    return chain(resolve(ref, store_root(store)))
