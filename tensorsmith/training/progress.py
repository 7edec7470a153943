"""Progress: a live rich bar on a terminal, one plain line per epoch / evaluation otherwise."""

from __future__ import annotations

import sys
import time
from typing import IO, Any

import torch

from tensorsmith.training.state import Callback, TrainControl, TrainState

__all__ = ["Progress"]


def _fmt(value: float) -> str:
    return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.3e}"


def _clock(seconds: float) -> str:
    seconds = max(int(seconds), 0)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class Progress(Callback):
    """Shows loss, metrics, rate (samples or tokens per second) and ETA."""

    def __init__(
        self,
        total: int,
        unit: str = "epoch",
        log_every: int = 1,
        rate_unit: str = "samples",
        flops_per_unit: float = 0.0,
        peak_flops: float = 0.0,
        stream: IO[str] | None = None,
        live: bool | None = None,
    ) -> None:
        self.total = total
        self.unit = unit
        self.log_every = log_every
        self.rate_unit = rate_unit
        self.flops_per_unit = flops_per_unit  # with peak_flops: shows model FLOPs utilisation
        self.peak_flops = peak_flops
        self.stream = stream or sys.stdout
        self.live = self.stream.isatty() if live is None else live
        self.wants_steps = unit == "step" and self.live
        self._bar: Any = None

    def on_fit_start(self, state: TrainState, control: TrainControl) -> None:
        self.state = state
        self._start = time.perf_counter()
        self._start_samples = 0
        self._first: int | None = None
        if self.live:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                TextColumn(f"[bold]{self.unit}"),
                MofNCompleteColumn(),
                BarColumn(),
                TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                console=Console(file=self.stream),
                transient=False,
            )
            self._task = self._bar.add_task("train", total=self.total, info="")
            self._bar.start()

    def _counter(self) -> int:
        return self.state.counter

    def _rate(self) -> float:
        # measured from the first report on, so resumed runs and compile warm-up don't skew it
        now = time.perf_counter()
        samples = self.state.samples * self.state.tokens_per_sample
        if self._first is None:
            self._first, self._start, self._start_samples = self._counter(), now, samples
            return 0.0
        return (samples - self._start_samples) / max(now - self._start, 1e-9)

    def _eta(self) -> float:
        done = self._counter() - (self._first or 0)
        left = self.total - self._counter()
        return (time.perf_counter() - self._start) / done * left if done > 0 else 0.0

    def _speed(self, rate: float) -> str:
        text = f"{rate:,.0f} {self.rate_unit}/s"
        if self.flops_per_unit and self.peak_flops:
            text += f"  mfu {rate * self.flops_per_unit / self.peak_flops:.1%}"
        return text

    def on_step_end(self, state: TrainState, control: TrainControl, loss: torch.Tensor) -> None:
        rate = self._rate()
        self._bar.update(
            self._task,
            completed=state.step,
            info=f"loss {float(loss):.4f}  {self._speed(rate)}",
        )

    def on_eval_end(self, state: TrainState, control: TrainControl, row: dict[str, float]) -> None:
        counter = self._counter()
        rate = self._rate()
        due = counter % self.log_every == 0 or counter == self.total
        if not (self.live or due):
            return  # nothing to show: skip the formatting on this epoch
        shown = {k: v for k, v in row.items() if k not in ("epoch", "step")}
        info = "  ".join(f"{k} {_fmt(v)}" for k, v in shown.items())
        if self.live:
            self._bar.update(self._task, completed=counter, info=f"{info}  {self._speed(rate)}")
        else:
            print(
                f"{self.unit} {counter}/{self.total}  {info}  {self._speed(rate)}  "
                f"eta {_clock(self._eta())}",
                file=self.stream,
                flush=False,
            )

    def on_fit_end(self, state: TrainState, control: TrainControl) -> None:
        if self._bar is not None:
            self._bar.stop()
        self.stream.flush()
