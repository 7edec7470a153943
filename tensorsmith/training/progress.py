"""Progress: one live line on a terminal, one plain record per line otherwise.

On a terminal the line is rewritten in place and laid out to the terminal's width: the counter
(``epoch 90/300``), the main loss and the ETA always show; the valid loss, a watched metric,
the rate, MFU, the learning rate and the bar are dropped, least important first, when they do
not fit. Piped output is one record per evaluation (every ``log_every`` epochs), never wrapped,
so logs stay greppable. A rate is shown only once it has been measured, and MFU is never shown
above 100%.
"""

from __future__ import annotations

import math
import shutil
import sys
import time
from typing import IO

import torch

from tensorsmith.training.state import Callback, TrainControl, TrainState

__all__ = ["Progress", "fit_line"]

REFRESH_SECONDS = 0.1  # a live line is redrawn at most this often


def _fmt(value: float) -> str:
    if not math.isfinite(value):
        return str(value)
    return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.3e}"


def _clock(seconds: float) -> str:
    seconds = max(int(seconds), 0)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def fit_line(fields: list[tuple[int, str]], width: int, bar: float | None = None) -> str:
    """Join ``(priority, text)`` fields in order, dropping the highest priority numbers (least
    important) until the line fits ``width``; a bar of the done fraction takes what is left."""
    kept = list(fields)
    while kept and len("  ".join(t for _, t in kept)) > width:
        drop = max(range(len(kept)), key=lambda i: kept[i][0])
        if kept[drop][0] == 0:
            break  # priority 0 fields always stay
        kept.pop(drop)
    line = "  ".join(t for _, t in kept)
    room = width - len(line) - 2
    if bar is not None and room >= 10:
        filled = round(min(max(bar, 0.0), 1.0) * room)
        parts = line.split("  ", 1)
        head = parts[0]
        tail = parts[1] if len(parts) > 1 else ""
        line = f"{head}  {'━' * filled}{'─' * (room - filled)}  {tail}".rstrip()
    return line[:width]


class Progress(Callback):
    """Shows the counter, loss, valid metrics, rate (samples or tokens per second) and ETA."""

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
        width: int | None = None,
    ) -> None:
        self.total = total
        self.unit = unit
        self.log_every = log_every
        self.rate_unit = rate_unit
        self.flops_per_unit = flops_per_unit  # with peak_flops: model FLOPs utilisation
        self.peak_flops = peak_flops
        self.stream = stream or sys.stdout
        self.live = self.stream.isatty() if live is None else live
        self.width = width
        self.wants_steps = self.live
        self.last_eval: dict[str, float] = {}
        self._drawn = 0.0

    # ------------------------------------------------------------------ measuring

    def on_fit_start(self, state: TrainState, control: TrainControl) -> None:
        self.state = state
        self._first: tuple[int, float, int] | None = None  # (counter, time, samples) at start
        self._loss = math.nan
        if state.resumed_from is not None:
            self._print(f"resumed at {self.unit} {state.counter} of {self.total}")

    def _samples(self) -> int:
        return self.state.samples * self.state.tokens_per_sample

    def _rate(self) -> float | None:
        """Samples (tokens) per second since the first report, None until measurable."""
        now = time.perf_counter()
        if self._first is None:
            self._first = (self.state.counter, now, self._samples())
            return None
        counter, start, samples = self._first
        if self.state.counter <= counter or now - start < 1e-3:
            return None
        return (self._samples() - samples) / (now - start)

    def _eta(self) -> str:
        if self._first is None:
            return "eta --"
        counter, start, _ = self._first
        done = self.state.counter - counter
        if done <= 0:
            return "eta --"
        left = self.total - self.state.counter
        return f"eta {_clock((time.perf_counter() - start) / done * left)}"

    # ------------------------------------------------------------------ the line

    def _fields(self, loss: float) -> list[tuple[int, str]]:
        fields = [(0, f"{self.unit} {self.state.counter}/{self.total}")]
        if math.isfinite(loss):
            fields.append((0, f"loss {_fmt(loss)}"))
        shown = [k for k in self.last_eval if k.startswith("valid_")]
        for rank, key in enumerate(shown):
            name = key.removeprefix("valid_").replace("loss", "val")
            fields.append((2 + rank, f"{name} {_fmt(self.last_eval[key])}"))
        rate = self._rate()
        if rate is not None:
            fields.append((5, f"{rate:,.0f} {self.rate_unit}/s"))
            if self.flops_per_unit and self.peak_flops:
                mfu = min(rate * self.flops_per_unit / self.peak_flops, 1.0)
                fields.append((7, f"mfu {mfu:.0%}"))
        if "lr" in self.last_eval:
            fields.append((8, f"lr {self.last_eval['lr']:.3g}"))
        fields.append((0, self._eta()))
        return fields

    def _draw(self, loss: float, force: bool = False) -> None:
        now = time.perf_counter()
        if not force and now - self._drawn < REFRESH_SECONDS:
            return
        self._drawn = now
        width = self.width or shutil.get_terminal_size((80, 24)).columns
        bar = self.state.counter / self.total if self.total else None
        line = fit_line(self._fields(loss), width - 1, bar)
        self.stream.write("\r" + line + " " * max(width - 1 - len(line), 0))
        self.stream.flush()

    def _print(self, text: str) -> None:
        if self.live and self._drawn:
            self.stream.write("\r" + " " * ((self.width or 80) - 1) + "\r")
        print(text, file=self.stream, flush=True)
        self._drawn = 0.0

    # ------------------------------------------------------------------ hooks

    def on_step_end(self, state: TrainState, control: TrainControl, loss: torch.Tensor) -> None:
        if time.perf_counter() - self._drawn >= REFRESH_SECONDS:
            self._loss = float(loss)  # a host sync, at most ten times a second
            self._draw(self._loss)

    def on_eval_end(self, state: TrainState, control: TrainControl, row: dict[str, float]) -> None:
        self.last_eval = {k: v for k, v in row.items() if k.startswith("valid_") or k == "lr"}
        self._loss = row.get("train_loss", self._loss)
        counter = state.counter
        if self.live:
            self._draw(self._loss, force=True)
            return
        if counter % self.log_every and counter != self.total:
            return  # nothing to show: skip the formatting on this evaluation
        shown = {k: v for k, v in row.items() if k not in ("epoch", "step")}
        info = "  ".join(f"{k} {_fmt(v)}" for k, v in shown.items())
        rate = self._rate()
        speed = f"  {rate:,.0f} {self.rate_unit}/s" if rate is not None else ""
        if rate is not None and self.flops_per_unit and self.peak_flops:
            speed += f"  mfu {min(rate * self.flops_per_unit / self.peak_flops, 1.0):.1%}"
        print(f"{self.unit} {counter}/{self.total}  {info}{speed}  {self._eta()}", file=self.stream)

    def on_fit_end(self, state: TrainState, control: TrainControl) -> None:
        if self.live and self._drawn:
            self.stream.write("\n")
        if control.stop_reason and control.stop and not control.interrupted:
            best = state.best_row
            where = f"{self.unit} {int(best[self.unit])}" if best and self.unit in best else None
            restored = f"; restored {where}" if where else ""
            self._print(
                f"stopped early at {self.unit} {state.counter}: {control.stop_reason}{restored}"
            )
        self.stream.flush()
