"""Checkpoints of a training run: written atomically, refused on resume when the recipe changed.

A checkpoint holds the trainer's whole state (model, optimizer, schedules, RNG, callbacks) and
the resolved recipe it ran; ``torch.load`` reads it with ``weights_only=True`` (no pickled code).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import yaml

from tensorsmith.errors import TrainingError
from tensorsmith.recipe import Recipe, recipe_to_yaml

__all__ = ["Checkpoints", "save_checkpoint"]


def save_checkpoint(payload: dict[str, Any], path: Path) -> None:
    """Write atomically: a killed process leaves the previous checkpoint intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _diff(old: Any, new: Any, prefix: str) -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(set(old) | set(new))
        return [d for k in keys for d in _diff(old.get(k), new.get(k), f"{prefix}.{k}")]
    return [] if old == new else [f"{prefix} ({old!r} → {new!r})"]


class Checkpoints:
    """The checkpoint of a model name's training run in the store."""

    def __init__(self, root: Path, name: str) -> None:
        self.path = root / ".checkpoints" / name / "checkpoint.pt"
        self.name = name

    def save(self, recipe: Recipe, state: dict[str, Any]) -> None:
        save_checkpoint({"meta": {"recipe": recipe_to_yaml(recipe)}, **state}, self.path)

    def load(self, recipe: Recipe) -> dict[str, Any]:
        """The checkpoint to resume from, refused when the model or data of the recipe changed."""
        if not self.path.is_file():
            raise TrainingError(
                f"nothing to resume for '{self.name}': no checkpoint at {self.path}; run "
                "`tensorsmith train` without --resume to start"
            )
        state: dict[str, Any] = torch.load(self.path, map_location="cpu", weights_only=True)
        then = yaml.safe_load(state["meta"]["recipe"])
        now = yaml.safe_load(recipe_to_yaml(recipe))
        changed = [d for key in ("model", "data") for d in _diff(then.get(key), now.get(key), key)]
        if changed:
            raise TrainingError(
                f"cannot resume '{recipe.name}': the recipe changed since the checkpoint: "
                f"{'; '.join(changed)}; restore those keys, or train from scratch without --resume"
            )
        return state

    def discard(self) -> None:
        """The run is complete: nothing is left to resume."""
        self.path.unlink(missing_ok=True)
