"""The one training loop, for every task.

``Trainer(spec)`` stores; ``Trainer.fit(model, data, loss_fn, evaluate)`` runs. The loop works
in epochs (``data.batches(epoch)``) or in steps (``data.batch(i)``); everything else — early
stopping, checkpoints, progress — is a callback. Batches depend only on (seed, epoch) or
(seed, step), and a checkpoint holds model, optimizer, schedules, RNG and callback state, so a
resumed run reaches the same weights as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import torch
from torch import nn

from tensorsmith.errors import TrainingError
from tensorsmith.recipe import TrainSpec
from tensorsmith.training.callbacks import Callback
from tensorsmith.training.optim import build_optimizer, build_schedule

__all__ = ["EpochData", "FitResult", "StepData", "Trainer"]

Batch = tuple[torch.Tensor, ...]
LossOf = Callable[[nn.Module, Batch], torch.Tensor]


class EpochData(Protocol):
    """Epoch mode reads ``batches(epoch)``; the order depends only on (seed, epoch)."""

    def __len__(self) -> int: ...

    def batches(self, epoch: int) -> Iterable[Batch]: ...


class StepData(Protocol):
    """Step mode reads ``batch(i)``; micro-batch i depends only on (seed, i)."""

    def batch(self, index: int) -> Batch: ...


@dataclass
class FitResult:
    history: list[dict[str, float]]
    train_seconds: float
    steps: int
    epochs: int
    samples: int
    stopped_early: bool
    best_row: dict[str, float] | None
    compiled: bool = False
    notes: list[str] = field(default_factory=list)


class Trainer:
    history: list[dict[str, float]]

    def __init__(
        self,
        spec: TrainSpec,
        callbacks: Iterable[Callback] = (),
        device: str = "cpu",
        tokens_per_sample: int = 1,
    ) -> None:
        self.spec = spec
        self.callbacks = list(callbacks)
        self.device = torch.device(device)
        self.tokens_per_sample = tokens_per_sample

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler else None,
            "plateau": self.plateau.state_dict() if self.plateau else None,
            "rng": torch.get_rng_state(),
            "epoch": self.epoch,
            "step": self.step,
            "samples": self.samples,
            "history": list(self.history),
            "elapsed": self.elapsed + time.perf_counter() - self._t0,
            "running": [float(self._loss_sum), self._loss_count],
            "callbacks": [cb.state_dict() for cb in self.callbacks],
        }

    def _load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler and state["scheduler"]:
            self.scheduler.load_state_dict(state["scheduler"])
        if self.plateau and state["plateau"]:
            self.plateau.load_state_dict(state["plateau"])
        torch.set_rng_state(state["rng"])
        self.epoch, self.step, self.samples = state["epoch"], state["step"], state["samples"]
        self.history = list(state["history"])
        self.elapsed = float(state["elapsed"])
        self._loss_sum = torch.tensor(state["running"][0], device=self.device)
        self._loss_count = int(state["running"][1])
        for cb, cb_state in zip(self.callbacks, state["callbacks"], strict=True):
            cb.load_state_dict(cb_state)

    # ------------------------------------------------------------------ the loop

    def fit(
        self,
        model: nn.Module,
        data: Any,  # EpochData when train.epochs is set, StepData with train.max_steps
        loss_of: LossOf,
        evaluate: Callable[[nn.Module], dict[str, float]] | None = None,
        param_groups: list[dict[str, Any]] | None = None,
        resume: dict[str, Any] | None = None,
    ) -> FitResult:
        threads = torch.get_num_threads()
        if self.spec.threads:
            torch.set_num_threads(self.spec.threads)
        try:
            return self._fit(model, data, loss_of, evaluate, param_groups, resume)
        finally:
            torch.set_num_threads(threads)  # train.threads applies to this run only

    def _fit(
        self,
        model: nn.Module,
        data: Any,
        loss_of: LossOf,
        evaluate: Callable[[nn.Module], dict[str, float]] | None,
        param_groups: list[dict[str, Any]] | None,
        resume: dict[str, Any] | None,
    ) -> FitResult:
        spec = self.spec
        torch.manual_seed(spec.seed + 1)  # dropout's stream; the caller seeded the model init
        self.model = model.to(self.device)
        self.optimizer = build_optimizer(param_groups or model.parameters(), spec.optimizer)
        accum = spec.grad_accum
        epoch_mode = spec.max_steps is None
        steps_per_epoch = math.ceil(len(data) / accum) if epoch_mode else 0
        total = (spec.epochs or 1) * steps_per_epoch if epoch_mode else int(spec.max_steps or 0)
        self.scheduler, self.plateau = build_schedule(self.optimizer, spec.schedule, total)
        self.epoch = self.step = self.samples = 0
        self.history = []
        self.elapsed = 0.0
        self.stop_requested = False
        self.best_row: dict[str, float] | None = None
        self._loss_sum = torch.zeros((), device=self.device)
        self._loss_count = 0
        self._t0 = time.perf_counter()
        for cb in self.callbacks:
            cb.on_fit_start(self)
        if resume is not None:
            self._load_state_dict(resume)
        self._evaluate = evaluate
        self._step_callbacks = [cb for cb in self.callbacks if cb.wants_steps]
        forward, compiled, notes = self._forward(loss_of, data, epoch_mode)
        self._t0 = time.perf_counter()
        model.train()
        if epoch_mode:
            self._run_epochs(data, forward, int(spec.epochs or 1), accum)
        else:
            self._run_steps(data, forward, total, accum, int(spec.eval_every or total))
        elapsed = self.elapsed + time.perf_counter() - self._t0
        for cb in self.callbacks:
            cb.on_fit_end()
        model.eval()
        return FitResult(
            self.history,
            elapsed,
            self.step,
            self.epoch,
            self.samples,
            self.stop_requested,
            self.best_row,
            compiled,
            notes,
        )

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.spec.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _forward(
        self, loss_of: LossOf, data: Any, epoch_mode: bool
    ) -> tuple[LossOf, bool, list[str]]:
        """``loss_of`` as is, or compiled (falling back to eager with a warning)."""
        if not self.spec.compile:
            return loss_of, False, []
        compiled_model = cast(nn.Module, torch.compile(self.model))
        probe = next(iter(data.batches(0))) if epoch_mode else data.batch(0)
        rng = torch.get_rng_state()  # the probe must not shift dropout's stream (exact resume)
        try:
            with self._autocast():
                loss_of(compiled_model, self._to_device(probe)).backward()
            self.optimizer.zero_grad(set_to_none=True)
        except Exception as exc:  # inductor needs a working C++ toolchain; eager always works
            note = f"torch.compile failed ({type(exc).__name__}: {exc}); training in eager mode"
            warnings.warn(note, stacklevel=2)
            self.optimizer.zero_grad(set_to_none=True)
            return loss_of, False, [note]
        finally:
            torch.set_rng_state(rng)
        return (lambda _m, batch: loss_of(compiled_model, batch)), True, []

    def _to_device(self, batch: Batch) -> Batch:
        if self.device.type == "cpu":
            return batch
        return tuple(t.to(self.device, non_blocking=True) for t in batch)

    def _micro(self, forward: LossOf, batch: Batch, accum: int) -> None:
        batch = self._to_device(batch)
        with self._autocast():
            loss = forward(self.model, batch)
        (loss / accum if accum > 1 else loss).backward()
        self._loss_sum += loss.detach().float()  # stays on the device: no sync per step
        self._loss_count += 1
        self.samples += batch[0].shape[0]

    def _optimizer_step(self) -> None:
        if self.spec.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.spec.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.scheduler is not None:
            self.scheduler.step()
        self.step += 1

    def _run_epochs(self, data: EpochData, forward: LossOf, epochs: int, accum: int) -> None:
        n_batches = len(data)
        while self.epoch < epochs and not self.stop_requested:
            for i, batch in enumerate(data.batches(self.epoch)):
                self._micro(forward, batch, accum)
                if (i + 1) % accum == 0 or i + 1 == n_batches:
                    self._optimizer_step()
                    for cb in self._step_callbacks:
                        cb.on_step_end(self.step, self._loss_sum)
            self.epoch += 1
            self._end_period({"epoch": float(self.epoch)})

    def _run_steps(
        self, data: StepData, forward: LossOf, total: int, accum: int, eval_every: int
    ) -> None:
        while self.step < total and not self.stop_requested:
            for i in range(accum):
                self._micro(forward, data.batch(self.step * accum + i), accum)
            self._optimizer_step()
            last = self._loss_sum / max(self._loss_count, 1)
            if self.step % eval_every == 0 or self.step == total:
                self._end_period({"step": float(self.step)})
            for cb in self._step_callbacks:  # after the evaluation, so a checkpoint includes it
                cb.on_step_end(self.step, last)

    def _end_period(self, row: dict[str, float]) -> None:
        """Evaluate, record a history row and tell the callbacks."""
        if not self._loss_count:
            raise TrainingError("the train split produced no batches; it needs at least one row")
        row["train_loss"] = float(self._loss_sum) / self._loss_count
        if not math.isfinite(row["train_loss"]):
            raise TrainingError(
                f"training diverged: train loss is {row['train_loss']} at "
                f"{'epoch' if 'epoch' in row else 'step'} {int(next(iter(row.values())))}; "
                "lower train.optimizer.lr, set train.grad_clip, or check the data for huge values"
            )
        self._loss_sum = torch.zeros((), device=self.device)
        self._loss_count = 0
        if self._evaluate is not None:
            self.model.eval()
            with torch.no_grad(), self._autocast():
                row.update(self._evaluate(self.model))
            self.model.train()
        row["lr"] = float(self.optimizer.param_groups[0]["lr"])
        if self.plateau is not None:
            self.plateau.step(row.get("valid_loss", row["train_loss"]))
        self.history.append(row)
        for cb in self.callbacks:
            cb.on_eval_end(row)
