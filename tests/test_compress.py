"""The ``compress`` verb: one method at a time, a child version with its lineage, its report
(compression.json, the card, the terminal) measured beside the parent, and the child used by
evaluate, predict and serve unchanged. Each method's own tests are in test_compress_*.py."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import tiny
from conftest import run_cli
from rich.console import Console

import tensorsmith

GATE_USAGE = 2


def _text_recipe(source: Path) -> dict[str, Any]:
    model = {"arch": "transformer", "n_layer": 1, "n_head": 2, "n_embd": 16}
    recipe = tiny.text_recipe(source, model, split={"valid": 0.2, "test": 0.2, "seed": 0})
    recipe["evaluate"] = {"plots": False, "metrics": ["accuracy", "f1_macro"]}
    return recipe


@pytest.fixture(scope="module")
def moods(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny trained text classifier: (its store, its data file)."""
    folder = tmp_path_factory.mktemp("compress")
    source = tiny.texts_csv(folder / "texts.csv", n=120)
    store = folder / "store"
    tensorsmith.train(_text_recipe(source), store=store, console=Console(file=io.StringIO()))
    return store, source


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ([], "compress does one thing at a time; given none"),
        (["--quantize", "int8", "--onnx"], "given --quantize and --onnx"),
        (["--structured"], "--structured and --recover-epochs go with --prune"),
        (["--onnx", "--no-preprocessing", "--quantize", "int8"], "given --quantize and --onnx"),
        (["--quantize", "int8", "--no-preprocessing"], "--no-preprocessing goes with --onnx"),
        (["--prune", "0.5", "--recover-epochs", "-1"], "--recover-epochs must be 0 or more"),
    ],
)
def test_one_method_at_a_time(moods: tuple[Path, Path], args: list[str], says: str) -> None:
    store, _ = moods
    code, out, err = run_cli("compress", "moods", *args, store=store)
    assert code == GATE_USAGE, (out, err)
    assert says in " ".join(err.split())
    assert sorted(p.name for p in (store / "moods").iterdir() if p.name.isdigit()) == ["1"]


def test_an_unknown_model_is_named(moods: tuple[Path, Path]) -> None:
    store, _ = moods
    code, _, err = run_cli("compress", "mods", "--quantize", "int8", store=store)
    assert code == GATE_USAGE and "no model 'mods'" in err and "did you mean 'moods'" in err


def test_a_damaged_version_is_not_compressed(moods: tuple[Path, Path], tmp_path: Path) -> None:
    import shutil

    store, _ = moods
    copy = tmp_path / "store"
    shutil.copytree(store, copy)
    weights = copy / "moods" / "1" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    code, _, err = run_cli("compress", "moods", "--quantize", "int8", store=copy)
    assert code == 1
    assert "is damaged" in err and "model.safetensors" in err
    assert sorted(p.name for p in (copy / "moods").iterdir() if p.name.isdigit()) == ["1"]


def _child(store: Path, version: int) -> tuple[dict[str, Any], dict[str, Any], str]:
    folder = store / "moods" / str(version)
    config = json.loads((folder / "config.json").read_text())
    report = json.loads((folder / "compression.json").read_text())
    return config, report, (folder / "card.md").read_text()


def test_a_child_version_with_its_report_and_lineage(moods: tuple[Path, Path]) -> None:
    store, source = moods
    code, out, err = run_cli("compress", "moods", "--prune", "0.5", store=store)
    assert code == 0, err
    flat = " ".join(out.split())
    assert "moods@2 against moods@1" in flat and "size on disk" in flat and "saved" in flat
    version = int(flat.split("saved ")[1].split()[0].rstrip("/").split("/")[-1])
    config, report, card = _child(store, version)
    assert config["compression"]["format"] is None  # pruned: plain safetensors
    assert report["parent"] == "moods@1" and report["machine"]
    parent, child = report["parent_measured"], report["child_measured"]
    for measured in (parent, child):
        assert measured["split"] == "test" and set(measured["latency_ms"]) == {"1", "24"}
        assert measured["peak_memory_bytes"] and measured["peak_memory_bytes"] > 0
        assert 0.0 <= measured["metrics"]["f1_macro"] <= 1.0
    assert child["nonzero_parameters"] < parent["nonzero_parameters"]
    assert child["parameters"] == parent["parameters"]
    assert "## Compression" in card and "Compressed from moods@1" in card
    code, out, _ = run_cli("models", "moods", "--lineage", store=store)
    assert code == 0 and out.split()[:3] == [f"moods@{version}", "└─", "moods@1"]
    # the child predicts and evaluates through the same verbs, and its metrics are those stored
    model = tensorsmith.load(f"moods@{version}", store=store)
    frame = pd.read_csv(source)
    predictions = model.predict(frame.head(5))
    assert list(predictions.columns)[:1] == ["y_predicted"]
    test = model.evaluate_splits()["test"]
    assert test["f1_macro"] == pytest.approx(child["metrics"]["f1_macro"], abs=1e-9)


def _compressed(store: Path, *args: str) -> int:
    code, out, err = run_cli("compress", *args, store=store)
    assert code == 0, err
    return int(out.split("saved ")[1].split()[0].rstrip("/").split("/")[-1])


def test_quantized_twice_and_pruned_out_of_range_are_refused(moods: tuple[Path, Path]) -> None:
    store, _ = moods
    version = _compressed(store, "moods@1", "--quantize", "int8")
    code, _, err = run_cli("compress", f"moods@{version}", "--quantize", "int8", store=store)
    assert code == GATE_USAGE and "already quantized" in err and "moods@1" in err
    for amount in ("0", "1", "1.5", "-0.2"):
        code, _, err = run_cli("compress", "moods@1", "--prune", amount, store=store)
        assert code == GATE_USAGE and "is outside (0, 1)" in err, (amount, err)


def test_a_compressed_version_is_served_unchanged(moods: tuple[Path, Path]) -> None:
    import httpx
    from serving_helpers import running_server

    store, source = moods
    version = _compressed(store, "moods@1", "--quantize", "int8")
    local = tensorsmith.load(f"moods@{version}", store=store)
    texts = pd.read_csv(source)["text"].head(4).tolist()
    expected = local.predict(pd.DataFrame({"text": texts}))
    with running_server(store, [f"moods@{version}"]) as server:
        r = httpx.post(f"{server.url}/v1/models/moods/predict", json={"texts": texts})
    assert r.status_code == 200, r.text
    served = r.json()["predictions"]
    assert [p["prediction"] for p in served] == expected["y_predicted"].tolist()


def test_an_onnx_child_predicts_as_its_parent_through_the_same_verbs(
    moods: tuple[Path, Path],
) -> None:
    store, source = moods
    version = _compressed(store, "moods@1", "--onnx")
    config, report, card = _child(store, version)
    assert config["compression"]["format"] == "onnx" and config["weights"] == "model.onnx"
    assert report["child_measured"]["parameters"] == report["parent_measured"]["parameters"]
    assert "opset" in card
    rows = pd.read_csv(source).head(16)
    parent = tensorsmith.load("moods@1", store=store).predict(rows)
    child = tensorsmith.load(f"moods@{version}", store=store).predict(rows)
    assert (child["y_predicted"] == parent["y_predicted"]).all()
    for label in ("up", "down"):
        assert child[f"proba_{label}"].to_numpy() == pytest.approx(
            parent[f"proba_{label}"].to_numpy(), abs=1e-4
        )
