"""The ``onnx`` weights format: a version whose model is one ONNX graph, run by ONNX Runtime.

``model.onnx`` is the whole graph a user runs with ONNX Runtime alone: raw inputs (table
columns, pixels, token ids, values), the fitted preprocessing, the model and its decoding
(probabilities, values in the target's units). The task of a version encodes raw records itself
and calls ``module(features)``, so the module loaded here runs only the model part: it is cut out
of ``model.onnx`` at load with ``onnx.utils.Extractor``, between the tensors the graph's metadata
names (``tensorsmith.model_inputs`` → ``tensorsmith.model_outputs``). One file on disk, weights
stored once, and nothing else to keep in step with it.

Loading reads protobuf only (no pickle, no code from the folder); weights stored as external
data files are refused.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from tensorsmith.errors import StoreError

if TYPE_CHECKING:
    import onnx
    import onnxruntime

__all__ = [
    "MODEL_INPUTS",
    "MODEL_OUTPUTS",
    "ONNX",
    "ONNX_FILE",
    "OnnxFormat",
    "OnnxModule",
    "model_part",
]

ONNX_FILE = "model.onnx"
MODEL_INPUTS = "tensorsmith.model_inputs"  # metadata: JSON list, the model part's inputs
MODEL_OUTPUTS = "tensorsmith.model_outputs"  # metadata: JSON list, its outputs (scores first)


def metadata(model: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


def model_part(model: onnx.ModelProto) -> onnx.ModelProto:
    """The graph between the tensors the metadata names: encoded features in, scores out."""
    import onnx.utils

    meta = metadata(model)
    try:
        inputs, outputs = json.loads(meta[MODEL_INPUTS]), json.loads(meta[MODEL_OUTPUTS])
    except (KeyError, ValueError) as exc:
        raise ValueError(f"the graph's metadata does not name its model part ({exc})") from None
    graph_in = [i.name for i in model.graph.input]
    graph_out = [o.name for o in model.graph.output]
    if graph_in == inputs and graph_out == outputs:
        return model  # exported without its preprocessing: the graph is the model
    return onnx.utils.Extractor(model).extract_model(inputs, outputs)


class OnnxModule(nn.Module):
    """Runs the model part of an ONNX graph in ONNX Runtime: tensors in, torch tensors out.

    ``graph`` is the whole graph (what ``model.onnx`` holds); ``forward(*inputs)`` takes the
    tensors the task feeds its model, in order, and returns the first output (the scores).
    Inference only: there are no parameters to train.
    """

    def __init__(self, graph: onnx.ModelProto) -> None:
        super().__init__()
        import onnxruntime as ort

        self.graph = graph
        core = model_part(graph)
        self.weights = _float_weights(core)  # for counting parameters: nn.Module has none here
        options = ort.SessionOptions()
        options.log_severity_level = 3  # warnings about unused initializers are not the user's
        self.session: onnxruntime.InferenceSession = ort.InferenceSession(
            core.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
        self.input_names = [i.name for i in self.session.get_inputs()]
        # the task's tensors in the graph's types (a tokenizer gives int32 ids, the graph int64)
        self.input_types = [_NUMPY.get(i.type) for i in self.session.get_inputs()]
        self.output_name = self.session.get_outputs()[0].name

    @property
    def n_parameters(self) -> int:
        """Numbers in the model part's float constants (the weights, as the exporter left
        them: batch norm may be folded into the convolution before it)."""
        return sum(int(w.size) for w in self.weights)

    @property
    def n_nonzero(self) -> int:
        return sum(int(np.count_nonzero(w)) for w in self.weights)

    @property
    def opset(self) -> int:
        return next(o.version for o in self.graph.opset_import if o.domain in ("", "ai.onnx"))

    def forward(self, *inputs: torch.Tensor | None) -> torch.Tensor:
        given = [x for x in inputs if x is not None]
        if len(given) != len(self.input_names):
            raise ValueError(
                f"the ONNX model takes {len(self.input_names)} inputs "
                f"({', '.join(self.input_names)}), got {len(given)}"
            )
        feeds = {
            name: _as(x.detach().cpu().numpy(), kind)
            for name, kind, x in zip(self.input_names, self.input_types, given, strict=True)
        }
        (out,) = self.session.run([self.output_name], feeds)
        return torch.from_numpy(out)


_NUMPY = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(bool)": np.bool_,
}


def _as(array: np.ndarray, kind: Any) -> np.ndarray:
    return array if kind is None or array.dtype == kind else array.astype(kind)


class OnnxFormat:
    """Writes the whole graph as ``model.onnx``; loads it back as an :class:`OnnxModule`."""

    def save(self, module: nn.Module, folder: Path) -> str:
        if not isinstance(module, OnnxModule):
            raise TypeError(f"the onnx format saves an OnnxModule, not {type(module).__name__}")
        (folder / ONNX_FILE).write_bytes(module.graph.SerializeToString())
        return ONNX_FILE

    def load(self, module: nn.Module, folder: Path, config: dict[str, Any]) -> nn.Module:
        """``module`` (the recipe's fp32 model) is not needed: the graph holds the weights."""
        import onnx
        from google.protobuf.message import DecodeError

        path = folder / str(config.get("weights", ONNX_FILE))
        if not path.is_file():
            raise _damaged(path, "is missing")
        try:
            graph = onnx.load(str(path), load_external_data=False)
        except (DecodeError, OSError, ValueError) as exc:
            raise _damaged(path, f"cannot be read as an ONNX model ({exc})") from None
        if any(_external(t) for t in graph.graph.initializer):
            raise _damaged(path, "refers to external weight files; the format keeps one file")
        try:
            return OnnxModule(graph)
        except Exception as exc:  # ONNX Runtime's and the checker's errors have no common base
            raise _damaged(path, f"does not load in ONNX Runtime ({exc})") from None


def _float_weights(model: onnx.ModelProto) -> list[np.ndarray]:
    from onnx import numpy_helper

    floats = (1, 10, 11, 16)  # FLOAT, FLOAT16, DOUBLE, BFLOAT16
    return [numpy_helper.to_array(t) for t in model.graph.initializer if t.data_type in floats]


def _external(tensor: onnx.TensorProto) -> bool:
    import onnx

    return tensor.data_location == onnx.TensorProto.EXTERNAL


def _damaged(path: Path, what: str) -> StoreError:
    return StoreError(
        f"model version {path.parent} is damaged: {path.name} {what}; export it again "
        "with `tensorsmith compress NAME --onnx`"
    )


ONNX = OnnxFormat()  # FORMATS["onnx"] (models/formats.py)
