"""The recipe for ``task: language-modeling``: a corpus, a tokenizer, a GPT, trained in steps."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from tensorsmith.recipe.base import DataSpec, Recipe
from tensorsmith.recipe.models import GPTSpec
from tensorsmith.recipe.sections import EvaluateSpec, Strict, TrainSpec

__all__ = ["CorpusData", "CorpusSplit", "LanguageModelingRecipe", "StepTrain", "TokenizerSpec"]


class TokenizerSpec(Strict):
    kind: str = "char"  # TOKENIZERS in data/tokenizer.py
    vocab_size: int = Field(default=4096, ge=16, le=1_000_000)


class CorpusSplit(Strict):
    valid: float = Field(default=0.1, gt=0.0, lt=1.0)  # the valid text measures loss
    seed: int = 0


class CorpusData(DataSpec):
    text_column: str | None = None  # when data.source is a table
    tokenizer: TokenizerSpec = Field(default_factory=TokenizerSpec)
    split: CorpusSplit = Field(default_factory=CorpusSplit)
    valid_by: Literal["document", "tail"] = "tail"


class StepTrain(TrainSpec):
    max_steps: int = Field(default=2000, ge=1)
    batch_size: int = Field(default=12, ge=1)  # windows of block_size tokens per step
    eval_every: int | None = Field(default=None, ge=1)  # steps between valid evaluations
    eval_batches: int | None = Field(default=50, ge=1)  # valid batches per evaluation

    @property
    def length(self) -> int:
        return self.max_steps


class GenerationEvaluate(EvaluateSpec):
    samples: int = Field(default=3, ge=0)  # samples written into the model card


class LanguageModelingRecipe(Recipe):
    defaults: ClassVar[dict[str, Any]] = {
        "train": {
            "optimizer": {"name": "adamw", "lr": 1e-3, "weight_decay": 0.1, "betas": [0.9, 0.99]},
            "schedule": {"name": "cosine", "warmup_steps": 100, "min_lr": 1e-4},
            "grad_clip": 1.0,
            "eval_every": 250,
            "checkpoint_every": 250,
        },
        "evaluate": {"metrics": ["loss", "perplexity"]},
    }
    arch_default: ClassVar[str] = "gpt"

    task: Literal["language-modeling"]
    data: CorpusData
    model: GPTSpec
    train: StepTrain = Field(default_factory=StepTrain)
    evaluate: GenerationEvaluate = Field(default_factory=GenerationEvaluate)
