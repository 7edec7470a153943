"""Sequences: forecasting a time series (the sunspots example) and classifying labelled
sequences; windows, splits in time order, scaling on the train part, bad input, predict, init.

The naive forecast and the model's RMSE are recomputed here from the CSV with numpy, apart from
the evaluation path that recorded them.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import tiny
import yaml
from conftest import EXAMPLES, run_cli
from rich.console import Console

import tensorsmith
from tensorsmith import DataError, RecipeError

SUNSPOTS = EXAMPLES / "sunspots_lstm" / "recipe.yaml"
SUNSPOTS_CSV = EXAMPLES / "sunspots_lstm" / "sunspots.csv"


def _forecast(source: Path, **data: Any) -> dict[str, Any]:
    return {
        "name": "tiny-forecast",
        "task": "sequence-regression",
        "data": {"source": str(source), "time": "t", "target": "y", "lookback": 5, **data},
        "model": {"arch": "rnn", "cell": "gru", "hidden_size": 4},
        "train": {"epochs": 2, "batch_size": 8},
        "evaluate": {"plots": False},
    }


def _train(recipe: Any, store: Path, overrides: list[str] | None = None) -> tuple[Any, str]:
    out = io.StringIO()
    model = tensorsmith.train(recipe, overrides, store=store, console=Console(file=out, width=300))
    return model, " ".join(out.getvalue().split())


# ----------------------------------------------------------------------------- the example


@pytest.fixture(scope="module")
def sunspots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = tmp_path_factory.mktemp("sunspots") / "store"
    _train(SUNSPOTS, store, ["train.epochs=5"])
    return store


def test_sunspots_records_the_naive_forecast_beside_the_model(sunspots: Path) -> None:
    version = sunspots / "sunspots-lstm" / "1"
    metrics = json.loads((version / "metrics.json").read_text())
    series = pd.read_csv(SUNSPOTS_CSV)["sunspots"].to_numpy()
    n = len(series)
    test = series[n - round(n * 0.15) :]  # the last 15% of the years
    lookback = 16
    targets, previous = test[lookback:], test[lookback - 1 : -1]  # windows stay in the test part
    naive = float(np.sqrt(np.mean((targets - previous) ** 2)))
    assert metrics["test"]["naive_rmse"] == pytest.approx(naive, rel=1e-6)
    assert {"rmse", "mae", "r2", "naive_mae", "naive_r2"} <= set(metrics["test"])
    assert (version / "plots" / "forecast.png").is_file()
    card = (version / "card.md").read_text()
    assert "naive_rmse" in card

    # the model's RMSE, recomputed from its predictions on the test part
    model = tensorsmith.load(str(version))
    part = model.data_splits()["test"]
    forecast = model.predict(part)["sunspots_forecast_1"].to_numpy()
    assert np.isnan(forecast[: lookback - 1]).all()
    mine = forecast[lookback - 1 : -1]  # row i forecasts row i + 1
    rmse = float(np.sqrt(np.mean((targets - mine) ** 2)))
    assert metrics["test"]["rmse"] == pytest.approx(rmse, rel=1e-4)
    assert f"RMSE {rmse:.4g} against {naive:.4g}" in card

    # `tensorsmith evaluate` re-reads the series and agrees; --data scores a file's windows
    again = tensorsmith.evaluate(str(version))
    assert again["test"]["rmse"] == pytest.approx(metrics["test"]["rmse"], rel=1e-5)
    assert again["test"]["naive_rmse"] == pytest.approx(naive, rel=1e-6)
    whole = tensorsmith.evaluate(str(version), data=SUNSPOTS_CSV)["sunspots.csv"]
    everything = pd.read_csv(SUNSPOTS_CSV)["sunspots"].to_numpy()
    all_naive = np.sqrt(np.mean((everything[lookback:] - everything[lookback - 1 : -1]) ** 2))
    assert whole["naive_rmse"] == pytest.approx(float(all_naive), rel=1e-6)


def test_windows_never_cross_a_split_and_scaling_sees_only_train(sunspots: Path) -> None:
    version = sunspots / "sunspots-lstm" / "1"
    run = json.loads((version / "run.json").read_text())
    n = 309
    n_test = n_valid = round(n * 0.15)
    n_train = n - n_test - n_valid
    assert run["windows"] == {"train": n_train - 16, "valid": n_valid - 16, "test": n_test - 16}
    state = json.loads((version / "preprocess.json").read_text())
    train = pd.read_csv(SUNSPOTS_CSV)["sunspots"].to_numpy()[:n_train]
    assert state["scaler"]["center"] == pytest.approx([train.mean()])
    assert state["scaler"]["spread"] == pytest.approx([train.std()])


def test_predict_through_the_cli(sunspots: Path, tmp_path: Path) -> None:
    out_file = tmp_path / "forecast.csv"
    code, _out, err = run_cli(
        "predict", "sunspots-lstm", "--data", SUNSPOTS_CSV, "--out", out_file, store=sunspots
    )
    assert code == 0, err
    table = pd.read_csv(out_file)
    assert len(table) == 309 and table["sunspots_forecast_1"].notna().sum() == 309 - 15
    assert list(table.columns[:2]) == ["year", "sunspots"]


# ----------------------------------------------------------------------------- bad input


def test_a_series_shorter_than_lookback_plus_horizon(tmp_path: Path) -> None:
    source = tiny.series_csv(tmp_path / "s.csv", n=40)  # valid and test parts: 6 steps each
    with pytest.raises(
        DataError, match=r"valid part of s.csv has 6 steps, fewer than data.lookback"
    ):
        _train(_forecast(source, horizon=2), tmp_path / "store")


def test_unsorted_time_is_sorted_and_said_so(tmp_path: Path) -> None:
    source = tiny.series_csv(tmp_path / "s.csv")
    df = pd.read_csv(source)
    df.iloc[::-1].to_csv(source, index=False)  # newest first
    model, out = _train(_forecast(source), tmp_path / "store")
    assert "is not in order" in out and "sorted by time" in out
    # sorted, the model was trained on the same windows as on the ordered file
    again, _ = _train(_forecast(tiny.series_csv(tmp_path / "s2.csv")), tmp_path / "store2")
    assert model.metrics["test"]["naive_rmse"] == pytest.approx(again.metrics["test"]["naive_rmse"])


def test_gaps_are_said_and_repeated_times_refused(tmp_path: Path) -> None:
    source = tiny.series_csv(tmp_path / "s.csv")
    df = pd.read_csv(source)
    df.drop(index=[30, 31, 50]).to_csv(source, index=False)
    _, out = _train(_forecast(source), tmp_path / "store")
    assert "has 2 gaps longer than its usual step (after 2029, after 2049)" in out
    df.loc[5, "t"] = df.loc[4, "t"]
    df.to_csv(source, index=False)
    with pytest.raises(DataError, match="repeats times"):
        _train(_forecast(source), tmp_path / "store")


def test_missing_values_name_the_row(tmp_path: Path) -> None:
    source = tiny.series_csv(tmp_path / "s.csv")
    df = pd.read_csv(source)
    df.loc[7, "y"] = np.nan
    df.to_csv(source, index=False)
    with pytest.raises(DataError, match=r"column 'y' of s.csv has missing .* rows 8"):
        _train(_forecast(source), tmp_path / "store")


def test_a_token_embedding_does_not_apply_to_numeric_sequences(tmp_path: Path) -> None:
    recipe = _forecast(tmp_path / "s.csv")
    recipe["model"]["embedding_dim"] = 8
    with pytest.raises(RecipeError, match=r"model\.embedding_dim does not apply"):
        tensorsmith.validate(recipe)


def test_init_recognises_a_time_series(tmp_path: Path) -> None:
    recipe = tmp_path / "recipe.yaml"
    args = ("init", SUNSPOTS_CSV, "--target", "sunspots", "--time", "year", "--out", recipe)
    code, _out, err = run_cli(*args, cwd=tmp_path)
    assert code == 0, err
    raw = yaml.safe_load(recipe.read_text())
    assert raw["task"] == "sequence-regression" and raw["data"]["time"] == "year"
    model, _ = _train(recipe, tmp_path / "store", ["train.epochs=2", "evaluate.plots=false"])
    assert model.task.name == "sequence-regression"
    with pytest.raises(DataError, match="--time needs --target"):
        tensorsmith.api.init_recipe(SUNSPOTS_CSV, None, None, "year")


# ----------------------------------------------------------------------------- classification


def _sequences(source: Path) -> dict[str, Any]:
    return {
        "name": "tiny-sequences",
        "task": "sequence-classification",
        "data": {"source": str(source), "id": "seq", "time": "step", "target": "y"},
        "model": {"arch": "rnn", "cell": "lstm", "hidden_size": 8},
        "train": {"epochs": 30, "batch_size": 8, "optimizer": {"lr": 0.02}},
        "evaluate": {"plots": False},
    }


def test_sequence_classification_learns_and_predicts_one_row_per_sequence(
    tmp_path: Path,
) -> None:
    source = tiny.sequences_csv(tmp_path / "seqs.csv", n=60)
    model, _ = _train(_sequences(source), tmp_path / "store")
    assert model.metrics["test"]["accuracy"] >= 0.8  # rising vs falling is easy
    assert model.run["sequences"] == {"train": 42, "valid": 9, "test": 9}
    rows = pd.read_csv(source).drop(columns=["y"])
    predicted = model.predict(rows[rows["seq"].isin(["s0", "s1", "s2"])])
    assert list(predicted.index) == ["s0", "s1", "s2"]
    assert list(predicted["y_predicted"]) == ["rise", "fall", "rise"]
    code, out, err = run_cli(
        "predict", "tiny-sequences", "--data", source, store=tmp_path / "store"
    )
    assert code == 0, err
    table = pd.read_csv(io.StringIO(out))
    assert len(table) == 60 and list(table.columns[:2]) == ["seq", "y_predicted"]


def test_a_sequence_with_two_labels_is_refused(tmp_path: Path) -> None:
    source = tiny.sequences_csv(tmp_path / "seqs.csv")
    df = pd.read_csv(source)
    df.loc[df.index[df["seq"] == "s3"][0], "y"] = "rise"
    df.to_csv(source, index=False)
    with pytest.raises(DataError, match=r"sequence 's3' \(seq\) has several labels"):
        _train(_sequences(source), tmp_path / "store")
