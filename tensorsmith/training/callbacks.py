"""Callbacks: early stopping and the checkpoint schedule. The loop knows none of them by name.

Each sees the :class:`~tensorsmith.training.state.TrainState` and acts through the
:class:`~tensorsmith.training.state.TrainControl`. Stateful callbacks implement
``state_dict``/``load_state_dict`` so a checkpoint restores them.
"""

from __future__ import annotations

import copy
import math
import time
from typing import Any

import torch

from tensorsmith.training.state import Callback, TrainControl, TrainState

__all__ = ["CheckpointSchedule", "EarlyStopping"]


class EarlyStopping(Callback):
    """Stops when ``monitor`` has not improved for ``patience`` evaluations; restores the best.

    ``mode`` is "min" or "max": the metric's own direction, which the caller reads from the
    metric registry (nothing here guesses from a name).
    """

    def __init__(self, monitor: str, mode: str, patience: int = 20, min_delta: float = 0.0) -> None:
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        self.monitor = monitor
        self.mode = mode
        self.patience = patience
        self.min_delta = min_delta
        self.best: float | None = None
        self.best_row: dict[str, float] | None = None
        self.best_weights: dict[str, torch.Tensor] | None = None
        self.wait = 0

    def on_eval_end(self, state: TrainState, control: TrainControl, row: dict[str, float]) -> None:
        value = float(row[self.monitor])
        sign = 1.0 if self.mode == "min" else -1.0
        if self.best is None or sign * (self.best - value) > self.min_delta:
            self.best, self.best_row, self.wait = value, dict(row), 0
            self.best_weights = state.copy_weights()
            return
        self.wait += 1
        if self.wait > self.patience or math.isnan(value):
            control.stop = True
            since = (
                f"{self.wait} {state.unit}s"
                if state.unit == "epoch"
                else f"{self.wait} evaluations"
            )
            control.stop_reason = (
                f"{self.monitor} did not improve for {since}"
                if not math.isnan(value)
                else f"{self.monitor} is NaN"
            )

    def on_fit_end(self, state: TrainState, control: TrainControl) -> None:
        if self.best_weights is not None:
            state.restore_weights(self.best_weights)
            state.best_row = self.best_row

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


class CheckpointSchedule(Callback):
    """Asks for a checkpoint every ``every`` epochs (or steps in step mode), and at least every
    ``seconds`` of wall time."""

    def __init__(self, every: int | None, seconds: float | None, per_step: bool) -> None:
        self.every = every
        self.seconds = seconds
        self.wants_steps = per_step
        self._last = time.perf_counter()

    def _due(self, counter: int, control: TrainControl) -> None:
        due_count = self.every is not None and counter % self.every == 0
        due_time = self.seconds is not None and time.perf_counter() - self._last >= self.seconds
        if due_count or due_time:
            control.save = True
            self._last = time.perf_counter()

    def on_step_end(self, state: TrainState, control: TrainControl, loss: torch.Tensor) -> None:
        self._due(state.step, control)

    def on_eval_end(self, state: TrainState, control: TrainControl, row: dict[str, float]) -> None:
        if not self.wants_steps:
            self._due(state.epoch, control)
