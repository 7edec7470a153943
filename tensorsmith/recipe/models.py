"""The ``model`` section: one spec per architecture, told apart by ``arch``.

A key belongs to the architectures that read it: a GPT recipe has no ``hidden``, an MLP has no
``n_head``. Each spec's ``arch`` literal is its name; ``models.MODELS`` maps the same names to
the classes that build them (a test pins that the two agree).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from tensorsmith.recipe.sections import Strict

__all__ = [
    "GPTSpec",
    "HFCausalSpec",
    "HFEncoderSpec",
    "LinearSpec",
    "MLPSpec",
    "ModelSpec",
    "TableModelSpec",
]

Init = Literal["default", "gaussian", "uniform", "xavier", "kaiming"]


class ModelSpec(Strict):
    """Base of every architecture's spec."""

    arch: str


class LinearSpec(ModelSpec):
    """One affine map: linear, logistic or softmax regression, by the loss."""

    arch: Literal["linear"] = "linear"
    init: Init = "default"
    embedding_dim: int | None = Field(default=None, ge=1)  # with data.categorical: embedding


class MLPSpec(ModelSpec):
    arch: Literal["mlp"] = "mlp"
    hidden: list[int] = Field(default_factory=lambda: [64, 32])
    activation: str = "relu"  # ACTIVATIONS in models/mlp.py
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    batch_norm: bool = False
    init: Init = "default"
    embedding_dim: int | None = Field(default=None, ge=1)

    @field_validator("hidden")
    @classmethod
    def _hidden(cls, v: list[int]) -> list[int]:
        if any(h < 1 for h in v):
            raise ValueError("hidden sizes must be positive integers")
        return v


class GPTSpec(ModelSpec):
    arch: Literal["gpt"] = "gpt"
    n_layer: int = Field(default=4, ge=1)
    n_head: int = Field(default=4, ge=1)
    n_embd: int = Field(default=128, ge=1)
    block_size: int = Field(default=64, ge=1)
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    bias: bool = True
    tie_weights: bool = True

    @model_validator(mode="after")
    def _heads(self) -> GPTSpec:
        if self.n_embd % self.n_head:
            raise ValueError(
                f"model.n_embd ({self.n_embd}) must be divisible by model.n_head ({self.n_head})"
            )
        return self


class HFCausalSpec(ModelSpec):
    """A Hugging Face decoder (GPT-2, Llama …); ``config`` is its checkpoint's config.json."""

    arch: Literal["hf-causal"] = "hf-causal"
    checkpoint: str = ""  # where the fine-tune started (for the record)
    config: dict[str, Any] = Field(default_factory=dict)
    block_size: int = Field(default=128, ge=1)  # training windows; at most the model's positions


class HFEncoderSpec(ModelSpec):
    """A Hugging Face encoder (BERT family) with a task head; ``config`` is its config.json."""

    arch: Literal["hf-encoder"] = "hf-encoder"
    checkpoint: str = ""
    config: dict[str, Any] = Field(default_factory=dict)
    pooling: Literal["mean", "cls"] = "mean"
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0)


TableModelSpec = LinearSpec | MLPSpec
