"""Quality gates: ``{"r2": ">= 0.6", "accuracy": "> 0.9"}`` parsed and checked against metrics.

A gate holds when every condition holds. A metric that was not computed, or is not a finite
number, fails its condition with a reason instead of raising: a finetune loop keeps going.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tensorsmith.errors import RecipeError, did_you_mean
from tensorsmith.evaluation.metrics import METRICS

__all__ = ["Condition", "ConditionResult", "GateResult", "check_gate", "parse_gate"]

OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    ">": operator.gt,
    "<=": operator.le,
    "<": operator.lt,
    "==": operator.eq,
}
_CONDITION = re.compile(r"^\s*(>=|<=|==|>|<)\s*(\S+)\s*$")
_EXAMPLE = "a string such as '>= 0.6' (operators: >=, >, <=, <, ==)"


@dataclass(frozen=True)
class Condition:
    """One gate condition: ``metric op threshold``."""

    metric: str
    op: str
    threshold: float

    def holds(self, value: float) -> bool:
        return OPERATORS[self.op](value, self.threshold)

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.threshold:g}"


@dataclass(frozen=True)
class ConditionResult:
    """A checked condition: the actual value (``None`` if missing) and why it failed."""

    condition: Condition
    actual: float | None
    passed: bool
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.condition.metric,
            "op": self.condition.op,
            "threshold": self.condition.threshold,
            "actual": self.actual,
            "passed": self.passed,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class GateResult:
    """The gate as a whole: ``passed`` when every condition passed (an empty gate passes)."""

    results: list[ConditionResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "conditions": [r.to_dict() for r in self.results]}


def parse_gate(
    gate: Mapping[str, Any] | None, allowed: Sequence[str] | None = None, task: str = ""
) -> list[Condition]:
    """Parse ``{metric: "op threshold"}``; with ``allowed`` (the task's metric names), each
    metric must also be one the task computes.

    Raises :class:`RecipeError` naming ``evaluate.gate.<metric>`` and the bad value.
    """
    conditions: list[Condition] = []
    for metric, text in (gate or {}).items():
        path = f"evaluate.gate.{metric}"
        if metric not in METRICS:
            raise RecipeError(
                f"unknown metric '{metric}' at {path}{did_you_mean(metric, METRICS)} "
                f"choices: {', '.join(_scalar_metrics(allowed))}"
            )
        if not METRICS[metric].scalar:
            raise RecipeError(f"{path}: a gate needs a number; {metric} is a table")
        if allowed is not None and metric not in allowed:
            raise RecipeError(
                f"metric '{metric}' at {path} does not fit task '{task}'; "
                f"choices: {', '.join(_scalar_metrics(allowed))}"
            )
        if not isinstance(text, str):
            raise RecipeError(f"{path} is {text!r}; expected {_EXAMPLE}")
        match = _CONDITION.match(text)
        if match is None:
            raise RecipeError(f"{path} is {text!r}: no valid comparison; expected {_EXAMPLE}")
        op, number = match.groups()
        try:
            threshold = float(number)
        except ValueError:
            raise RecipeError(
                f"{path} is {text!r}: threshold {number!r} is not a number; expected {_EXAMPLE}"
            ) from None
        if not math.isfinite(threshold):
            raise RecipeError(f"{path} is {text!r}: the threshold must be a finite number")
        conditions.append(Condition(metric, op, threshold))
    return conditions


def check_gate(
    gate: Mapping[str, Any] | Sequence[Condition] | None, metrics: Mapping[str, Any]
) -> GateResult:
    """Check a gate (a dict as in the recipe, or parsed conditions) against a metric dict.

    ``metrics`` is flat, e.g. ``metrics_json["valid"]``.
    """
    conditions = parse_gate(gate) if gate is None or isinstance(gate, Mapping) else list(gate)
    results: list[ConditionResult] = []
    for cond in conditions:
        value = metrics.get(cond.metric)
        reason: str | None
        if value is None:
            reason = f"metric '{cond.metric}' was not computed"
            results.append(ConditionResult(cond, None, False, reason))
            continue
        try:
            actual = float(value)
        except (TypeError, ValueError):
            reason = f"metric '{cond.metric}' is not a number: {value!r}"
            results.append(ConditionResult(cond, None, False, reason))
            continue
        if math.isnan(actual):
            results.append(ConditionResult(cond, None, False, f"metric '{cond.metric}' is NaN"))
            continue
        passed = cond.holds(actual)
        reason = (
            None if passed else f"{cond.metric} = {actual:.4g}, needs {cond.op} {cond.threshold:g}"
        )
        results.append(ConditionResult(cond, actual, passed, reason))
    return GateResult(results)


def _scalar_metrics(allowed: Sequence[str] | None) -> list[str]:
    names = allowed if allowed is not None else METRICS.names()
    return [n for n in names if METRICS[n].scalar]
