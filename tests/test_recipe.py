"""The recipe (DESIGN.md §3): defaults per task, --set parsing, relative paths, round trips."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import EXAMPLES, example_recipes, run_cli

from tensorsmith.errors import RecipeError
from tensorsmith.recipe import apply_overrides, load_recipe, parse_recipe, recipe_to_yaml


def base(task: str = "regression", **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"source": "table.csv"}
    if task != "language-modeling":
        data["target"] = "y"
    return {"name": "r", "task": task, "data": data, **extra}


# ----------------------------------------------------------------------------- defaults by task


def test_regression_defaults() -> None:
    r = parse_recipe(base("regression"))
    assert r.train.loss == "mse"
    assert r.train.epochs == 100
    assert r.evaluate.metrics[:3] == ["rmse", "mae", "r2"]
    assert r.model.arch == "mlp"
    assert r.train.optimizer.name == "adam"
    assert r.data.split.valid == 0.15 and r.data.split.test == 0.15


def test_linear_defaults_to_a_solver_that_converges() -> None:
    r = parse_recipe(base("regression", model={"arch": "linear"}))
    assert r.train.optimizer.name == "lbfgs" and r.train.batch_size == "full"
    given = parse_recipe(
        base("regression", model={"arch": "linear"}, train={"optimizer": {"name": "sgd"}})
    )
    assert given.train.optimizer.name == "sgd" and given.train.optimizer.lr == 1e-3
    assert given.train.batch_size == 32


def test_classification_defaults_leave_the_loss_to_training_time() -> None:
    r = parse_recipe(base("classification"))
    assert r.train.loss is None  # bce for two classes, cross_entropy for more: known at train
    assert r.train.epochs == 100
    assert {"accuracy", "f1", "roc_auc", "log_loss"} <= set(r.evaluate.metrics)


def test_language_modeling_defaults() -> None:
    r = parse_recipe(base("language-modeling"))
    assert r.model.arch == "gpt"
    assert r.train.max_steps == 2000
    assert r.train.optimizer.name == "adamw"
    assert r.data.split.valid == 0.1
    assert "perplexity" in r.evaluate.metrics
    text = recipe_to_yaml(r)
    for key in ("epochs", "loss", "hidden", "scale", "target", "impute", "class_weights"):
        assert f"{key}:" not in text, key


def test_keys_follow_the_task_and_the_architecture() -> None:
    """A key that belongs to another task or architecture is refused, naming its YAML path."""
    cases = [
        (base("language-modeling", model={"hidden": [8]}), "model.hidden", "model.arch mlp"),
        (
            base("language-modeling", data={"source": "t.txt", "scale": "none"}),
            "data.scale",
            "task",
        ),
        (base("language-modeling", train={"loss": "mse"}), "train.loss", "task"),
        (base("language-modeling", train={"epochs": 2}), "train.epochs", "task"),
        (base("regression", model={"arch": "mlp", "n_head": 2}), "model.n_head", "gpt"),
        (base("regression", train={"max_steps": 5}), "train.max_steps", "language-modeling"),
        (
            base(
                "classification", data={"source": "t.csv", "target": "y", "target_transform": "log"}
            ),
            "data.target_transform",
            "regression",
        ),
        (
            base("regression", train={"class_weights": "balanced"}),
            "train.class_weights",
            "classification",
        ),
    ]
    for raw, path, where in cases:
        with pytest.raises(RecipeError) as info:
            parse_recipe(raw)
        message = str(info.value)
        assert path in message and where in message and "does not apply" in message, message


def test_validate_prints_only_keys_that_apply() -> None:
    code, out, err = run_cli("validate", EXAMPLES / "shakespeare_gpt" / "recipe.yaml")
    assert code == 0, err
    for key in (
        "hidden",
        "scale",
        "impute",
        "target",
        "categorical",
        "loss",
        "epochs",
        "class_weights",
    ):
        assert f"{key}:" not in out, key
    code, out, err = run_cli("validate", EXAMPLES / "windsor_housing" / "mlp.yaml")
    assert code == 0, err
    for key in ("n_head", "block_size", "tokenizer", "max_steps", "eval_batches"):
        assert f"{key}:" not in out, key


def test_explicit_values_win_over_defaults() -> None:
    r = parse_recipe(base("regression", train={"loss": "huber", "epochs": 7}))
    assert r.train.loss == "huber" and r.train.epochs == 7


def test_task_rules() -> None:
    with pytest.raises(RecipeError, match=r"missing required key data\.target"):
        parse_recipe({"name": "r", "task": "regression", "data": {"source": "t.csv"}})
    with pytest.raises(RecipeError, match="'gpt' is not an architecture for task regression"):
        parse_recipe(base("regression", model={"arch": "gpt"}))
    with pytest.raises(RecipeError, match="did you mean 'regression'"):
        parse_recipe({**base(), "task": "regresion"})
    with pytest.raises(RecipeError, match="name"):
        parse_recipe({**base(), "name": "has spaces"})
    with pytest.raises(RecipeError, match="missing required key data"):
        parse_recipe({"name": "r", "task": "regression"})


def test_split_fractions_are_checked() -> None:
    with pytest.raises(RecipeError, match="leave rows to train"):
        parse_recipe(
            base(data={"source": "t.csv", "target": "y", "split": {"valid": 0.5, "test": 0.5}})
        )


# ----------------------------------------------------------------------------- --set


@pytest.mark.parametrize(
    ("item", "path", "expected"),
    [
        ("train.epochs=12", ("train", "epochs"), 12),
        ("train.optimizer.lr=0.05", ("train", "optimizer", "lr"), 0.05),
        ("train.optimizer.lr=1e-4", ("train", "optimizer", "lr"), 1e-4),
        ("data.split.test=5e-2", ("data", "split", "test"), 0.05),  # a fraction, not a file
        ("model.hidden=[16, 8]", ("model", "hidden"), [16, 8]),
        ("model.hidden=[]", ("model", "hidden"), []),
        (
            "data.types={a: category, b: number}",
            ("data", "types"),
            {"a": "category", "b": "number"},
        ),
        ("model.batch_norm=true", ("model", "batch_norm"), True),
        ("train.batch_size=full", ("train", "batch_size"), "full"),
        ("name=new-name", ("name",), "new-name"),
        ("train.early_stopping=null", ("train", "early_stopping"), None),
    ],
)
def test_set_parses_yaml_types(item: str, path: tuple[str, ...], expected: Any) -> None:
    raw = apply_overrides(base(), [item])
    node: Any = raw
    for part in path:
        node = node[part]
    assert node == expected
    assert type(node) is type(expected)
    parse_recipe(base(), [item])  # and the result validates


def test_set_builds_missing_sections_and_keeps_the_input() -> None:
    raw = base()
    out = apply_overrides(raw, ["train.optimizer.name=sgd", "train.optimizer.momentum=0.9"])
    assert out["train"]["optimizer"] == {"name": "sgd", "momentum": 0.9}
    assert "train" not in raw  # the caller's dict is not changed
    r = parse_recipe(raw, ["train.optimizer.name=sgd", "train.optimizer.momentum=0.9"])
    assert r.train.optimizer.momentum == pytest.approx(0.9)


def test_exponent_floats_in_a_recipe_file(tmp_path: Path) -> None:
    path = tmp_path / "recipe.yaml"
    path.write_text(
        "name: r\ntask: regression\ndata: {source: t.csv, target: y, split: {valid: 1e-1}}\n"
        "train: {optimizer: {lr: 3e-4}}\n",
        encoding="utf-8",
    )
    r = load_recipe(path)
    assert r.data.split.valid == pytest.approx(0.1)
    assert r.train.optimizer.lr == pytest.approx(3e-4)


def test_set_value_with_equals_sign() -> None:
    r = parse_recipe(base(), ["evaluate.gate={r2: '>= 0.5'}"])
    assert r.evaluate.gate == {"r2": ">= 0.5"}


@pytest.mark.parametrize("item", ["train.epochs", "=3", "train epochs=3", ""])
def test_bad_set(item: str) -> None:
    with pytest.raises(RecipeError, match="bad override"):
        apply_overrides(base(), [item])


def test_set_error_names_the_path() -> None:
    with pytest.raises(RecipeError, match=r"train\.epochs.*'ten'"):
        parse_recipe(base(), ["train.epochs=ten"])


# ----------------------------------------------------------------------------- paths


def test_relative_paths_resolve_against_the_recipe_folder(tmp_path: Path) -> None:
    folder = tmp_path / "project"
    folder.mkdir()
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(base()), encoding="utf-8")
    r = load_recipe(path)
    assert r.path(r.data.source) == folder.resolve() / "table.csv"
    assert r.path("/abs/file.csv") == Path("/abs/file.csv")


def test_train_from_another_working_directory(tmp_path: Path) -> None:
    """An example copied elsewhere trains from any cwd: its data path is relative."""
    project = tmp_path / "project"
    shutil.copytree(EXAMPLES / "xor_mlp", project)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    store = tmp_path / "store"
    code, _, err = run_cli(
        "train", "../project/recipe.yaml", "--set", "train.epochs=2", store=store, cwd=elsewhere
    )
    assert code in (0, 3), err  # 3: stored, but two epochs do not reach the gate
    recipe = yaml.safe_load((store / "xor-mlp" / "1" / "recipe.yaml").read_text())
    assert Path(recipe["data"]["source"]) == (project / "moons.csv").resolve()
    run = json.loads((store / "xor-mlp" / "1" / "run.json").read_text())
    assert run["epochs"] == 2
    assert not (elsewhere / "models").exists()


# ----------------------------------------------------------------------------- examples, YAML


EXAMPLE_RECIPES = example_recipes()


def test_there_are_examples() -> None:
    assert len(EXAMPLE_RECIPES) >= 3


@pytest.mark.parametrize("path", EXAMPLE_RECIPES, ids=lambda p: str(p.relative_to(EXAMPLES)))
def test_every_example_validates(path: Path) -> None:
    recipe = load_recipe(path)
    assert recipe.base_dir == path.parent.resolve()
    source = recipe.path(recipe.data.source)
    # a file, or a glob that matches files
    assert source.is_file() or list(source.parent.glob(source.name)), source


@pytest.mark.parametrize("path", EXAMPLE_RECIPES, ids=lambda p: str(p.relative_to(EXAMPLES)))
def test_recipe_to_yaml_round_trips(path: Path) -> None:
    recipe = load_recipe(path)
    text = recipe_to_yaml(recipe)
    again = parse_recipe(yaml.safe_load(text), base_dir=path.parent)
    assert again == recipe
    assert recipe_to_yaml(again) == text
    assert "base_dir" not in text


def test_round_trip_keeps_non_defaults() -> None:
    r = parse_recipe(
        base(
            "classification",
            train={"class_weights": "balanced", "batch_size": "full"},
            model={"hidden": [5, 4], "activation": "tanh"},
        )
    )
    again = parse_recipe(yaml.safe_load(recipe_to_yaml(r)))
    assert again.train.class_weights == "balanced"
    assert again.train.batch_size == "full"
    assert again.model.hidden == [5, 4]
    assert again.model.activation == "tanh"
