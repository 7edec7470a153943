"""A hostile user's walk over the CLI: malformed recipes, data, files, stores and options.

Each case runs the real command (typer's CliRunner, in process) and asserts DESIGN.md §6:
exit code 2 for usage, recipe and data mistakes, 1 for run-time failures (a damaged store, a
checkpoint that cannot be read); one ``error:`` message naming the cause; no traceback; and the
store exactly as it was (a failed command adds and removes nothing).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import EXAMPLES
from typer.testing import CliRunner

from tensorsmith.cli import _resume_argument, app

WINDSOR_CSV = EXAMPLES / "windsor_housing" / "windsor_housing.csv"
WINDSOR = pd.read_csv(WINDSOR_CSV)
POEMS = EXAMPLES / "shakespeare_gpt" / "plays" / "sonnets.txt"


def invoke(*args: str | Path) -> tuple[int, str, str]:
    """The command line in process, as `tensorsmith ARGS` runs it (cli.main's argument pass)."""
    result = CliRunner().invoke(app, _resume_argument([str(a) for a in args]))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"exception escaped the CLI: {result.exception!r}")
    return result.exit_code, result.stdout, result.stderr


def snapshot(store: Path) -> dict[str, int]:
    """Every file of the store (hidden ones too) with its size."""
    if not store.exists():
        return {}
    return {str(p.relative_to(store)): p.stat().st_size for p in store.rglob("*") if p.is_file()}


def recipe(folder: Path, raw: dict[str, Any] | str, name: str = "recipe.yaml") -> Path:
    path = folder / name
    text = raw if isinstance(raw, str) else yaml.safe_dump(raw, sort_keys=False)
    path.write_text(text, encoding="utf-8")
    return path


def table_recipe(folder: Path, source: Path | str = WINDSOR_CSV, **changes: Any) -> Path:
    raw: dict[str, Any] = {
        "name": "hostile",
        "task": "regression",
        "data": {"source": str(source), "target": "price"},
        "model": {"arch": "linear"},
        "evaluate": {"plots": False},
    }
    for dotted, value in changes.items():
        node = raw
        *parents, last = dotted.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return recipe(folder, raw)


def csv(folder: Path, df: pd.DataFrame, name: str = "data.csv") -> Path:
    path = folder / name
    df.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with a table model (windsor-housing) and a tiny language model (poems)."""
    root = tmp_path_factory.mktemp("hostile") / "store"
    code, out, err = invoke(
        "train",
        EXAMPLES / "windsor_housing" / "recipe.yaml",
        "--store",
        root,
        "--set",
        "evaluate.plots=false",
    )
    assert code == 0, out + err
    lm = {
        "name": "poems",
        "task": "language-modeling",
        "data": {"source": str(POEMS)},
        "model": {"arch": "gpt", "n_layer": 1, "n_head": 2, "n_embd": 16, "block_size": 16},
        "train": {"max_steps": 3, "batch_size": 2, "eval_every": 3},
        "evaluate": {"plots": False, "samples": 0},
    }
    code, out, err = invoke("train", recipe(root.parent, lm, "lm.yaml"), "--store", root)
    assert code == 0, out + err
    return root


def damaged_store(store: Path, folder: Path, damage: Callable[[Path], object]) -> Path:
    """A copy of the windsor-housing version with one file damaged."""
    copy = folder / "damaged-store"
    shutil.copytree(store / "windsor-housing", copy / "windsor-housing")
    damage(copy / "windsor-housing" / "1")
    return copy


@dataclass
class Case:
    name: str
    args: Callable[[Path, Path], list[str | Path]]  # (tmp folder, store) → CLI arguments
    code: int
    needles: tuple[str, ...]


def _bomb(folder: Path) -> Path:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}]" for i in range(1, 12)]
    text = "\n".join(lines) + "\nname: x\ntask: regression\ndata: {source: a.csv, target: y}\n"
    text += "evaluate: {gate: {r2: *a11}}\n"
    return recipe(folder, text)


def _nested(folder: Path) -> Path:
    return recipe(folder, "name: x\ntask: regression\ndata: " + "{a: " * 200 + "1" + "}" * 200)


def _big_classes(folder: Path) -> Path:
    n = 3000
    df = pd.DataFrame({"x": np.arange(n) % 7, "label": [f"class-{i % 1000:04d}" for i in range(n)]})
    train = csv(folder, df, "train.csv")
    test = df.copy()
    test["label"] = [f"unseen-{i:04d}" for i in range(n)]
    other = csv(folder, test, "test.csv")
    return table_recipe(
        folder,
        task="classification",
        data__target="label",
        data__split={"train": str(train), "valid": str(other), "test": str(other)},
    )


def _windsor_with(folder: Path, change: Callable[[pd.DataFrame], pd.DataFrame]) -> Path:
    return csv(folder, change(WINDSOR.copy()))


def _dup_header(folder: Path) -> Path:
    df = WINDSOR.copy()
    df.columns = [*df.columns[:-1], "price"]
    return table_recipe(folder, csv(folder, df))


def _huge_target(folder: Path) -> Path:
    df = WINDSOR.copy()
    df["price"] = df["price"].astype(float) * 1e300  # finite, but its square is not
    return table_recipe(folder, csv(folder, df))


def _strict(folder: Path) -> Path:
    df = WINDSOR.copy().astype({"lotsize": object})
    df.loc[7, "lotsize"] = "?"
    return table_recipe(folder, csv(folder, df), data__strict=True)


def _truncate(file: str, keep: int = 40) -> Callable[[Path], object]:
    return lambda version: (version / file).write_bytes((version / file).read_bytes()[:keep])


def _set_json(file: str, change: Callable[[Any], Any]) -> Callable[[Path], object]:
    def damage(version: Path) -> None:
        path = version / file
        path.write_text(json.dumps(change(json.loads(path.read_text()))))

    return damage


def _other_recipe(version: Path) -> None:
    path = version / "recipe.yaml"
    raw = yaml.safe_load(path.read_text())
    raw["model"] = {"arch": "mlp", "hidden": [4]}
    path.write_text(yaml.safe_dump(raw))


def _predict_rows(folder: Path, drop: str | None = None) -> Path:
    rows = WINDSOR.drop(columns=["price"]).head(5)
    return csv(folder, rows.drop(columns=[drop]) if drop else rows, "rows.csv")


def _lm(folder: Path, **train: Any) -> Path:
    raw = {
        "name": "lm",
        "task": "language-modeling",
        "data": {"source": str(POEMS), "tokenizer": {"kind": "char"}},
        "model": {"arch": "gpt", "n_layer": 1, "n_head": 2, "n_embd": 16, "block_size": 16},
        "train": {"max_steps": 2, **train},
    }
    return recipe(folder, raw)


T = Path  # shorthand in the table below: (tmp folder, store)
CASES = [
    # --- recipes: bounded, strict, checked by validate ------------------------------------
    Case("alias bomb", lambda t, s: ["validate", _bomb(t)], 2, ("aliases",)),
    Case("deep nesting", lambda t, s: ["validate", _nested(t)], 2, ("levels deep",)),
    Case(
        "huge recipe",
        lambda t, s: ["validate", recipe(t, "name: x\n" + "#" * 1_100_000)],
        2,
        ("larger than",),
    ),
    Case("not a mapping", lambda t, s: ["validate", recipe(t, "- a\n- b\n")], 2, ("mapping",)),
    Case(
        "binary recipe",
        lambda t, s: ["validate", (t / "r.yaml").write_bytes(b"\xff\xfe\x00\x01") and t / "r.yaml"],
        2,
        ("not valid YAML",),
    ),
    Case(
        "misspelled key",
        lambda t, s: ["validate", table_recipe(t, data__targt="x")],
        2,
        ("did you mean 'target'",),
    ),
    Case(
        "key of another arch",
        lambda t, s: ["validate", table_recipe(t, model={"arch": "linear", "hidden": [3]})],
        2,
        ("model.hidden", "does not apply"),
    ),
    Case(
        "unknown metric",
        lambda t, s: ["validate", table_recipe(t, evaluate={"metrics": ["rsme"]})],
        2,
        ("unknown metric 'rsme'", "did you mean 'rmse'"),
    ),
    Case(
        "metric of another task",
        lambda t, s: ["validate", table_recipe(t, evaluate={"metrics": ["accuracy"]})],
        2,
        ("'accuracy'", "does not fit task"),
    ),
    Case(
        "loss of another task",
        lambda t, s: ["validate", table_recipe(t, train={"loss": "bce"})],
        2,
        ("train.loss 'bce'", "regression"),
    ),
    Case(
        "malformed gate",
        lambda t, s: ["validate", table_recipe(t, evaluate={"gate": {"r2": "big"}})],
        2,
        ("evaluate.gate.r2",),
    ),
    Case(
        "gate on a table metric",
        lambda t, s: ["validate", table_recipe(t, evaluate={"gate": {"mae": 3}})],
        2,
        ("evaluate.gate.mae",),
    ),
    Case(
        "unknown monitor",
        lambda t, s: [
            "validate",
            table_recipe(t, train={"early_stopping": {"monitor": "valid_r3"}}),
        ],
        2,
        ("train.early_stopping.monitor", "did you mean 'valid_r2'"),
    ),
    Case(
        "unknown optimizer",
        lambda t, s: ["validate", table_recipe(t, train={"optimizer": {"name": "adma"}})],
        2,
        ("train.optimizer.name", "did you mean 'adam'"),
    ),
    Case(
        "unknown activation",
        lambda t, s: ["validate", table_recipe(t, model={"arch": "mlp", "activation": "rellu"})],
        2,
        ("model.activation", "did you mean 'relu'"),
    ),
    Case(
        "lbfgs on mini-batches",
        lambda t, s: [
            "validate",
            table_recipe(t, train={"optimizer": {"name": "lbfgs"}, "batch_size": 8}),
        ],
        2,
        ("lbfgs", "batch_size: full"),
    ),
    Case(
        "unknown tokenizer",
        lambda t, s: ["validate", _lm(t), "--set", "data.tokenizer.kind=bp"],
        2,
        ("data.tokenizer.kind", "did you mean 'bpe'"),
    ),
    Case(
        "bad --set",
        lambda t, s: ["validate", table_recipe(t), "--set", "train.epochs"],
        2,
        ("bad override",),
    ),
    # --- data ---------------------------------------------------------------------------------
    Case(
        "missing data file",
        lambda t, s: ["train", table_recipe(t, t / "nope.csv"), "--store", s],
        2,
        ("nope.csv", "does not exist"),
    ),
    Case(
        "empty csv",
        lambda t, s: [
            "train",
            table_recipe(t, (t / "e.csv").write_text("") and t / "e.csv"),
            "--store",
            s,
        ],
        2,
        ("empty",),
    ),
    Case(
        "header only",
        lambda t, s: [
            "train",
            table_recipe(t, (t / "h.csv").write_text("price,x\n") and t / "h.csv"),
            "--store",
            s,
        ],
        2,
        ("no data rows",),
    ),
    Case(
        "binary csv",
        lambda t, s: [
            "train",
            table_recipe(t, (t / "b.csv").write_bytes(bytes(range(256)) * 8) and t / "b.csv"),
            "--store",
            s,
        ],
        2,
        ("b.csv",),
    ),
    Case(
        "duplicated header",
        lambda t, s: ["train", _dup_header(t), "--store", s],
        2,
        ("same name", "'price'"),
    ),
    Case(
        "nested jsonl",
        lambda t, s: [
            "train",
            table_recipe(
                t,
                (t / "n.jsonl").write_text('{"price": 1, "a": {"b": 1}}\n' * 30) and t / "n.jsonl",
            ),
            "--store",
            s,
        ],
        2,
        ("nested", "'a'"),
    ),
    Case(
        "missing target values",
        lambda t, s: [
            "train",
            table_recipe(
                t, _windsor_with(t, lambda d: d.assign(price=d.price.where(d.index != 9)))
            ),
            "--store",
            s,
        ],
        2,
        ("missing in rows 10",),
    ),
    Case(
        "huge regression target",
        lambda t, s: ["train", _huge_target(t), "--store", s],
        2,
        ("too large", "target_transform: log"),
    ),
    Case(
        "strict numbers",
        lambda t, s: ["train", _strict(t), "--store", s],
        2,
        ("'lotsize'", "'?'", "row", "data.strict"),
    ),
    Case(
        "target not in data",
        lambda t, s: ["train", table_recipe(t, data__target="prise"), "--store", s],
        2,
        ("'prise'", "did you mean 'price'"),
    ),
    Case(
        "1,000 unseen labels",
        lambda t, s: ["train", _big_classes(t), "--store", s],
        2,
        ("unseen-0000", "in all"),
    ),
    # --- using stored models ---------------------------------------------------------------
    Case(
        "unknown model",
        lambda t, s: ["evaluate", "windsor-housng", "--store", s],
        2,
        ("did you mean 'windsor-housing'",),
    ),
    Case(
        "unknown version",
        lambda t, s: ["evaluate", "windsor-housing@9", "--store", s],
        2,
        ("no version '9'",),
    ),
    Case(
        "predict --out is a folder",
        lambda t, s: [
            "predict",
            "windsor-housing",
            "--data",
            _predict_rows(t),
            "--out",
            t,
            "--store",
            s,
        ],
        2,
        ("is a directory",),
    ),
    Case(
        "predict --out .xlsx",
        lambda t, s: [
            "predict",
            "windsor-housing",
            "--data",
            _predict_rows(t),
            "--out",
            t / "p.xlsx",
            "--store",
            s,
        ],
        2,
        ("'.xlsx'",),
    ),
    Case(
        "predict without a feature",
        lambda t, s: [
            "predict",
            "windsor-housing",
            "--data",
            _predict_rows(t, "lotsize"),
            "--store",
            s,
        ],
        2,
        ("'lotsize'",),
    ),
    Case(
        "predict data missing",
        lambda t, s: ["predict", "windsor-housing", "--data", t / "x.csv", "--store", s],
        2,
        ("does not exist",),
    ),
    Case(
        "evaluate a text file",
        lambda t, s: [
            "evaluate",
            "windsor-housing",
            "--data",
            (t / "a.txt").write_text("hi") and t / "a.txt",
            "--store",
            s,
        ],
        2,
        ("'.txt'",),
    ),
    Case(
        "temperature nan",
        lambda t, s: ["generate", "poems", "--prompt", "a", "--temperature", "nan", "--store", s],
        2,
        ("temperature",),
    ),
    Case(
        "top-p 2",
        lambda t, s: ["generate", "poems", "--prompt", "a", "--top-p", "2", "--store", s],
        2,
        ("top_p",),
    ),
    Case(
        "generate with a table model",
        lambda t, s: ["generate", "windsor-housing", "--prompt", "a", "--store", s],
        2,
        ("tensorsmith predict",),
    ),
    Case(
        "predict with a language model",
        lambda t, s: ["predict", "poems", "--data", _predict_rows(t), "--store", s],
        2,
        ("tensorsmith generate",),
    ),
    Case(
        "init --target missing",
        lambda t, s: ["init", WINDSOR_CSV, "--target", "prise"],
        2,
        ("did you mean 'price'",),
    ),
    Case(
        "init --out is a folder",
        lambda t, s: ["init", WINDSOR_CSV, "--target", "price", "--out", t],
        2,
        ("is a directory",),
    ),
    # --- damaged versions (run time: exit 1), named by folder and file -----------------------
    Case(
        "tampered preprocess.json",
        lambda t, s: [
            "evaluate",
            "windsor-housing",
            "--store",
            damaged_store(
                s,
                t,
                _set_json(
                    "preprocess.json", lambda d: {k: v for k, v in d.items() if k != "columns"}
                ),
            ),
        ],
        1,
        ("damaged", "preprocess.json", "windsor-housing/1"),
    ),
    Case(
        "corrupt run.json",
        lambda t, s: [
            "evaluate",
            "windsor-housing",
            "--store",
            damaged_store(s, t, _truncate("run.json")),
        ],
        1,
        ("damaged", "run.json", "not valid JSON"),
    ),
    Case(
        "truncated weights",
        lambda t, s: [
            "predict",
            "windsor-housing",
            "--data",
            _predict_rows(t),
            "--store",
            damaged_store(s, t, _truncate("model.safetensors")),
        ],
        1,
        ("damaged", "model.safetensors"),
    ),
    Case(
        "weights of another model",
        lambda t, s: [
            "predict",
            "windsor-housing",
            "--data",
            _predict_rows(t),
            "--store",
            damaged_store(s, t, _other_recipe),
        ],
        1,
        ("model.safetensors", "does not match"),
    ),
    Case(
        "config.json missing",
        lambda t, s: [
            "evaluate",
            "windsor-housing",
            "--store",
            damaged_store(s, t, lambda v: (v / "config.json").unlink()),
        ],
        1,
        ("config.json", "is missing"),
    ),
    Case(
        "nothing to resume",
        lambda t, s: ["train", table_recipe(t), "--resume", "--store", t / "empty"],
        1,
        ("nothing to resume",),
    ),
    Case(
        "unknown run id",
        lambda t, s: [
            "train",
            table_recipe(t),
            "--resume",
            "20260101-000000-abcd",
            "--store",
            t / "empty",
        ],
        1,
        ("no interrupted run '20260101-000000-abcd'",),
    ),
]


def test_there_are_at_least_forty_cases() -> None:
    assert len(CASES) >= 40
    assert len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_input(case: Case, store: Path, tmp_path: Path) -> None:
    before = snapshot(store)
    args = case.args(tmp_path, store)
    stores = [Path(a) for i, a in enumerate(args) if i and args[i - 1] == "--store"]
    others = {p: snapshot(p) for p in stores if p != store}
    code, out, err = invoke(*args)
    assert code == case.code, f"exit {code} (wanted {case.code})\nstdout:\n{out}\nstderr:\n{err}"
    assert "Traceback" not in out + err
    assert err.startswith("error: "), err
    flat = " ".join(err.split())
    for needle in case.needles:
        assert needle in flat, f"{needle!r} not in: {flat}"
    assert len(flat) < 1500, f"an error message of {len(flat)} characters"
    assert snapshot(store) == before, "the command changed the store"
    for path, files in others.items():
        assert snapshot(path) == files, f"the command changed {path}"
