"""Metrics and gates for people: a rich table per run and a one-line gate summary."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from tensorsmith.evaluation.gate import GateResult

__all__ = ["format_gate", "format_value", "model_card", "print_metrics"]


def format_value(value: Any) -> str:
    """A metric value for display: 4 significant digits, thousands separated when large."""
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    number = float(value)
    if math.isnan(number) or math.isinf(number):
        return str(number)
    if abs(number) >= 10_000:
        return f"{number:,.0f}"
    if abs(number) >= 1_000:
        return f"{number:,.1f}"
    return f"{number:.4g}"


def print_metrics(
    metrics: Mapping[str, Mapping[str, Any]],
    console: Console,
    title: str = "metrics",
    labels: Sequence[str] | None = None,
) -> None:
    """Print ``{"valid": {...}, "test": {...}}`` as one column per split, one row per metric.

    A confusion matrix is printed after, as its own small table per split.
    """
    splits = list(metrics)
    names: list[str] = []
    for split in splits:
        names += [n for n in metrics[split] if n not in names and n != "confusion_matrix"]
    table = Table(title=title)
    table.add_column("metric")
    for split in splits:
        table.add_column(split, justify="right")
    for name in names:
        table.add_row(name, *(format_value(metrics[split].get(name)) for split in splits))
    console.print(table)
    for split in splits:
        cm = metrics[split].get("confusion_matrix")
        if cm is not None:
            console.print(_confusion_table(cm, labels, f"confusion matrix ({split})"))


def _confusion_table(
    cm: Sequence[Sequence[int]], labels: Sequence[str] | None, title: str
) -> Table:
    k = len(cm)
    names = [str(x) for x in labels] if labels is not None and len(labels) == k else None
    names = names or [str(i) for i in range(k)]
    table = Table(title=title, caption="rows: true class; columns: predicted")
    table.add_column("true \\ pred")
    for name in names:
        table.add_column(name, justify="right")
    for name, row in zip(names, cm, strict=True):
        table.add_row(name, *(str(int(v)) for v in row))
    return table


def format_gate(result: GateResult) -> str:
    """One line: ``gate r2 >= 0.6: PASSED (0.671)``; several conditions are joined by "and"."""
    verdict = "PASSED" if result.passed else "FAILED"
    if not result.results:
        return "gate: none (PASSED)"
    conditions = " and ".join(str(r.condition) for r in result.results)
    if len(result.results) == 1:
        details = _actual(result.results[0].actual)
    else:
        details = ", ".join(
            f"{r.condition.metric} {_actual(r.actual)} {'ok' if r.passed else 'failed'}"
            for r in result.results
        )
    return f"gate {conditions}: {verdict} ({details})"


def _actual(value: float | None) -> str:
    return "missing" if value is None else format_value(value)


def model_card(
    title: str,
    facts: Sequence[str],
    metrics: Mapping[str, Mapping[str, Any]],
    gate: Mapping[str, Any] | None,
    sections: Sequence[str],
    usage: str,
) -> str:
    """``card.md``: what the model is, how it did on each split, its gate, how to use it."""
    splits = list(metrics)
    names: list[str] = []
    for split in splits:
        names += [
            n for n, v in metrics[split].items() if n not in names and not isinstance(v, list)
        ]
    lines = [f"# {title}", "", *facts, "", "## Metrics", ""]
    lines += ["| metric | " + " | ".join(splits) + " |", "|---|" + "---|" * len(splits)]
    for name in names:
        cells = [format_value(metrics[s].get(name)) for s in splits]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if gate is not None:
        conds = ", ".join(f"{c['metric']} {c['op']} {c['threshold']}" for c in gate["conditions"])
        lines += ["", f"Gate: {'passed' if gate['passed'] else 'failed'} ({conds})"]
    lines += ["", *sections, "## Use", "", "```", usage, "```", ""]
    return "\n".join(lines)
