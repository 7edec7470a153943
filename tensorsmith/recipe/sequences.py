"""Recipes for numeric sequences: ``task: sequence-regression`` (forecasting a time series) and
``task: sequence-classification`` (a label per sequence of rows)."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, model_validator

from tensorsmith.recipe.base import DataSpec, Recipe
from tensorsmith.recipe.models import RNNSpec, TransformerSpec
from tensorsmith.recipe.sections import Strict
from tensorsmith.recipe.tables import (
    ClassificationRecipe,
    ClassificationTrain,
    RegressionRecipe,
    TableTrain,
)

__all__ = [
    "ForecastData",
    "LabelledSequenceData",
    "SequenceClassificationRecipe",
    "SequenceRegressionRecipe",
    "SequenceSplit",
    "TimeSplit",
]

Scale = Literal["standard", "minmax", "none"]


class TimeSplit(Strict):
    """The last ``test`` and, before it, ``valid`` fractions of the series, in time order."""

    valid: float = Field(default=0.15, ge=0.0, lt=1.0)
    test: float = Field(default=0.15, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _check(self) -> TimeSplit:
        if self.valid + self.test >= 1.0:
            raise ValueError(
                f"valid + test fractions must leave steps to train on; got {self.valid + self.test}"
            )
        return self


class ForecastData(DataSpec):
    time: str | None = None  # the time column: checked for order and gaps; None = row order
    target: str  # the column to forecast
    features: list[str] | None = None  # value columns the model reads (the target always is one)
    lookback: int = Field(default=16, ge=1)  # steps in each input window
    horizon: int = Field(default=1, ge=1)  # steps forecast from each window
    scale: Scale = "standard"  # fitted on the train part only
    split: TimeSplit = Field(default_factory=TimeSplit)


class SequenceSplit(Strict):
    """Fractions of the sequences (not of the rows), stratified by their label."""

    valid: float = Field(default=0.15, ge=0.0, lt=1.0)
    test: float = Field(default=0.15, ge=0.0, lt=1.0)
    seed: int = 0

    @model_validator(mode="after")
    def _check(self) -> SequenceSplit:
        if self.valid + self.test >= 1.0:
            raise ValueError("valid + test fractions must leave sequences to train on")
        return self


class LabelledSequenceData(DataSpec):
    id: str  # the column that names the sequence of each row
    time: str | None = None  # orders the rows of a sequence; None = row order
    target: str  # the label of the sequence (the same on each of its rows)
    features: list[str] | None = None  # default: every numeric column but id, time and target
    max_length: int | None = Field(default=None, ge=1)  # keep the last steps; default longest
    scale: Scale = "standard"
    split: SequenceSplit = Field(default_factory=SequenceSplit)


SequenceModel = Annotated[RNNSpec | TransformerSpec, Field(discriminator="arch")]


class _NumericSequences(Recipe):
    """Numeric sequences feed their values to the model: a token embedding does not apply."""

    @model_validator(mode="after")
    def _no_embedding(self) -> _NumericSequences:
        model = getattr(self, "model", None)
        if isinstance(model, RNNSpec) and model.embedding_dim is not None:
            raise ValueError(
                f"key 'embedding_dim' at model.embedding_dim does not apply to task {self.task} "
                "(it applies to text tasks: numeric sequences feed their values to the cell); "
                "remove it"
            )
        return self


class SequenceRegressionRecipe(_NumericSequences):
    metric_names: ClassVar[tuple[str, ...]] = RegressionRecipe.metric_names
    key_metric: ClassVar[str] = "rmse"
    losses: ClassVar[tuple[str, ...]] = RegressionRecipe.losses
    defaults: ClassVar[dict[str, Any]] = {
        "train": {"loss": "mse", "epochs": 100},
        "evaluate": {"metrics": ["rmse", "mae", "r2"]},
    }
    arch_default: ClassVar[str] = "rnn"

    task: Literal["sequence-regression"]
    data: ForecastData
    model: SequenceModel
    train: TableTrain = Field(default_factory=TableTrain)


class SequenceClassificationRecipe(_NumericSequences):
    metric_names: ClassVar[tuple[str, ...]] = ClassificationRecipe.metric_names
    key_metric: ClassVar[str] = "accuracy"
    losses: ClassVar[tuple[str, ...]] = ("cross_entropy",)
    defaults: ClassVar[dict[str, Any]] = {
        "train": {"epochs": 50},
        "evaluate": {"metrics": ["accuracy", "f1_macro", "log_loss"]},
    }
    arch_default: ClassVar[str] = "rnn"

    task: Literal["sequence-classification"]
    data: LabelledSequenceData
    model: SequenceModel
    train: ClassificationTrain = Field(default_factory=ClassificationTrain)
