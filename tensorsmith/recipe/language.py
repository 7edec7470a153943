"""The recipe for ``task: language-modeling``: a corpus, a tokenizer, a GPT, trained in steps."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, model_validator

from tensorsmith.recipe.base import DataSpec, Recipe
from tensorsmith.recipe.models import GPTSpec, HFCausalSpec
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
    # steps between valid evaluations (and checkpoints): by default a tenth of the run, so the
    # learning curve has 11 points from step 0
    eval_every: int | None = Field(default=None, ge=1)
    eval_batches: int | None = Field(default=50, ge=1)  # valid batches per evaluation

    @model_validator(mode="after")
    def _every(self) -> StepTrain:
        if self.eval_every is None:
            self.eval_every = max(1, self.max_steps // 10)
        if self.checkpoint_every is None:
            self.checkpoint_every = self.eval_every
        return self

    @property
    def length(self) -> int:
        return self.max_steps


class GenerationEvaluate(EvaluateSpec):
    samples: int = Field(default=3, ge=0)  # samples written into the model card


class LanguageModelingRecipe(Recipe):
    metric_names: ClassVar[tuple[str, ...]] = ("loss", "perplexity")
    key_metric: ClassVar[str] = "perplexity"
    defaults: ClassVar[dict[str, Any]] = {
        "train": {
            "optimizer": {"name": "adamw", "lr": 1e-3, "weight_decay": 0.1, "betas": [0.9, 0.99]},
            "schedule": {"name": "cosine", "warmup_steps": 100, "min_lr": 1e-4},
            "grad_clip": 1.0,
            "precision": "auto",
        },
        "evaluate": {"metrics": ["loss", "perplexity"]},
    }
    arch_default: ClassVar[str] = "gpt"

    task: Literal["language-modeling"]
    data: CorpusData
    model: Annotated[GPTSpec | HFCausalSpec, Field(discriminator="arch")]
    train: StepTrain = Field(default_factory=StepTrain)
    evaluate: GenerationEvaluate = Field(default_factory=GenerationEvaluate)
