"""The user journey of DESIGN.md §5 through the real CLI (in process) and the Python API."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import EXAMPLES, GATE_FAILED, quiet_console, run_cli, tabular_example_recipes

import tensorsmith

WINDSOR = EXAMPLES / "windsor_housing"
WINDSOR_CSV = WINDSOR / "windsor_housing.csv"
MLP_RECIPE = WINDSOR / "mlp.yaml"  # has valid and test splits
CANCER_CSV = EXAMPLES / "breast_cancer" / "breast_cancer.csv"

ARTIFACT_FILES = (
    "config.json",
    "recipe.yaml",
    "model.safetensors",
    "preprocess.json",
    "metrics.json",
    "history.csv",
    "run.json",
    "card.md",
)
RUN_KEYS = (
    "train_seconds",
    "wall_seconds",
    "steps",
    "samples_per_second",
    "peak_memory_bytes",
    "hardware",
    "versions",
    "seed",
    "parent",
)


def ok(result: tuple[int, str, str]) -> str:
    code, out, err = result
    assert code == 0, f"exit {code}\nstdout:\n{out}\nstderr:\n{err}"
    assert "Traceback" not in err
    return out


def digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def models(trained_examples: dict[str, dict[str, Any]], session_store: Path) -> Path:
    """The session store, holding every tabular example trained for 3 epochs."""
    for entry in trained_examples.values():
        code, out, err = entry["result"]
        assert code in (0, GATE_FAILED), out + err  # 3: stored, but a 3-epoch run fails its gate
    return session_store


# ----------------------------------------------------------------------------- init / validate


def test_init_prints_a_recipe_that_validates(tmp_path: Path) -> None:
    text = ok(run_cli("init", WINDSOR_CSV, "--target", "price", cwd=tmp_path))
    raw = yaml.safe_load(text)
    assert raw["task"] == "regression"
    assert raw["data"]["target"] == "price"
    assert raw["name"] == "windsor-housing"
    recipe = tmp_path / "starter.yaml"
    recipe.write_text(text, encoding="utf-8")
    resolved = yaml.safe_load(ok(run_cli("validate", recipe, cwd=tmp_path)))
    assert resolved["task"] == "regression"
    assert Path(resolved["data"]["source"]).name == "windsor_housing.csv"


def test_init_out_file_then_train(tmp_path: Path) -> None:
    recipe = tmp_path / "recipes" / "houses.yaml"
    recipe.parent.mkdir()
    ok(run_cli("init", WINDSOR_CSV, "--target", "price", "--out", recipe, cwd=tmp_path))
    assert recipe.is_file()
    # the data path is written relative to the recipe's folder
    source = yaml.safe_load(recipe.read_text())["data"]["source"]
    assert (recipe.parent / source).resolve() == WINDSOR_CSV.resolve()
    store = tmp_path / "store"
    # train it in process (the CLI train path is covered by the other tests)
    model = tensorsmith.train(recipe, ["train.epochs=2"], store=store, console=quiet_console())
    version = store / "windsor-housing" / "1"
    assert model.path == version
    assert (version / "model.safetensors").is_file()
    assert json.loads((version / "run.json").read_text())["epochs"] == 2


def test_validate_prints_the_resolved_recipe() -> None:
    out = ok(run_cli("validate", EXAMPLES / "xor_mlp" / "recipe.yaml"))
    resolved = yaml.safe_load(out)
    # defaults the recipe file does not spell out are filled in
    assert resolved["train"]["optimizer"]["name"] == "adam"
    assert resolved["train"]["optimizer"]["weight_decay"] == 0.0
    assert resolved["train"]["schedule"]["name"] == "constant"
    assert resolved["train"]["precision"] == "fp32"
    assert resolved["model"]["dropout"] == 0.0
    assert resolved["data"]["split"]["valid"] == 0.2
    assert "base_dir" not in out


def test_validate_applies_set_overrides() -> None:
    out = ok(
        run_cli(
            "validate",
            MLP_RECIPE,
            "--set",
            "model.hidden=[16, 8]",
            "--set",
            "train.optimizer.lr=0.01",
            "--set",
            "train.batch_size=full",
            "--set",
            "data.types={stories: category}",
        )
    )
    resolved = yaml.safe_load(out)
    assert resolved["model"]["hidden"] == [16, 8]
    assert resolved["train"]["optimizer"]["lr"] == pytest.approx(0.01)
    assert resolved["train"]["batch_size"] == "full"
    assert resolved["data"]["types"] == {"stories": "category"}


# ----------------------------------------------------------------------------- train / artifact


def test_train_writes_every_artifact_file(models: Path) -> None:
    version = models / "windsor-housing-mlp" / "1"
    for name in ARTIFACT_FILES:
        assert (version / name).is_file(), name
        assert (version / name).stat().st_size > 0, name
    pngs = list((version / "plots").glob("*.png"))
    assert pngs
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    assert not any(p.name.startswith(".") for p in version.parent.iterdir())  # no partials

    metrics = json.loads((version / "metrics.json").read_text())
    assert set(metrics) == {"valid", "test"}
    for split in ("valid", "test"):
        assert {"rmse", "mae", "r2"} <= set(metrics[split])
        assert all(np.isfinite(metrics[split][k]) for k in ("rmse", "mae", "r2"))

    run = json.loads((version / "run.json").read_text())
    for key in RUN_KEYS:
        assert key in run, key
    assert run["steps"] > 0
    assert run["epochs"] == 3
    assert 0 < run["train_seconds"] <= run["wall_seconds"]
    assert run["samples_per_second"] > 0
    assert run["peak_memory_bytes"] > 0
    assert run["seed"] == 0
    assert run["parent"] is None
    assert "torch" in run["versions"]
    assert run["hardware"]["device"] in ("cpu", "cuda")

    history = pd.read_csv(version / "history.csv")
    assert len(history) == 3
    assert {"epoch", "train_loss", "valid_loss"} <= set(history.columns)

    recipe = yaml.safe_load((version / "recipe.yaml").read_text())
    assert recipe["train"]["epochs"] == 3
    assert recipe["train"]["loss"] == "mse"
    assert Path(recipe["data"]["source"]).is_absolute()
    # the stored recipe is itself a valid recipe
    assert tensorsmith.validate(recipe).name == "windsor-housing-mlp"

    prep = json.loads((version / "preprocess.json").read_text())
    assert prep["target"] == "price"
    assert "lotsize" in prep["features"]

    card = (version / "card.md").read_text()
    assert "windsor-housing-mlp" in card
    assert "rmse" in card


def test_the_artifact_describes_itself(models: Path, tmp_path: Path) -> None:
    """config.json says what the folder holds; loading needs neither run.json nor metrics."""
    version = models / "windsor-housing-mlp" / "1"
    config = json.loads((version / "config.json").read_text())
    assert config["format"] == "tensorsmith/1"
    assert (config["name"], config["version"]) == ("windsor-housing-mlp", 1)
    assert (config["task"], config["arch"]) == ("regression", "mlp")
    assert config["dims"]["n_outputs"] == 1 and config["dims"]["n_inputs"] > 0
    assert config["weights"] == "model.safetensors"
    held = sorted(str(p.relative_to(version)) for p in version.rglob("*") if p.is_file())
    assert sorted(config["files"]) == held

    bare = tmp_path / "bare"
    shutil.copytree(version, bare)
    (bare / "run.json").unlink()
    (bare / "metrics.json").unlink()
    rows = pd.read_csv(EXAMPLES / "windsor_housing" / "windsor_housing.csv").head(4)
    expected = tensorsmith.load(str(version)).predict(rows)
    pd.testing.assert_frame_equal(tensorsmith.load(str(bare)).predict(rows), expected)


def test_splits_that_do_not_exist_are_not_in_metrics(models: Path) -> None:
    # examples/windsor_housing/recipe.yaml holds out no valid rows
    metrics = json.loads((models / "windsor-housing" / "1" / "metrics.json").read_text())
    assert set(metrics) == {"test"}


def test_training_again_makes_version_2_and_keeps_version_1(models: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    shutil.copytree(models / "windsor-housing-mlp", store / "windsor-housing-mlp")
    before = digest(store / "windsor-housing-mlp" / "1")
    ok(
        run_cli(
            "train",
            MLP_RECIPE,
            "--set",
            "train.epochs=2",
            "--set",
            "model.hidden=[8]",
            "--set",
            "evaluate.gate={}",
            store=store,
        )
    )
    assert digest(store / "windsor-housing-mlp" / "1") == before
    v2 = store / "windsor-housing-mlp" / "2"
    recipe = yaml.safe_load((v2 / "recipe.yaml").read_text())
    assert recipe["model"]["hidden"] == [8]  # --set reached the model
    assert recipe["train"]["epochs"] == 2
    assert json.loads((v2 / "run.json").read_text())["epochs"] == 2
    assert len(pd.read_csv(v2 / "history.csv")) == 2


# ----------------------------------------------------------------------------- evaluate / predict


def test_evaluate_prints_metrics(models: Path) -> None:
    out = ok(run_cli("evaluate", "windsor-housing-mlp", store=models))
    for word in ("rmse", "mae", "r2", "valid", "test"):
        assert word in out
    # the same numbers as metrics.json (re-split with the same seed)
    metrics = json.loads((models / "windsor-housing-mlp" / "1" / "metrics.json").read_text())
    assert f"{metrics['test']['r2']:.4f}" in out


def test_evaluate_on_a_file(models: Path, tmp_path: Path) -> None:
    data = tmp_path / "houses.csv"
    pd.read_csv(WINDSOR_CSV).head(60).to_csv(data, index=False)
    out = ok(run_cli("evaluate", "windsor-housing-mlp", "--data", data, store=models))
    assert "houses.csv" in out
    assert "rmse" in out


def test_predict_writes_one_prediction_per_row(models: Path, tmp_path: Path) -> None:
    data = tmp_path / "new.csv"
    frame = pd.read_csv(WINDSOR_CSV).drop(columns=["price"]).head(25)
    frame.to_csv(data, index=False)
    preds = tmp_path / "out" / "preds.csv"
    out = ok(
        run_cli("predict", "windsor-housing-mlp", "--data", data, "--out", preds, store=models)
    )
    assert "25" in out
    result = pd.read_csv(preds)
    assert len(result) == 25
    assert "price_predicted" in result.columns
    assert np.isfinite(result["price_predicted"]).all()
    assert result["price_predicted"].between(1_000, 1_000_000).all()  # dollars, not z-scores
    pd.testing.assert_frame_equal(result[frame.columns], frame, check_dtype=False)


def test_predict_by_version_and_by_directory_agree(models: Path, tmp_path: Path) -> None:
    data = tmp_path / "new.csv"
    pd.read_csv(WINDSOR_CSV).head(10).to_csv(data, index=False)
    by_version = ok(run_cli("predict", "windsor-housing-mlp@1", "--data", data, store=models))
    directory = models / "windsor-housing-mlp" / "1"
    # by path, from a store that does not know the model at all
    by_path = ok(run_cli("predict", directory, "--data", data, store=tmp_path / "other"))
    a = pd.read_csv(io.StringIO(by_version))
    b = pd.read_csv(io.StringIO(by_path))
    assert len(a) == 10
    assert np.allclose(a["price_predicted"], b["price_predicted"])


def test_classification_predict_has_probabilities(models: Path, tmp_path: Path) -> None:
    data = tmp_path / "tumours.csv"
    pd.read_csv(CANCER_CSV).drop(columns=["diagnosis"]).head(30).to_csv(data, index=False)
    preds = tmp_path / "preds.csv"
    ok(run_cli("predict", "breast-cancer", "--data", data, "--out", preds, store=models))
    result = pd.read_csv(preds)
    assert len(result) == 30
    proba = [c for c in result.columns if c.startswith("proba_")]
    assert sorted(proba) == ["proba_benign", "proba_malignant"]
    assert np.allclose(result[proba].sum(axis=1), 1.0, atol=1e-6)
    assert ((result[proba] >= 0) & (result[proba] <= 1)).all().all()
    assert set(result["diagnosis_predicted"]) <= {"benign", "malignant"}
    # the label is the most probable class
    best = result[proba].idxmax(axis=1).str.removeprefix("proba_")
    assert (best == result["diagnosis_predicted"]).all()


def test_models_lists_name_version_task_arch(
    models: Path, trained_examples: dict[str, dict[str, Any]]
) -> None:
    out = ok(run_cli("models", store=models))
    for header in ("name", "version", "task", "arch"):
        assert header in out
    for entry in trained_examples.values():
        line = next((ln for ln in out.splitlines() if f" {entry['name']} " in f" {ln} "), None)
        assert line is not None, (entry["name"], out)
        run = json.loads((entry["path"] / "run.json").read_text())
        assert run["task"] in line and run["arch"] in line
    rows = tensorsmith.models(store=models)
    assert {r["name"] for r in rows} == {e["name"] for e in trained_examples.values()}
    assert all(r["version"] == 1 for r in rows)


def test_models_on_an_empty_store(tmp_path: Path) -> None:
    out = ok(run_cli("models", store=tmp_path / "empty"))
    assert "no models" in out


# ----------------------------------------------------------------------------- Python API


def test_python_api_train_predict_evaluate_load(tmp_path: Path) -> None:
    store = tmp_path / "store"
    tiny = ["train.epochs=2", "model.hidden=[8]"]
    first = tensorsmith.train(MLP_RECIPE, tiny, store=store, console=quiet_console())
    assert first.path == store / "windsor-housing-mlp" / "1"
    model = tensorsmith.train(MLP_RECIPE, tiny, store=store, console=quiet_console())
    assert model.path == store / "windsor-housing-mlp" / "2"

    df = pd.read_csv(WINDSOR_CSV)
    preds = model.predict(df.drop(columns=["price"]))
    assert list(preds.columns) == ["price_predicted"]
    assert len(preds) == len(df)
    assert preds.index.equals(df.index)

    metrics = model.evaluate(df)
    assert {"rmse", "mae", "r2"} <= set(metrics)
    manual_rmse = float(np.sqrt(np.mean((preds["price_predicted"] - df["price"]) ** 2)))
    assert metrics["rmse"] == pytest.approx(manual_rmse, rel=1e-5)

    loaded = tensorsmith.load("windsor-housing-mlp@2", store=store)
    pd.testing.assert_frame_equal(loaded.predict(df), preds)
    latest = tensorsmith.load("windsor-housing-mlp", store=store)
    assert latest.path == loaded.path
    # same recipe and seed: version 1 learned the same weights
    pd.testing.assert_frame_equal(
        tensorsmith.load("windsor-housing-mlp@1", store=store).predict(df), preds
    )


def test_python_api_accepts_a_dict_recipe(tmp_path: Path) -> None:
    recipe = {
        "name": "cancer-dict",
        "task": "classification",
        "data": {"source": str(CANCER_CSV), "target": "diagnosis"},
        "model": {"arch": "linear"},
    }
    model = tensorsmith.train(
        recipe, ["train.epochs=3"], store=tmp_path / "store", console=quiet_console()
    )
    assert model.recipe.train.loss == "bce"  # two classes: resolved at train time
    df = pd.read_csv(CANCER_CSV).head(40)
    proba = model.predict_proba(df)
    assert proba.shape == (40, 2)
    assert np.allclose(proba.sum(axis=1), 1.0)
    assert 0.0 <= model.evaluate(df)["accuracy"] <= 1.0


# ----------------------------------------------------------------------------- every example
# Every tabular recipe under examples/ trains through the CLI (3 epochs) into an artifact; the
# recipes are globbed, not listed. The training happens once, in the ``trained_examples``
# fixture (conftest.py) that the tests above share: one file keeps it in one test process.

TABULAR = tabular_example_recipes()


def test_examples_are_found_by_glob() -> None:
    assert len(TABULAR) >= 3
    tasks = {yaml.safe_load(p.read_text())["task"] for p in TABULAR}
    assert tasks == {"regression", "classification"}


@pytest.mark.parametrize("recipe", TABULAR, ids=lambda p: str(p.relative_to(EXAMPLES)))
def test_example_trains_into_an_artifact(
    recipe: Path, trained_examples: dict[str, dict[str, Any]]
) -> None:
    entry = trained_examples[str(recipe.relative_to(EXAMPLES))]
    code, out, err = entry["result"]
    run = json.loads((entry["path"] / "run.json").read_text())
    gate_held = run["gate"] is None or run["gate"]["passed"]
    assert code == (0 if gate_held else GATE_FAILED), f"stdout:\n{out}\nstderr:\n{err}"
    assert "Traceback" not in err
    version: Path = entry["path"]
    assert str(version) in "".join(out.split())  # "saved PATH", however the console wrapped it
    for name in ARTIFACT_FILES:
        assert (version / name).is_file(), name
    assert list((version / "plots").glob("*.png"))

    run = json.loads((version / "run.json").read_text())
    assert run["epochs"] <= 3
    assert run["task"] == yaml.safe_load(recipe.read_text())["task"]
    assert len(pd.read_csv(version / "history.csv")) == run["epochs"]
    metrics = json.loads((version / "metrics.json").read_text())
    assert "test" in metrics
    assert all(
        np.isfinite(v) for split in metrics.values() for v in split.values() if np.isscalar(v)
    )

    # the stored model loads and predicts on its own data
    model = tensorsmith.load(str(version))
    data = pd.read_csv(model.recipe.path(model.recipe.data.source)).head(20)
    preds = model.predict(data)
    assert len(preds) == 20
    assert f"{model.recipe.data.target}_predicted" in preds.columns
