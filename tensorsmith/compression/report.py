"""The compression report: parent beside child, on the terminal, in the card and as JSON."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.table import Table

from tensorsmith.compression.measure import Measured

__all__ = ["card_section", "print_report", "report_rows"]


def _size(n: float | None) -> str:
    if n is None:
        return "not measured"
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000
    return ""


def _ratio(parent: float | None, child: float | None, lower_is_better: bool, word: str) -> str:
    """ "3.10× smaller", "1.62× faster": the child's gain (below 1× it is a loss)."""
    if not parent or not child:
        return ""
    r = parent / child if lower_is_better else child / parent
    if abs(r - 1) < 0.005:
        return "same"
    if r < 1:  # a loss reads as one: "1.47× slower", not "0.68× faster"
        return f"{1 / r:.2f}× {OPPOSITE[word]}"
    return f"{r:.2f}× {word}"


OPPOSITE = {"smaller": "larger", "fewer": "more", "faster": "slower", "less": "more"}


def report_rows(parent: Measured, child: Measured) -> list[tuple[str, str, str, str]]:
    """(figure, parent, child, child's gain) rows; a gain above 1× is better for the child."""
    rows = [
        ("size on disk", _size(parent.size_bytes), _size(child.size_bytes),
         _ratio(parent.size_bytes, child.size_bytes, True, "smaller")),
        ("parameters", f"{parent.parameters:,}", f"{child.parameters:,}",
         _ratio(parent.parameters, child.parameters, True, "fewer")),
        ("non-zero parameters", f"{parent.nonzero_parameters:,}", f"{child.nonzero_parameters:,}",
         _ratio(parent.nonzero_parameters, child.nonzero_parameters, True, "fewer")),
    ]  # fmt: skip
    for batch, ms in parent.latency_ms.items():
        other = child.latency_ms.get(batch)
        unit = "per token" if parent.throughput_unit == "tokens/s" and batch == "1" else ""
        rows.append(
            (f"p50 latency, batch {batch} {unit}".strip(), f"{ms:,.2f} ms",
             "" if other is None else f"{other:,.2f} ms", _ratio(ms, other, True, "faster"))
        )  # fmt: skip
    rows.append(
        (f"throughput ({parent.throughput_unit})", f"{parent.throughput:,.1f}",
         f"{child.throughput:,.1f}", _ratio(parent.throughput, child.throughput, False, "faster"))
    )  # fmt: skip
    rows.append(
        ("peak memory (load + predict)", _size(parent.peak_memory_bytes),
         _size(child.peak_memory_bytes),
         _ratio(parent.peak_memory_bytes, child.peak_memory_bytes, True, "less"))
    )  # fmt: skip
    for name, value in parent.metrics.items():
        other = child.metrics.get(name)
        change = "" if other is None else f"{other - value:+.4f}"
        rows.append((f"{parent.split} {name}", f"{value:.4f}", _fmt(other), change))
    return rows


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def print_report(
    rows: list[tuple[str, str, str, str]], parent: str, child: str, machine: str, out: Console
) -> None:
    table = Table(title=f"{child} against {parent} (measured now, {machine})", title_justify="left")
    for header in ("", parent, child, "change"):
        table.add_column(header, justify="left" if not header else "right")
    for row in rows:
        table.add_row(*row)
    out.print(table)


def card_section(
    rows: list[tuple[str, str, str, str]], parent: str, method: dict[str, Any], machine: str
) -> list[str]:
    lines = [
        "## Compression",
        "",
        f"Compressed from {parent}; parent and child measured in the same run on {machine}.",
        "",
        f"Method: `{json.dumps(method, default=str)}`",
        "",
        f"| | {parent} | this version | change |",
        "|---|---|---|---|",
    ]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    return [*lines, ""]
