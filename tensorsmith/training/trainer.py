"""The one training loop, for every task.

``Trainer(spec, callbacks)`` stores; ``Trainer.fit(model, feed, loss_of, evaluate)`` runs. The
feed decides the unit: an epoch feed (``feed.batches(epoch)``) runs ``train.epochs`` epochs, a
step feed (``feed.stream(start)``) runs ``train.max_steps`` optimizer steps. Everything else —
early stopping, checkpoints, progress — is a callback that sees the state and acts through the
control. Batches depend only on (seed, epoch) or (seed, step), and a checkpoint holds model,
optimizer, schedules, RNG and callback state, so a resumed run reaches the same weights as an
uninterrupted one.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import torch
from torch import nn

from tensorsmith.errors import TrainingError, TrainingInterrupted
from tensorsmith.recipe import TrainSpec
from tensorsmith.training.distributed import World
from tensorsmith.training.optim import build_optimizer, build_schedule
from tensorsmith.training.state import Callback, TrainControl, TrainState

__all__ = ["FitResult", "Trainer"]

Batch = tuple[torch.Tensor, ...]
LossOf = Callable[[nn.Module, Batch], torch.Tensor]
Evaluate = Callable[[nn.Module], dict[str, float]]
Resume = Callable[[dict[str, Any]], dict[str, Any]]  # fills a state template from a checkpoint


def _catch_signals(handler: Callable[[int, Any], None]) -> dict[int, Any]:
    """Route SIGINT and SIGTERM to ``handler`` (main thread only); return the old handlers."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}


def _restore_signals(previous: dict[int, Any]) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)


@dataclass
class FitResult:
    history: list[dict[str, float]]
    train_seconds: float
    steps: int
    epochs: int
    samples: int
    stopped_early: bool
    stop_reason: str | None
    best_row: dict[str, float] | None
    compiled: bool = False
    notes: list[str] = field(default_factory=list)


class Trainer:
    def __init__(
        self,
        spec: TrainSpec,
        callbacks: Iterable[Callback] = (),
        device: str = "cpu",
        save: Callable[[dict[str, Any]], None] | None = None,
        precision: str | None = None,
        world: World | None = None,
    ) -> None:
        self.spec = spec
        self.callbacks = list(callbacks)
        self.world = world or World()
        self.device = torch.device(self.world.device if self.world.many else device)
        self.save = save  # writes a checkpoint when a callback asks for one
        self.precision = precision or spec.precision  # "fp32" or "bf16" ("auto" resolved)
        self.control = TrainControl()

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """The whole state: the model and optimizer by parameter name (sharded under FSDP), for
        ``torch.distributed.checkpoint``, and the rest (``extra``: rank 0's, a plain dict)."""
        from torch.distributed.checkpoint import state_dict as dcp_state

        model = self.state.model
        state: dict[str, Any] = {"model": dcp_state.get_model_state_dict(model)}
        if not self._closure:  # L-BFGS keeps its own state in the extra bytes (below)
            state["optimizer"] = dcp_state.get_optimizer_state_dict(model, self.optimizer)
        extra = self._extra()  # a collective under FSDP (the callbacks' gathered weights)
        if self.world.main:
            state["extra"] = extra
        return state

    def _extra(self) -> dict[str, Any]:
        s = self.state
        return {
            "scheduler": self.scheduler.state_dict() if self.scheduler else None,
            "plateau": self.plateau.state_dict() if self.plateau else None,
            "rng": torch.get_rng_state(),
            "epoch": s.epoch,
            "step": s.step,
            "samples": s.samples,
            "batch": s.batch,
            "history": list(s.history),
            "elapsed": self.elapsed + time.perf_counter() - self._t0,
            "running": [self._running(), self._loss_count],
            "callbacks": [cb.state_dict() for cb in self.callbacks],
            "closure_optimizer": self.optimizer.state_dict() if self._closure else None,
        }

    def _running(self) -> float:
        """The period's loss so far, summed over the ranks and divided by their number (what
        every rank starts from after a resume, with any world size)."""
        running = self._loss_sum.detach().clone()
        if self.world.many:
            torch.distributed.all_reduce(running)
            running /= self.world.size
        return float(running)

    def _load_state_dict(self, resume: Resume) -> None:
        from torch.distributed.checkpoint import state_dict as dcp_state

        template = self.state_dict()
        template.pop("extra", None)
        loaded = resume(template)
        model = self.state.model
        dcp_state.set_model_state_dict(model, loaded["model"])
        saved = loaded["extra"]
        if self._closure:
            self.optimizer.load_state_dict(saved["closure_optimizer"])
        else:
            dcp_state.set_optimizer_state_dict(model, self.optimizer, loaded["optimizer"])
        s = self.state
        if self.scheduler and saved["scheduler"]:
            self.scheduler.load_state_dict(saved["scheduler"])
        if self.plateau and saved["plateau"]:
            self.plateau.load_state_dict(saved["plateau"])
        torch.set_rng_state(saved["rng"])
        s.epoch, s.step, s.samples = saved["epoch"], saved["step"], saved["samples"]
        s.batch = int(saved.get("batch", 0))
        s.history = list(saved["history"])
        s.resumed_from = s.counter
        self.elapsed = float(saved["elapsed"])
        self._loss_sum = torch.tensor(saved["running"][0], device=self.device)
        self._loss_count = int(saved["running"][1])
        for cb, cb_state in zip(self.callbacks, saved["callbacks"], strict=True):
            cb.load_state_dict(cb_state)

    # ------------------------------------------------------------------ the loop

    def fit(
        self,
        model: nn.Module,
        feed: Any,  # data.loading.EpochFeed or StepFeed
        loss_of: LossOf,
        evaluate: Evaluate | None = None,
        param_groups: list[dict[str, Any]] | None = None,
        resume: Resume | None = None,
    ) -> FitResult:
        threads = torch.get_num_threads()
        if self.spec.threads:
            torch.set_num_threads(self.spec.threads)
        self.control = TrainControl()  # this run's own, before a signal can reach it
        self._signalled = False
        previous = _catch_signals(self._on_signal)
        try:
            return self._fit(model, feed, loss_of, evaluate, param_groups, resume)
        finally:
            torch.set_num_threads(threads)  # train.threads applies to this run only
            _restore_signals(previous)

    def _on_signal(self, signum: int, frame: object) -> None:
        """SIGINT / SIGTERM: finish the step, save a checkpoint, stop (a second Ctrl-C kills).

        Several ranks: the signal waits for the next agreement (every rank stops at the same
        step), and a second one (torchrun's agent forwards the terminal's) changes nothing.
        """
        self._signalled = True
        if self.world.many:
            return
        self.control.interrupted = True
        self.control.stop = True
        signal.signal(signal.SIGINT, signal.default_int_handler)

    def _setup(self, model: nn.Module, feed: Any, param_groups: list[dict[str, Any]] | None) -> int:
        """Optimizer, schedules and state; returns the optimizer steps of the whole run."""
        spec, world = self.spec, self.world
        torch.manual_seed(spec.seed + 1)  # dropout's stream; the caller seeded the model init
        model.to(self.device)
        names = {id(p): n for n, p in model.named_parameters()}
        groups = [{**g, "params": [names[id(p)] for p in g["params"]]} for g in param_groups or []]
        self.net = world.wrap(model, self.precision == "bf16")  # FSDP replaces the parameters
        if world.many:
            feed.shard(world.rank, world.size)
        params = dict(model.named_parameters())
        for g in groups:
            g["params"] = [params[n] for n in g["params"]]
        self.optimizer = build_optimizer(groups or model.parameters(), spec.optimizer)
        self._closure = isinstance(self.optimizer, torch.optim.LBFGS)
        if feed.unit == "epoch":
            total_steps = spec.length * math.ceil(len(feed) / spec.grad_accum)
        else:
            total_steps = spec.length
        self.scheduler, self.plateau = build_schedule(self.optimizer, spec.schedule, total_steps)
        self.state = TrainState(model, spec.length, feed.unit, feed.tokens_per_sample)
        self.state.weights = lambda: world.weights(model)
        self.state.load_weights = lambda w: world.load_weights(model, w)
        self.elapsed = 0.0
        self._loss_sum = torch.zeros((), device=self.device)
        self._loss_count = 0
        self._t0 = time.perf_counter()
        return total_steps

    def _fit(
        self,
        model: nn.Module,
        feed: Any,
        loss_of: LossOf,
        evaluate: Evaluate | None,
        param_groups: list[dict[str, Any]] | None,
        resume: Resume | None,
    ) -> FitResult:
        self._setup(model, feed, param_groups)
        if resume is not None:
            self._load_state_dict(resume)
        for cb in self.callbacks:
            cb.on_fit_start(self.state, self.control)
        self._evaluate = evaluate
        self._step_callbacks = [cb for cb in self.callbacks if cb.wants_steps]
        forward, compiled, notes = self._forward(loss_of, feed)
        self._t0 = time.perf_counter()
        model.train()
        if feed.unit == "epoch":
            self._run_epochs(feed, forward)
        else:
            self._evaluate_start()
            self._run_steps(feed, forward)
        elapsed = self.elapsed + time.perf_counter() - self._t0
        if self.control.interrupted:
            self._interrupted()
        for cb in self.callbacks:
            cb.on_fit_end(self.state, self.control)
        model.eval()
        s = self.state
        return FitResult(
            s.history,
            elapsed,
            s.step,
            s.epoch,
            s.samples,
            self.control.stop,
            self.control.stop_reason,
            s.best_row,
            compiled,
            notes,
        )

    def _interrupted(self) -> None:
        for cb in self.callbacks:
            cb.on_fit_end(self.state, self.control)
        s = self.state
        where = f"step {s.step}" + (f" (epoch {s.epoch + 1}, batch {s.batch})" if s.batch else "")
        if self.save is None:
            raise TrainingInterrupted(f"interrupted at {where}; nothing was saved")
        self.save(self.state_dict())
        raise TrainingInterrupted(
            f"interrupted at {where}: saved a checkpoint at step {s.step}; "
            "`tensorsmith train RECIPE --resume` continues from it"
        )

    def _evaluate_start(self) -> None:
        """Step mode: evaluate the untrained model once, so the curve starts at step 0."""
        if self._evaluate is None or self.state.history or self.state.step:
            return
        model = self.state.model
        model.eval()
        with torch.no_grad(), self._autocast():
            row = {"step": 0.0, **self._evaluate(model)}
        model.train()
        row["lr"] = float(self.optimizer.param_groups[0]["lr"])
        row = self.world.broadcast(row)
        self.state.history.append(row)
        for cb in self.callbacks:
            cb.on_eval_end(self.state, self.control, row)

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _forward(self, loss_of: LossOf, feed: Any) -> tuple[LossOf, bool, list[str]]:
        """``loss_of`` as is, or compiled (falling back to eager with a warning)."""
        if not self.spec.compile:
            return loss_of, False, []
        compiled_model = cast(nn.Module, torch.compile(self.net))
        probe = next(iter(feed.batches(0))) if feed.unit == "epoch" else next(feed.stream(0))
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

    def _micro(self, forward: LossOf, batch: Batch, accum: int, share: float = 1.0) -> None:
        """One micro-batch. ``share`` weighs a rank's part of a global batch (its rows × world
        size / the batch's rows), so the ranks' averaged gradient is the global batch's."""
        batch = self._to_device(batch)
        with self._autocast():
            loss = forward(self.net, batch)
            if share != 1.0:
                loss = loss * share
        (loss / accum if accum > 1 else loss).backward()
        self._loss_sum += loss.detach().float()  # stays on the device: no sync per step
        self._loss_count += 1
        if share:
            self.state.samples += round(batch[0].shape[0] * self.world.size / share)

    def _closure_step(self, forward: LossOf, batch: Batch, share: float = 1.0) -> None:
        """One step of an optimizer that re-evaluates the loss (L-BFGS). Several ranks: the
        closure returns the global batch's loss, so every rank's line search decides alike."""
        batch = self._to_device(batch)

        def closure() -> torch.Tensor:
            self.optimizer.zero_grad(set_to_none=True)
            with self._autocast():
                loss = forward(self.net, batch) * share
            loss.backward()
            if self.world.many:
                loss = loss.detach().clone()
                torch.distributed.all_reduce(loss)
                loss /= self.world.size
            return loss

        loss = cast(torch.Tensor, self.optimizer.step(cast(Any, closure)))
        self._loss_sum += loss.detach().float()  # the global loss on every rank
        self._loss_count += 1
        if share:
            self.state.samples += round(batch[0].shape[0] * self.world.size / share)
        self._after_step()

    def _optimizer_step(self) -> None:
        if self.spec.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.state.model.parameters(), self.spec.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.scheduler is not None:
            self.scheduler.step()
        self.state.step += 1

    def _after_step(self) -> None:
        if self.scheduler is not None:
            self.scheduler.step()
        self.state.step += 1

    def _run_epochs(self, feed: Any, forward: LossOf) -> None:
        accum, n_batches, s = self.spec.grad_accum, len(feed), self.state
        step_callbacks, closure, control = self._step_callbacks, self._closure, self.control
        while s.epoch < s.total and not control.stop:
            shares = feed.shares(s.epoch, s.batch)
            batches = zip(feed.batches(s.epoch, s.batch), shares, strict=False)
            for i, (batch, share) in enumerate(batches, start=s.batch):
                if closure:
                    self._closure_step(forward, batch, share)
                else:
                    self._micro(forward, batch, accum, share)
                    if accum > 1 and (i + 1) % accum and i + 1 != n_batches:
                        continue
                    self._optimizer_step()
                s.batch = i + 1
                if step_callbacks:  # the epoch's mean loss so far, as the step loop gives
                    loss = self._loss_sum / max(self._loss_count, 1)
                    for cb in step_callbacks:
                        cb.on_step_end(s, control, loss)
                self._agree()
                if control.interrupted:
                    return
            s.epoch += 1
            s.batch = 0
            self._end_period({"epoch": float(s.epoch)})

    def _run_steps(self, feed: Any, forward: LossOf) -> None:
        accum, s = self.spec.grad_accum, self.state
        eval_every = int(getattr(self.spec, "eval_every", None) or s.total)
        batches: Iterator[Batch] = feed.stream(s.step * accum)
        while s.step < s.total and not self.control.stop and not self.control.interrupted:
            for _ in range(accum):
                self._micro(forward, next(batches), accum)
            self._optimizer_step()
            last = self._loss_sum / max(self._loss_count, 1)
            if s.step % eval_every == 0 or s.step == s.total:
                self._end_period({"step": float(s.step)})
            for cb in self._step_callbacks:  # after the evaluation, so a checkpoint includes it
                cb.on_step_end(s, self.control, last)
            self._maybe_save()

    def _agree(self) -> None:
        """Several ranks: stop, save and interrupt hold on every rank when any rank asks."""
        if not self.world.many:
            return
        c = self.control
        c.stop, c.save, c.interrupted = self.world.agree(c.stop, c.save, self._signalled)
        c.stop = c.stop or c.interrupted
        if c.stop and c.stop_reason is None and not c.interrupted:
            c.stop_reason = "another rank stopped the run"

    def _maybe_save(self) -> None:
        self._agree()
        if self.control.save:
            self.control.save = False
            if self.save is not None:
                self.save(self.state_dict())

    def _end_period(self, row: dict[str, float]) -> None:
        """Evaluate, record a history row and tell the callbacks."""
        if not self._loss_count:
            raise TrainingError("the train split produced no batches; it needs at least one row")
        if self.world.many:  # each rank's weighted loss: their sum / size is the global batch's
            torch.distributed.all_reduce(self._loss_sum)
            self._loss_sum /= self.world.size
        row["train_loss"] = float(self._loss_sum) / self._loss_count
        if not math.isfinite(row["train_loss"]):
            raise TrainingError(
                f"training diverged: train loss is {row['train_loss']} at "
                f"{self.state.unit} {self.state.counter}; lower train.optimizer.lr, set "
                "train.grad_clip, or check the data for huge values"
            )
        self._loss_sum = torch.zeros((), device=self.device)
        self._loss_count = 0
        model = self.state.model
        if self._evaluate is not None:
            model.eval()
            with torch.no_grad(), self._autocast():
                row.update(self._evaluate(model))
            model.train()
        row["lr"] = float(self.optimizer.param_groups[0]["lr"])
        row = self.world.broadcast(row)  # one row, rank 0's, decides for every rank
        if self.plateau is not None:
            self.plateau.step(row.get("valid_loss", row["train_loss"]))
        self.state.history.append(row)
        for cb in self.callbacks:
            cb.on_eval_end(self.state, self.control, row)
        if self.state.unit == "epoch":
            self._maybe_save()
