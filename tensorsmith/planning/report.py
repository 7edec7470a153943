"""A plan as a person reads it: rich tables with units and assumptions, and the sweep's plot."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from tensorsmith.planning.estimate import CHINCHILLA, Plan
from tensorsmith.planning.hardware import Device

__all__ = [
    "Comparison",
    "fmt",
    "print_comparison",
    "print_hardware",
    "print_plan",
    "print_sweep",
    "sweep_plot",
]

# one comparison line: (quantity, unit, estimate, measured)
Comparison = list[tuple[str, str, float, float]]


def fmt(value: Any, unit: str = "") -> str:
    """A number in the unit a person reads: GB, hours, $, 1.2e+18 FLOP, 12.3 M."""
    if value is None or isinstance(value, str):
        return "—" if value is None else value
    v = float(value)
    if unit == "B":
        for div, name in ((1e12, "TB"), (1e9, "GB"), (1e6, "MB"), (1e3, "kB")):
            if abs(v) >= div:
                return f"{v / div:.3g} {name}"
        return f"{v:.0f} B"
    if unit == "s":
        return _duration(v)
    if unit == "h":
        return f"{v:,.3g} device-hours" if v < 1e4 else f"{v:,.0f} device-hours"
    if unit == "$":
        return f"${v:,.2f}" if v >= 0.01 else f"${v:.2g}"
    if unit == "FLOP":
        return f"{v:.3g} FLOP"
    if unit == "1/s":
        return f"{v:,.3g}/s" if v < 1e4 else f"{v:,.0f}/s"
    if unit == "parameters" or (unit == "" and isinstance(value, int)):
        return _count(v)
    return f"{v:.3g}"


def _count(v: float) -> str:
    for div, name in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:.3g} {name}"
    return f"{v:,.0f}"


def _duration(s: float) -> str:
    if s < 1:
        return f"{s * 1000:.3g} ms"
    if s < 120:
        return f"{s:.3g} s"
    if s < 2 * 3600:
        return f"{s / 60:.3g} min"
    if s < 2 * 86400:
        return f"{s / 3600:.3g} h"
    return f"{s / 86400:,.3g} days"


def print_plan(plan: Plan, console: Console) -> None:
    who = f"{plan.devices} × {plan.hardware}" if plan.devices > 1 else plan.hardware
    table = Table(title=f"plan: {plan.name} on {who}", title_justify="left")
    for column in ("", "quantity", "value", "assumption"):
        table.add_column(column, overflow="fold")
    last = None
    for row in plan.rows:
        shown = f"{row.value:.1%}" if row.name == "utilisation" else fmt(row.value, row.unit)
        table.add_row(row.section if row.section != last else "", row.name, shown, row.note)
        last = row.section
    console.print(table)
    for warning in plan.warnings:
        console.print(f"note: {warning}", markup=False)


def print_sweep(plans: Sequence[Plan], key: str, values: Sequence[str], console: Console) -> None:
    money = any(r.name == "training cost" for r in plans[0].rows)
    columns = [key, "parameters", "tokens/param", "FLOPs", "peak memory", "time"]
    table = Table(title=f"sweep of {key} on {plans[0].hardware}", title_justify="left")
    for column in columns + (["cost"] if money else []):
        table.add_column(column, justify="right")
    for value, p in zip(values, plans, strict=True):
        row = [
            value,
            fmt(p.value("total"), "parameters"),
            _maybe(p, "tokens per parameter", ""),
            fmt(p.value("training FLOPs"), "FLOP"),
            fmt(p.value("peak"), "B"),
            fmt(p.value("training time"), "s"),
        ]
        table.add_row(*row, *([fmt(p.value("training cost"), "$")] if money else []))
    console.print(table)


def _maybe(plan: Plan, name: str, unit: str) -> str:
    try:
        return fmt(plan.value(name), unit)
    except KeyError:
        return "—"


def sweep_plot(plans: Sequence[Plan], key: str, values: Sequence[str], path: Path) -> Path:
    """Cost (or device-hours) against parameters, the compute-optimal size marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    money = any(r.name == "training cost" for r in plans[0].rows)
    ys = [p.value("training cost" if money else "device-hours") for p in plans]
    xs = [p.value("total") for p in plans]
    fig, ax = plt.subplots(figsize=(8, 5), dpi=150)
    ax.plot(xs, ys, "o-")
    for x, y, v in zip(xs, ys, values, strict=True):
        ax.annotate(f"{key}={v}", (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
    tokens = next((r.value for r in plans[0].rows if r.name == "tokens in all"), None)
    if isinstance(tokens, int | float) and tokens:
        best = tokens / CHINCHILLA
        ax.axvline(best, color="tab:red", linestyle="--")
        ax.annotate(
            f"compute-optimal for {tokens:.3g} tokens\n({CHINCHILLA:.0f} tokens per parameter)",
            (best, min(ys)), color="tab:red", fontsize=8, ha="right", va="bottom",
            textcoords="offset points", xytext=(-4, 0),
        )  # fmt: skip
    ax.set_xscale("log")
    if min(ys) > 0 and max(ys) / min(ys) > 10:  # a narrow range reads better on a linear axis
        ax.set_yscale("log")
    ax.set_xlabel("parameters")
    ax.set_ylabel("training cost ($)" if money else "training time (device-hours)")
    ax.set_title(f"cost against size: {plans[0].name} on {plans[0].hardware}")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def print_comparison(name: str, rows: Comparison, notes: list[str], console: Console) -> None:
    table = Table(title=f"plan against the run: {name}", title_justify="left")
    for column in ("quantity", "estimated", "measured", "error"):
        table.add_column(column, justify="right" if column != "quantity" else "left")
    for quantity, unit, est, got in rows:
        error = f"{(est - got) / got:+.1%}" if got else "—"
        table.add_row(quantity, fmt(est, unit), fmt(got, unit), error)
    console.print(table)
    for note in notes:
        console.print(f"note: {note}", markup=False)


def print_hardware(devices: Sequence[Device], console: Console) -> None:
    table = Table(title="hardware (tensorsmith plan --hardware NAME)", title_justify="left")
    for column in ("name", "device", "fp32", "bf16", "memory", "bandwidth", "source"):
        table.add_column(column, overflow="fold")
    for d in devices:
        peaks = [f"{v / 1e12:.3g} TFLOP/s" if v else "—" for v in (d.peak["fp32"], d.peak["bf16"])]
        memory, bandwidth = fmt(d.memory_bytes, "B"), f"{d.bandwidth / 1e9:,.0f} GB/s"
        table.add_row(d.name, d.description, *peaks, memory, bandwidth, d.source)
    console.print(table)
