"""Recipes for tables: ``task: regression`` and ``task: classification``."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field

from tensorsmith.recipe.base import DataSpec, Recipe
from tensorsmith.recipe.models import LinearSpec, MLPSpec
from tensorsmith.recipe.sections import EvaluateSpec, SplitSpec, TrainSpec

__all__ = [
    "ClassificationRecipe",
    "ClassificationTrain",
    "RegressionData",
    "RegressionRecipe",
    "TableData",
    "TableTrain",
]

ColumnType = Literal["number", "category", "binary", "text"]


class TableData(DataSpec):
    target: str
    features: list[str] | None = None  # default: every other column
    types: dict[str, ColumnType] = Field(default_factory=dict)
    split: SplitSpec = Field(default_factory=SplitSpec)
    impute: Literal["median", "mean"] = "median"  # numbers; categories use the most frequent
    scale: Literal["standard", "minmax", "none"] = "standard"
    categorical: Literal["onehot", "embedding"] = "onehot"
    transforms: dict[str, Literal["log", "log1p"]] = Field(default_factory=dict)  # number columns
    strict: bool = False  # refuse number columns with a few non-numbers (else: missing, said)


class RegressionData(TableData):
    target_transform: Literal["none", "log"] = "none"


class TableTrain(TrainSpec):
    epochs: int = Field(default=100, ge=1)
    batch_size: int | Literal["full"] = 32  # type: ignore[assignment]
    loss: str | None = None  # LOSSES in tasks/losses.py; default by task
    log_every: int = Field(default=1, ge=1)  # epochs between plain log lines

    @property
    def length(self) -> int:
        return self.epochs


class ClassificationTrain(TableTrain):
    class_weights: Literal["balanced"] | list[float] | dict[str, float] | None = None


TableModel = Annotated[LinearSpec | MLPSpec, Field(discriminator="arch")]


def _linear_solver(raw: dict[str, Any]) -> dict[str, Any]:
    """``arch: linear`` with no optimizer named trains to the least-squares (or maximum
    likelihood) solution: full-batch L-BFGS, as scikit-learn's solvers do."""
    model, train = raw.get("model"), raw.get("train")
    if not isinstance(model, dict) or model.get("arch") != "linear":
        return raw
    train = dict(train) if isinstance(train, dict) else {}
    optimizer = train.get("optimizer")
    if isinstance(optimizer, dict) and "name" in optimizer:
        return raw
    train["optimizer"] = {"name": "lbfgs", "lr": 1.0, **(optimizer or {})}
    train.setdefault("batch_size", "full")
    return {**raw, "train": train}


class RegressionRecipe(Recipe):
    metric_names: ClassVar[tuple[str, ...]] = ("rmse", "mae", "r2", "mape", "mse")
    key_metric: ClassVar[str] = "r2"
    losses: ClassVar[tuple[str, ...]] = ("mse", "mae", "huber")
    defaults: ClassVar[dict[str, Any]] = {
        "train": {"loss": "mse"},
        "evaluate": {"metrics": ["rmse", "mae", "r2", "mape"]},
    }
    arch_default: ClassVar[str] = "mlp"

    task: Literal["regression"]
    data: RegressionData
    model: TableModel
    train: TableTrain = Field(default_factory=TableTrain)

    @classmethod
    def arch_defaults(cls, raw: dict[str, Any]) -> dict[str, Any]:
        return _linear_solver(raw)


class ClassificationRecipe(Recipe):
    metric_names: ClassVar[tuple[str, ...]] = (
        "accuracy",
        "precision",
        "recall",
        "f1",
        "precision_macro",
        "recall_macro",
        "f1_macro",
        "roc_auc",
        "log_loss",
        "confusion_matrix",
    )
    key_metric: ClassVar[str] = "accuracy"
    losses: ClassVar[tuple[str, ...]] = ("bce", "cross_entropy")
    defaults: ClassVar[dict[str, Any]] = {
        # the loss (bce for two classes, cross_entropy for more) is known at train time
        "evaluate": {"metrics": ["accuracy", "precision", "recall", "f1", "roc_auc", "log_loss"]},
    }
    arch_default: ClassVar[str] = "mlp"

    task: Literal["classification"]
    data: TableData
    model: TableModel
    train: ClassificationTrain = Field(default_factory=ClassificationTrain)
    evaluate: EvaluateSpec = Field(default_factory=EvaluateSpec)

    @classmethod
    def arch_defaults(cls, raw: dict[str, Any]) -> dict[str, Any]:
        return _linear_solver(raw)
