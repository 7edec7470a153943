"""What callbacks see: the training state, and a control object through which they act.

A callback never touches the trainer (Hugging Face's ``TrainerState`` / ``TrainerControl``
habit): early stopping sets ``control.stop``, the checkpoint schedule sets ``control.save``, and
the trainer does the rest. So the same callbacks work unchanged when several processes train
one model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

__all__ = ["Callback", "TrainControl", "TrainState"]


@dataclass
class TrainState:
    """Where the run is. ``unit`` is "epoch" or "step"; ``total`` how many of them it runs."""

    model: nn.Module
    total: int
    unit: str
    tokens_per_sample: int = 1
    epoch: int = 0
    step: int = 0
    samples: int = 0
    batch: int = 0  # batches of the current epoch already trained on (epoch mode)
    history: list[dict[str, float]] = field(default_factory=list)
    best_row: dict[str, float] | None = None  # the restored best evaluation, if any
    resumed_from: int | None = None  # the epoch or step a resumed run continued from
    # a copy of the whole model's weights, and loading one back: the trainer sets these so a
    # callback works unchanged when the model is sharded over several processes
    weights: Callable[[], dict[str, torch.Tensor]] | None = None
    load_weights: Callable[[dict[str, torch.Tensor]], None] | None = None

    def copy_weights(self) -> dict[str, torch.Tensor]:
        if self.weights is not None:
            return self.weights()
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def restore_weights(self, weights: dict[str, torch.Tensor]) -> None:
        if self.load_weights is not None:
            self.load_weights(weights)
        else:
            self.model.load_state_dict(weights)

    @property
    def counter(self) -> int:
        return self.step if self.unit == "step" else self.epoch


@dataclass
class TrainControl:
    """What callbacks ask of the loop."""

    stop: bool = False
    stop_reason: str | None = None
    save: bool = False
    interrupted: bool = False  # SIGINT / SIGTERM: stop at the next step, after a checkpoint


class Callback:
    """Base class: every hook is a no-op. ``wants_steps`` asks for ``on_step_end`` calls."""

    wants_steps = False

    def on_fit_start(self, state: TrainState, control: TrainControl) -> None:
        pass

    def on_step_end(self, state: TrainState, control: TrainControl, loss: torch.Tensor) -> None:
        pass

    def on_eval_end(self, state: TrainState, control: TrainControl, row: dict[str, float]) -> None:
        pass

    def on_fit_end(self, state: TrainState, control: TrainControl) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass
