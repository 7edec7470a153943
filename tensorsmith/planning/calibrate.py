"""Timing on this machine: training steps, forward passes, memory bandwidth, the process's size.

A tiny model's step is not its FLOPs over the peak: Python, the optimizer's per-tensor work and
the data's fetch dominate it. So for ``--hardware local`` the planner times a few real steps of
the real module on real batches (after a warm-up; the median, so one slow step on a busy
machine does not set the figure) and a few forward passes, the way the trainer runs them.
"""

from __future__ import annotations

import contextlib
import resource
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

__all__ = [
    "measure_bandwidth",
    "peak_during",
    "process_bytes",
    "time_epochs",
    "time_forward",
    "time_steps",
]

WARMUP = 3  # the first steps of a run, slower than the rest

Batch = tuple[torch.Tensor, ...]
LossOf = Callable[[nn.Module, Batch], torch.Tensor]


def _autocast(precision: str) -> contextlib.AbstractContextManager[Any]:
    if precision == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def time_steps(
    module: nn.Module,
    loss_of: LossOf,
    batches: Iterator[Batch],
    optimizer: torch.optim.Optimizer,
    precision: str = "fp32",
    grad_clip: float | None = None,
    budget: float = 4.0,
) -> tuple[float, float]:
    """(median seconds of one step, the first steps' extra seconds): a step is a fetch, forward,
    backward, clip and optimizer step. The first 3 steps are slower (kernels chosen, memory
    allocated): a run pays their extra once, so it is measured too. Then timed steps, at least
    3 and at most 500, until ``budget`` seconds are spent."""
    step = _stepper(module, loss_of, optimizer, precision, grad_clip)
    times: list[float] = []
    spent = 0.0
    for _ in range(WARMUP + 500):
        start = time.perf_counter()
        step(next(batches))
        times.append(time.perf_counter() - start)
        spent += times[-1]
        if len(times) >= WARMUP + 3 and spent > budget:
            break
    median = statistics.median(times[WARMUP:])
    return median, max(0.0, sum(times[:WARMUP]) - WARMUP * median)


def time_epochs(
    module: nn.Module,
    loss_of: LossOf,
    feed: Any,
    optimizer: torch.optim.Optimizer,
    precision: str = "fp32",
    grad_clip: float | None = None,
    budget: float = 4.0,
) -> float:
    """Median seconds of one whole epoch of ``feed`` (its start, every batch), after a warm-up
    epoch: at least 3, until ``budget`` seconds are spent. For runs of many short epochs,
    whose cost per epoch is more than its steps'."""
    step = _stepper(module, loss_of, optimizer, precision, grad_clip)
    times: list[float] = []
    for epoch in range(1, 1000):
        start = time.perf_counter()
        for batch in feed.batches(epoch):
            step(batch)
        times.append(time.perf_counter() - start)
        if len(times) >= 4 and sum(times[1:]) > budget:
            break
    return statistics.median(times[1:])


def _stepper(
    module: nn.Module,
    loss_of: LossOf,
    optimizer: torch.optim.Optimizer,
    precision: str,
    grad_clip: float | None,
) -> Callable[[Batch], None]:
    """One training step on a batch, as the trainer takes it."""
    module.train()
    params = [p for p in module.parameters() if p.requires_grad]

    def step(batch: Batch) -> None:
        with _autocast(precision):
            loss = loss_of(module, batch)
        loss.backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def time_forward(
    module: nn.Module, loss_of: LossOf, batch: Batch, precision: str = "fp32", repeats: int = 5
) -> float:
    """Median seconds of a forward pass of ``batch`` with no gradients (evaluation, serving)."""
    module.eval()
    times = []
    with torch.no_grad(), _autocast(precision):
        loss_of(module, batch)  # warm-up
        for _ in range(repeats):
            start = time.perf_counter()
            loss_of(module, batch)
            times.append(time.perf_counter() - start)
    module.train()
    return statistics.median(times)


def measure_bandwidth(megabytes: int = 256, repeats: int = 5) -> float:
    """Memory bandwidth in bytes/s: the best of a few copies of a large tensor (read + write)."""
    src = torch.empty(megabytes * (1 << 20) // 4, dtype=torch.float32).fill_(1.0)
    dst = torch.empty_like(src)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - start)
    return 2.0 * src.numel() * 4 / best


def process_bytes() -> float:
    """This process's resident memory now (Linux /proc), else its peak so far."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return float(pages * resource.getpagesize())
    except (OSError, ValueError, IndexError):
        return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)


def peak_during(run: Callable[[], Any], every: float = 0.002) -> float:
    """How far this process's resident memory rose above its size at the start while ``run``
    ran: sampled every ``every`` seconds by a thread (the peak RSS counter cannot say, as it
    remembers every earlier peak)."""
    before = top = process_bytes()
    done = threading.Event()

    def watch() -> None:
        nonlocal top
        while not done.is_set():
            top = max(top, process_bytes())
            done.wait(every)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        run()
    finally:
        done.set()
        thread.join()
    return max(top, process_bytes()) - before
