"""Quantization of a stored model: dynamic int8, or weight-only int8 / int4 for the GPT.

- ``int8``: PyTorch's dynamic int8 (``torch.ao.quantization.quantize_dynamic``) of the Linear,
  LSTM and GRU layers of table, sequence, text and image models, per-output-channel weight
  scales, and int8 rows for the embeddings (a text model's token table is most of its bytes);
  stored in the ``int8-dynamic`` weights format. (Measured against ONNX Runtime's
  dynamic quantizer on the genre transformer; see ``docs/benchmarks.md``.)
- ``int8-weight`` / ``int4-weight``: weight-only quantization of every Linear layer, activations
  kept in float, for generation (a decoder is bound by reading weights, one token at a time).
  The GPT's head is tied to its token embedding: it stays fp32 and tied, because quantizing the
  head alone would untie it and store a second copy of the table.

The child keeps the parent's recipe and dims; ``config.json`` names the format that rebuilds it.
"""

from __future__ import annotations

import copy
from typing import Any

from torch import nn

from tensorsmith.compression.child import Child
from tensorsmith.errors import RecipeError
from tensorsmith.models.quantized import Int8Embedding, dynamic_int8, dynamic_layers
from tensorsmith.models.weight_only import INT4_GROUP, weight_only
from tensorsmith.tasks.predictor import Predictor

__all__ = ["SCHEMES", "quantize", "schemes_for"]

# scheme → the architectures (model.arch) it applies to
SCHEMES: dict[str, tuple[str, ...]] = {
    "int8": ("linear", "mlp", "rnn", "transformer", "cnn"),
    "int8-weight": ("gpt", "transformer", "mlp", "linear"),
    "int4-weight": ("gpt", "transformer", "mlp", "linear"),
}
FORMAT_OF = {"int8": "int8-dynamic", "int8-weight": "int8-weight", "int4-weight": "int4-weight"}


def schemes_for(arch: str) -> list[str]:
    """The quantization schemes that apply to an architecture."""
    return [scheme for scheme, archs in SCHEMES.items() if arch in archs]


def quantize(parent: Predictor, scheme: str) -> Child:
    """The parent's model quantized with ``scheme`` (see the module docstring)."""
    arch = str(parent.recipe.model.arch)
    _check(parent, scheme, arch)
    fp32 = copy.deepcopy(parent.module).cpu().float().eval()
    if scheme == "int8":
        module, layers, notes = _dynamic(fp32, parent, scheme)
    else:
        module, layers, notes = _weight_only(fp32, parent, scheme)
    method: dict[str, Any] = {
        "quantize": scheme,
        "layers": len(layers),
        "weights": "int4" if scheme == "int4-weight" else "int8",
        "granularity": f"group of {INT4_GROUP}" if scheme == "int4-weight" else "per channel",
    }
    if scheme == "int8":
        method["activations"] = "int8, dynamic (per batch)"
        method["library"] = "torch.ao.quantization.quantize_dynamic"
    return Child(
        module=module,
        recipe=parent.recipe,
        dims=dict(parent.config.get("dims", {})),
        method=method,
        format=FORMAT_OF[scheme],
        notes=notes,
    )


def _check(parent: Predictor, scheme: str, arch: str) -> None:
    compression = parent.config.get("compression") or {}
    method = compression.get("method")
    done = method.get("quantize") if isinstance(method, dict) else None
    if done or str(compression.get("format", "")) in FORMAT_OF.values():
        origin = (parent.run.get("parent") or {}).get("ref") or "its parent version"
        raise RecipeError(
            f"{parent.name} is already quantized ({done or compression.get('format')}); "
            f"quantizing it again would compound the rounding: compress its parent {origin} "
            "instead"
        )
    if scheme not in SCHEMES:
        raise RecipeError(
            f"unknown quantization scheme {scheme!r}; choices: {', '.join(SCHEMES)} "
            f"(for a {arch} model: {', '.join(schemes_for(arch)) or 'none'})"
        )
    if arch not in SCHEMES[scheme]:
        fits = schemes_for(arch)
        raise RecipeError(
            f"--quantize {scheme} does not apply to a {arch} model ({parent.name}); "
            + (
                f"for {arch} use: {', '.join(fits)}"
                if fits
                else f"no quantization scheme applies to {arch} models"
            )
        )


def _dynamic(
    fp32: nn.Module, parent: Predictor, scheme: str
) -> tuple[nn.Module, list[str], list[str]]:
    layers = dynamic_layers(fp32)
    if not layers:
        raise RecipeError(
            f"{parent.name} has no Linear, LSTM or GRU layer for --quantize {scheme} to "
            "quantize; nothing would change"
        )
    module = dynamic_int8(fp32)
    embeddings = [n for n, m in module.named_modules() if isinstance(m, Int8Embedding)]
    notes = [
        f"dynamic int8: {len(layers)} Linear/LSTM/GRU layers with int8 weights (per-channel "
        "scales), activations quantized per batch"
        + (f"; {len(embeddings)} embeddings with int8 rows" if embeddings else "")
        + "; norms and convolutions stay fp32"
    ]
    return module, [*layers, *embeddings], notes


def _weight_only(
    fp32: nn.Module, parent: Predictor, scheme: str
) -> tuple[nn.Module, list[str], list[str]]:
    all_linear = [n for n, m in fp32.named_modules() if isinstance(m, nn.Linear)]
    layers = weight_only(fp32, scheme)
    if not layers:
        raise RecipeError(
            f"{parent.name} has no Linear layer that --quantize {scheme} can quantize"
            + (
                f" (int4 needs in_features divisible by {INT4_GROUP} and out_features by 16)"
                if scheme == "int4-weight" and all_linear
                else ""
            )
        )
    kept = sorted(set(all_linear) - set(layers))
    notes = [f"weight-only {scheme.split('-')[0]}: {len(layers)} Linear layers quantized"]
    if kept:
        notes.append(
            f"kept in fp32: {', '.join(kept)} (a head tied to the token embedding stays tied; "
            + ("or a shape the int4 kernel does not take)" if scheme == "int4-weight" else ")")
        )
    return fp32, layers, notes
