"""Where a fine-tune starts: a stored model of ours (``NAME``, ``NAME@N``, ``NAME@alias``, a
version folder) or a local Hugging Face checkpoint folder.

From a stored model the child reuses the parent's architecture (its recipe's ``model``
section, unless the child's recipe gives one that matches), its fitted preprocessing or
tokenizer, and every weight whose name and shape match; the rest starts fresh and is listed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tensorsmith.errors import DataError, ModelNotFoundError, RecipeError
from tensorsmith.store.artifact import resolve
from tensorsmith.tasks import Task
from tensorsmith.tasks.predictor import Predictor

__all__ = ["Start", "load_matching", "open_start"]


@dataclass
class Start:
    """The parent of a fine-tune."""

    parent: dict[str, Any]  # run.json "parent": what and where it is (lineage)
    task: Task | None  # our parent's fitted task (tokenizer, preprocessing), else None
    model: dict[str, Any]  # the recipe's `model` section the child trains
    weights: dict[str, torch.Tensor] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    checkpoint: Path | None = None  # a Hugging Face checkpoint folder (its tokenizer.json)


def folder_digest(folder: Path) -> str:
    """SHA-256 of a folder's weights and JSON files: which exact parent a version came from."""
    h = hashlib.sha256()
    weights = sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.onnx"))
    for path in [*weights, *sorted(folder.glob("*.json"))]:
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def open_start(source: str, root: Path, task: str) -> Start:
    """The parent named by ``--from`` / ``finetune.from`` for a child of task ``task``."""
    folder = Path(source).expanduser()
    if (folder / "config.json").is_file() and not (folder / "recipe.yaml").is_file():
        from tensorsmith.finetune.huggingface import open_checkpoint

        return open_checkpoint(folder, task)
    try:
        path = resolve(source, root)
    except ModelNotFoundError as exc:
        raise ModelNotFoundError(
            f"{exc}; --from takes a stored model (NAME, NAME@N, NAME@alias, a version folder) "
            "or a Hugging Face checkpoint folder"
        ) from None
    parent = Predictor.load(path)
    compressed = (parent.config.get("compression") or {}).get("format")
    if compressed:
        raise RecipeError(
            f"{parent.name} holds {compressed} weights (a compressed version); fine-tune from "
            "its fp32 parent instead (`tensorsmith models NAME --lineage` names it)"
        )
    if parent.task.name != task:
        raise RecipeError(
            f"cannot fine-tune a {task} model from {parent.name}, a {parent.task.name} model: "
            f"the tasks differ; start from a {task} model, or set task: {parent.task.name}"
        )
    return Start(
        parent={
            "kind": "store",
            "ref": parent.name,
            "name": parent.recipe.name,
            "version": int(parent.config.get("version", 0)),
            "path": str(path.resolve()),
            "sha256": folder_digest(path),
        },
        task=parent.task,
        model=parent.recipe.model.model_dump(mode="json"),
        weights={k: v.detach().clone() for k, v in parent.module.state_dict().items()},
    )


def load_matching(
    module: nn.Module, weights: dict[str, torch.Tensor]
) -> tuple[list[str], list[str]]:
    """Copy every weight whose name and shape match into ``module``.

    Returns (loaded names, fresh names): a fresh one (a new head for a new label set) keeps its
    initialisation.
    """
    own = module.state_dict()
    loaded, fresh = [], []
    done: set[int] = set()  # a tied weight (lm_head = wte) is one tensor under two names
    with torch.no_grad():
        for name, tensor in own.items():
            given = weights.get(name)
            if given is not None and tuple(given.shape) == tuple(tensor.shape):
                tensor.copy_(given.to(tensor.dtype))
                loaded.append(name)
                done.add(tensor.data_ptr())
            elif tensor.data_ptr() not in done:
                fresh.append(name)
    if not loaded:
        raise DataError(
            "no weight of the parent fits the fine-tuned model (names or shapes all differ); "
            "fine-tune with the parent's architecture (leave the recipe's model section out)"
        )
    return loaded, fresh
