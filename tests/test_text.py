"""Text classification and regression: reading text tables, tokenizers trained on the train
split, length-bucketed batches, named group splits, baselines, predict, init, and the
Shakespeare genre example on small settings.

The baselines in metrics.json are recomputed here with scikit-learn on the same split.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import tiny
import torch
import yaml
from conftest import EXAMPLES, run_cli
from rich.console import Console

import tensorsmith
from tensorsmith import DataError
from tensorsmith.data.loading import BucketSampler

GENRE = EXAMPLES / "shakespeare_genre"
TINY_GENRE = [
    "train.epochs=1",
    "data.max_length=24",
    "data.tokenizer.vocab_size=500",
    "evaluate.plots=false",
]


def _recipe(source: Path, task: str = "text-classification", **data: Any) -> dict[str, Any]:
    return {
        "name": "tiny-text",
        "task": task,
        "data": {
            "source": str(source),
            "target": "y",
            "max_length": 16,
            "tokenizer": {"kind": "wordpiece", "vocab_size": 80},
            **data,
        },
        "model": {"arch": "rnn", "hidden_size": 8, "pooling": "mean"},
        "train": {"epochs": 15, "batch_size": 8, "optimizer": {"lr": 0.01}},
        "evaluate": {"plots": False},
    }


def _train(recipe: Any, store: Path, overrides: list[str] | None = None) -> tuple[Any, str]:
    out = io.StringIO()
    model = tensorsmith.train(recipe, overrides, store=store, console=Console(file=out, width=300))
    return model, " ".join(out.getvalue().split())


# ----------------------------------------------------------------------------- bad input


def test_empty_texts_are_left_out_and_named(tmp_path: Path) -> None:
    source = tiny.texts_csv(tmp_path / "texts.csv")
    df = pd.read_csv(source)
    df.loc[[3, 10], "text"] = ["", "   "]
    df.to_csv(source, index=False)
    model, out = _train(_recipe(source), tmp_path / "store")
    assert "2 rows of texts.csv have an empty 'text' (rows 4, 11); they were left out" in out
    assert sum(model.run["texts"].values()) == 58
    df["text"] = ""
    df.to_csv(source, index=False)
    with pytest.raises(DataError, match="holds no text: all 60 rows are empty"):
        _train(_recipe(source), tmp_path / "store")


def test_bytes_that_are_not_utf8_are_replaced_and_named(tmp_path: Path) -> None:
    source = tiny.texts_csv(tmp_path / "texts.csv")
    raw = source.read_bytes().replace(b"bright", "br\u00eeght".encode("latin-1"), 1)
    source.write_bytes(raw)
    model, out = _train(_recipe(source), tmp_path / "store")
    assert "texts.csv is not valid UTF-8 (byte 0xee at offset" in out
    assert "replaced by U+FFFD in rows" in out
    assert sum(model.run["texts"].values()) == 60


# ----------------------------------------------------------------------------- training


def test_split_by_named_groups_keeps_each_group_in_one_split(tmp_path: Path) -> None:
    source = tiny.texts_csv(tmp_path / "texts.csv")
    split = {"group": "grp", "test": ["g0", "g1"], "valid": ["g2"]}
    model, _ = _train(_recipe(source, split=split), tmp_path / "store")
    splits = model.data_splits()
    groups = {k: set(v["grp"]) for k, v in splits.items()}
    assert groups == {"train": {"g3", "g4", "g5"}, "valid": {"g2"}, "test": {"g0", "g1"}}
    assert model.run["texts"] == {"train": 30, "valid": 10, "test": 20}
    card = (Path(model.path) / "card.md").read_text()
    assert "test grp: g0, g1" in card
    with pytest.raises(DataError, match="names grp 'g9'"):
        _train(_recipe(source, split={**split, "test": ["g9"]}), tmp_path / "store")


def test_baselines_equal_scikit_learn_on_the_same_split(tmp_path: Path) -> None:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score

    source = tiny.texts_csv(tmp_path / "texts.csv", n=80)
    model, _ = _train(_recipe(source), tmp_path / "store")
    splits = model.data_splits()
    train, test = splits["train"], splits["test"]
    vectorizer = TfidfVectorizer()
    ref = LogisticRegression(max_iter=1000).fit(vectorizer.fit_transform(train["text"]), train["y"])
    predicted = ref.predict(vectorizer.transform(test["text"]))
    metrics = model.metrics["test"]
    assert metrics["tfidf_lr_f1_macro"] == pytest.approx(
        f1_score(test["y"], predicted, average="macro")
    )
    majority = train["y"].value_counts().idxmax()
    assert metrics["majority_f1_macro"] == pytest.approx(
        f1_score(test["y"], [majority] * len(test), average="macro")
    )
    assert metrics["f1_macro"] >= 0.8  # happy vs gloomy words: the RNN learns it
    # the same numbers again from `tensorsmith evaluate`, on a loaded model
    again = tensorsmith.evaluate(str(model.path))
    assert again["test"]["tfidf_lr_f1_macro"] == pytest.approx(metrics["tfidf_lr_f1_macro"])


def test_tokenizer_is_trained_on_the_train_split_only(tmp_path: Path) -> None:
    source = tiny.texts_csv(tmp_path / "texts.csv")
    df = pd.read_csv(source)
    df.loc[df["grp"] == "g0", "text"] += " zanzibar"
    df.loc[df["grp"] == "g3", "text"] += " marmalade"
    df.to_csv(source, index=False)
    recipe = _recipe(source, split={"group": "grp", "test": ["g0"], "valid": ["g1"]})
    recipe["data"]["tokenizer"]["vocab_size"] = 400
    model, _ = _train(recipe, tmp_path / "store")
    vocab = json.loads((Path(model.path) / "tokenizer.json").read_text())["model"]["vocab"]
    assert "marmalade" in vocab and "zanzibar" not in vocab
    saved = json.loads((Path(model.path) / "tokenizer.json").read_text())
    assert saved["truncation"]["max_length"] == 16 and saved["padding"]["pad_token"] == "<|pad|>"


@pytest.mark.parametrize("kind", ["wordpiece", "bpe", "char"])
def test_same_recipe_twice_gives_the_same_tokenizer_and_weights(kind: str, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    source = tiny.texts_csv(tmp_path / "texts.csv")
    recipe = _recipe(source)
    recipe["data"]["tokenizer"] = {"kind": kind, "vocab_size": 300}
    recipe["train"]["epochs"] = 2
    paths = [Path(_train(recipe, tmp_path / f"store{i}")[0].path) for i in range(2)]
    files = [(p / "tokenizer.json").read_text() for p in paths]
    assert files[0] == files[1]
    a, b = (load_file(str(p / "model.safetensors")) for p in paths)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_wordpiece_pieces_continue_words_with_hashes() -> None:
    from tensorsmith.data.tokenizer import TextTokenizer

    texts = ["the thundering thunderer thundered thunderously"] * 20 + ["a b c d e"] * 5
    tok = TextTokenizer.train("wordpiece", texts, 60)
    pieces = tok.tokenizer.encode("thunders underthe").tokens
    assert pieces[0].startswith("thunder") and all(p.startswith("##") for p in pieces[1:2])
    assert "".join(p.removeprefix("##") for p in pieces[:2]) == "thunders"
    assert "<|unk|>" not in pieces  # every seen character has a word-initial and a ## piece


def test_bucketed_batches_hold_similar_lengths_and_depend_on_seed_and_epoch() -> None:
    lengths = torch.from_numpy(np.random.default_rng(0).integers(1, 200, 1000))
    sampler = BucketSampler(lengths, 25, seed=3)
    sampler.set_epoch(2)
    batches = list(sampler)
    assert sorted(torch.cat(batches).tolist()) == list(range(1000))  # every sample once
    padded = sum(int(lengths[b].max()) * len(b) for b in batches)
    shuffled = torch.randperm(1000, generator=torch.Generator().manual_seed(0)).split(25)
    random_padded = sum(int(lengths[b].max()) * len(b) for b in shuffled)
    assert padded < 0.7 * random_padded  # padding no longer dominates
    again = BucketSampler(lengths, 25, seed=3)
    again.set_epoch(2)
    assert all(torch.equal(a, b) for a, b in zip(batches, again, strict=True))
    again.set_epoch(3)
    assert not all(torch.equal(a, b) for a, b in zip(batches, again, strict=True))


def test_text_regression_predicts_in_the_target_units(tmp_path: Path) -> None:
    source = tiny.texts_csv(tmp_path / "texts.csv", n=80, number=True)
    recipe = _recipe(source, task="text-regression")
    model, _ = _train(recipe, tmp_path / "store")
    assert model.metrics["test"]["r2"] > 0.5
    test = model.data_splits()["test"]
    predicted = model.predict(test.drop(columns=["y"]))["y_predicted"].to_numpy()
    errors = np.abs(predicted - test["y"].to_numpy())
    assert float(np.sqrt(np.mean(errors**2))) == pytest.approx(model.metrics["test"]["rmse"])


# ----------------------------------------------------------------------------- predict and init


def test_predict_a_text_longer_than_max_length_says_it_truncated(tmp_path: Path) -> None:
    source = tiny.texts_csv(tmp_path / "texts.csv")
    _train(_recipe(source), tmp_path / "store")
    long = tmp_path / "long.csv"
    pd.DataFrame({"text": ["bright sunny " * 40, "dark cold"]}).to_csv(long, index=False)
    code, out, err = run_cli("predict", "tiny-text", "--data", long, store=tmp_path / "store")
    assert code == 0, err
    said = " ".join(err.split())
    assert "warning: 1 texts are longer than data.max_length = 16 tokens and were truncated" in said
    assert "(rows 1)" in said
    table = pd.read_csv(io.StringIO(out))
    assert list(table["y_predicted"]) == ["up", "down"]


def test_init_recognises_a_text_table(tmp_path: Path) -> None:
    from tensorsmith.api import init_recipe

    labels = tiny.texts_csv(tmp_path / "labels.csv", n=80)
    pd.read_csv(labels).drop(columns=["grp"]).to_csv(labels, index=False)
    code, out, err = run_cli("init", labels, "--target", "y", cwd=tmp_path)
    assert code == 0, err
    raw = yaml.safe_load(out.split("\n", 1)[1])
    assert raw["task"] == "text-classification" and raw["data"]["text_column"] == "text"
    scores = tiny.texts_csv(tmp_path / "scores.csv", n=80, number=True)
    pd.read_csv(scores).drop(columns=["grp"]).to_csv(scores, index=False)
    recipe = tmp_path / "recipe.yaml"
    init_recipe(scores, "y", recipe)
    assert yaml.safe_load(recipe.read_text())["task"] == "text-regression"
    model, _ = _train(recipe, tmp_path / "store", ["train.epochs=1", "evaluate.plots=false"])
    assert model.task.name == "text-regression"


# ----------------------------------------------------------------------------- the example


def test_build_script_reproduces_the_committed_passages(tmp_path: Path) -> None:
    committed = hashlib.sha256((GENRE / "passages.csv").read_bytes()).hexdigest()
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import build; "
        "build.build().to_csv(sys.argv[2], index=False)"
    )
    subprocess.run(
        [sys.executable, "-c", code, str(GENRE), str(tmp_path / "p.csv")], check=True, timeout=120
    )
    assert hashlib.sha256((tmp_path / "p.csv").read_bytes()).hexdigest() == committed
    df = pd.read_csv(GENRE / "passages.csv")
    assert set(df["genre"]) == {"comedy", "history", "tragedy"}
    assert "sonnets" not in set(df["play"]) and "pericles" not in set(df["play"])


@pytest.mark.parametrize("recipe", ["transformer.yaml", "rnn.yaml"])
def test_genre_example_on_small_settings(recipe: str, tmp_path: Path) -> None:
    small = {
        "transformer.yaml": ["model.n_embd=16", "model.n_layer=1"],
        "rnn.yaml": ["model.hidden_size=8", "model.embedding_dim=8"],
    }[recipe]
    model, _out = _train(GENRE / recipe, tmp_path / "store", [*TINY_GENRE, *small])
    splits = model.data_splits()
    plays = {k: set(v["play"]) for k, v in splits.items()}
    assert not (plays["train"] & plays["test"]) and not (plays["valid"] & plays["test"])
    raw = yaml.safe_load((GENRE / recipe).read_text())
    assert plays["test"] == set(raw["data"]["split"]["test"])  # the plays the recipe names
    test = model.metrics["test"]
    for key in ("f1_macro", "majority_f1_macro", "tfidf_lr_f1_macro", "accuracy"):
        assert 0.0 <= test[key] <= 1.0, key
    card = (Path(model.path) / "card.md").read_text()
    assert "## Most confidently wrong texts" in card and "(play " in card
