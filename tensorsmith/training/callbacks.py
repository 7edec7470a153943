"""Callbacks: early stopping, checkpointing, progress. The loop knows none of them by name.

A callback receives the trainer in ``on_fit_start`` (Keras's ``set_model`` habit) and is told
about each evaluation through ``on_eval_end(row)``; ``row`` is one line of ``history.csv``.
Stateful callbacks implement ``state_dict``/``load_state_dict`` so a checkpoint restores them.
"""

from __future__ import annotations

import copy
import math
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from tensorsmith.errors import RecipeError, did_you_mean

if TYPE_CHECKING:
    from tensorsmith.training.trainer import Trainer

__all__ = ["Callback", "Checkpoint", "EarlyStopping", "save_checkpoint"]


class Callback:
    """Base class: every hook is a no-op. ``wants_steps`` asks for ``on_step_end`` calls."""

    wants_steps = False

    def on_fit_start(self, trainer: Trainer) -> None:
        self.trainer = trainer

    def on_step_end(self, step: int, loss: torch.Tensor) -> None:
        pass

    def on_eval_end(self, row: dict[str, float]) -> None:
        pass

    def on_fit_end(self) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class EarlyStopping(Callback):
    """Stops when ``monitor`` has not improved for ``patience`` evaluations; restores the best."""

    def __init__(
        self,
        monitor: str = "valid_loss",
        patience: int = 20,
        min_delta: float = 0.0,
        mode: str = "auto",
    ) -> None:
        self.monitor = monitor
        self.patience = patience
        self.min_delta = min_delta
        lower_is_better = any(k in monitor for k in ("loss", "mse", "mae", "mape", "perplexity"))
        self.mode = mode if mode != "auto" else ("min" if lower_is_better else "max")
        self.best: float | None = None
        self.best_row: dict[str, float] | None = None
        self.best_weights: dict[str, torch.Tensor] | None = None
        self.wait = 0

    def on_eval_end(self, row: dict[str, float]) -> None:
        if self.monitor not in row:
            choices = [k for k in row if k not in ("epoch", "step", "lr")]
            raise RecipeError(
                f"train.early_stopping.monitor '{self.monitor}' is not measured"
                f"{did_you_mean(self.monitor, choices)} choices: {', '.join(choices)}"
            )
        value = float(row[self.monitor])
        sign = 1.0 if self.mode == "min" else -1.0
        if self.best is None or sign * (self.best - value) > self.min_delta:
            self.best, self.best_row, self.wait = value, dict(row), 0
            model = self.trainer.model
            self.best_weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            self.wait += 1
            if self.wait > self.patience or math.isnan(value):
                self.trainer.stop_requested = True

    def on_fit_end(self) -> None:
        if self.best_weights is not None:
            self.trainer.model.load_state_dict(self.best_weights)
            self.trainer.best_row = self.best_row

    def state_dict(self) -> dict[str, Any]:
        return {
            "best": self.best,
            "best_row": copy.deepcopy(self.best_row),
            "wait": self.wait,
            "best_weights": self.best_weights,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_row = state["best"], state["best_row"]
        self.wait, self.best_weights = state["wait"], state["best_weights"]


def save_checkpoint(payload: dict[str, Any], path: Path) -> None:
    """Write atomically: a killed process leaves the previous checkpoint intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


class Checkpoint(Callback):
    """Saves the whole training state every ``every`` epochs (or steps, with ``per_step``), and
    at least every ``seconds`` of wall time."""

    def __init__(
        self,
        path: Path,
        every: int | None = None,
        seconds: float | None = 60.0,
        per_step: bool = False,
        meta: dict[str, Any] | None = None,
    ) -> None:
        self.path = path
        self.every = every
        self.seconds = seconds
        self.wants_steps = per_step
        self.meta = meta or {}
        self._last = time.perf_counter()

    def _maybe_save(self, counter: int) -> None:
        due_count = self.every is not None and counter % self.every == 0
        due_time = self.seconds is not None and time.perf_counter() - self._last >= self.seconds
        if due_count or due_time:
            save_checkpoint({"meta": self.meta, **self.trainer.state_dict()}, self.path)
            self._last = time.perf_counter()

    def on_step_end(self, step: int, loss: torch.Tensor) -> None:
        self._maybe_save(step)

    def on_eval_end(self, row: dict[str, float]) -> None:
        if not self.wants_steps:
            self._maybe_save(int(row["epoch"]))
