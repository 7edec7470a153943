"""Optimizers and learning-rate schedules by name."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from tensorsmith.errors import RecipeError
from tensorsmith.recipe import OptimizerSpec, ScheduleSpec, TrainSpec
from tensorsmith.registry import Registry

if TYPE_CHECKING:
    import torch

__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "build_optimizer",
    "build_schedule",
    "check_optimizer",
    "lr_factor",
]

Params = Iterable[Any]
# name → "module:function(params, spec) → optimizer", imported on first use
OPTIMIZERS: Registry[Callable[[Params, OptimizerSpec], Any]] = Registry(
    "optimizer", "train.optimizer.name"
)
OPTIMIZERS.register_lazy("sgd", "tensorsmith.training.optimizers:sgd")
OPTIMIZERS.register_lazy("adam", "tensorsmith.training.optimizers:adam")
OPTIMIZERS.register_lazy("adamw", "tensorsmith.training.optimizers:adamw")
OPTIMIZERS.register_lazy("rmsprop", "tensorsmith.training.optimizers:rmsprop")
OPTIMIZERS.register_lazy("adagrad", "tensorsmith.training.optimizers:adagrad")
OPTIMIZERS.register_lazy("lbfgs", "tensorsmith.training.optimizers:lbfgs")


def check_optimizer(train: TrainSpec) -> None:
    """The optimizer and schedule exist and fit the rest of ``train`` (no data needed)."""
    spec = train.optimizer
    OPTIMIZERS.check(spec.name)
    SCHEDULES.check(train.schedule.name)
    if spec.nesterov and (spec.name != "sgd" or spec.momentum <= 0):
        raise RecipeError("train.optimizer.nesterov needs name: sgd and momentum > 0")
    if spec.name == "lbfgs":
        if getattr(train, "batch_size", None) != "full":
            raise RecipeError(
                "train.optimizer.name lbfgs needs train.batch_size: full (it takes the whole "
                "train split per step); or choose adam for mini-batches"
            )
        if train.grad_accum != 1 or train.grad_clip is not None:
            raise RecipeError(
                "train.optimizer.name lbfgs does not take train.grad_accum or train.grad_clip; "
                "remove them"
            )
        if spec.weight_decay:
            raise RecipeError("train.optimizer.weight_decay does not apply to lbfgs; remove it")


def build_optimizer(params: Params, spec: OptimizerSpec) -> torch.optim.Optimizer:
    if spec.nesterov and (spec.name != "sgd" or spec.momentum <= 0):
        raise RecipeError("train.optimizer.nesterov needs name: sgd and momentum > 0")
    return OPTIMIZERS.get(spec.name)(params, spec)


Factor = Callable[[ScheduleSpec, float, float], float]  # (spec, floor, progress or step) → factor


def _step_decay(spec: ScheduleSpec, floor: float, step: float) -> float:
    return max(spec.gamma ** ((step - spec.warmup_steps) // spec.step_size), floor)


def _cosine(spec: ScheduleSpec, floor: float, progress: float) -> float:
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _linear(spec: ScheduleSpec, floor: float, progress: float) -> float:
    return floor + (1.0 - floor) * (1.0 - progress)


# name → (factor after warmup, whether it reads the step (True) or the progress in [0, 1])
SCHEDULES: Registry[tuple[Factor, bool] | None] = Registry("schedule", "train.schedule.name")
SCHEDULES.register("constant", (lambda spec, floor, x: 1.0, True))
SCHEDULES.register("step", (_step_decay, True))
SCHEDULES.register("cosine", (_cosine, False))
SCHEDULES.register("linear", (_linear, False))
SCHEDULES.register("plateau", None)  # per evaluation: ReduceLROnPlateau


def lr_factor(spec: ScheduleSpec, base_lr: float, step: int, total_steps: int) -> float:
    """Multiplier of the base learning rate after ``step`` optimizer steps: warmup, then decay."""
    if spec.warmup_steps and step < spec.warmup_steps:
        return (step + 1) / spec.warmup_steps
    entry = SCHEDULES.get(spec.name)
    if entry is None:
        return 1.0
    factor, by_step = entry
    floor = min(spec.min_lr / base_lr, 1.0) if base_lr > 0 else 0.0
    if by_step:
        return factor(spec, floor, float(step))
    span = max(total_steps - spec.warmup_steps, 1)
    return factor(spec, floor, min(max(step - spec.warmup_steps, 0) / span, 1.0))


def build_schedule(
    optimizer: torch.optim.Optimizer, spec: ScheduleSpec, total_steps: int
) -> tuple[
    torch.optim.lr_scheduler.LRScheduler | None, torch.optim.lr_scheduler.ReduceLROnPlateau | None
]:
    """(per-step scheduler, per-evaluation plateau scheduler); either may be None."""
    import torch

    SCHEDULES.get(spec.name)
    if spec.name == "plateau":
        if spec.warmup_steps:
            raise RecipeError("train.schedule.warmup_steps is not supported with name: plateau")
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=spec.factor, patience=spec.patience, min_lr=spec.min_lr
        )
        return None, plateau
    if spec.name == "constant" and not spec.warmup_steps:
        return None, None
    base = float(optimizer.param_groups[0]["lr"])
    per_step = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(spec, base, step, total_steps)
    )
    return per_step, None
