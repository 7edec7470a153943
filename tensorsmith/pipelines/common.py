"""What every task's pipeline shares: seeding, checkpoints and resume, run.json, the artifact."""

from __future__ import annotations

import datetime as dt
import os
import platform
import resource
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml
from rich.console import Console
from safetensors.torch import load_model, save_model
from torch import nn

from tensorsmith.errors import TrainingError
from tensorsmith.models import build_model
from tensorsmith.recipe import Recipe, recipe_to_yaml
from tensorsmith.store.artifact import (
    new_version,
    read_json,
    read_yaml,
    write_history,
    write_json,
)
from tensorsmith.training.callbacks import Callback, Checkpoint, EarlyStopping
from tensorsmith.training.progress import Progress
from tensorsmith.training.trainer import FitResult

__all__ = [
    "StoredModel",
    "artifact_recipe",
    "checkpoint_path",
    "hardware",
    "load_resume",
    "make_callbacks",
    "pick_device",
    "run_info",
    "write_artifact",
]


class StoredModel:
    """What every trained model has: its folder, recipe, torch module, run record, metrics."""

    def __init__(
        self,
        path: Path,
        recipe: Recipe,
        module: nn.Module,
        run: dict[str, Any],
        metrics: dict[str, Any],
    ) -> None:
        self.path = path
        self.recipe = recipe
        self.module = module.eval()
        self.run = run
        self.metrics = metrics

    @property
    def name(self) -> str:
        return f"{self.recipe.name}@{self.run.get('version', '?')}"

    @staticmethod
    def _read(path: Path) -> tuple[Recipe, nn.Module, dict[str, Any], dict[str, Any]]:
        """(recipe, module with its weights, run.json, metrics.json) of a version folder."""
        recipe = Recipe.model_validate(read_yaml(path / "recipe.yaml"))
        run = read_json(path / "run.json")
        module = build_model(recipe.model, run["dims"])
        load_model(module, str(path / "model.safetensors"))
        return recipe, module, run, read_json(path / "metrics.json")


def pick_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def hardware(device: str) -> dict[str, Any]:
    info: dict[str, Any] = {
        "device": device,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
    }
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0]}
    for name in (
        "tensorsmith",
        "torch",
        "numpy",
        "pandas",
        "scikit-learn",
        "safetensors",
        "tokenizers",
    ):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


def peak_memory_bytes(device: str) -> int:
    if device == "cuda":
        return int(torch.cuda.max_memory_allocated())
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux: KiB


def checkpoint_path(root: Path, name: str) -> Path:
    return root / ".checkpoints" / name / "checkpoint.pt"


def _diff(old: Any, new: Any, prefix: str) -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(set(old) | set(new))
        return [d for k in keys for d in _diff(old.get(k), new.get(k), f"{prefix}.{k}")]
    return [] if old == new else [f"{prefix} ({old!r} → {new!r})"]


def load_resume(root: Path, recipe: Recipe, resume: bool) -> dict[str, Any] | None:
    """The checkpoint to resume from, refused when the model or data of the recipe changed."""
    path = checkpoint_path(root, recipe.name)
    if not resume:
        return None
    if not path.is_file():
        raise TrainingError(
            f"nothing to resume for '{recipe.name}': no checkpoint at {path}; run "
            "`tensorsmith train` without --resume to start"
        )
    state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    then = yaml.safe_load(state["meta"]["recipe"])
    now = yaml.safe_load(recipe_to_yaml(recipe))
    changed = _diff(then["model"], now["model"], "model") + _diff(then["data"], now["data"], "data")
    if changed:
        raise TrainingError(
            f"cannot resume '{recipe.name}': the recipe changed since the checkpoint: "
            f"{'; '.join(changed)}; restore those keys, or train from scratch without --resume"
        )
    return state


def make_callbacks(
    recipe: Recipe,
    root: Path,
    total: int,
    unit: str,
    rate_unit: str,
    meta: dict[str, Any],
    console: Console,
    flops_per_unit: float = 0.0,
    peak: float = 0.0,
) -> list[Callback]:
    spec = recipe.train
    callbacks: list[Callback] = []
    if spec.early_stopping is not None:
        es = spec.early_stopping
        callbacks.append(EarlyStopping(es.monitor, es.patience, es.min_delta, es.mode))
    every = spec.checkpoint_every
    callbacks.append(
        Checkpoint(
            checkpoint_path(root, recipe.name),
            every,
            spec.checkpoint_seconds,
            per_step=unit == "step",
            meta=meta,
        )
    )
    callbacks.append(
        Progress(total, unit, spec.log_every, rate_unit, flops_per_unit, peak, stream=console.file)
    )
    return callbacks


def artifact_recipe(recipe: Recipe) -> str:
    """The resolved recipe with data paths made absolute, so the artifact stands on its own."""
    data = yaml.safe_load(recipe_to_yaml(recipe))
    data["data"]["source"] = str(recipe.path(recipe.data.source).resolve())
    split = data["data"]["split"]
    for key in ("train", "valid", "test"):
        if isinstance(split.get(key), str):
            split[key] = str(recipe.path(split[key]).resolve())
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=100)


def run_info(
    recipe: Recipe,
    fit: FitResult,
    wall_seconds: float,
    device: str,
    n_params: int,
    flops_per_sample: float,
    extra: dict[str, Any],
) -> dict[str, Any]:
    rate = fit.samples / fit.train_seconds if fit.train_seconds > 0 else 0.0
    return {
        "name": recipe.name,
        "task": recipe.task,
        "arch": recipe.model.arch,
        "train_seconds": fit.train_seconds,
        "wall_seconds": wall_seconds,
        "steps": fit.steps,
        "epochs": fit.epochs,
        "samples_per_second": rate,
        "flops_per_second": rate * flops_per_sample,
        "peak_memory_bytes": peak_memory_bytes(device),
        "parameters": n_params,
        "stopped_early": fit.stopped_early,
        "best": fit.best_row,
        "compiled": fit.compiled,
        "notes": fit.notes,
        "hardware": hardware(device),
        "versions": library_versions(),
        "seed": recipe.train.seed,
        "parent": None,
        "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        **extra,
    }


def write_artifact(
    root: Path,
    recipe: Recipe,
    model: nn.Module,
    files: dict[str, Any],
    history: list[dict[str, float]],
    run: dict[str, Any],
    plots: Callable[[Path], object] | None,
    card: Callable[[int], str],
) -> tuple[int, Path]:
    """Write one complete version (atomically) and return (version, path)."""
    with new_version(root, recipe.name) as (version, tmp):
        (tmp / "recipe.yaml").write_text(artifact_recipe(recipe), encoding="utf-8")
        save_model(model, str(tmp / "model.safetensors"))
        for name, content in files.items():
            if isinstance(content, str):
                (tmp / name).write_text(content, encoding="utf-8")
            else:
                write_json(tmp / name, content)
        write_history(tmp / "history.csv", history)
        if plots is not None:
            (tmp / "plots").mkdir()
            plots(tmp / "plots")
        run["version"] = version
        write_json(tmp / "run.json", run)
        (tmp / "card.md").write_text(card(version), encoding="utf-8")
    checkpoint = checkpoint_path(root, recipe.name)
    if checkpoint.exists():
        checkpoint.unlink()  # the run is complete: nothing left to resume
    return version, root / recipe.name / str(version)
