"""Splits, preprocessing options and training options, each through a real (tiny) run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import quiet_console
from safetensors.torch import load_file

import tensorsmith
from tensorsmith.data.tabular import split_frame
from tensorsmith.recipe import parse_recipe


def table(tmp_path: Path, n: int = 120, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    df = pd.DataFrame(
        {
            "x1": x1,
            "x2": x2,
            "color": rng.choice(["red", "green", "blue"], size=n),
            "group": [f"g{i % 12}" for i in range(n)],
            "label": np.where(x1 + 0.5 * x2 > 0.3, "yes_class", "no_class"),
            "value": 3 * x1 - 2 * x2 + rng.normal(scale=0.1, size=n),
        }
    )
    path = tmp_path / "data.csv"
    df.to_csv(path, index=False)
    return path


def recipe(path: Path, task: str = "classification", **extra: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "name": "t",
        "task": task,
        "data": {
            "source": str(path),
            "target": "label" if task == "classification" else "value",
            "features": ["x1", "x2", "color"],
        },
        "model": {"arch": "mlp", "hidden": [8]},
        "train": {"epochs": 5, "batch_size": 16, "threads": 1, "log_every": 100},
        "evaluate": {"plots": False},
    }
    for key, value in extra.items():
        section, _, name = key.partition("__")
        raw[section][name] = value
    return raw


def train(raw: dict[str, Any], store: Path) -> Any:
    return tensorsmith.train(raw, store=store, console=quiet_console())


def test_stratified_split_keeps_the_class_balance(tmp_path: Path) -> None:
    df = pd.read_csv(table(tmp_path, n=200))
    r = parse_recipe(recipe(tmp_path / "data.csv"))
    splits = split_frame(df, r.data.split, "label", stratify=True)
    overall = (df["label"] == "yes_class").mean()
    for part in splits.values():
        assert abs((part["label"] == "yes_class").mean() - overall) < 0.05
    assert sum(len(p) for p in splits.values()) == len(df)
    assert set(splits["train"].index).isdisjoint(splits["test"].index)


def test_group_split_keeps_each_group_in_one_split(tmp_path: Path) -> None:
    df = pd.read_csv(table(tmp_path))
    raw = recipe(tmp_path / "data.csv")
    raw["data"]["split"] = {"valid": 0.2, "test": 0.2, "group": "group", "seed": 3}
    splits = split_frame(df, parse_recipe(raw).data.split, "label", stratify=True)
    groups = [set(p["group"]) for p in splits.values()]
    assert all(g for g in groups)
    assert groups[0].isdisjoint(groups[1]) and groups[0].isdisjoint(groups[2])
    assert groups[1].isdisjoint(groups[2])


def test_explicit_split_files(tmp_path: Path) -> None:
    df = pd.read_csv(table(tmp_path))
    for name, part in (("tr", df[:80]), ("va", df[80:100]), ("te", df[100:])):
        part.to_csv(tmp_path / f"{name}.csv", index=False)
    raw = recipe(tmp_path / "tr.csv")
    raw["data"]["split"] = {"train": "tr.csv", "valid": "va.csv", "test": "te.csv"}
    raw["data"]["source"] = "tr.csv"
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(raw))
    model = tensorsmith.train(path, store=tmp_path / "s", console=quiet_console())
    assert model.run["rows"] == {"train": 80, "valid": 20, "test": 20}


def test_embedding_categories_and_unseen_values(tmp_path: Path) -> None:
    data = table(tmp_path)
    model = train(recipe(data, data__categorical="embedding", data__scale="minmax"), tmp_path / "s")
    assert model.task.preprocessor.cardinalities() == [4]  # red, green, blue + unknown
    new = pd.DataFrame({"x1": [0.5], "x2": [0.1], "color": ["purple"]})
    out = model.predict(new)
    assert out["label_predicted"].iloc[0] in ("yes_class", "no_class")
    again = tensorsmith.load("t", store=tmp_path / "s").predict(new)
    pd.testing.assert_frame_equal(out, again)


def test_gradient_accumulation_equals_the_larger_batch(tmp_path: Path) -> None:
    data = table(tmp_path)
    common = {"optimizer": {"name": "sgd", "lr": 0.1}, "epochs": 3, "threads": 1}
    a = recipe(data, task="regression")
    a["train"] = {**a["train"], **common, "batch_size": 8, "grad_accum": 2}
    b = recipe(data, task="regression")
    b["train"] = {**b["train"], **common, "batch_size": 16, "grad_accum": 1}
    for r in (a, b):  # 96 train rows: whole batches of 16 and pairs of 8
        r["data"]["split"] = {"valid": 0.0, "test": 0.2}
    a["name"], b["name"] = "a", "b"
    ma, mb = train(a, tmp_path / "s"), train(b, tmp_path / "s")
    wa = load_file(str(ma.path / "model.safetensors"))
    wb = load_file(str(mb.path / "model.safetensors"))
    for key in wb:
        np.testing.assert_allclose(wa[key].numpy(), wb[key].numpy(), atol=1e-5)


def test_bf16_training_learns_as_well_as_fp32(tmp_path: Path) -> None:
    data = table(tmp_path)
    scores = {}
    for precision in ("fp32", "bf16"):
        raw = recipe(data, task="regression", train__precision=precision, train__epochs=60)
        raw["train"]["optimizer"] = {"name": "adam", "lr": 0.01}
        raw["name"] = precision
        scores[precision] = train(raw, tmp_path / "s").metrics["test"]["r2"]
    assert scores["bf16"] > 0.9
    assert abs(scores["bf16"] - scores["fp32"]) < 0.05


def test_plateau_schedule_lowers_the_learning_rate(tmp_path: Path) -> None:
    raw = recipe(
        table(tmp_path),
        task="regression",
        train__epochs=40,
        train__schedule={"name": "plateau", "patience": 1, "factor": 0.5},
    )
    raw["train"]["optimizer"] = {"name": "adam", "lr": 0.5}
    history = pd.read_csv(train(raw, tmp_path / "s").path / "history.csv")
    assert history["lr"].iloc[0] == 0.5
    assert history["lr"].iloc[-1] < 0.5


def test_balanced_class_weights_raise_minority_recall(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    n = 400
    x1 = rng.normal(size=n)
    df = pd.DataFrame(
        {
            "x1": x1,
            "x2": rng.normal(size=n),
            "color": "red",
            "label": np.where(x1 + rng.normal(scale=0.8, size=n) > 1.6, "rare", "common"),
        }
    )
    df.to_csv(tmp_path / "data.csv", index=False)
    plain = recipe(tmp_path / "data.csv", train__epochs=30, evaluate__metrics=["recall"])
    weighted = recipe(
        tmp_path / "data.csv",
        train__epochs=30,
        train__class_weights="balanced",
        evaluate__metrics=["recall"],
    )
    weighted["name"] = "w"
    plain_p = train(plain, tmp_path / "s").predict(df)
    weighted_p = train(weighted, tmp_path / "s").predict(df)
    rare = df["label"] == "rare"
    assert (weighted_p["label_predicted"][rare] == "rare").mean() > (
        plain_p["label_predicted"][rare] == "rare"
    ).mean()


@pytest.mark.parametrize("fmt", ["tsv", "parquet", "jsonl"])
def test_other_table_formats(tmp_path: Path, fmt: str) -> None:
    df = pd.read_csv(table(tmp_path))
    path = tmp_path / f"data.{fmt}"
    if fmt == "tsv":
        df.to_csv(path, sep="\t", index=False)
    elif fmt == "parquet":
        df.to_parquet(path)
    else:
        df.to_json(path, orient="records", lines=True)
    model = train(recipe(path, train__epochs=2), tmp_path / "s")
    assert len(model.predict(df.head(7))) == 7
