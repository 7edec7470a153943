"""The error contract of DESIGN.md §6.

Every mistake a user can make raises a subclass of :class:`TensorsmithError`. The message answers
three questions: what happened, what was expected, how to fix it. The CLI prints the message (no
traceback unless ``--debug``) and exits with :attr:`TensorsmithError.exit_code`.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "DataError",
    "GateFailed",
    "ModelNotFoundError",
    "RecipeError",
    "StoreError",
    "TensorsmithError",
    "TrainingError",
    "TrainingInterrupted",
    "did_you_mean",
    "listing",
    "shorten",
]


class TensorsmithError(Exception):
    """Base class: a problem the user can fix. ``exit_code`` 2 = usage, 1 = run-time failure."""

    exit_code = 1


class RecipeError(TensorsmithError):
    """The recipe (or a ``--set`` override) is invalid."""

    exit_code = 2


class DataError(TensorsmithError):
    """The data cannot be read or does not fit the recipe."""

    exit_code = 2


class ModelNotFoundError(TensorsmithError):
    """A model name, version or path does not resolve to a stored model."""

    exit_code = 2


class StoreError(TensorsmithError):
    """The model store cannot be read or written."""

    exit_code = 1


class TrainingError(TensorsmithError):
    """Training cannot start or continue (for example: nothing to resume)."""

    exit_code = 1


class TrainingInterrupted(TensorsmithError):
    """Training stopped on SIGINT (Ctrl-C) or SIGTERM; the message says what was saved."""

    exit_code = 130


class GateFailed(TensorsmithError):
    """The model was stored, but its quality gate did not hold (a CI pipeline gates on 3)."""

    exit_code = 3


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """Return ``"; did you mean 'x'?"`` for the closest choice, or an empty string."""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.5)
    return f"; did you mean '{close[0]}'?" if close else ""


def shorten(text: str, limit: int = 80) -> str:
    """``text`` cut to ``limit`` characters with an ellipsis: error messages stay bounded."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def listing(names: Iterable[object], limit: int = 20) -> str:
    """``a, b, c`` — or the first ``limit`` and how many there are in all."""
    items = [str(n) for n in names]
    if len(items) <= limit:
        return ", ".join(items)
    return ", ".join(items[:limit]) + f", … ({len(items)} in all)"
