"""Dynamic int8 quantization and the ``int8-dynamic`` weights format, without pickle.

PyTorch's dynamic int8 quantization (``quantize_dynamic``) of the Linear, LSTM and GRU layers:
int8 weights with per-output-channel scales, activations quantized per batch at run time;
embeddings become int8 rows with a scale per row (:class:`Int8Embedding`). One safetensors file
holds each packed layer's int8 weight, its scales and zero points, its float bias, and every
other tensor of the model (float, or an embedding's int8 rows) by name. Loading quantizes the
freshly built fp32 module and puts the stored int8 weights into its packed parameters, so the
loaded model computes exactly what the saved one did.

Weight-only int8 / int4 (the GPT) live in ``weight_only.py``; :func:`parameter_count` counts
the weights of a module quantized either way.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from tensorsmith.errors import StoreError

__all__ = [
    "Int8Embedding",
    "dynamic_int8",
    "dynamic_layers",
    "mismatch",
    "parameter_count",
    "read_tensors",
    "replace_module",
    "shared_weights",
]

DYNAMIC_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.LSTM, nn.GRU)


# ---------------------------------------------------------------------- dynamic int8 (torch.ao)


@contextmanager
def quiet_quantization() -> Iterator[None]:
    """Silence exactly the deprecation warnings torch 2.13 gives for ``torch.ao.quantization``
    and for creating quantized tensors; everything else still warns."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="torch.ao.quantization is deprecated", category=DeprecationWarning
        )
        warnings.filterwarnings(
            "ignore",
            message="torch.quantize_per_tensor, torch.quantize_per_channel",
            category=UserWarning,
        )
        yield


def dynamic_layers(module: nn.Module) -> list[str]:
    """Names of the layers dynamic int8 quantizes (Linear, LSTM, GRU)."""
    return [name for name, m in module.named_modules() if isinstance(m, DYNAMIC_TYPES)]


def dynamic_int8(module: nn.Module) -> nn.Module:
    """A copy of ``module`` (on the CPU, in eval mode) whose Linear, LSTM and GRU layers are
    dynamically quantized to int8 with per-output-channel weight scales, and whose embeddings
    (not tied to another layer) hold int8 rows (:class:`Int8Embedding`). ``module`` itself is
    put on the CPU in eval mode."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    spec: dict[Any, Any] = {t: per_channel_dynamic_qconfig for t in DYNAMIC_TYPES}
    with quiet_quantization():
        quantized: nn.Module = quantize_dynamic(module.cpu().eval(), spec, dtype=torch.qint8)
    int8_embeddings(quantized)
    return quantized.eval()


class Int8Embedding(nn.Module):
    """``nn.Embedding`` with int8 rows and one fp32 scale per row (weight-only, symmetric).

    A text model's token table is most of its bytes (8,000 x 64 floats in the genre
    transformer, four times its Linear weights): quantizing only the Linear layers would
    leave the file nearly as large. A lookup dequantizes just the rows it reads.
    """

    weight_int8: torch.Tensor
    weight_scale: torch.Tensor

    def __init__(self, num_embeddings: int, embedding_dim: int) -> None:
        super().__init__()
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        shape = (num_embeddings, embedding_dim)
        self.register_buffer("weight_int8", torch.zeros(shape, dtype=torch.int8))
        self.register_buffer("weight_scale", torch.ones(num_embeddings))

    @classmethod
    def from_embedding(cls, embedding: nn.Embedding) -> Int8Embedding:
        new = cls(embedding.num_embeddings, embedding.embedding_dim)
        q, scale = symmetric_int8(embedding.weight.detach().float())
        new.weight_int8.copy_(q)
        new.weight_scale.copy_(scale)
        return new

    @property
    def weight(self) -> torch.Tensor:
        """The dequantized table (V, C), for code that reads an embedding's weight."""
        return self.weight_int8.float() * self.weight_scale[:, None]

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        rows = F.embedding(idx, self.weight_int8).float()  # (..., C)
        return rows * F.embedding(idx, self.weight_scale[:, None])  # (..., C) * (..., 1)

    def quantized_numel(self) -> int:
        return self.num_embeddings * self.embedding_dim

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, int8 rows"


def symmetric_int8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """int8 values in [-127, 127] and one scale per row: ``w ≈ q * scale[:, None]``."""
    scale = w.abs().amax(dim=1).clamp(min=1e-12) / 127.0  # (rows,)
    return torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8), scale


def int8_embeddings(module: nn.Module) -> list[str]:
    """Replace (in place) the embeddings whose table no other layer shares by
    :class:`Int8Embedding`; returns their names."""
    shared = shared_weights(module)
    names = [
        name
        for name, m in module.named_modules()
        if isinstance(m, nn.Embedding) and id(m.weight) not in shared
    ]
    for name in names:
        embedding = module.get_submodule(name)
        assert isinstance(embedding, nn.Embedding)
        replace_module(module, name, Int8Embedding.from_embedding(embedding))
    return names


def replace_module(module: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    setattr(module.get_submodule(parent_name), attr, new)


def _quantized_modules(module: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    from torch.ao.nn.quantized import dynamic as qd

    for name, m in module.named_modules():
        if isinstance(m, qd.Linear | qd.LSTM | qd.GRU):
            yield name, m


def _weights_of(m: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor | None]]:
    """A dynamic layer's quantized weights and float biases, by parameter name."""
    from torch.ao.nn.quantized import dynamic as qd

    layer: Any = m  # torch.ao's dynamic layers are not typed
    if isinstance(m, qd.Linear):
        return {"weight": layer.weight()}, {"bias": layer.bias()}
    return dict(layer.get_weight()), dict(layer.get_bias())  # LSTM/GRU: weight_ih_l0, bias_ih_l0 …


def _int8_parts(prefix: str, w: torch.Tensor) -> dict[str, torch.Tensor]:
    if w.qscheme() == torch.per_channel_affine:
        scale, zero = w.q_per_channel_scales(), w.q_per_channel_zero_points()
        if w.q_per_channel_axis() != 0:
            raise ValueError(f"{prefix}: per-channel scales along axis {w.q_per_channel_axis()}")
    else:  # per tensor: 0-dim scale and zero point
        scale = torch.tensor(w.q_scale(), dtype=torch.float64)
        zero = torch.tensor(w.q_zero_point(), dtype=torch.int64)
    return {prefix: w.int_repr(), f"{prefix}.scale": scale, f"{prefix}.zero_point": zero}


def _int8_tensor(tensors: dict[str, torch.Tensor], prefix: str) -> torch.Tensor:
    values, scale, zero = (tensors[prefix + s] for s in ("", ".scale", ".zero_point"))
    if scale.dim() == 0:
        return torch._make_per_tensor_quantized_tensor(values, float(scale), int(zero))
    return torch._make_per_channel_quantized_tensor(values, scale, zero, 0)


class Int8Dynamic:
    """The ``int8-dynamic`` weights format (see the module docstring)."""

    file = "model-int8.safetensors"

    def save(self, module: nn.Module, folder: Path) -> str:
        tensors: dict[str, torch.Tensor] = {}
        for name, m in _quantized_modules(module):
            weights, biases = _weights_of(m)
            for w_name, w in weights.items():
                tensors.update(_int8_parts(f"{name}.{w_name}", w))
            for b_name, b in biases.items():
                if b is not None:
                    tensors[f"{name}.{b_name}"] = b.detach()
        tensors.update(_plain_state(module))
        tensors = {k: v.detach().contiguous().clone() for k, v in tensors.items()}
        save_file(tensors, str(folder / self.file), metadata={"format": "int8-dynamic"})
        return self.file

    def load(self, module: nn.Module, folder: Path, config: dict[str, Any]) -> nn.Module:
        tensors = read_tensors(folder / str(config.get("weights", self.file)))
        quantized = dynamic_int8(module)
        used: set[str] = set()
        with quiet_quantization():
            for name, m in _quantized_modules(quantized):
                _restore_layer(name, m, tensors, used)
        floats = {k: v for k, v in tensors.items() if k not in used}
        expected = set(_plain_state(quantized))
        if set(floats) != expected:
            mismatch(folder / self.file, expected - set(floats), set(floats) - expected)
        with torch.no_grad():
            for key, value in floats.items():
                _tensor_named(quantized, key).copy_(value)
        return quantized.eval()


def _restore_layer(
    name: str, m: nn.Module, tensors: dict[str, torch.Tensor], used: set[str]
) -> None:
    """Put the stored int8 weights and float biases of layer ``name`` into its packed params."""
    from torch.ao.nn.quantized import dynamic as qd

    weights, biases = _weights_of(m)
    try:
        q = {w: _int8_tensor(tensors, f"{name}.{w}") for w in weights}
        b = {k: tensors.get(f"{name}.{k}") for k in biases}
    except KeyError as exc:
        raise StoreError(f"quantized weights of layer {name!r} are missing {exc}") from None
    for w in weights:
        used.update(f"{name}.{w}{s}" for s in ("", ".scale", ".zero_point"))
    used.update(f"{name}.{k}" for k, v in b.items() if v is not None)
    layer: Any = m
    if isinstance(m, qd.Linear):
        layer.set_weight_bias(q["weight"], b["bias"])
    else:
        layer.set_weight_bias({**q, **b})


def _plain_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """The plain tensors outside the packed layers (float parameters and buffers, int8
    embeddings), by state-dict name."""
    skip = tuple(f"{name}." for name, _ in _quantized_modules(module))
    return {
        k: v
        for k, v in module.state_dict().items()
        if isinstance(v, torch.Tensor) and not v.is_quantized and not k.startswith(skip)
    }


def _tensor_named(module: nn.Module, key: str) -> torch.Tensor:
    """The parameter or buffer a state-dict key names."""
    owner, _, attr = key.rpartition(".")
    tensor = getattr(module.get_submodule(owner), attr)
    assert isinstance(tensor, torch.Tensor), key
    return tensor


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """A version's safetensors weights file, or a StoreError that says it is damaged."""
    if not path.is_file():
        raise StoreError(f"model version {path.parent} is damaged: {path.name} is missing")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise StoreError(
            f"model version {path.parent} is damaged: {path.name} cannot be read ({exc})"
        ) from None


def mismatch(path: Path, missing: set[str], unexpected: set[str]) -> None:
    """Raise the StoreError of a weights file whose tensors do not fit the recipe's model."""
    raise StoreError(
        f"model version {path.parent} is damaged: {path.name} does not match the recipe's "
        f"model (missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]})"
    )


def shared_weights(module: nn.Module) -> set[int]:
    """ids of the parameters held by more than one layer (a head tied to an embedding)."""
    seen: dict[int, int] = {}
    for m in module.modules():
        for p in m.parameters(recurse=False):
            seen[id(p)] = seen.get(id(p), 0) + 1
    return {k for k, n in seen.items() if n > 1}


def parameter_count(module: nn.Module) -> int:
    """The weights a (possibly quantized) module holds, counted as in its fp32 original: packed
    and int8/int4 weights count one per value, a tied tensor once."""
    n = sum(p.numel() for p in module.parameters())
    for _, m in _quantized_modules(module):
        weights, biases = _weights_of(m)
        n += sum(w.numel() for w in weights.values())
        n += sum(b.numel() for b in biases.values() if b is not None)
    for m in module.modules():
        count = getattr(m, "quantized_numel", None)  # int8 / int4 weights held as buffers
        n += int(count()) if callable(count) else 0
    return n


INT8_DYNAMIC = Int8Dynamic()
