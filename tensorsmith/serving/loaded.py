"""The models a server holds: each loaded once from the store, described once, warmed up once.

Models are named only by the command line (``NAME``, ``NAME@N``, ``NAME@alias`` or a version
folder), never by a request: a request picks one of the loaded names, and the plots a page may
show are the files listed at load time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from tensorsmith.errors import ModelNotFoundError
from tensorsmith.store.aliases import read_aliases
from tensorsmith.store.artifact import resolve
from tensorsmith.tasks.predictor import Predictor

__all__ = ["ServedModel", "load_models", "resolve_ref"]


def resolve_ref(ref: str, root: Path) -> Path:
    """``NAME`` means its ``production`` alias when it has one, else its latest version."""
    if "@" not in ref and not Path(ref).is_dir() and "production" in read_aliases(root / ref):
        return resolve(f"{ref}@production", root)
    return resolve(ref, root)


@dataclass
class ServedModel:
    """One loaded version and what the server says about it."""

    name: str
    predictor: Predictor
    schema: dict[str, Any]
    plots: dict[str, Path] = field(default_factory=dict)  # file name → path, fixed at load

    @property
    def version(self) -> int:
        return int(self.predictor.config.get("version", 0))

    @property
    def task(self) -> str:
        return self.predictor.task.name

    @property
    def arch(self) -> str:
        return str(self.predictor.recipe.model.arch)

    @property
    def generates(self) -> bool:
        return "generate" in self.predictor.task.verbs

    @property
    def created(self) -> int:
        return int(self.predictor.path.stat().st_mtime)

    def card(self) -> str:
        path = self.predictor.path / "card.md"
        return path.read_text(encoding="utf-8") if path.is_file() else ""

    def describe(self) -> dict[str, Any]:
        """OpenAI's model entry, extended with what a client needs to call it."""
        return {
            "id": self.name,
            "object": "model",
            "created": self.created,
            "owned_by": "tensorsmith",
            "version": self.version,
            "task": self.task,
            "arch": self.arch,
            "input": self.schema,
            "metrics": _finite(self.predictor.metrics),
            "plots": sorted(self.plots),
            "endpoint": "/v1/completions" if self.generates else f"/v1/models/{self.name}/predict",
        }

    def warm_up(self) -> None:
        """One prediction (or a few tokens) so the first request meets a warm model."""
        if self.generates:
            "".join(self.predictor.stream("", max_new_tokens=2, seed=0))
        elif self.schema.get("kind") == "table":
            row = {f["name"]: f.get("example") for f in self.schema["features"]}
            self.predictor.predict(pd.DataFrame([row]))


def _finite(value: Any) -> Any:
    """JSON has no NaN: a metric that is not a number becomes null."""
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def load_models(refs: list[str], root: Path) -> dict[str, ServedModel]:
    """Load every model; two refs that name the same model are refused."""
    out: dict[str, ServedModel] = {}
    for ref in refs:
        path = resolve_ref(ref, root)
        predictor = Predictor.load(path)
        name = predictor.recipe.name
        if name in out:
            raise ModelNotFoundError(
                f"{ref} and another argument both name model '{name}'; serve each model once"
            )
        plots = {p.name: p for p in sorted((path / "plots").glob("*.png"))}
        out[name] = ServedModel(name, predictor, predictor.task.input_schema(), plots)
    return out
