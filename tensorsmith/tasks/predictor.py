"""The ``Predictor``: one loaded model version, raw records in, decoded predictions out.

It is the one inference object that evaluation, fine-tuning, compression and serving share. It
reads a version folder through its ``config.json`` (the format, task, architecture and sizes),
rebuilds the module and the fitted task, and loads the weights from safetensors: no pickle, no
code from the folder, and no ``run.json`` needed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from safetensors import SafetensorError
from safetensors.torch import load_model
from torch import nn

from tensorsmith.errors import RecipeError, StoreError
from tensorsmith.models import build_model
from tensorsmith.models.formats import FORMATS
from tensorsmith.recipe import Recipe, parse_recipe
from tensorsmith.tasks.base import Task
from tensorsmith.tasks.files import FORMAT, damaged, read_json_file, read_yaml_file

__all__ = ["FORMAT", "Predictor"]


class Predictor:
    """A stored model ready to predict: ``predict``, ``predict_proba``, ``stream``, ``generate``."""

    def __init__(
        self,
        path: Path,
        recipe: Recipe,
        task: Task,
        module: nn.Module,
        config: dict[str, Any],
        run: dict[str, Any] | None = None,
        metrics: dict[str, Any] | None = None,
        data: dict[str, Any] | None = None,
    ) -> None:
        self.path = path
        self.recipe = recipe
        self.task = task
        self.module = module.eval()
        self.config = config
        self.run = run or {}
        self.metrics = metrics or {}
        self.data = data or {}  # data.json: the fingerprint of the data it was trained on

    @property
    def name(self) -> str:
        return f"{self.recipe.name}@{self.config.get('version', '?')}"

    @classmethod
    def load(cls, path: Path) -> Predictor:
        """Read a version folder written by ``store.write_version``."""
        from tensorsmith.tasks import TASKS

        config = read_json_file(path / "config.json")
        if not isinstance(config, dict) or config.get("format") != FORMAT:
            found = config.get("format") if isinstance(config, dict) else type(config).__name__
            raise damaged(path / "config.json", f"has format {found!r}, expected {FORMAT!r}")
        try:
            recipe = parse_recipe(read_yaml_file(path / "recipe.yaml"), base_dir=path)
        except RecipeError as exc:
            raise damaged(path / "recipe.yaml", f"does not validate ({exc})") from None
        task = TASKS.get(recipe.task).from_state(recipe, path)
        module = build_model(recipe.model, config.get("dims", {}))
        weights_format = (config.get("compression") or {}).get("format")
        if weights_format:  # a compressed version: its format rebuilds the module it saved
            module = FORMATS.get(weights_format).load(module, path, config)
        else:
            _load_weights(module, path / str(config.get("weights", "model.safetensors")))
        run, metrics, data = (
            _optional(path / f) for f in ("run.json", "metrics.json", "data.json")
        )
        return cls(path, recipe, task, module, config, run, metrics, data)

    # ------------------------------------------------------------------ inference

    def predict(self, records: pd.DataFrame) -> pd.DataFrame:
        """Predictions for a table: one row per input row (label or value, probabilities)."""
        return self.task.predict(self.module, records)

    def predict_proba(self, records: pd.DataFrame) -> np.ndarray:
        """(N, K) class probabilities, classes in the order of ``task.labels``."""
        return self.task.predict_proba(self.module, records)

    def stream(self, prompt: str, **options: Any) -> Iterator[str]:
        """Generated text piece by piece (language models; see the task's ``stream``)."""
        return self.task.stream(self.module, prompt, **options)

    def generate(self, prompt: str, max_new_tokens: int = 200, **options: Any) -> str:
        """The generated text as one string."""
        return "".join(self.stream(prompt, max_new_tokens=max_new_tokens, **options))


def _optional(path: Path) -> dict[str, Any]:
    return dict(read_json_file(path)) if path.is_file() else {}


def _load_weights(module: nn.Module, path: Path) -> None:
    if not path.is_file():
        raise damaged(path, "is missing")
    try:
        missing, unexpected = load_model(module, str(path), strict=False)
    except (SafetensorError, OSError) as exc:
        raise damaged(path, f"cannot be read ({exc})") from None
    except RuntimeError as exc:  # shapes that do not match the recipe
        first = str(exc).splitlines()[-1].strip()
        raise damaged(path, f"does not match the recipe's model ({first})") from None
    if missing or unexpected:
        raise StoreError(
            f"model version {path.parent} is damaged: {path.name} does not match the recipe's "
            f"model (missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]})"
        )
