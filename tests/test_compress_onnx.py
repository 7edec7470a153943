"""ONNX export: ONNX Runtime alone, on raw inputs, predicts what the torch Predictor predicts.

Tiny, few-epoch versions of the examples are trained once per session. The reference of every
parity check is the parent ``Predictor`` (pandas preprocessing, the torch module, numpy
decoding); the graph is run by a bare ``onnxruntime.InferenceSession`` from ``model.onnx``.
fp32: scores and probabilities within 1e-4; values in the target's units within a relative
1e-4 (a price of 60,000 has float32 steps of 0.004).
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import pytest
import torch
import yaml
from rich.console import Console

import tensorsmith
from tensorsmith.api.compression import write_child
from tensorsmith.compression.onnx_export import OPSET, export_onnx
from tensorsmith.data.images import load_image
from tensorsmith.errors import RecipeError, StoreError
from tensorsmith.models.onnx_runtime import OnnxModule
from tensorsmith.tasks.predictor import Predictor

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
WINDSOR = EXAMPLES / "windsor_housing" / "windsor_housing.csv"
TOL = 1e-4
QUIET = Console(file=io.StringIO())

# ----------------------------------------------------------------------------- helpers


def train_example(store: Path, recipe: Path, source: Path | None, **changes: Any) -> Predictor:
    """The example recipe with its source made absolute and dotted ``a__b`` keys changed."""
    raw = yaml.safe_load(recipe.read_text(encoding="utf-8"))
    raw["data"]["source"] = str(source or recipe.parent / raw["data"]["source"])
    for dotted, value in changes.items():
        node = raw
        *parents, last = dotted.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    path = store.parent / f"{raw['name']}.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    model = tensorsmith.train(path, store=store, console=Console(file=io.StringIO()))
    return Predictor.load(model.path)


def session(child: Any) -> ort.InferenceSession:
    return ort.InferenceSession(child.module.graph.SerializeToString())


def run(sess: ort.InferenceSession, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(None, feeds), strict=True))


def table_feeds(sess: ort.InferenceSession, frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """Raw columns as the graph takes them: numbers float32 (NaN missing), others strings."""
    feeds = {}
    for i in sess.get_inputs():
        col = frame[i.name]
        if i.type == "tensor(float)":
            feeds[i.name] = pd.to_numeric(col, errors="coerce").to_numpy(np.float32)[:, None]
        else:
            text = col.astype(object).where(col.notna(), "").astype(str)
            feeds[i.name] = text.to_numpy(object)[:, None]
    return feeds


def sizes(n: int) -> list[slice]:
    """A batch of 1 and of 64 rows (fewer when there are fewer)."""
    return [slice(0, 1), slice(1, 1 + min(64, n - 1))]


def with_module(parent: Predictor, child: Any) -> Predictor:
    """The parent's task and recipe predicting with the child's module (ONNX Runtime)."""
    return Predictor(parent.path, parent.recipe, parent.task, child.module, parent.config)


def stored_child(parent: Predictor, child: Any, folder: Path) -> Predictor:
    """The child stored as ``compress`` stores it (without the measurement), loaded back."""
    return Predictor.load(write_child(folder, parent, child))


# ----------------------------------------------------------------------------- trained parents


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx") / "store"


@pytest.fixture(scope="module")
def windsor(store: Path) -> Predictor:
    """examples/windsor_housing/mlp.yaml (log price, log lotsize, yes/no columns) with two
    columns read as categories."""
    return train_example(
        store,
        EXAMPLES / "windsor_housing" / "mlp.yaml",
        None,
        data__types={"bedrooms": "category", "stories": "category"},
        train__epochs=3,
    )


def messy_windsor(folder: Path) -> Path:
    df = pd.read_csv(WINDSOR)
    df["garagepl"] = df["garagepl"].astype(float)
    df.loc[::7, "lotsize"] = np.nan  # missing in train: imputed, with a missing indicator
    df.loc[3::11, "stories"] = np.nan  # a missing category: the most frequent one
    df["driveway"] = df["driveway"].str.upper()  # YES / NO
    df.loc[::13, "garagepl"] = np.nan
    path = folder / "messy.csv"
    df.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def windsor_embedded(store: Path) -> Predictor:
    """Missing values, categories as embeddings, log1p and minmax scaling."""
    return train_example(
        store,
        EXAMPLES / "windsor_housing" / "mlp.yaml",
        messy_windsor(store.parent),
        name="windsor-messy",
        data__types={"bedrooms": "category", "stories": "category"},
        data__categorical="embedding",
        data__scale="minmax",
        data__impute="mean",
        data__transforms={"lotsize": "log", "garagepl": "log1p"},
        train__epochs=2,
    )


# ----------------------------------------------------------------------------- tables


def test_windsor_runs_on_raw_columns_in_onnx_runtime_alone(windsor: Predictor) -> None:
    child = export_onnx(windsor)
    sess = session(child)
    df = pd.read_csv(WINDSOR)
    assert [i.name for i in sess.get_inputs()] == windsor.task.preprocessor.features
    for rows in sizes(len(df)):
        part = df.iloc[rows]
        out = run(sess, table_feeds(sess, part))
        expected = windsor.predict(part)["price_predicted"].to_numpy()
        np.testing.assert_allclose(out["prediction"], expected, rtol=TOL)
        enc = windsor.task.encode(part, with_target=False)
        scores = windsor.module(torch.from_numpy(enc.x)).detach().numpy()
        assert np.abs(out["scores"] - scores).max() < TOL
        assert out["prediction"].shape == (len(part),)


def test_the_opset_and_the_dynamic_batch_axis_are_recorded(windsor: Predictor) -> None:
    child = export_onnx(windsor)
    graph = child.module.graph
    opset = {o.domain: o.version for o in graph.opset_import}[""]
    assert child.method["onnx"]["opset"] == opset == OPSET
    assert child.format == "onnx" and child.method["onnx"]["preprocessing"] is True
    batch = graph.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_param == "batch" and not batch.HasField("dim_value")
    assert child.module.n_parameters == sum(p.numel() for p in windsor.module.parameters())


def test_unusual_values_are_handled_as_the_torch_path_handles_them(
    windsor_embedded: Predictor,
) -> None:
    """NaN, infinities, values a log cannot take, unseen and missing categories, yes/no in
    any case and with spaces, words that are not yes/no."""
    parent = windsor_embedded
    df = pd.read_csv(WINDSOR).head(12).astype({"garagepl": float, "lotsize": float})
    df["bedrooms"] = df["bedrooms"].astype(object)
    df.loc[0, "lotsize"] = np.nan
    df.loc[1, "lotsize"] = -5.0  # log cannot take it: missing
    df.loc[2, "lotsize"] = np.inf
    df.loc[3, "garagepl"] = -1.0  # log1p cannot take it
    df.loc[4, "bedrooms"] = "17"  # a category never seen: index 0
    df.loc[5, "bedrooms"] = None  # missing: the most frequent category
    df.loc[6, "driveway"] = "  Yes "
    df.loc[7, "driveway"] = "maybe"  # not yes/no: imputed
    df.loc[8, "recroom"] = None
    df.loc[9, "airco"] = "TRUE"
    df.loc[10, "garagepl"] = 1e6  # far outside the training range: scaled all the same
    df["bedrooms"] = df["bedrooms"].map(lambda v: v if v is None else str(v))
    child = export_onnx(parent)
    sess = session(child)
    out = run(sess, table_feeds(sess, df))
    expected = parent.predict(df)["price_predicted"].to_numpy()
    np.testing.assert_allclose(out["prediction"], expected, rtol=TOL)
    enc = parent.task.encode(df, with_target=False)
    assert enc.cat is not None and enc.cat[4, 0] == 0  # the unseen category really is unseen
    scores = parent.module(torch.from_numpy(enc.x), torch.from_numpy(enc.cat)).detach().numpy()
    assert np.abs(out["scores"] - scores).max() < TOL


def test_breast_cancer_probabilities_and_labels(store: Path) -> None:
    parent = train_example(store, EXAMPLES / "breast_cancer" / "recipe.yaml", None,
                           train__epochs=3)  # fmt: skip
    sess = session(export_onnx(parent))
    df = pd.read_csv(EXAMPLES / "breast_cancer" / "breast_cancer.csv")
    for rows in sizes(len(df)):
        part = df.iloc[rows]
        out = run(sess, table_feeds(sess, part))
        assert np.abs(out["probabilities"] - parent.predict_proba(part)).max() < TOL
        assert list(out["label"]) == list(parent.predict(part)["diagnosis_predicted"])


# ----------------------------------------------------------------------------- images, text, series


def test_digits_cnn_normalises_pixels_inside_the_graph(store: Path) -> None:
    parent = train_example(
        store, EXAMPLES / "digits_cnn" / "recipe.yaml", None,
        train__epochs=1, model__channels=[8, 16], data__workers=0,
    )  # fmt: skip
    child = export_onnx(parent)
    sess = session(child)
    paths = sorted((EXAMPLES / "digits_cnn" / "images").glob("*/*.png"))[::25]
    task = parent.task
    pixels = np.stack([load_image(str(p), task.size, task.channels_).numpy() for p in paths])
    for rows in sizes(len(paths)):
        records = pd.DataFrame({"path": [str(p) for p in paths[rows]]})
        out = run(sess, {"pixels": pixels[rows]})
        assert np.abs(out["probabilities"] - parent.predict_proba(records)).max() < TOL
        assert list(out["label"]) == list(parent.predict(records)["label_predicted"])
        through_task = with_module(parent, child).predict_proba(records)
        assert np.abs(through_task - out["probabilities"]).max() < TOL


@pytest.fixture(scope="module")
def few_passages(store: Path) -> Path:
    few = store.parent / "passages.csv"
    source = EXAMPLES / "shakespeare_genre" / "passages.csv"
    pd.read_csv(source).iloc[::12].to_csv(few, index=False)  # every play, 1/12 of the rows
    return few


def train_genre(store: Path, few: Path, recipe: str) -> Predictor:
    return train_example(
        store, EXAMPLES / "shakespeare_genre" / recipe, few, train__epochs=1,
        data__max_length=48,
        data__tokenizer={"kind": "wordpiece", "vocab_size": 300, "lowercase": True},
    )  # fmt: skip


def test_genre_transformer_takes_token_ids(store: Path, few_passages: Path) -> None:
    few = few_passages
    parent = train_genre(store, few, "transformer.yaml")
    child = export_onnx(parent)
    sess = session(child)
    df = pd.read_csv(few)
    df.loc[df.index[1], "text"] = "a short one"  # padding: the mask matters
    for rows in sizes(len(df)):
        part = df.iloc[rows]
        ids, lengths, _ = parent.task._encoded(part)  # the tokenizer stays outside the graph
        mask = np.arange(ids.shape[1])[None, :] < lengths.numpy()[:, None]
        out = run(sess, {"ids": ids.numpy().astype(np.int64), "mask": mask})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # texts longer than max_length are truncated
            expected = parent.predict_proba(part)
            through_task = with_module(parent, child).predict_proba(part)
        assert np.abs(out["probabilities"] - expected).max() < TOL
        assert np.abs(through_task - expected).max() < TOL


def test_an_architecture_the_exporter_cannot_take_says_so(store: Path, few_passages: Path) -> None:
    """The genre RNN packs padded sequences only when there is padding: a branch on the mask's
    values, which torch.export refuses rather than tracing one side of it."""
    parent = train_genre(store, few_passages, "rnn.yaml")
    with pytest.raises(RecipeError, match=r"cannot export the RNN model \(.*data-dependent"):
        export_onnx(parent)


def test_sunspots_lstm_forecasts_in_the_series_units(store: Path) -> None:
    parent = train_example(store, EXAMPLES / "sunspots_lstm" / "recipe.yaml", None,
                           train__epochs=2)  # fmt: skip
    child = export_onnx(parent)
    sess = session(child)
    df = pd.read_csv(EXAMPLES / "sunspots_lstm" / "sunspots.csv")
    lookback = parent.task.data_spec.lookback
    values = df[parent.task.columns_].to_numpy(np.float32)
    windows = np.stack([values[i : i + lookback] for i in range(len(values) - lookback + 1)])
    expected = parent.predict(df)["sunspots_forecast_1"].to_numpy()[lookback - 1 :]
    for rows in sizes(len(windows)):
        out = run(sess, {"values": windows[rows]})
        np.testing.assert_allclose(out["prediction"][:, 0], expected[rows], rtol=TOL, atol=TOL)
    through_task = with_module(parent, child).predict(df)["sunspots_forecast_1"].to_numpy()
    np.testing.assert_allclose(through_task[lookback - 1 :], expected, rtol=TOL, atol=TOL)


# ------------------------------------------------------------------------ without preprocessing


def test_an_unexpressible_step_names_itself_and_the_way_out(windsor: Predictor) -> None:
    prep = windsor.task.preprocessor
    before = dict(prep.transforms)
    prep.transforms["bathrms"] = "sqrt"  # a transform the graph has no form for
    try:
        with pytest.raises(RecipeError, match=r"'data.transforms sqrt' of column 'bathrms'.*"
                           r"--no-preprocessing"):  # fmt: skip
            export_onnx(windsor)
        child = export_onnx(windsor, preprocessing=False)
    finally:
        prep.transforms = before
    sess = session(child)
    assert [i.name for i in sess.get_inputs()] == ["features"]
    assert child.method["onnx"]["preprocessing"] is False
    enc = windsor.task.encode(pd.read_csv(WINDSOR).head(64), with_target=False)
    out = run(sess, {"features": enc.x})
    scores = windsor.module(torch.from_numpy(enc.x)).detach().numpy()
    assert np.abs(out["scores"] - scores).max() < TOL


# ----------------------------------------------------------------------------- the weights format


def test_the_version_saved_and_loaded_predicts_like_its_parent(
    windsor: Predictor, tmp_path: Path
) -> None:
    child = export_onnx(windsor)
    loaded = stored_child(windsor, child, tmp_path / "store")
    assert isinstance(loaded.module, OnnxModule)
    assert sorted(p.name for p in loaded.path.glob("model.*")) == ["model.onnx"]
    df = pd.read_csv(WINDSOR)
    np.testing.assert_allclose(
        loaded.predict(df)["price_predicted"], windsor.predict(df)["price_predicted"], rtol=TOL
    )
    # model.onnx is the whole graph: what a user runs with ONNX Runtime alone
    sess = ort.InferenceSession(str(loaded.path / "model.onnx"))
    out = run(sess, table_feeds(sess, df.head(5)))
    np.testing.assert_allclose(out["prediction"], windsor.predict(df.head(5)).iloc[:, 0], rtol=TOL)
    with pytest.raises(RecipeError, match="already an ONNX export"):
        export_onnx(loaded)


def test_evaluate_runs_unchanged_on_the_stored_version(windsor: Predictor, tmp_path: Path) -> None:
    root = tmp_path / "store"
    stored_child(windsor, export_onnx(windsor), root)
    parent_metrics = tensorsmith.evaluate(
        f"{windsor.recipe.name}@1", store=windsor.path.parent.parent, console=QUIET
    )
    child_metrics = tensorsmith.evaluate(f"{windsor.recipe.name}@1", store=root, console=QUIET)
    assert child_metrics.keys() == parent_metrics.keys()
    for split, values in parent_metrics.items():
        for name, value in values.items():
            assert child_metrics[split][name] == pytest.approx(value, rel=1e-4, abs=1e-6), name


def test_a_damaged_onnx_file_is_a_store_error(windsor: Predictor, tmp_path: Path) -> None:
    child = export_onnx(windsor, preprocessing=False)
    folder = stored_child(windsor, child, tmp_path / "store").path
    (folder / "model.onnx").write_bytes(b"not a model")
    with pytest.raises(StoreError, match=r"model\.onnx cannot be read"):
        Predictor.load(folder)
    (folder / "model.onnx").unlink()
    with pytest.raises(StoreError, match=r"model\.onnx is missing"):
        Predictor.load(folder)


def test_the_graph_checks_and_names_its_model_part(windsor: Predictor) -> None:
    graph = export_onnx(windsor).module.graph
    onnx.checker.check_model(graph, full_check=True)
    meta = {p.key: p.value for p in graph.metadata_props}
    assert json.loads(meta["tensorsmith.model_inputs"]) == ["model.features"]
    assert json.loads(meta["tensorsmith.model_outputs"]) == ["model.scores"]
