"""ONNX export: the model with its preprocessing in one graph that ONNX Runtime runs alone.

The module is exported with ``torch.onnx.export(dynamo=True)`` (``torch.export`` underneath): it
refuses data-dependent branches instead of tracing one of them silently, which the TorchScript
exporter (``dynamo=False``) would do. fp32, a dynamic batch axis (and a dynamic length for text
and padded sequences), opset :data:`OPSET`. The task's fitted preprocessing and its decoding are
written as ONNX ops around it (``compression/onnx_preprocess.py``) and joined into one graph;
``preprocessing=False`` exports the model alone (encoded features in, scores out).

The child's module is an ``OnnxModule`` (``models/onnx_runtime.py``): the version keeps its
recipe and task, predicts, evaluates and serves through ONNX Runtime, and is stored in the
``onnx`` weights format (``model.onnx``).
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import warnings
from collections.abc import Iterator

import onnx
import torch

from tensorsmith.compression.child import Child
from tensorsmith.compression.onnx_graph import OPSET, Piece, join
from tensorsmith.compression.onnx_preprocess import Plan, plan_for
from tensorsmith.errors import RecipeError
from tensorsmith.models.onnx_runtime import ONNX_FILE, OnnxModule
from tensorsmith.tasks.predictor import Predictor

__all__ = ["OPSET", "export_model", "export_onnx"]

# what the exporter logs on its way (missing torchvision ops, the graph of a failed export)
_LOGGERS = ("torch.onnx", "torch.export", "torch._export", "torch.fx", "torch._dynamo")


def export_onnx(parent: Predictor, preprocessing: bool = True) -> Child:
    """The parent's model as an ONNX graph, with its preprocessing inside unless told not to."""
    if isinstance(parent.module, OnnxModule):
        raise RecipeError(
            f"{parent.name} is already an ONNX export; export its parent version instead"
        )
    plan = plan_for(parent.task, parent.config.get("dims", {}))
    model = export_model(parent.module, plan)
    pre: Piece | None = None
    post: Piece | None = None
    if preprocessing:
        pre, post = plan.pre(), plan.post()
        inputs = plan.inputs
    else:
        inputs = f"the encoded model inputs {', '.join(plan.names)}"
    doc = f"tensorsmith {parent.name}: inputs: {inputs}"
    graph = join(model, pre, post, doc)
    module = OnnxModule(graph)
    names = [i.name for i in graph.graph.input]
    outputs = [o.name for o in graph.graph.output]
    method = {
        "onnx": {
            "opset": module.opset,
            "exporter": "torch.onnx.export(dynamo=True)",
            "preprocessing": preprocessing,
            "precision": "fp32",
            "inputs": names,
            "outputs": outputs,
        }
    }
    notes = [
        f"{ONNX_FILE}: ONNX opset {module.opset}, dynamic batch axis; inputs {', '.join(names)}; "
        f"outputs {', '.join(outputs)}",
        f"inputs: {inputs}",
    ]
    if not preprocessing:
        notes.append("exported without its preprocessing: the graph takes encoded features")
    dims = dict(parent.config.get("dims", {}))
    return Child(module, parent.recipe, dims, method, format="onnx", notes=notes)


def export_model(module: torch.nn.Module, plan: Plan) -> onnx.ModelProto:
    """The module alone: ``plan.names`` in, ``scores`` out, at opset :data:`OPSET`."""
    from torch.export import Dim

    axes = {name: Dim(name) for spec in plan.dynamic for name in spec.values()}
    dynamic = tuple({axis: axes[name] for axis, name in spec.items()} for spec in plan.dynamic)
    module = module.eval()
    try:
        with _quiet(), torch.no_grad():
            program = torch.onnx.export(
                module,
                plan.examples,
                dynamo=True,
                input_names=plan.names,
                output_names=["scores"],
                dynamic_shapes=dynamic,
                opset_version=OPSET,
                optimize=True,
                verbose=False,
            )
    except Exception as exc:  # torch.export raises many kinds; all mean the same to a user
        raise RecipeError(
            f"torch.onnx.export cannot export the {type(module).__name__} model "
            f"({_root_cause(exc)}); this architecture has no ONNX export yet (a branch on the "
            "values of an input, such as a padding mask, cannot be written as a graph)"
        ) from None
    assert program is not None
    return program.model_proto


def _root_cause(exc: BaseException) -> str:
    """The first line of the innermost error, without the exporter's terminal colours."""
    while (inner := exc.__cause__ or exc.__context__) is not None:
        exc = inner
    lines = str(exc).strip().splitlines()
    return re.sub(r"\x1b\[[0-9;]*m", "", lines[0]) if lines else type(exc).__name__


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporter prints its progress and logs missing torchvision ops: not the user's."""
    loggers = [logging.getLogger(n) for n in _LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with (
            contextlib.redirect_stdout(io.StringIO()),
            contextlib.redirect_stderr(io.StringIO()),
            warnings.catch_warnings(),
        ):
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
