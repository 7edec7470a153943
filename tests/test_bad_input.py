"""Every wrong input a user will type gets one clear message, the exit code of DESIGN.md §6
(2 = usage, recipe or data; 1 = run time) and no traceback unless --debug.

Each case runs through the CLI in process (typer's CliRunner: the real command functions and
error wrapper, fast), a handful again as real subprocesses, and the Python API cases assert the
exception type.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import EXAMPLES, quiet_console, run_cli_process
from typer.testing import CliRunner

import tensorsmith
from tensorsmith.cli import app
from tensorsmith.errors import DataError, ModelNotFoundError, RecipeError, TensorsmithError

WINDSOR_CSV = EXAMPLES / "windsor_housing" / "windsor_housing.csv"
WINDSOR = pd.read_csv(WINDSOR_CSV)


def invoke(*args: str | Path) -> tuple[int, str, str]:
    """The CLI in process: (exit code, stdout, stderr); an escaped exception fails the test."""
    result = CliRunner().invoke(app, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"exception escaped the CLI: {result.exception!r}")
    return result.exit_code, result.stdout, result.stderr


def fails(result: tuple[int, str, str], code: int, *needles: str) -> str:
    """Exit ``code``, one 'error:' message holding every needle, no traceback."""
    exit_code, out, err = result
    assert exit_code == code, f"exit {exit_code} (wanted {code})\nstdout:\n{out}\nstderr:\n{err}"
    assert "Traceback" not in err and "Traceback" not in out
    assert err.startswith("error: "), err
    flat = " ".join(err.split())  # undo soft wraps
    for needle in needles:
        assert needle in flat, f"{needle!r} not in: {flat}"
    return flat


def write_recipe(folder: Path, source: Path | str = WINDSOR_CSV, **keys: Any) -> Path:
    """A small valid regression recipe with dotted ``keys`` changed (value None deletes)."""
    raw: dict[str, Any] = {
        "name": "bad-input",
        "task": "regression",
        "data": {"source": str(source), "target": "price"},
        "model": {"arch": "mlp", "hidden": [8]},
        "train": {"epochs": 2},
    }
    for dotted, value in keys.items():
        node = raw
        *parents, last = dotted.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        if value is None:
            node.pop(last, None)
        else:
            node[last] = value
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


def frame_file(folder: Path, df: pd.DataFrame, name: str = "data.csv") -> Path:
    path = folder / name
    df.to_csv(path, index=False)
    return path


# ----------------------------------------------------------------------------- recipe mistakes


def test_misspelled_key_suggests_the_right_one(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path, train__epochs=None, train__epocs=3)
    fails(invoke("validate", recipe), 2, "'epocs'", "train.epocs", "did you mean 'epochs'")
    with pytest.raises(RecipeError, match=r"did you mean 'epochs'"):
        tensorsmith.validate(recipe)


def test_unknown_top_level_key(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path, trian={"epochs": 3})
    fails(invoke("validate", recipe), 2, "'trian'", "did you mean 'train'")


def test_wrong_type(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path, train__epochs="ten")
    fails(invoke("validate", recipe), 2, "train.epochs", "'ten'", "integer")
    # the same mistake through --set
    fails(invoke("train", write_recipe(tmp_path), "--set", "train.epochs=ten"), 2, "train.epochs")


def test_bad_literal_suggests_the_nearest(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path, model__activation="relux")
    fails(invoke("validate", recipe), 2, "model.activation", "'relux'", "did you mean 'relu'")


def test_bad_literal_of_a_fixed_choice(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path, train__precision="bf61")
    fails(invoke("validate", recipe), 2, "train.precision", "did you mean 'bf16'")


def test_unknown_arch(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path, model__arch="mpl")
    fails(invoke("train", recipe, "--store", tmp_path / "s"), 2, "model.arch", "did you mean 'mlp'")
    assert not (tmp_path / "s" / "bad-input").exists()


def test_missing_recipe_file(tmp_path: Path) -> None:
    fails(invoke("validate", tmp_path / "nope.yaml"), 2, "nope.yaml", "does not exist")
    fails(invoke("train", tmp_path / "nope.yaml", "--store", tmp_path / "s"), 2, "does not exist")


def test_empty_recipe_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("", encoding="utf-8")
    fails(invoke("validate", empty), 2, "empty.yaml", "is empty", "tensorsmith init")
    comments = tmp_path / "comments.yaml"
    comments.write_text("# nothing here yet\n", encoding="utf-8")
    fails(invoke("validate", comments), 2, "is empty")


def test_recipe_that_is_not_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- name\n- task\n", encoding="utf-8")
    fails(invoke("validate", path), 2, "must be a mapping")


def test_malformed_yaml_shows_the_yaml_error_verbatim(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\ntask: [regression\n  data: {\n", encoding="utf-8")
    message = fails(invoke("validate", path), 2, "not valid YAML", "line 2")
    # square brackets in messages are text, not console markup
    assert "[regression" in message


def test_bad_set_without_equals(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path)
    fails(invoke("validate", recipe, "--set", "train.epochs"), 2, "'train.epochs'", "KEY=VALUE")
    fails(invoke("validate", recipe, "--set", "=3"), 2, "bad override")


def test_unknown_key_given_by_set(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path)
    fails(invoke("validate", recipe, "--set", "train.optimiser.lr=0.1"), 2, "did you mean")


def test_unknown_option_is_a_usage_error(tmp_path: Path) -> None:
    code, _, err = invoke("train", write_recipe(tmp_path), "--epochs", "3")
    assert code == 2
    assert "Traceback" not in err
    assert "--epochs" in err


# ----------------------------------------------------------------------------- data mistakes


def train_fails(
    tmp_path: Path, recipe: Path, code: int, *needles: str, args: tuple[str, ...] = ()
) -> str:
    store = tmp_path / "store"
    message = fails(invoke("train", recipe, "--store", store, *args), code, *needles)
    # a failed run leaves no version (and no half-written one) in the store
    assert not list(store.glob("*/*")), list(store.glob("*/*"))
    return message


def test_target_column_that_does_not_exist(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path, data__target="prise")
    train_fails(tmp_path, recipe, 2, "'prise'", "data.target", "did you mean 'price'")
    with pytest.raises(DataError, match="did you mean 'price'"):
        tensorsmith.train(recipe, store=tmp_path / "store", console=quiet_console())


def test_missing_feature_column(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path, data__features=["lotsize", "bedroms"])
    train_fails(tmp_path, recipe, 2, "'bedroms'", "data.features", "did you mean 'bedrooms'")


def test_unknown_column_in_types(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path, data__types={"storeys": "category"})
    train_fails(tmp_path, recipe, 2, "'storeys'", "data.types", "did you mean 'stories'")


def test_data_file_that_does_not_exist(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path, source=tmp_path / "missing.csv")
    train_fails(tmp_path, recipe, 2, "missing.csv", "does not exist")


def test_empty_data_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    train_fails(tmp_path, write_recipe(tmp_path, source=empty), 2, "empty.csv", "empty")
    header_only = tmp_path / "header.csv"
    header_only.write_text("price,lotsize\n", encoding="utf-8")
    train_fails(tmp_path, write_recipe(tmp_path, source=header_only), 2, "no data rows")


def test_binary_garbage_with_csv_suffix(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.csv"
    garbage.write_bytes(bytes(range(256)) * 40)
    train_fails(tmp_path, write_recipe(tmp_path, source=garbage), 2, "garbage.csv", "not a")


def test_parquet_suffix_on_a_csv(tmp_path: Path) -> None:
    fake = tmp_path / "houses.parquet"
    fake.write_bytes(WINDSOR_CSV.read_bytes())
    train_fails(tmp_path, write_recipe(tmp_path, source=fake), 2, "houses.parquet", "PARQUET")


@pytest.mark.parametrize("suffix", [".txt", ".xlsx"])
def test_file_type_that_is_not_a_table(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"houses{suffix}"
    path.write_bytes(WINDSOR_CSV.read_bytes())
    train_fails(tmp_path, write_recipe(tmp_path, source=path), 2, f"houses{suffix}", suffix, ".csv")


def test_nan_in_target_names_the_rows(tmp_path: Path) -> None:
    df = WINDSOR.copy()
    df["price"] = df["price"].astype(float)
    df.loc[[3, 10], "price"] = np.nan
    recipe = write_recipe(tmp_path, source=frame_file(tmp_path, df))
    train_fails(tmp_path, recipe, 2, "target 'price'", "missing", "rows 4, 11")


def test_text_regression_target(tmp_path: Path) -> None:
    df = WINDSOR.copy()
    df["price"] = df["price"].astype(str)
    df.loc[5, "price"] = "expensive"
    recipe = write_recipe(tmp_path, source=frame_file(tmp_path, df))
    train_fails(tmp_path, recipe, 2, "not numeric", "'expensive'", "rows 6", "classification")


def test_classification_target_with_one_class(tmp_path: Path) -> None:
    df = WINDSOR.assign(kind="house")
    recipe = write_recipe(
        tmp_path, source=frame_file(tmp_path, df), task="classification", data__target="kind"
    )
    train_fails(tmp_path, recipe, 2, "'kind'", "one class", "two classes")


def test_huge_feature_values_give_a_clear_error(tmp_path: Path) -> None:
    df = WINDSOR.copy()
    df["lotsize"] = df["lotsize"].astype(float)
    df.loc[7, "lotsize"] = 1e308
    recipe = write_recipe(tmp_path, source=frame_file(tmp_path, df))
    train_fails(tmp_path, recipe, 2, "'lotsize'", "too large", "rows 8")


def test_huge_feature_values_train_finitely_with_a_log_transform(tmp_path: Path) -> None:
    df = WINDSOR.copy()
    df["lotsize"] = df["lotsize"].astype(float)
    df.loc[7, "lotsize"] = 1e308
    recipe = write_recipe(
        tmp_path, source=frame_file(tmp_path, df), data__transforms={"lotsize": "log"}
    )
    model = tensorsmith.train(recipe, store=tmp_path / "store", console=quiet_console())
    assert np.isfinite(model.predict(df)["price_predicted"]).all()
    assert all(np.isfinite(v) for split in model.metrics.values() for v in split.values())


# ----------------------------------------------------------------------------- a trained model


def _toy(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    color = rng.choice(["red", "green", "blue"], size=n)
    x1 = rng.normal(size=n)
    x2 = rng.normal(size=n)
    y = 3 * x1 - x2 + np.select([color == "red", color == "green"], [2.0, -2.0], 0.0)
    df = pd.DataFrame({"x1": x1, "x2": x2, "color": color, "y": y + rng.normal(0.1, size=n)})
    df.loc[df.index % 9 == 0, "x1"] = np.nan  # NaNs in features are imputed
    df.loc[df.index % 11 == 0, "color"] = np.nan
    return df


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A small regression model trained on data with NaNs in a number and a category column."""
    folder = tmp_path_factory.mktemp("toy")
    source = frame_file(folder, _toy(200, 0), "toy.csv")
    store = folder / "store"
    recipe = {
        "name": "toy",
        "task": "regression",
        "data": {"source": str(source), "target": "y", "types": {"color": "category"}},
        "model": {"arch": "mlp", "hidden": [8]},
        "train": {"epochs": 5},
    }
    model = tensorsmith.train(recipe, store=store, console=quiet_console())
    return {"folder": folder, "store": store, "model": model}


def test_nans_in_features_are_imputed(toy: dict[str, Any]) -> None:
    model = toy["model"]
    assert all(np.isfinite(v) for v in model.metrics["test"].values())
    new = _toy(30, 1).drop(columns=["y"])
    assert new["x1"].isna().any() and new["color"].isna().any()
    preds = model.predict(new)
    assert len(preds) == 30
    assert np.isfinite(preds["y_predicted"]).all()


def test_predict_with_nans_through_the_cli(toy: dict[str, Any], tmp_path: Path) -> None:
    new = _toy(12, 2).drop(columns=["y"])
    new.loc[0, ["x1", "x2"]] = np.nan  # even a column that had no NaNs in training
    data = frame_file(tmp_path, new)
    code, out, err = invoke("predict", "toy", "--data", data, "--store", toy["store"])
    assert code == 0, err
    result = pd.read_csv(io.StringIO(out))
    assert len(result) == 12
    assert np.isfinite(result["y_predicted"]).all()


def test_unseen_category_at_predict_time(toy: dict[str, Any], tmp_path: Path) -> None:
    new = _toy(10, 3).drop(columns=["y"])
    new["color"] = ["purple"] * 5 + ["red"] * 5
    preds = toy["model"].predict(new)
    assert np.isfinite(preds["y_predicted"]).all()
    data = frame_file(tmp_path, new)
    code, _, err = invoke("predict", "toy", "--data", data, "--store", toy["store"])
    assert code == 0, err


def test_predict_data_missing_a_feature(toy: dict[str, Any], tmp_path: Path) -> None:
    data = frame_file(tmp_path, _toy(10, 4).drop(columns=["y", "x2"]))
    fails(invoke("predict", "toy", "--data", data, "--store", toy["store"]), 2, "'x2'")
    with pytest.raises(DataError, match="'x2'"):
        toy["model"].predict(_toy(10, 4).drop(columns=["x2"]))


def test_predict_data_with_extra_columns_is_fine(toy: dict[str, Any], tmp_path: Path) -> None:
    new = _toy(10, 5).assign(comment="hello", id=range(10))  # y, comment, id are extra
    out_file = tmp_path / "preds.csv"
    code, _, err = invoke(
        "predict",
        "toy",
        "--data",
        frame_file(tmp_path, new),
        "--out",
        out_file,
        "--store",
        toy["store"],
    )
    assert code == 0, err
    result = pd.read_csv(out_file)
    assert list(result["id"]) == list(range(10))
    reference = toy["model"].predict(new[["x1", "x2", "color"]])
    assert np.allclose(result["y_predicted"], reference["y_predicted"])


def test_evaluate_data_without_the_target(toy: dict[str, Any], tmp_path: Path) -> None:
    data = frame_file(tmp_path, _toy(10, 6).drop(columns=["y"]))
    fails(invoke("evaluate", "toy", "--data", data, "--store", toy["store"]), 2, "'y'")


def test_unknown_model_name_suggests_the_nearest(toy: dict[str, Any], tmp_path: Path) -> None:
    data = frame_file(tmp_path, _toy(5, 7))
    fails(
        invoke("predict", "tpy", "--data", data, "--store", toy["store"]),
        2,
        "'tpy'",
        "did you mean 'toy'",
    )
    with pytest.raises(ModelNotFoundError, match="did you mean 'toy'"):
        tensorsmith.load("tpy", store=toy["store"])


def test_unknown_version(toy: dict[str, Any]) -> None:
    fails(invoke("evaluate", "toy@9", "--store", toy["store"]), 2, "version '9'", "versions: 1")
    with pytest.raises(ModelNotFoundError, match="versions: 1"):
        tensorsmith.load("toy@9", store=toy["store"])
    with pytest.raises(ModelNotFoundError):
        tensorsmith.load("toy@latest", store=toy["store"])


def test_model_in_an_empty_store(tmp_path: Path) -> None:
    fails(invoke("evaluate", "toy", "--store", tmp_path / "none"), 2, "'toy'", "tensorsmith train")


def test_generate_on_a_table_model(toy: dict[str, Any]) -> None:
    fails(invoke("generate", "toy", "--prompt", "hi", "--store", toy["store"]), 2, "predict")


# ----------------------------------------------------------------------------- run-time failures


def test_resume_with_nothing_to_resume(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path)
    train_fails(
        tmp_path, recipe, 1, "nothing to resume", "'bad-input'", "without", args=("--resume",)
    )


def test_store_that_is_not_writable(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory", encoding="utf-8")
    recipe = write_recipe(tmp_path)
    fails(invoke("train", recipe, "--store", blocker / "store"), 1, "a-file", "not a directory")
    with pytest.raises(TensorsmithError, match="not a directory") as info:
        tensorsmith.train(recipe, store=blocker / "store", console=quiet_console())
    assert info.value.exit_code == 1


def test_exit_codes_of_the_error_classes() -> None:
    assert RecipeError.exit_code == 2
    assert DataError.exit_code == 2
    assert ModelNotFoundError.exit_code == 2
    assert TensorsmithError.exit_code == 1


# ----------------------------------------------------------------------------- real processes


def test_subprocess_recipe_error(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path, train__epochs=None, train__epocs=3)
    fails(
        run_cli_process("validate", recipe, cwd=tmp_path), 2, "train.epocs", "did you mean 'epochs'"
    )


def test_subprocess_data_error(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path, data__target="prise")
    fails(
        run_cli_process("train", recipe, store=tmp_path / "s"), 2, "'prise'", "did you mean 'price'"
    )
    assert not list((tmp_path / "s").glob("*/*"))


def test_subprocess_unknown_model(tmp_path: Path) -> None:
    data = frame_file(tmp_path, WINDSOR.head(3))
    fails(
        run_cli_process("predict", "windsor", "--data", data, store=tmp_path / "s"), 2, "'windsor'"
    )


def test_subprocess_run_time_error_exits_1(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path)
    fails(
        run_cli_process("train", recipe, "--resume", store=tmp_path / "s"), 1, "nothing to resume"
    )


def test_subprocess_debug_shows_the_traceback(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path, model__activation="relux")
    code, _, err = run_cli_process("validate", recipe, "--debug", cwd=tmp_path)
    assert code == 2
    assert "Traceback" in err
    assert "RecipeError" in err
    assert "did you mean 'relu'" in err
