"""Starting a fine-tune from a local Hugging Face checkpoint folder.

Only ``*.safetensors`` weights are read, and ``trust_remote_code`` is never set: a checkpoint
that has only pickled weights (``pytorch_model.bin``) or that brings its own model code
(``auto_map`` in config.json, ``*.py`` files) is refused with the reason. A decoder (GPT-2,
Llama …) starts a language model; an encoder (BERT and its family) starts a text classifier
or regressor with a fresh head.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from tensorsmith.errors import DataError, RecipeError
from tensorsmith.finetune.start import Start, folder_digest

__all__ = ["open_checkpoint"]

# task → (our arch, the module the transformers model sits in)
ARCH = {"language-modeling": ("hf-causal", "model")}
ENCODER_TASKS = ("text-classification", "text-regression")


def _config(folder: Path) -> dict[str, Any]:
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"{folder / 'config.json'} cannot be read ({exc})") from None
    if not isinstance(config, dict) or "model_type" not in config:
        raise DataError(
            f"{folder} is not a Hugging Face checkpoint: its config.json has no model_type"
        )
    code = sorted(p.name for p in folder.glob("*.py"))
    if "auto_map" in config or code:
        what = f"code files {', '.join(code)}" if code else "auto_map in config.json"
        raise DataError(
            f"the checkpoint {folder} brings its own model code ({what}); tensorsmith never "
            "runs a checkpoint's code (no trust_remote_code): use a checkpoint of an "
            "architecture that transformers ships"
        )
    return config


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        pickled = sorted(p.name for p in folder.glob("*.bin")) + sorted(
            p.name for p in folder.glob("*.pt")
        )
        why = f"only pickled weights ({', '.join(pickled)})" if pickled else "no weights"
        raise DataError(
            f"the checkpoint {folder} has {why}; tensorsmith reads safetensors only (a pickle "
            "can run code when loaded): convert it with `save_pretrained(..., "
            "safe_serialization=True)`"
        )
    weights: dict[str, torch.Tensor] = {}
    for path in files:
        try:
            weights.update(load_file(str(path)))
        except (SafetensorError, OSError) as exc:
            raise DataError(
                f"the checkpoint's weights {path} cannot be read ({exc}); the file is damaged "
                "or incomplete: copy or save the checkpoint again"
            ) from None
    return weights


def _prefixed(weights: dict[str, torch.Tensor], top: str, base: str) -> dict[str, torch.Tensor]:
    """The checkpoint's names as our module names them: under ``top``, with or without the
    base model's prefix (a bare ``BertModel`` or a ``BertFor…`` head model saved it)."""
    out = {}
    for name, tensor in weights.items():
        out[f"{top}.{name}"] = tensor
        out[f"{top}.{name.removeprefix(base + '.')}"] = tensor
    return out


def open_checkpoint(folder: Path, task: str) -> Start:
    config = _config(folder)
    if task in ARCH:
        arch, top = ARCH[task]
        n_positions = config.get("n_positions") or config.get("max_position_embeddings") or 128
        model = {"arch": arch, "checkpoint": str(folder.resolve()), "config": config,
                 "block_size": min(128, int(n_positions))}  # fmt: skip
    elif task in ENCODER_TASKS:
        top = "encoder"
        model = {"arch": "hf-encoder", "checkpoint": str(folder.resolve()), "config": config}
    else:
        raise RecipeError(
            f"a Hugging Face checkpoint starts a language model or a text classifier / "
            f"regressor, not a {task} model"
        )
    if not (folder / "tokenizer.json").is_file():
        raise DataError(f"the checkpoint {folder} has no tokenizer.json; it is needed to read text")
    weights = _prefixed(_weights(folder), top, str(config["model_type"]))
    return Start(
        parent={
            "kind": "huggingface",
            "ref": folder.name,
            "path": str(folder.resolve()),
            "model_type": config["model_type"],
            "sha256": folder_digest(folder),
        },
        task=None,
        model=model,
        weights=weights,
        checkpoint=folder,
    )
