"""One training run: a prepared task in, a trained module and its run record out.

No per-task branches: the task gives the data feed, the sizes and the loss; the architecture
registry builds the module; the one ``Trainer`` runs it. ``initial`` weights (a fine-tune's
starting point) load by name where names and shapes match.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from torch import nn

from tensorsmith.models import build_model
from tensorsmith.tasks import Prepared, Task
from tensorsmith.tasks.base import LossOf
from tensorsmith.training.callbacks import CheckpointSchedule, EarlyStopping
from tensorsmith.training.distributed import World
from tensorsmith.training.hardware import (
    hardware,
    library_versions,
    peak_memory_bytes,
    resolve_precision,
)
from tensorsmith.training.mfu import confirm_peak, peak_flops
from tensorsmith.training.progress import Progress
from tensorsmith.training.state import Callback
from tensorsmith.training.trainer import Evaluate, FitResult, Resume, Trainer

__all__ = ["Adapt", "Trained", "train_module"]

# a fine-tune's hook: the freshly built module → (the module to train, its optimizer groups)
Adapt = Callable[[nn.Module], tuple[nn.Module, list[dict[str, Any]] | None]]


@dataclass
class Trained:
    module: nn.Module
    fit: FitResult
    record: dict[str, Any]  # what the run measured, for run.json


def _parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())  # a tied tensor is yielded once


def _flops_per_sample(module: nn.Module, tokens_per_sample: int) -> float:
    """Training FLOPs per sample: the model's own count (transformers), else 6 per parameter."""
    per_token = getattr(module, "flops_per_token", None)
    if callable(per_token):
        return float(per_token()) * tokens_per_sample
    return 6.0 * _parameters(module)


class _Discard(io.StringIO):
    """A stream that keeps nothing (another rank's progress)."""

    def write(self, text: str) -> int:
        return len(text)


def _callbacks(
    task: Task,
    feed: Any,
    console: Console,
    monitor_mode: str | None,
    flops_per_unit: float,
    peak: float,
    main: bool = True,
) -> list[Callback]:
    spec = task.recipe.train
    callbacks: list[Callback] = []
    es = spec.early_stopping
    if es is not None and monitor_mode is not None:
        callbacks.append(EarlyStopping(es.monitor, monitor_mode, es.patience, es.min_delta))
    step_mode = feed.unit == "step"
    callbacks.append(
        CheckpointSchedule(spec.checkpoint_every, spec.checkpoint_seconds, per_step=step_mode)
    )
    stream = console.file if main else _Discard()  # rank 0 alone shows progress; every rank
    # keeps the same callbacks, so each loads the one checkpoint's callback states
    rate_unit = "tokens" if feed.tokens_per_sample > 1 else "samples"
    log_every = int(getattr(spec, "log_every", 1))
    callbacks.append(
        Progress(spec.length, feed.unit, log_every, rate_unit, flops_per_unit, peak, stream)
    )
    return callbacks


def train_module(
    task: Task,
    prepared: Prepared,
    evaluate: Evaluate | None,
    console: Console,
    cache: Path,
    resume: Resume | None = None,
    save: Callable[[dict[str, Any]], None] | None = None,
    monitor_mode: str | None = None,
    adapt: Adapt | None = None,
    loss: LossOf | None = None,
    world: World | None = None,
) -> Trained:
    """Build the module, train it with the task's loss, and measure the run.

    ``adapt`` (a fine-tune's start) takes the new module and returns the module to train (its
    weights loaded, layers frozen or wrapped in adapters) and its optimizer groups. ``loss``
    replaces the task's own (a distillation's loss, which reads a teacher's outputs too).
    ``world``: this process's rank of a distributed run (every rank calls this).
    """
    spec, feed = task.recipe.train, prepared.train
    world = world or World()
    module, groups = _build(task, prepared, adapt)
    device = world.device if world.many else "cuda" if torch.cuda.is_available() else "cpu"
    tokens = int(feed.tokens_per_sample)
    flops = _flops_per_sample(module, tokens)
    measured = callable(getattr(module, "flops_per_token", None))
    precision = resolve_precision(spec.precision, device)
    threads = spec.threads or torch.get_num_threads()
    # one process's peak (rank 0 measures it, into the cache); the run's is the ranks' sum
    one = peak_flops(device, precision, cache, threads) if measured and world.main else 0.0
    one = float(world.broadcast(one))
    peak = one * world.size
    callbacks = _callbacks(task, feed, console, monitor_mode, flops / tokens, peak, world.main)
    trainer = Trainer(spec, callbacks, device, save, precision, world)
    groups_of = getattr(module, "optim_groups", None)
    if groups is None and callable(groups_of):
        groups = groups_of(spec.optimizer.weight_decay)
    fit = trainer.fit(module, feed, loss or task.loss(), evaluate, groups, resume)
    if world.strategy == "fsdp":  # every rank gets the whole model back, unsharded
        weights = world.broadcast(world.weights(module))
        module, _ = _build(task, prepared, adapt)
        module.load_state_dict(weights)
    module = module.cpu().eval()
    record = _record(module, fit, spec, device, precision, flops, tokens)
    if world.many:
        record["distributed"] = {**world.record(), "ranks": _ranks(world, fit, tokens)}
    if peak and world.main:
        rate = record["samples_per_second"]
        one = confirm_peak(device, precision, cache, rate * flops / world.size, one, threads)
        record["peak_flops"] = peak = one * world.size
        record["mfu"] = min(rate * flops / peak, 1.0)
    return Trained(module, fit, record)


def _build(
    task: Task, prepared: Prepared, adapt: Adapt | None
) -> tuple[nn.Module, list[dict[str, Any]] | None]:
    """The seeded module (and its optimizer groups), adapted for a fine-tune's start."""
    torch.manual_seed(task.recipe.train.seed)
    module = build_model(task.recipe.model, prepared.dims)
    return adapt(module) if adapt is not None else (module, None)


def _ranks(world: World, fit: FitResult, tokens: int) -> list[dict[str, float]]:
    """Each rank's own throughput: the rows it trained on over its own training time."""
    local = fit.samples / world.size / fit.train_seconds if fit.train_seconds > 0 else 0.0
    mine = {"rank": world.rank, "samples_per_second": local, "train_seconds": fit.train_seconds}
    if tokens > 1:
        mine["tokens_per_second"] = local * tokens
    return list(world.gather(mine))


def _record(
    module: nn.Module,
    fit: FitResult,
    spec: Any,
    device: str,
    precision: str,
    flops: float,
    tokens: int,
) -> dict[str, Any]:
    """What the run measured, for run.json."""
    rate = fit.samples / fit.train_seconds if fit.train_seconds > 0 else 0.0
    record: dict[str, Any] = {
        "train_seconds": fit.train_seconds,
        "steps": fit.steps,
        "epochs": fit.epochs,
        "samples_per_second": rate,
        "flops_per_second": rate * flops,
        "parameters": _parameters(module),
        "trainable_parameters": sum(p.numel() for p in module.parameters() if p.requires_grad),
        "peak_memory_bytes": peak_memory_bytes(device),
        "precision": precision,
        "precision_setting": spec.precision,
        "stopped_early": fit.stopped_early,
        "stop_reason": fit.stop_reason,
        "best": fit.best_row,
        "compiled": fit.compiled,
        "notes": fit.notes,
        "hardware": hardware(device),
        "versions": library_versions(),
        "seed": spec.seed,
    }
    if tokens > 1:
        record["tokens_per_second"] = rate * tokens
        record["flops_per_token"] = flops / tokens
    return record
