"""A plan: parameters, work, memory, time, money, scale and serving of one recipe on one device.

Every number is a :class:`Row` with its unit and the assumption it rests on, so the table a
person reads and the JSON a program reads are the same numbers. The inputs (a built module, a
batch counted, maybe timed) are gathered by ``api.plan``; this module only does arithmetic.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from tensorsmith.planning.count import Counts, Parameters
from tensorsmith.planning.hardware import Device, device, device_names

__all__ = ["CHINCHILLA", "Job", "Options", "Plan", "Row", "estimate", "optimizer_bytes"]

CHINCHILLA = 20.0  # compute-optimal training tokens per parameter (Hoffmann et al. 2022)
# utilisation assumed when nothing was timed: GPUs at what large transformer runs report
# (PaLM 46%, nanoGPT ~40%); this CPU at about what a GPT whose steps were timed reached
DEFAULT_MFU = {"gpu": 0.40, "local": 0.50}
SERVE_BATCH = 64  # concurrent sequences (or rows in a batch) assumed when serving
STEP_FLOOR = 2e-3  # seconds: no GPU step or batch is quicker (launches, host work; assumed)


@dataclass
class Row:
    section: str
    name: str
    value: float | int | str | None
    unit: str = ""
    note: str = ""  # the assumption the number rests on


@dataclass
class Plan:
    name: str
    hardware: str
    devices: int
    rows: list[Row] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def add(self, section: str, name: str, value: Any, unit: str = "", note: str = "") -> None:
        self.rows.append(Row(section, name, value, unit, note))

    def value(self, name: str) -> Any:
        for row in self.rows:
            if row.name == name:
                return row.value
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        sections: dict[str, dict[str, Any]] = {}
        for row in self.rows:
            entry = {k: v for k, v in asdict(row).items() if k not in ("section", "name")}
            sections.setdefault(row.section, {})[row.name] = entry
        return {
            "name": self.name,
            "hardware": self.hardware,
            "devices": self.devices,
            "sections": sections,
            "warnings": self.warnings,
        }


@dataclass
class Job:
    """One run as the planner sees it (gathered by api.plan)."""

    name: str
    params: Parameters
    counts: Counts  # one micro-batch of batch_size
    activations: float  # bytes saved for backward by one micro-batch
    batch_size: int
    grad_accum: int
    steps: int  # optimizer steps
    tokens_per_sample: int
    train_samples: int  # one epoch's samples, or the corpus's tokens
    unit: str
    epochs: int | None  # None: a run in steps
    eval_samples: int  # samples evaluated over the whole run
    precision: str
    optimizer: str
    momentum: float = 0.0
    language: dict[str, int] | None = None  # n_layer, n_embd, block_size of a language model
    measured_step: float | None = None  # seconds per optimizer step, timed here (local)
    measured_epoch_start: float | None = None  # seconds to an epoch's first batch (local)
    measured_warmup: float = 0.0  # the first steps' extra seconds, paid once (local)
    evaluation_peak: float = 0.0  # this process at its peak while evaluating, measured (local)
    measured_eval: float | None = None  # seconds per evaluated sample, timed here (local)
    evaluations: int = 0  # evaluations over the run (an epoch task's: one per epoch)
    measured_evaluation: float | None = None  # seconds of one whole evaluation, timed here
    measured_latency: float | None = None  # seconds of one request's forward pass (local)
    measured_throughput: float | None = None  # samples/s of forward passes in batches (local)
    runtime_bytes: float = 0.0  # the process before the model: Python, torch, the data (local)
    notes: list[str] = field(default_factory=list)


@dataclass
class Options:
    device: Device
    devices: int = 1
    price: float | None = None  # per device-hour
    mfu: float | None = None  # assumed utilisation; None: measured (local) or the default


def optimizer_bytes(name: str, momentum: float) -> tuple[int, str]:
    """Optimizer state bytes per trainable parameter, and why."""
    if name in ("adam", "adamw"):
        return 8, "Adam keeps two fp32 moments per weight (8 B)"
    if name == "sgd":
        return (4, "SGD momentum buffer (4 B)") if momentum else (0, "plain SGD keeps no state")
    if name == "rmsprop":
        return 4 + (4 if momentum else 0), "RMSprop square average (+ momentum) in fp32"
    if name == "adagrad":
        return 4, "Adagrad sum of squares in fp32 (4 B)"
    return 168, "L-BFGS: 20 pairs of history vectors and 2 work vectors in fp32"


def estimate(job: Job, opt: Options) -> Plan:
    plan = Plan(job.name, opt.device.name, opt.devices)
    _parameters(plan, job)
    flops = _work(plan, job)
    peak_bytes, fixed, per_sample = _memory(plan, job, opt)
    _fit(plan, job, opt, peak_bytes, fixed, per_sample)
    hours = _time(plan, job, opt, flops)
    if opt.price is not None:
        dollars = opt.devices * hours * opt.price
        plan.add("money", "training cost", dollars, "$", f"{opt.devices} × hours × ${opt.price}/h")
    if job.language:
        _scaling(plan, job, flops)
    _serving(plan, job, opt)
    plan.warnings += job.notes
    return plan


def _parameters(plan: Plan, job: Job) -> None:
    p = job.params
    counted = "counted on the built module"
    plan.add("parameters", "total", p.total, "", counted)
    share = f"{p.trainable / p.total:.2%} of all" if p.total else ""
    plan.add("parameters", "trainable", p.trainable, "", share)
    plan.add("parameters", "embedding", p.embedding, "", "nn.Embedding weights")
    plan.add("parameters", "non-embedding", p.non_embedding, "")


def _work(plan: Plan, job: Job) -> float:
    per_step = job.counts.step * job.grad_accum
    samples = job.batch_size * job.grad_accum
    unit = "tokens" if job.tokens_per_sample > 1 else job.unit
    plan.add("work", f"{unit} per step", samples * job.tokens_per_sample, "")
    epochs = f"{job.epochs} epoch{'s' if job.epochs != 1 else ''}" if job.epochs else ""
    plan.add("work", "steps", job.steps, "", epochs)
    plan.add("work", f"{unit} in all", job.steps * samples * job.tokens_per_sample, "")
    plan.add("work", "FLOPs per step", per_step, "FLOP", job.counts.method)
    total = per_step * job.steps
    plan.add("work", "training FLOPs", total, "FLOP", "steps × FLOPs per step")
    return total


def _memory(plan: Plan, job: Job, opt: Options) -> tuple[float, float, float]:
    p = job.params
    weights = 4.0 * p.total  # fp32 weights; bf16 autocast keeps them fp32 and casts per op
    grads = 4.0 * p.trainable
    per_param, why = optimizer_bytes(job.optimizer, job.momentum)
    states = per_param * p.trainable
    acts = job.activations / opt.devices  # data-parallel: each device holds its share
    plan.add("memory", "weights", weights, "B", "fp32 (4 B per weight; bf16 autocast too)")
    plan.add("memory", "gradients", grads, "B", "fp32, trainable weights only")
    plan.add("memory", "optimizer states", states, "B", why)
    how = "Korthikanti et al. per layer" if job.language else "saved for backward, measured"
    plan.add("memory", "activations", acts, "B", f"{how}; batch {job.batch_size}")
    fixed = weights + grads + states + job.runtime_bytes
    if job.runtime_bytes:
        plan.add(
            "memory", "runtime", job.runtime_bytes, "B", "this process: Python, torch, the data"
        )
    peak = fixed + acts
    if job.evaluation_peak:
        plan.add(
            "memory", "while evaluating", job.evaluation_peak, "B",
            "this process with the model, evaluating every split (baselines too); measured",
        )  # fmt: skip
        peak = max(peak, job.evaluation_peak)
    plan.add("memory", "peak", peak, "B", "per device" if opt.devices > 1 else "")
    return peak, fixed, acts / max(1, job.batch_size)


def _fit(plan: Plan, job: Job, opt: Options, peak: float, fixed: float, per_sample: float) -> None:
    memory = opt.device.memory_bytes
    plan.add("memory", "device memory", memory, "B", opt.device.description)
    if peak <= memory:
        return
    largest = max((device(n) for n in device_names() if n != "local"), key=_memory_of)
    if fixed > largest.memory_bytes:
        plan.warnings.append(
            f"fits no listed device: its weights, gradients and optimizer states need "
            f"{_gb(fixed)}, {fixed / largest.memory_bytes:.1f}× the largest ({largest.name}, "
            f"{_gb(largest.memory_bytes)}); shard them over devices (FSDP) or shrink the model"
        )
        return
    if fixed >= memory:
        plan.warnings.append(
            f"does not fit {opt.device.name}: weights, gradients and optimizer states alone need "
            f"{_gb(fixed)}, {fixed / memory:.1f}× its {_gb(memory)}; use a larger device, more "
            "devices with sharding (FSDP), or a smaller model"
        )
        return
    fits = int((memory - fixed) // per_sample) if per_sample else 0
    plan.warnings.append(
        f"does not fit {opt.device.name}: the peak {_gb(peak)} is {peak / memory:.1f}× its "
        f"{_gb(memory)}; the largest batch size that fits is {fits} "
        f"(--set train.batch_size={fits})"
    )


def _memory_of(d: Device) -> float:
    return d.memory_bytes


def _gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB"


def _time(plan: Plan, job: Job, opt: Options, flops: float) -> float:
    peak = opt.device.peak_for(job.precision) * opt.devices
    if job.measured_step is not None and opt.mfu is None:
        step = job.measured_step / opt.devices
        util = job.counts.step * job.grad_accum / job.measured_step / peak * opt.devices
        how = f"timed on this machine ({util:.1%} of its peak)"
        evals = (job.measured_eval or 0.0) * job.eval_samples
        if job.measured_evaluation is not None:  # the evaluation path itself, metrics and all
            evals = job.measured_evaluation * job.evaluations
    else:
        kind = "local" if opt.device.name == "local" else "gpu"
        util = opt.mfu if opt.mfu is not None else DEFAULT_MFU[kind]
        step = job.counts.step * job.grad_accum / (peak * util)
        how = f"FLOPs ÷ ({opt.devices} × {_si(peak / opt.devices)}FLOP/s × {util:.0%} assumed)"
        if kind == "gpu" and step < STEP_FLOOR:  # a tiny model: launches, not FLOPs
            step = STEP_FLOOR
            how = f"at least {STEP_FLOOR * 1000:.0f} ms a step (kernel launches, the optimizer)"
        per_sample = job.counts.forward / max(1, job.batch_size)
        evals = per_sample * job.eval_samples / (peak * util)
    plan.add("time", "utilisation", util, "", how)
    plan.add("time", "per step", step, "s", how)
    plan.add("time", "evaluation", evals, "s", f"{job.eval_samples:,} samples evaluated")
    seconds = step * job.steps + evals
    how = "steps × per step + evaluation"
    if job.measured_step is not None and opt.mfu is None:
        seconds += job.measured_warmup
        how += f" + the first steps' warm-up ({job.measured_warmup:.2g} s)"
        if job.measured_epoch_start:
            seconds += job.measured_epoch_start * (job.epochs or 0)
            how += f" + {job.epochs} epoch starts ({job.measured_epoch_start * 1000:.3g} ms each)"
    plan.add("time", "training time", seconds, "s", how)
    plan.add("time", "device-hours", seconds / 3600 * opt.devices, "h")
    return seconds / 3600


def _si(x: float) -> str:
    for div, unit in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M")):
        if x >= div:
            return f"{x / div:.3g} {unit}"
    return f"{x:.3g} "


def _scaling(plan: Plan, job: Job, flops: float) -> None:
    tokens = job.steps * job.batch_size * job.grad_accum * job.tokens_per_sample
    n = job.params.total
    plan.add("scaling", "tokens per parameter", tokens / n, "", f"Chinchilla: ~{CHINCHILLA:.0f}")
    budget = 6.0 * n * tokens  # the compute a model of this size spends on these tokens
    best = math.sqrt(budget / (6 * CHINCHILLA))
    plan.add(
        "scaling", "compute-optimal size", best, "parameters",
        f"for 6·N·D = {budget:.3g} FLOP at {CHINCHILLA:.0f} tokens per parameter",
    )  # fmt: skip
    if job.train_samples:
        plan.add("scaling", "epochs over the corpus", tokens / job.train_samples, "")


def _serving(plan: Plan, job: Job, opt: Options) -> None:
    dev, price = opt.device, opt.price
    kind = "local" if dev.name == "local" else "gpu"
    util = opt.mfu if opt.mfu is not None else DEFAULT_MFU[kind]
    peak = dev.peak_for(job.precision) * util
    weights = 4.0 * job.params.total if job.precision == "fp32" else 2.0 * job.params.total
    if job.language:
        _serve_tokens(plan, job, dev, peak, weights, price)
        return
    per_request = job.counts.forward / max(1, job.batch_size)
    plan.add("serving", "FLOPs per request", per_request, "FLOP", "one sample's forward pass")
    memory = weights + job.activations / max(1, job.batch_size)
    plan.add(
        "serving", "memory per request", memory, "B",
        "at most: weights + one sample's training activations",
    )  # fmt: skip
    rate = peak / per_request if per_request else float("inf")
    how = f"compute-bound at {util:.0%} of peak"
    if rate > SERVE_BATCH / STEP_FLOOR:  # a tiny model: a batch's forward pass has a floor too
        rate = SERVE_BATCH / STEP_FLOOR
        how = f"batches of {SERVE_BATCH} at least {STEP_FLOOR * 1000:.0f} ms each (assumed)"
    if job.measured_latency and job.measured_throughput:
        rate = job.measured_throughput
        plan.add("serving", "latency at batch 1", job.measured_latency, "s", "timed here")
        how = f"forward passes of batch {job.batch_size} timed here"
    plan.add("serving", "requests per second", rate, "1/s", f"per device, {how}")
    if price is not None:
        plan.add("serving", "cost per 1,000 requests", price / 3600 / rate * 1000, "$")


def _serve_tokens(
    plan: Plan, job: Job, dev: Device, peak: float, weights: float, price: float | None
) -> None:
    lm = job.language or {}
    layers, width, context = lm["n_layer"], lm["n_embd"], lm["block_size"]
    shards = max(1, math.ceil(weights / (0.9 * dev.memory_bytes)))
    if shards > 1:  # the weights alone outgrow one device: tensor-parallel over ``shards``
        plan.add("serving", "devices per replica", shards, "", "weights split across devices")
        dev = Device(dev.name, dev.description, dev.peak, dev.memory_bytes * shards,
                     dev.bandwidth * shards, dev.source)  # fmt: skip
        peak *= shards
        price = price * shards if price is not None else None
    per_token = 2.0 * job.params.total + 4.0 * layers * width * context
    plan.add("serving", "FLOPs per token", per_token, "FLOP", "2·N + attention over the context")
    kv = 2.0 * layers * width * (4 if job.precision == "fp32" else 2)
    plan.add("serving", "KV cache per token", kv, "B", "keys and values of every layer")
    plan.add("serving", "memory per sequence", kv * context, "B", f"a full {context}-token cache")
    single = dev.bandwidth / (weights + kv * context)
    plan.add(
        "serving", "tokens/s, one stream", single, "1/s",
        "bandwidth bound: every weight read once per token",
    )  # fmt: skip
    fits = max(1, int((dev.memory_bytes - weights) // max(kv * context, 1.0)))
    batch = min(SERVE_BATCH, fits)
    streams = batch * dev.bandwidth / (weights + batch * kv * context)
    rate = min(streams, peak / per_token)
    plan.add(
        "serving", "tokens/s per device", rate, "1/s",
        f"{batch} streams: the smaller of the bandwidth and the compute bound",
    )  # fmt: skip
    if price is not None:
        plan.add("serving", "cost per million tokens", price / 3600 / rate * 1e6, "$")
