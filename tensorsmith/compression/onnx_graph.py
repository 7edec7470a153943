"""A small builder of ONNX graph pieces (``onnx.helper``), and the joining of a task's pieces
with the exported model into one graph.

The model's own tensors are renamed with the prefix ``model.`` (``onnx.compose.add_prefix``) so
that no raw input (a table column called ``relu``) meets one of its names; the pieces built here
name their tensors ``pre.…`` / ``post.…``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tensorsmith.errors import RecipeError
from tensorsmith.models.onnx_runtime import MODEL_INPUTS, MODEL_OUTPUTS

__all__ = ["ML_OPSET", "OPSET", "PREFIX", "Piece", "join"]

OPSET = 20  # RegexFullMatch (yes / no columns) is in opset 20
ML_OPSET = 4  # ai.onnx.ml: LabelEncoder with string keys
PREFIX = "model."

FLOAT, DOUBLE, INT64, STRING, BOOL = (
    TensorProto.FLOAT,
    TensorProto.DOUBLE,
    TensorProto.INT64,
    TensorProto.STRING,
    TensorProto.BOOL,
)


@dataclass
class Piece:
    """Nodes with their constants, graph inputs and outputs; ``tensor names`` are unique."""

    prefix: str
    nodes: list[onnx.NodeProto] = field(default_factory=list)
    constants: list[onnx.TensorProto] = field(default_factory=list)
    inputs: list[onnx.ValueInfoProto] = field(default_factory=list)
    outputs: list[onnx.ValueInfoProto] = field(default_factory=list)
    count: int = 0

    def fresh(self, hint: str) -> str:
        self.count += 1
        return f"{self.prefix}{hint}.{self.count}"

    def const(self, value: Any, hint: str, dtype: Any = None) -> str:
        name = self.fresh(hint)
        array = np.asarray(value, dtype=dtype)
        if array.dtype.kind in "OU":
            array = array.astype(object)
        self.constants.append(numpy_helper.from_array(array, name))
        return name

    def op(self, op_type: str, inputs: list[str], hint: str, out: str | None = None,
           domain: str = "", **attrs: Any) -> str:  # fmt: skip
        name = out or self.fresh(hint)
        self.nodes.append(helper.make_node(op_type, inputs, [name], domain=domain, **attrs))
        return name

    def cast(self, name: str, to: int, hint: str, out: str | None = None) -> str:
        return self.op("Cast", [name], hint, out, to=to)

    def input(self, name: str, elem_type: int, shape: list[str | int]) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, elem_type, shape))
        return name

    def output(self, source: str, name: str, elem_type: int, shape: list[str | int]) -> None:
        self.op("Identity", [source], name, out=name)
        self.outputs.append(helper.make_tensor_value_info(name, elem_type, shape))


def join(
    model: onnx.ModelProto,
    pre: Piece | None,
    post: Piece | None,
    doc: str,
) -> onnx.ModelProto:
    """One graph: the pre piece's inputs → the model (tensors renamed ``model.…``) → the post
    piece's outputs. Without pieces, the model alone with its metadata."""
    model_in = [i.name for i in model.graph.input]
    model_out = [o.name for o in model.graph.output]
    if pre is None and post is None:
        joined = model
        inputs, outputs = model_in, model_out
    else:
        assert pre is not None and post is not None
        inner = onnx.compose.add_prefix(model, PREFIX)
        graph = inner.graph
        _check_names(pre, post, graph)
        outputs = [PREFIX + n for n in model_out]
        inputs = [PREFIX + n for n in model_in]
        new = helper.make_graph(
            [*pre.nodes, *graph.node, *post.nodes],
            "tensorsmith",
            list(pre.inputs),
            list(post.outputs),
            [*pre.constants, *graph.initializer, *post.constants],
            value_info=[*graph.input, *graph.output, *graph.value_info],  # cut points too
        )
        joined = helper.make_model(
            new,
            opset_imports=_opsets(inner),
            functions=list(inner.functions),
            ir_version=inner.ir_version,
            producer_name="tensorsmith",
        )
    joined.doc_string = doc
    del joined.metadata_props[:]
    helper.set_model_props(
        joined, {MODEL_INPUTS: json.dumps(inputs), MODEL_OUTPUTS: json.dumps(outputs)}
    )
    onnx.checker.check_model(joined, full_check=True)
    return joined


def _opsets(model: onnx.ModelProto) -> list[onnx.OperatorSetIdProto]:
    found = {o.domain: o.version for o in model.opset_import}
    found[""] = max(found.pop("", OPSET), found.pop("ai.onnx", OPSET), OPSET)
    found["ai.onnx.ml"] = max(found.get("ai.onnx.ml", ML_OPSET), ML_OPSET)
    return [helper.make_opsetid(d, v) for d, v in sorted(found.items())]


def _check_names(pre: Piece, post: Piece, graph: onnx.GraphProto) -> None:
    """A raw input or an output named like one of the model's tensors cannot be joined."""
    faces = [v.name for v in [*pre.inputs, *post.outputs]]
    inner = [*graph.initializer, *pre.constants, *post.constants]
    taken = {t.name for t in inner} | {
        o for n in [*graph.node, *pre.nodes, *post.nodes] for o in n.output
    }
    clash = [n for n in faces if n in taken - {o.name for o in post.outputs}]
    clash += [n for n in set(faces) if faces.count(n) > 1]
    if clash:
        raise RecipeError(
            f"cannot join the preprocessing to the model: the input or output "
            f"'{clash[0]}' has the name of a tensor of the model; rename the column, or export "
            "without preprocessing (--no-preprocessing)"
        )
