"""Each task's preprocessing and decoding as ONNX pieces, around the exported model.

What the whole graph (``model.onnx``) takes and gives, per kind of task:

- tables: one input per raw feature column, (N, 1): numbers as float32 (NaN = missing), yes/no
  and category columns as strings ("" = missing; a yes/no column held as 0/1 numbers takes
  "0" / "1"). In the graph: the column's log / log1p transform, imputation with the train fill,
  the missing indicator, scaling, yes/no words, one-hot (or embedding indices) of categories with
  an unseen category all zeros (index 0), exactly as ``data/preprocess.py`` does.
- images: ``pixels`` (N, C, H, W) float32 in [0, 1], already at the model's size and channels
  (what ``data/images.load_image`` gives); the graph normalises with the train mean and std.
- text: ``ids`` (N, T) int64 and ``mask`` (N, T) bool from the version's tokenizer (which stays
  outside the graph: ``tokenizer.json``).
- sequences: ``values`` (N, T, F) float32 windows of the raw columns (and ``mask`` for padded
  sequences); the graph scales them with the train statistics.

Outputs: ``scores`` (the model's raw outputs) and, for classes, ``probabilities`` (float64, the
softmax, or the sigmoid of one logit) and ``label``; for numbers, ``prediction`` (float64) in the
target's units. Preprocessing runs in float64, as the torch path does, and is cast to float32 for
the model.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from tensorsmith.compression.onnx_graph import BOOL, DOUBLE, FLOAT, INT64, PREFIX, STRING, Piece
from tensorsmith.data.preprocess import _FALSE, _TRUE, Preprocessor
from tensorsmith.errors import RecipeError
from tensorsmith.tasks.base import Task

__all__ = ["Plan", "plan_for"]

N = "batch"  # the dynamic batch axis
SCORES = PREFIX + "scores"
# Python's str.strip() whitespace, as RE2 writes it (yes / no words are stripped and lowered)
_SPACE = r"[\s\x{0b}\x{1c}-\x{1f}\x{85}\p{Z}]*"


@dataclass
class Plan:
    """How a task's model is exported and what surrounds it in the graph."""

    names: list[str]  # the model's inputs, in the order its forward takes them
    examples: tuple[torch.Tensor, ...]  # for the exporter: a batch of 2 (1 would be fixed)
    dynamic: list[dict[int, str]]  # per input: axis → name of a dynamic axis
    pre: Callable[[], Piece]  # raw inputs → PREFIX + names
    post: Callable[[], Piece]  # SCORES → outputs
    inputs: str  # what the whole graph takes, for the card and the model's doc string


def unexpressible(step: str, column: str | None, why: str) -> RecipeError:
    where = f" of column '{column}'" if column else ""
    return RecipeError(
        f"cannot put the preprocessing into the ONNX graph: the step '{step}'{where} {why}; "
        "export the model alone with --no-preprocessing (preprocessing=False): it then takes "
        "the encoded features, and the version's preprocess.json says how to make them"
    )


def plan_for(task: Task, dims: dict[str, Any]) -> Plan:
    from tensorsmith.tasks.image_classification import ImageClassificationTask
    from tensorsmith.tasks.sequence_classification import SequenceClassificationTask
    from tensorsmith.tasks.sequence_regression import SequenceRegressionTask
    from tensorsmith.tasks.table import TableTask
    from tensorsmith.tasks.text import TextTask

    if isinstance(task, TableTask):
        return _table(task, dims)
    if isinstance(task, ImageClassificationTask):
        return _image(task)
    if isinstance(task, TextTask):
        return _text(task)
    if isinstance(task, SequenceRegressionTask):
        return _forecast(task)
    if isinstance(task, SequenceClassificationTask):
        return _sequences(task)
    raise RecipeError(
        f"ONNX export covers models of tables, images, text and sequences; task "
        f"'{task.name}' has no ONNX export (a language model generates token by token)"
    )


# ----------------------------------------------------------------------------- tables


def _table(task: Any, dims: dict[str, Any]) -> Plan:
    prep: Preprocessor = task.preprocessor
    cards = [int(c) for c in dims.get("cardinalities") or []]
    x = torch.zeros(2, int(dims["n_inputs"]))
    names, examples = ["features"], [x]
    if prep.categorical == "embedding" and cards:
        names.append("categories")
        examples.append(torch.zeros(2, len(cards), dtype=torch.int64))
    columns = ", ".join(f"{c['name']} ({_kind(c)})" for c in prep.columns_)
    return Plan(
        names,
        tuple(examples),
        [{0: N}] * len(names),
        lambda: _table_pre(prep),
        lambda: _table_post(prep, int(dims["n_outputs"])),
        f"one (N, 1) input per column: {columns}",
    )


def _kind(column: dict[str, Any]) -> str:
    return "float32" if column["type"] == "number" else "string"


def _table_pre(prep: Preprocessor) -> Piece:
    g = Piece("pre.")
    blocks: list[str] = []
    cats: list[str] = []
    for c in prep.columns_:
        name = str(c["name"])
        if c["type"] == "number":
            blocks += _number(g, prep, c)
        elif c["type"] == "binary":
            blocks.append(_binary(g, c))
        elif c["type"] == "category":
            index_or_onehot = _category(g, c, prep.categorical)
            (cats if prep.categorical == "embedding" else blocks).append(index_or_onehot)
        else:
            raise unexpressible(f"column type {c['type']}", name, "has no ONNX form")
    if not blocks:
        raise unexpressible("numeric features", None, "are empty (every column is embedded)")
    g.op("Concat", blocks, "features", out=PREFIX + "features", axis=1)
    if cats:
        g.op("Concat", cats, "categories", out=PREFIX + "categories", axis=1)
    return g


def _number(g: Piece, prep: Preprocessor, c: dict[str, Any]) -> list[str]:
    name = str(c["name"])
    v = g.cast(g.input(name, FLOAT, [N, 1]), DOUBLE, name)
    nan = g.const(np.nan, "nan", np.float64)
    kind = prep.transforms.get(name)
    if kind is not None:
        if kind not in ("log", "log1p"):
            raise unexpressible(f"data.transforms {kind}", name, "has no ONNX form")
        low = g.const(0.0 if kind == "log" else -1.0, "low", np.float64)
        v = g.op("Where", [g.op("LessOrEqual", [v, low], "bad"), nan, v], "kept")
        if kind == "log1p":  # log(1 + v) in float64: log1p's own rounding differs by < 1e-15
            v = g.op("Add", [v, g.const(1.0, "one", np.float64)], "plus1")
        v = g.op("Log", [v], kind)
    v = g.op("Where", [g.op("IsInf", [v], "inf"), nan, v], "finite")
    missing = g.op("IsNaN", [v], "missing")
    filled = g.op("Where", [missing, g.const(float(c["fill"]), "fill", np.float64), v], "filled")
    centered = g.op("Sub", [filled, g.const(float(c["center"]), "center", np.float64)], "sub")
    scaled = g.op("Div", [centered, g.const(float(c["scale"]), "scale", np.float64)], "scaled")
    block = [g.cast(scaled, FLOAT, name)]
    if c.get("missing_indicator"):
        block.append(g.cast(missing, FLOAT, f"{name}_missing"))
    return block


def _words(words: set[str]) -> str:
    return "(?i)" + _SPACE + "(" + "|".join(re.escape(w) for w in sorted(words)) + ")" + _SPACE


def _binary(g: Piece, c: dict[str, Any]) -> str:
    """yes / no words (stripped, any case) → 1 / 0; anything else, missing included → fill."""
    name = str(c["name"])
    x = g.input(name, STRING, [N, 1])
    yes = g.op("RegexFullMatch", [x], "yes", pattern=_words(_TRUE))
    no = g.op("RegexFullMatch", [x], "no", pattern=_words(_FALSE))
    fill = g.const(np.float32(c["fill"]), "fill")
    zero_or_fill = g.op("Where", [no, g.const(np.float32(0.0), "zero"), fill], "no_or_fill")
    return g.op("Where", [yes, g.const(np.float32(1.0), "one"), zero_or_fill], name)


def _category(g: Piece, c: dict[str, Any], mode: str) -> str:
    """Missing ("") → the train's most frequent value; one-hot over the train's categories (an
    unseen one is all zeros), or the embedding index (1 + position; 0 = unseen)."""
    name = str(c["name"])
    x = g.input(name, STRING, [N, 1])
    missing = g.op("Equal", [x, g.const(np.array("", dtype=object), "empty")], "missing")
    fill = g.const(np.array(str(c["fill"]), dtype=object), "fill")  # str(None) as pandas does
    v = g.op("Where", [missing, fill, x], "filled")
    categories = [str(k) for k in c["categories"]]
    if mode == "onehot":
        hot = g.op("Equal", [v, g.const(np.array(categories, dtype=object), "cats")], "hot")
        return g.cast(hot, FLOAT, f"{name}_onehot")  # (N, K)
    if mode != "embedding":
        raise unexpressible(f"data.categorical {mode}", name, "has no ONNX form")
    return g.op(
        "LabelEncoder",
        [v],
        "index",
        domain="ai.onnx.ml",
        keys_strings=categories,
        values_int64s=list(range(1, len(categories) + 1)),
        default_int64=0,
    )


def _table_post(prep: Preprocessor, width: int) -> Piece:
    if prep.target_kind == "label":
        return _classes_post(prep.classes, width)
    target = prep.target_
    g = Piece("post.")
    g.output(SCORES, "scores", FLOAT, [N, 1])
    s = g.cast(g.op("Squeeze", [SCORES, g.const([1], "axis", np.int64)], "squeeze"), DOUBLE, "s")
    y = g.op("Mul", [s, g.const(float(target["std"]), "std", np.float64)], "mul")
    y = g.op("Add", [y, g.const(float(target["mean"]), "mean", np.float64)], "value")
    if target.get("transform") == "log":
        y = g.op("Exp", [y], "exp")
    elif target.get("transform") not in (None, "none"):
        raise unexpressible(f"data.target_transform {target['transform']}", prep.target, "")
    g.output(y, "prediction", DOUBLE, [N])
    return g


# ----------------------------------------------------------------------------- outputs


def _classes_post(classes: list[str], width: int) -> Piece:
    """Scores → probabilities in float64 (softmax, or [1 - p, p] of one logit) and the label."""
    g = Piece("post.")
    k = len(classes)
    g.output(SCORES, "scores", FLOAT, [N, width])
    s = g.cast(SCORES, DOUBLE, "scores")
    if width == 1:  # binary cross-entropy: one logit, the probability of the second class
        p1 = g.op("Sigmoid", [s], "sigmoid")
        p0 = g.op("Sub", [g.const(1.0, "one", np.float64), p1], "p0")
        proba = g.op("Concat", [p0, p1], "proba", axis=1)
    else:
        proba = g.op("Softmax", [s], "softmax", axis=1)
    g.output(proba, "probabilities", DOUBLE, [N, k])
    best = g.op("ArgMax", [proba], "argmax", axis=1, keepdims=0)  # the first of equal ones
    label = g.op("Gather", [g.const(np.array(classes, dtype=object), "classes"), best], "label")
    g.output(label, "label", STRING, [N])
    return g


def _affine(decode: Callable[[np.ndarray], np.ndarray], what: str) -> tuple[float, float]:
    """(scale, offset) of a decoding of scaled numbers, checked to be affine."""
    probe = np.array([0.0, 1.0, -3.0, 7.5])
    out = np.asarray(decode(probe), dtype=np.float64).reshape(-1)
    offset, scale = float(out[0]), float(out[1] - out[0])
    if not np.allclose(out, offset + scale * probe, rtol=1e-12, atol=1e-12):
        raise unexpressible("target decoding", what, "is not a scaling ONNX can write")
    return scale, offset


def _numbers_post(decode: Callable[[np.ndarray], np.ndarray], what: str, width: int) -> Piece:
    scale, offset = _affine(decode, what)
    g = Piece("post.")
    g.output(SCORES, "scores", FLOAT, [N, width])
    s = g.cast(SCORES, DOUBLE, "scores")
    y = g.op("Mul", [s, g.const(scale, "scale", np.float64)], "mul")
    y = g.op("Add", [y, g.const(offset, "offset", np.float64)], "value")
    g.output(y, "prediction", DOUBLE, [N, width])
    return g


def _supervised_post(task: Any, width: int) -> Piece:
    if task.target_kind == "label":
        return _classes_post(list(task.classes.classes_), int(task.n_outputs()))
    return _numbers_post(task.decode_numbers, task.target_name, width)


# ----------------------------------------------------------------------------- images, text


def _image(task: Any) -> Plan:
    c, (h, w) = int(task.channels_), task.size
    mean = np.asarray(task.mean_, dtype=np.float32).reshape(1, c, 1, 1)
    std = np.asarray(task.std_, dtype=np.float32).reshape(1, c, 1, 1)

    def pre() -> Piece:
        g = Piece("pre.")
        x = g.input("pixels", FLOAT, [N, c, h, w])
        centered = g.op("Sub", [x, g.const(mean, "mean")], "centered")
        g.op("Div", [centered, g.const(std, "std")], "normalised", out=PREFIX + "image")
        return g

    return Plan(
        ["image"],
        (torch.rand(2, c, h, w),),
        [{0: N}],
        pre,
        lambda: _supervised_post(task, 1),
        f"pixels (N, {c}, {h}, {w}) float32 in [0, 1]",
    )


def _passthrough(names: list[tuple[str, int, list[str | int]]]) -> Callable[[], Piece]:
    def pre() -> Piece:
        g = Piece("pre.")
        for name, kind, shape in names:
            g.op("Identity", [g.input(name, kind, shape)], name, out=PREFIX + name)
        return g

    return pre


def _text(task: Any) -> Plan:
    steps = max(2, min(8, int(task.data_spec.max_length)))
    return Plan(
        ["ids", "mask"],
        (torch.ones(2, steps, dtype=torch.int64), torch.ones(2, steps, dtype=torch.bool)),
        [{0: N, 1: "steps"}, {0: N, 1: "steps"}],
        _passthrough([("ids", INT64, [N, "steps"]), ("mask", BOOL, [N, "steps"])]),
        lambda: _supervised_post(task, 1),
        "ids (N, T) int64 and mask (N, T) bool from the version's tokenizer.json",
    )


# ----------------------------------------------------------------------------- sequences


def _scale_values(g: Piece, scaler: Any, features: int, mask: str | None) -> None:
    """(x - center) / spread per feature, in float64; padded steps are 0, as the task pads."""
    if not hasattr(scaler, "center_"):
        raise unexpressible(f"scale {getattr(scaler, 'kind', '?')}", None, "has no statistics")
    x = g.cast(g.input("values", FLOAT, [N, "steps", features]), DOUBLE, "values")
    center = g.const(np.asarray(scaler.center_, dtype=np.float64), "center")
    spread = g.const(np.asarray(scaler.spread_, dtype=np.float64), "spread")
    scaled = g.op("Div", [g.op("Sub", [x, center], "sub"), spread], "scaled")
    out = PREFIX + "values"
    if mask is None:
        g.cast(scaled, FLOAT, "scaled", out=out)
        return
    g.op("Identity", [g.input(mask, BOOL, [N, "steps"])], mask, out=PREFIX + mask)
    keep = g.op("Unsqueeze", [mask, g.const([2], "axis", np.int64)], "keep")
    zero = g.const(0.0, "zero", np.float64)
    g.cast(g.op("Where", [keep, scaled, zero], "padded"), FLOAT, "scaled", out=out)


def _forecast(task: Any) -> Plan:
    spec = task.data_spec
    features, lookback = len(task.columns_), int(spec.lookback)

    def pre() -> Piece:
        g = Piece("pre.")
        _scale_values(g, task.scaler, features, None)
        return g

    return Plan(
        ["values"],
        (torch.zeros(2, lookback, features),),
        [{0: N}],
        pre,
        lambda: _numbers_post(task.decode_numbers, spec.target, int(spec.horizon)),
        f"values (N, {lookback}, {features}) float32: windows of the columns "
        f"{', '.join(task.columns_)}, oldest first",
    )


def _sequences(task: Any) -> Plan:
    features, steps = len(task.columns_), max(2, min(8, int(task.max_length_)))

    def pre() -> Piece:
        g = Piece("pre.")
        _scale_values(g, task.scaler, features, "mask")
        return g

    return Plan(
        ["values", "mask"],
        (torch.zeros(2, steps, features), torch.ones(2, steps, dtype=torch.bool)),
        [{0: N, 1: "steps"}, {0: N, 1: "steps"}],
        pre,
        lambda: _supervised_post(task, 1),
        f"values (N, T, {features}) float32 of the columns {', '.join(task.columns_)}, and "
        "mask (N, T) bool, True on real steps",
    )
