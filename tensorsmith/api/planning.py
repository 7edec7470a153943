"""The ``plan`` verb: what a recipe will cost before training, from the recipe alone.

The recipe's task sizes the data (``Task.workload``: a table's rows, a corpus's bytes); the
architecture registry builds the module (on the ``meta`` device first: shapes, no storage);
``planning`` counts and adds up. On ``--hardware local`` a small model's steps are also timed
here, and the process's own size measured, because a tiny model's cost is not its FLOPs.
"""

from __future__ import annotations

import io
import math
import statistics
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from torch import nn

from tensorsmith.api.finetuning import finetune_recipe
from tensorsmith.api.recipes import RecipeLike, check_recipe, parse_only
from tensorsmith.errors import RecipeError
from tensorsmith.evaluation.evaluate import Evaluator
from tensorsmith.finetune.adapt import plan_round
from tensorsmith.finetune.start import Start
from tensorsmith.models import build_model
from tensorsmith.models.gpt import GPT
from tensorsmith.planning.calibrate import (
    measure_bandwidth,
    peak_during,
    process_bytes,
    time_epochs,
    time_forward,
    time_steps,
)
from tensorsmith.planning.count import (
    activation_bytes,
    as_gpt,
    count_flops,
    gpt_activation_bytes,
    parameters,
)
from tensorsmith.planning.estimate import Job, Options, Plan, estimate
from tensorsmith.planning.hardware import Device, device, device_names, local_memory_bytes
from tensorsmith.recipe import Recipe, load_yaml
from tensorsmith.store.artifact import store_root
from tensorsmith.tasks import Prepared, Task, Workload, batches_of, create_task
from tensorsmith.training.hardware import cpu_name, resolve_precision
from tensorsmith.training.mfu import peak_flops
from tensorsmith.training.optim import build_optimizer

__all__ = ["Sizes", "hardware_device", "hardware_table", "plan", "plan_job", "sweep"]

REAL_LIMIT = 200e6  # parameters: larger modules stay on the meta device (counted, not run)
TIMED_LIMIT = 5.0  # seconds a step takes at the peak, past which the planner times none
SHORT_EPOCH = 0.5  # seconds: epochs shorter than this are timed whole


@dataclass
class Sizes:
    """What the command line says of the run beyond the recipe."""

    tokens: float | None = None  # a language model's training tokens (its steps follow)
    rows: int | None = None  # samples per epoch instead of the data's own count
    start: str | None = None  # a fine-tune's starting point (--from), else finetune.from


def plan(
    recipe: RecipeLike,
    hardware: str | Device = "local",
    devices: int = 1,
    price: float | None = None,
    mfu: float | None = None,
    overrides: list[str] | None = None,
    sizes: Sizes | None = None,
    store: str | Path | None = None,
) -> Plan:
    """The plan of ``recipe`` on ``devices`` × ``hardware`` (a name of the hardware table)."""
    check_options(devices, price, mfu)
    dev = hardware if isinstance(hardware, Device) else hardware_device(hardware, store)
    job = plan_job(recipe, overrides, sizes or Sizes(), store, dev)
    return estimate(job, Options(dev, devices, price, mfu))


def sweep(
    recipe: RecipeLike,
    key: str,
    values: list[str],
    hardware: str = "local",
    devices: int = 1,
    price: float | None = None,
    mfu: float | None = None,
    overrides: list[str] | None = None,
    sizes: Sizes | None = None,
    store: str | Path | None = None,
) -> list[Plan]:
    """One plan per value of ``key`` (a recipe key such as ``model.n_layer``)."""
    if not values or not key:
        raise RecipeError("--sweep takes KEY=V1,V2,… such as model.n_layer=4,8,16")
    check_options(devices, price, mfu)
    dev = hardware_device(hardware, store)
    extra = list(overrides or [])
    return [
        plan(recipe, dev, devices, price, mfu, [*extra, f"{key}={v}"], sizes, store) for v in values
    ]


def hardware_table(store: str | Path | None = None) -> list[Device]:
    """Every device of the table, this machine's measured entry first."""
    return [hardware_device("local", store)] + [device(n) for n in device_names() if n != "local"]


def check_options(devices: int, price: float | None, mfu: float | None) -> None:
    if devices < 1:
        raise RecipeError(f"--devices must be 1 or more, got {devices}")
    if price is not None and not price > 0:
        raise RecipeError(f"--price is dollars per device-hour and must be above 0, got {price}")
    if mfu is not None and not 0 < mfu <= 1:
        raise RecipeError(f"--mfu is a fraction of the peak in (0, 1], got {mfu}")


def hardware_device(name: str, store: str | Path | None = None) -> Device:
    """A device of the table, or this machine with its peaks measured (cached in the store)."""
    if name != "local":
        return device(name)
    cache = store_root(store) / ".cache"
    threads = torch.get_num_threads()
    peaks: dict[str, float | None] = {
        p: peak_flops("cpu", p, cache, threads) for p in ("fp32", "bf16")
    }
    return Device(
        "local",
        f"{cpu_name()}, {threads} torch threads",
        peaks,
        local_memory_bytes(),
        measure_bandwidth(),
        "measured on this machine (matrix multiplies, a large copy)",
    )


def _parsed(
    recipe: RecipeLike, overrides: list[str] | None, store: str | Path | None, sizes: Sizes
) -> tuple[Recipe, Start | None]:
    """The checked recipe (a fine-tune's with its parent's model keys) and a fine-tune's start
    (``sizes.start``, else the recipe's ``finetune.from``)."""
    raw: Any = recipe
    if isinstance(recipe, str | Path) and Path(recipe).is_file():
        raw = load_yaml(Path(recipe).read_text(encoding="utf-8"), str(recipe))
    if sizes.start is not None or (isinstance(raw, dict) and raw.get("finetune") is not None):
        if not isinstance(recipe, str | Path | dict):
            raise RecipeError("plan a fine-tune from its recipe file")
        return finetune_recipe(recipe, sizes.start, overrides, store)
    parsed = parse_only(recipe, overrides)
    check_recipe(parsed)  # the data is the task's to find (a language model plans without)
    return parsed, None


def plan_job(
    recipe: RecipeLike,
    overrides: list[str] | None,
    sizes: Sizes,
    store: str | Path | None,
    dev: Device,
    resolved: tuple[Recipe, Start | None] | None = None,
) -> Job:
    """Everything the estimate needs: the module built and counted, the data sized, and on
    ``local`` a few steps timed. ``resolved``: the recipe already parsed (and a fine-tune's
    start), as ``compare`` reads them from a stored version."""
    parsed, start = resolved or _parsed(recipe, overrides, store, sizes)
    task = create_task(parsed)
    if start is not None and start.task is not None:
        task.inherit(start.task)
    quiet = Console(file=io.StringIO())
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(parsed.train.threads or threads)  # the run's, timed as it runs
        with tempfile.TemporaryDirectory(prefix="ts-plan-") as cache:
            work = task.workload(Path(cache), quiet, int(sizes.tokens) if sizes.tokens else None)
            if dev.name == "local":  # the process is measured: make it a training process
                _training_libraries()
            return _job(task, work, start, sizes, process_bytes(), dev)
    finally:
        torch.set_num_threads(threads)  # train.threads applies to this plan only


def _job(
    task: Task, work: Workload, start: Start | None, sizes: Sizes, runtime: float, dev: Device
) -> Job:
    recipe, spec = task.recipe, task.recipe.train
    precision = _precision(spec.precision, dev)
    timed = dev.name == "local"
    module = _build(recipe, work.dims, start, "meta")
    params = parameters(module)
    gpt = as_gpt(module)
    if gpt is None or params.total <= REAL_LIMIT:
        module = _build(recipe, work.dims, start, "cpu")
        params = parameters(module)  # a fine-tune's adapters and frozen layers in place
    batch = next(batches_of(work.feed))
    if _on_meta(module):
        batch = tuple(t.to("meta") for t in batch)
    loss_of = task.loss()
    counts = count_flops(module, loss_of, batch)
    bsz = len(batch[0])
    if gpt is not None:
        acts = gpt_activation_bytes(gpt, bsz, precision)
    else:
        acts = activation_bytes(module, loss_of, batch)
    steps, epochs, evaluated = _length(task, work, sizes)
    job = Job(
        recipe.name, params, counts, acts, bsz, spec.grad_accum, steps,
        int(getattr(work.feed, "tokens_per_sample", 1)), sizes.rows or work.train_samples,
        work.unit, epochs, evaluated, precision, spec.optimizer.name, spec.optimizer.momentum,
        _language(gpt), runtime_bytes=runtime if timed else 0.0, notes=list(work.notes),
    )  # fmt: skip
    if timed and not _on_meta(module):
        job = _timed(job, task, module, work, start, dev.peak_for(precision))
        if work.prepared is not None and work.eval_samples:
            once, peak = _evaluation(task, module, work.prepared)
            job = replace(
                job, evaluations=epochs or 0, measured_evaluation=once, evaluation_peak=peak
            )
    return job


def _evaluation(task: Task, module: nn.Module, prepared: Prepared) -> tuple[float, float]:
    """(seconds of one in-training evaluation of the valid split through the evaluation path,
    the median of three; this process's memory at its peak during the evaluations, the final
    one included: every split, every metric, the baselines)."""
    evaluator = Evaluator(task, prepared.splits, task.recipe.evaluate.metrics, None)
    times: list[float] = []

    def evaluate() -> None:
        for _ in range(3):
            start = time.perf_counter()
            evaluator.in_loop(module)
            times.append(time.perf_counter() - start)
        evaluator.final(module)

    peak = process_bytes() + peak_during(evaluate)
    module.train()
    return statistics.median(times), peak


def _precision(setting: str, dev: Device) -> str:
    """``auto`` on the planned device: bf16 where it has bf16 matrix units, else fp32."""
    if setting != "auto":
        return setting
    if dev.name == "local":
        return resolve_precision(setting, "cpu")
    return "bf16" if dev.peak.get("bf16") else "fp32"


def _training_libraries() -> None:
    """Load what a training run loads beyond the data (scikit-learn's metrics, matplotlib's
    plots), so that this process's size is a training process's before its model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot
    import sklearn.metrics  # noqa: F401


def _on_meta(module: nn.Module) -> bool:
    return any(p.is_meta for p in module.parameters())


def _build(recipe: Recipe, dims: dict[str, Any], start: Start | None, where: str) -> nn.Module:
    torch.manual_seed(recipe.train.seed)
    with torch.device(where):
        module = build_model(recipe.model, dims)
    if start is not None and recipe.finetune is not None and where != "meta":
        opt = recipe.train.optimizer
        module, _ = plan_round(recipe.finetune, start.weights, opt.lr, opt.weight_decay, 1)(module)
    return module


def _language(gpt: GPT | None) -> dict[str, int] | None:
    if gpt is None:
        return None
    c = gpt.config
    return {"n_layer": c.n_layer, "n_embd": c.n_embd, "block_size": c.block_size}


def _length(task: Task, work: Workload, sizes: Sizes) -> tuple[int, int | None, int]:
    """(optimizer steps, epochs or None, samples evaluated over the run)."""
    spec = task.recipe.train
    if work.feed.unit == "epoch":
        batches = len(work.feed)  # a whole-split batch ("full") is one
        if sizes.rows and isinstance(spec.batch_size, int):
            batches = math.ceil(sizes.rows / spec.batch_size)
        per_epoch = math.ceil(batches / spec.grad_accum)
        return spec.length * per_epoch, spec.length, spec.length * work.eval_samples
    per_step = spec.batch_size * spec.grad_accum * int(work.feed.tokens_per_sample)
    steps = math.ceil(sizes.tokens / per_step) if sizes.tokens else spec.length
    every = int(getattr(spec, "eval_every", None) or steps)
    evaluations = 1 + steps // every + (1 if steps % every else 0)
    per_eval = int(getattr(spec, "eval_batches", None) or 1) * spec.batch_size
    return steps, None, evaluations * per_eval


def _timed(
    job: Job, task: Task, module: nn.Module, work: Workload, start: Start | None, peak: float
) -> Job:
    """A few real steps and forward passes of the real module, when they are quick at
    ``peak`` (this machine's measured FLOP/s)."""
    spec = task.recipe.train
    if job.counts.step * spec.grad_accum / peak > TIMED_LIMIT:
        return job  # too slow to time: the estimate rests on FLOPs alone
    groups = _groups(task, module, start)
    optimizer = build_optimizer(groups, spec.optimizer)
    loss_of = task.loss()
    batches = batches_of(work.feed)
    step, warmup = time_steps(module, loss_of, batches, optimizer, job.precision, spec.grad_clip)
    per_epoch = len(work.feed) if work.feed.unit == "epoch" else 0
    epoch_start: float | None
    if 0 < per_epoch * step < SHORT_EPOCH:  # many short epochs: time whole ones, starts too
        epoch = time_epochs(module, loss_of, work.feed, optimizer, job.precision, spec.grad_clip)
        step, epoch_start = epoch / per_epoch, 0.0
    else:
        epoch_start = _epoch_start(work.feed)
    batch = next(batches_of(work.feed))
    forward = time_forward(module, loss_of, batch, job.precision)
    one = time_forward(module, loss_of, tuple(t[:1] for t in batch), job.precision)
    return replace(
        job,
        measured_step=step * spec.grad_accum,
        measured_warmup=warmup,
        measured_epoch_start=epoch_start,
        measured_eval=forward / job.batch_size,
        measured_latency=one,
        measured_throughput=job.batch_size / forward,
    )


def _epoch_start(feed: Any) -> float | None:
    """Seconds an epoch takes to hand out its first batch (a DataLoader's workers start)."""
    if feed.unit != "epoch":
        return None
    start = time.perf_counter()
    next(iter(feed.batches(1)))
    return time.perf_counter() - start


def _groups(task: Task, module: nn.Module, start: Start | None) -> Any:
    spec = task.recipe.train
    if start is not None and task.recipe.finetune is not None:
        return [p for p in module.parameters() if p.requires_grad]
    groups_of = getattr(module, "optim_groups", None)
    if callable(groups_of):
        return groups_of(spec.optimizer.weight_decay)
    return module.parameters()
