"""``POST /v1/models/{name}/predict``: JSON rows, texts or base64 images, or multipart images.

The request is checked and encoded on its own, then joins its model's batch. Images arrive as
bytes and are written to files this server names, in its own temporary folder, which are removed
after the prediction: no path ever comes from a request.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import math
import tempfile
import uuid
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from fastapi import APIRouter, Request
from pydantic import ValidationError
from torch import nn

from tensorsmith.data.text import DataWarning
from tensorsmith.serving.loaded import ServedModel
from tensorsmith.serving.schemas import BadRequest, PredictRequest, PredictResponse, records_from

if TYPE_CHECKING:
    from tensorsmith.serving.app import Server
    from tensorsmith.tasks.base import Task

__all__ = ["predict_parts", "predict_routes"]

_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": PredictRequest.model_json_schema()},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "images": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "description": "image files (image models)",
                        }
                    },
                }
            },
        },
    }
}


def predict_parts(task: Task, module: nn.Module, parts: list[Any]) -> list[pd.DataFrame]:
    """One batch: ``Task.predict_prepared``, with what the task said (``DataWarning``) kept as
    each request's notes. A warning in a batch of several requests cannot be told apart, so that
    batch runs again one request at a time: no request sees another's notes."""
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always", DataWarning)
        frames = task.predict_prepared(module, parts)
    notes = [str(w.message) for w in said if issubclass(w.category, DataWarning)]
    if notes and len(parts) > 1:
        return [predict_parts(task, module, [part])[0] for part in parts]
    for frame in frames:
        frame.attrs["notes"] = [*notes, *frame.attrs.get("notes", [])]
    return frames


def predict_routes(server: Server) -> APIRouter:
    router = APIRouter(prefix="/v1")

    @router.post(
        "/models/{name}/predict",
        response_model=PredictResponse,
        summary="predictions of a model for rows, texts or images",
        openapi_extra=_BODY,
    )
    async def predict(name: str, request: Request) -> dict[str, Any]:
        served = server.model(name)
        if served.generates:
            raise BadRequest(f"{name} is a language model: use POST /v1/completions", "name")
        body = await _body(request)
        records = records_from(body, served.schema, server.config.max_rows)
        with tempfile.TemporaryDirectory(prefix="tensorsmith-images-") as folder:
            if served.schema["kind"] == "image":
                records = _image_files(records, Path(folder))
            prepared = served.predictor.task.prepare_request(records)
            batcher = server.batchers[name]
            frame = await asyncio.wait_for(
                batcher.submit(prepared, len(records)), server.config.timeout
            )
            if served.schema["kind"] == "image":  # the server's file names are not the user's
                frame.attrs["notes"] = _named(frame.attrs.get("notes", []), records["path"])
        return _response(served, frame)

    return router


async def _body(request: Request) -> PredictRequest:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        form = await request.form()
        uploads = form.getlist("images")
        data = [await u.read() for u in uploads if hasattr(u, "read")]
        if not data:
            raise BadRequest("a multipart request sends its files in the field 'images'", "images")
        return PredictRequest(images=[base64.b64encode(d).decode() for d in data])
    raw = await request.body()
    try:
        parsed = json.loads(raw, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"the body is not valid JSON ({exc})", "body") from None
    if not isinstance(parsed, dict):
        raise BadRequest(f"the body must be a JSON object, got {type(parsed).__name__}", "body")
    try:
        return PredictRequest.model_validate(parsed)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise BadRequest(f"{field}: {first['msg']}", field) from None


def _no_constant(name: str) -> float:
    """JSON has no NaN or Infinity; Python's reader would take them."""
    raise ValueError(f"{name} is not a JSON number; give a finite number or null")


def _image_files(records: pd.DataFrame, folder: Path) -> pd.DataFrame:
    paths = []
    for i, text in enumerate(records["image"]):
        try:
            data = base64.b64decode(str(text), validate=True)
        except (binascii.Error, ValueError):
            raise BadRequest(f"images[{i}] is not base64", f"images[{i}]") from None
        path = folder / f"{uuid.uuid4().hex}.img"
        path.write_bytes(data)
        paths.append(str(path))
    return pd.DataFrame({"path": paths})


def _named(notes: list[str], paths: pd.Series) -> list[str]:
    out = []
    for note in notes:
        for i, path in enumerate(paths):
            p = Path(path)
            note = note.replace(f"{p.parent.name}/{p.name}", f"images[{i}]").replace(
                str(p), f"images[{i}]"
            )
        out.append(note)
    return out


def _response(served: ServedModel, frame: pd.DataFrame) -> dict[str, Any]:
    proba = [c for c in frame.columns if str(c).startswith("proba_")]
    predicted = [c for c in frame.columns if str(c).endswith("_predicted")]
    rows = []
    for row in frame.to_dict(orient="records"):
        values = {str(k): _plain(v) for k, v in row.items()}
        rows.append(
            {
                "prediction": values[str(predicted[0])] if predicted else None,
                "probabilities": {str(c)[6:]: values[str(c)] for c in proba} if proba else None,
                "values": values,
            }
        )
    notes = list(frame.attrs.get("notes", []))
    return {"model": served.name, "version": served.version, "predictions": rows, "notes": notes}


def _plain(value: Any) -> Any:
    """A JSON value: numpy scalars as Python ones, NaN as null."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
