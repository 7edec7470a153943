"""Recipes for a text column: ``task: text-classification`` and ``task: text-regression``."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field

from tensorsmith.recipe.base import DataSpec, Recipe
from tensorsmith.recipe.models import HFEncoderSpec, RNNSpec, TransformerSpec
from tensorsmith.recipe.sections import SplitSpec, Strict
from tensorsmith.recipe.tables import (
    ClassificationRecipe,
    ClassificationTrain,
    RegressionRecipe,
    TableTrain,
)

__all__ = [
    "TextClassificationRecipe",
    "TextData",
    "TextRegressionRecipe",
    "TextTokenizerSpec",
]


class TextTokenizerSpec(Strict):
    kind: str = "wordpiece"  # TOKENIZERS in data/tokenizer.py: char | bpe | wordpiece
    vocab_size: int = Field(default=8000, ge=16, le=1_000_000)
    lowercase: bool = True


class TextData(DataSpec):
    text_column: str = "text"
    target: str
    max_length: int = Field(default=256, ge=1, le=65_536)  # tokens; longer texts are truncated
    tokenizer: TextTokenizerSpec = Field(default_factory=TextTokenizerSpec)
    split: SplitSpec = Field(default_factory=SplitSpec)  # stratified, grouped, or named groups


TextModel = Annotated[TransformerSpec | RNNSpec | HFEncoderSpec, Field(discriminator="arch")]
_TRAIN = {
    "epochs": 10,
    "optimizer": {"name": "adamw", "lr": 1e-3, "weight_decay": 0.01},
    "grad_clip": 1.0,
}


class TextClassificationRecipe(Recipe):
    metric_names: ClassVar[tuple[str, ...]] = ClassificationRecipe.metric_names
    key_metric: ClassVar[str] = "f1_macro"
    losses: ClassVar[tuple[str, ...]] = ("cross_entropy",)
    defaults: ClassVar[dict[str, Any]] = {
        "train": _TRAIN,
        "evaluate": {"metrics": ["accuracy", "f1_macro", "log_loss", "confusion_matrix"]},
    }
    arch_default: ClassVar[str] = "transformer"

    task: Literal["text-classification"]
    data: TextData
    model: TextModel
    train: ClassificationTrain = Field(default_factory=ClassificationTrain)


class TextRegressionRecipe(Recipe):
    metric_names: ClassVar[tuple[str, ...]] = RegressionRecipe.metric_names
    key_metric: ClassVar[str] = "r2"
    losses: ClassVar[tuple[str, ...]] = RegressionRecipe.losses
    defaults: ClassVar[dict[str, Any]] = {
        "train": {**_TRAIN, "loss": "mse"},
        "evaluate": {"metrics": ["rmse", "mae", "r2"]},
    }
    arch_default: ClassVar[str] = "transformer"

    task: Literal["text-regression"]
    data: TextData
    model: TextModel
    train: TableTrain = Field(default_factory=TableTrain)
