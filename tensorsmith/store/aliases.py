"""Aliases (``production`` and any name) and lineage of the versions in a store.

``<store>/<name>/aliases.json`` maps an alias to a version (``{"production": 3}``); it is
written atomically (a temporary file, then ``os.replace``), so a reader sees the old map or the
new one, never half of one. ``NAME@alias`` resolves wherever ``NAME@3`` does. A version's
``run.json`` names its parent; following parents gives the lineage down to the pretrained model
(or the Hugging Face checkpoint) it started from.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from tensorsmith.errors import ModelNotFoundError, RecipeError, StoreError

__all__ = ["ALIAS", "lineage", "read_aliases", "set_alias"]

ALIAS = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*$")  # not a number: those are versions


def read_aliases(folder: Path) -> dict[str, int]:
    """The aliases of one model (``<store>/<name>``); an empty map when it has none."""
    path = folder / "aliases.json"
    if not path.is_file():
        return {}
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return {str(k): int(v) for k, v in raw.items()}
    except (ValueError, AttributeError, TypeError) as exc:
        raise StoreError(
            f"{path} is damaged ({exc}); delete it and set the aliases again with "
            "`tensorsmith promote NAME@N --alias A`"
        ) from None


def set_alias(folder: Path, alias: str, version: int) -> dict[str, int]:
    """Point ``alias`` at ``version`` (atomically) and return the new map."""
    if not ALIAS.match(alias):
        raise RecipeError(
            f"alias {alias!r} is not a valid name: it starts with a letter and holds letters, "
            "digits, '_', '.' or '-' (a number would read as a version)"
        )
    if not (folder / str(version)).is_dir():
        raise ModelNotFoundError(
            f"model '{folder.name}' has no version {version} in {folder.parent}"
        )
    aliases = {**read_aliases(folder), alias: version}
    tmp = folder / f".aliases.json.{os.getpid()}.tmp"
    try:
        tmp.write_text(json.dumps(aliases, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, folder / "aliases.json")
    finally:
        tmp.unlink(missing_ok=True)
    return aliases


def lineage(version: Path, limit: int = 50) -> list[dict[str, Any]]:
    """The chain of parents of a version folder, itself first: each ``{"ref", "path", ...}``.

    A parent in the store is followed to its own parent; a Hugging Face checkpoint (or a parent
    that is gone) ends the chain.
    """
    chain: list[dict[str, Any]] = []
    path: Path | None = version
    while path is not None and len(chain) < limit:
        run = _run(path)
        config = _json(path / "config.json")
        ref = f"{config.get('name', path.parent.name)}@{config.get('version', path.name)}"
        chain.append({"ref": ref, "path": str(path), "task": config.get("task", "")})
        parent = run.get("parent")
        if not isinstance(parent, dict):
            break
        if parent.get("kind") != "store":
            chain.append({"ref": parent.get("ref", "?"), **parent})
            break
        path = Path(parent["path"]) if Path(str(parent.get("path", ""))).is_dir() else None
        if path is None:
            chain.append({"ref": parent.get("ref", "?"), "missing": True, **parent})
    return chain


def _json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _run(path: Path) -> dict[str, Any]:
    return _json(path / "run.json")
