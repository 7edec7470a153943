"""The sections every recipe shares: splits, optimizer, schedule, early stopping, evaluation.

Names that a registry implements (optimizers, schedules, losses, metrics, activations) are plain
strings here: the registries in the layers above are the only lists of those names, and
``tensorsmith validate`` checks each name against its registry (``api.check_recipe``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "EarlyStoppingSpec",
    "EvaluateSpec",
    "OptimizerSpec",
    "ScheduleSpec",
    "SplitSpec",
    "Strict",
    "TrainSpec",
]


class Strict(BaseModel):
    """A recipe section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SplitSpec(Strict):
    """Random / stratified / grouped fractions, named groups, or explicit files.

    ``valid`` and ``test`` are each a fraction, a list of values of ``group`` (those groups go
    to that split: ``{group: play, test: [hamlet, lear]}``), or with ``train`` a file path.
    """

    valid: float | str | list[str] = 0.15
    test: float | str | list[str] | None = 0.15
    train: str | None = None
    seed: int = 0
    stratify: bool | None = None  # default: on for classification
    group: str | None = None  # keep every row of a group in one split

    @model_validator(mode="after")
    def _check(self) -> SplitSpec:
        named = [k for k in ("valid", "test") if isinstance(getattr(self, k), list)]
        if named and self.group is None:
            raise ValueError(
                f"data.split.{named[0]} lists group names, which need data.split.group: the "
                "column whose values they are (for example group: play)"
            )
        if named and self.train is not None:
            raise ValueError("named groups cannot be mixed with split files (data.split.train)")
        if len(named) == 2 and set(self.valid) & set(self.test or []):  # type: ignore[arg-type]
            both = sorted(set(self.valid) & set(self.test or []))  # type: ignore[arg-type]
            raise ValueError(f"groups {both} are named in both data.split.valid and test")
        files = [isinstance(v, str) for v in (self.train, self.valid, self.test) if v is not None]
        if any(files) and not (self.train is not None and all(files)):
            raise ValueError(
                "explicit split files need data.split.train and data.split.valid as file paths "
                "(test optional); fractions cannot be mixed with files"
            )
        if self.train is None:
            fractions = {k: getattr(self, k) for k in ("valid", "test")}
            fractions = {k: v for k, v in fractions.items() if isinstance(v, float | int)}
            for key, value in fractions.items():
                if not 0.0 <= float(value) < 1.0:
                    raise ValueError(f"data.split.{key} must be a fraction in [0, 1), got {value}")
            total = sum(float(v) for v in fractions.values())
            if total >= 1.0:
                raise ValueError(f"valid + test fractions must leave rows to train on; got {total}")
        return self


class OptimizerSpec(Strict):
    name: str = "adam"  # OPTIMIZERS in training/optim.py
    lr: float = Field(default=1e-3, gt=0.0)
    weight_decay: float = Field(default=0.0, ge=0.0)
    momentum: float = Field(default=0.0, ge=0.0)
    nesterov: bool = False
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8


class ScheduleSpec(Strict):
    name: str = "constant"  # SCHEDULES in training/optim.py
    warmup_steps: int = Field(default=0, ge=0)
    min_lr: float = Field(default=0.0, ge=0.0)
    step_size: int = Field(default=1000, ge=1)  # steps between decays for "step"
    gamma: float = Field(default=0.5, gt=0.0)  # "step" decay factor
    factor: float = Field(default=0.5, gt=0.0, lt=1.0)  # "plateau" decay factor
    patience: int = Field(default=10, ge=0)  # "plateau": evaluations without improvement


class EarlyStoppingSpec(Strict):
    monitor: str = "valid_loss"
    patience: int = Field(default=20, ge=0)
    min_delta: float = Field(default=0.0, ge=0.0)
    mode: Literal["auto", "min", "max"] = "auto"  # auto: the metric's own direction


class TrainSpec(Strict):
    """What every task's ``train`` section has; each task adds its length and loss keys."""

    batch_size: int = Field(default=32, ge=1)
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec)
    schedule: ScheduleSpec = Field(default_factory=ScheduleSpec)
    early_stopping: EarlyStoppingSpec | None = None
    grad_clip: float | None = Field(default=None, gt=0.0)
    grad_accum: int = Field(default=1, ge=1)
    # auto: bf16 where the CPU or GPU has bf16 matrix units (AMX, AVX-512 BF16), else fp32
    precision: Literal["auto", "fp32", "bf16"] = "fp32"
    compile: bool = False
    seed: int = 0
    checkpoint_every: int | None = Field(default=None, ge=1)  # epochs, or steps in step mode
    checkpoint_seconds: float = Field(default=60.0, gt=0.0)  # and at least this often
    threads: int | None = Field(default=None, ge=1)
    # several processes (torchrun): auto is ddp when more than one runs, none when one does
    distributed: Literal["auto", "none", "ddp", "fsdp"] = "auto"

    @property
    def length(self) -> int:
        """Epochs or steps: what the run counts to (each task's section says which)."""
        raise NotImplementedError


class EvaluateSpec(Strict):
    metrics: list[str] = Field(default_factory=list)  # METRICS in evaluation/metrics.py
    gate: dict[str, str] = Field(default_factory=dict)
    plots: bool = True

    @field_validator("metrics")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        return list(dict.fromkeys(v))
