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
    "CNNSpec",
    "GPTSpec",
    "HFCausalSpec",
    "HFEncoderSpec",
    "LinearSpec",
    "MLPSpec",
    "ModelSpec",
    "RNNSpec",
    "TableModelSpec",
    "TransformerSpec",
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
    activation: str = "relu"  # ACTIVATIONS in models/activations.py
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
    # set by structured pruning (heads or MLP units removed, n_embd kept); None: n_embd // n_head
    # and 4 * n_embd
    head_size: int | None = Field(default=None, ge=1)
    mlp_width: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _heads(self) -> GPTSpec:
        if self.head_size is None and self.n_embd % self.n_head:
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


def _positive(values: list[int], what: str) -> list[int]:
    if any(v < 1 for v in values):
        raise ValueError(f"{what} must be positive integers")
    return values


class CNNSpec(ModelSpec):
    """Conv blocks (one per ``channels`` entry), global pooling and an MLP head."""

    arch: Literal["cnn"] = "cnn"
    channels: list[int] = Field(default_factory=lambda: [32, 64], min_length=1)
    kernel: int = Field(default=3, ge=1)
    stride: int = Field(default=1, ge=1)
    padding: int | None = Field(default=None, ge=0)  # default kernel // 2: "same" at stride 1
    batch_norm: bool = True
    activation: str = "relu"  # ACTIVATIONS in models/activations.py
    pool: Literal["max", "avg", "none"] = "max"  # 2x2 after each block
    residual: bool = False  # each block: two convolutions and a skip connection (ResNet)
    global_pool: Literal["avg", "max"] = "avg"
    head: list[int] = Field(default_factory=list)  # hidden sizes of the MLP head
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)  # before each head layer

    @field_validator("channels", "head")
    @classmethod
    def _sizes(cls, v: list[int]) -> list[int]:
        return _positive(v, "channels and head sizes")

    @model_validator(mode="after")
    def _residual_keeps_size(self) -> CNNSpec:
        pad = self.kernel // 2 if self.padding is None else self.padding
        if self.residual and (self.kernel % 2 == 0 or pad != self.kernel // 2):
            raise ValueError(
                "model.residual adds each block's input to its output, so the convolutions must "
                f"keep the size: an odd model.kernel (got {self.kernel}) and model.padding "
                "kernel // 2 (leave model.padding out)"
            )
        return self


class RNNSpec(ModelSpec):
    """A recurrent encoder over packed variable-length sequences, pooled, with a head."""

    arch: Literal["rnn"] = "rnn"
    cell: Literal["rnn", "lstm", "gru"] = "lstm"
    hidden_size: int = Field(default=64, ge=1)
    layers: int = Field(default=1, ge=1)
    bidirectional: bool = False
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)  # between layers and before the head
    pooling: Literal["last", "mean"] = "last"
    embedding_dim: int | None = Field(default=None, ge=1)  # text: token width (hidden_size)
    head: list[int] = Field(default_factory=list)

    @field_validator("head")
    @classmethod
    def _sizes(cls, v: list[int]) -> list[int]:
        return _positive(v, "head sizes")


class TransformerSpec(ModelSpec):
    """A pre-LayerNorm transformer encoder for tokens or numeric sequences, pooled, with a head."""

    arch: Literal["transformer"] = "transformer"
    n_layer: int = Field(default=2, ge=1)
    n_head: int = Field(default=4, ge=1)
    n_embd: int = Field(default=64, ge=1)
    mlp_ratio: int = Field(default=4, ge=1)
    # set by structured pruning (heads or MLP units removed, n_embd kept); None: n_embd // n_head
    # and mlp_ratio * n_embd
    head_size: int | None = Field(default=None, ge=1)
    mlp_width: int | None = Field(default=None, ge=1)
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0)
    positions: Literal["learned", "sinusoidal"] = "learned"
    pooling: Literal["cls", "mean"] = "mean"
    bias: bool = True
    head: list[int] = Field(default_factory=list)

    @field_validator("head")
    @classmethod
    def _sizes(cls, v: list[int]) -> list[int]:
        return _positive(v, "head sizes")

    @model_validator(mode="after")
    def _heads(self) -> TransformerSpec:
        if self.head_size is None and self.n_embd % self.n_head:
            raise ValueError(
                f"model.n_embd ({self.n_embd}) must be divisible by model.n_head ({self.n_head})"
            )
        return self


TableModelSpec = LinearSpec | MLPSpec
