"""The recipe every task's recipe extends: name, task, data, model, train, evaluate."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from tensorsmith.recipe.finetune import FinetuneSpec
from tensorsmith.recipe.models import ModelSpec
from tensorsmith.recipe.sections import EvaluateSpec, Strict, TrainSpec

__all__ = ["NAME_PATTERN", "DataSpec", "Recipe"]

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class DataSpec(Strict):
    source: str  # a file, a glob or a directory, relative to the recipe's folder


class Recipe(Strict):
    """Base of the per-task recipes (``recipe.tables``, ``recipe.language``).

    ``defaults`` are merged into the raw YAML before validation, so a partly given section
    (``optimizer: {lr: 0.01}``) keeps the task's other defaults; ``arch_default`` is the
    architecture of a recipe that names none.
    """

    defaults: ClassVar[dict[str, Any]] = {}
    arch_default: ClassVar[str] = ""
    # what the task computes and trains with: names in evaluation.METRICS and tasks.LOSSES (a
    # test pins both); ``evaluate.metrics``, ``evaluate.gate`` and ``train.loss`` must use them
    metric_names: ClassVar[tuple[str, ...]] = ()
    key_metric: ClassVar[str] = ""
    losses: ClassVar[tuple[str, ...]] = ()

    name: str = Field(pattern=NAME_PATTERN)
    task: str
    data: DataSpec
    model: ModelSpec
    train: TrainSpec
    evaluate: EvaluateSpec = Field(default_factory=EvaluateSpec)
    finetune: FinetuneSpec | None = None  # only with `tensorsmith finetune`
    # where relative paths resolve; not part of the YAML
    base_dir: Path = Field(default=Path("."), exclude=True)

    def path(self, relative: str) -> Path:
        """Resolve a recipe path against the folder of the recipe file."""
        p = Path(relative).expanduser()
        return p if p.is_absolute() else (self.base_dir / p)

    @classmethod
    def resolve_defaults(cls, raw: dict[str, Any]) -> dict[str, Any]:
        """The raw recipe with this task's defaults filled in (the user's keys win)."""
        out = dict(raw)
        model = out.get("model")
        if model is None:
            out["model"] = {"arch": cls.arch_default}
        elif isinstance(model, dict) and "arch" not in model:
            out["model"] = {"arch": cls.arch_default, **model}
        return _merge(cls.arch_defaults(out), cls.defaults)

    @classmethod
    def arch_defaults(cls, raw: dict[str, Any]) -> dict[str, Any]:
        """Defaults that depend on the architecture (a hook; none by default)."""
        return raw


def _merge(raw: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    import copy

    out = dict(raw)
    for key, value in defaults.items():
        if key not in out:
            out[key] = copy.deepcopy(value)
        elif isinstance(value, dict) and isinstance(out[key], dict):
            out[key] = _merge(out[key], value)
    return out
