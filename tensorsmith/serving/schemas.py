"""Request and response bodies: the typed face of the HTTP API (and of its OpenAPI page).

Bodies are checked here, beyond what pydantic's types say: every number finite, every feature
the model reads present and no other, at most ``max_rows`` rows. A problem is a ``BadRequest``
naming the field, answered with 422.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "BadRequest",
    "CompletionRequest",
    "CompletionResponse",
    "ModelList",
    "PredictRequest",
    "PredictResponse",
    "records_from",
]

Value = str | float | int | bool | None


class BadRequest(Exception):
    """A request the server refuses: ``status`` (422 unless said), ``field`` named."""

    def __init__(self, message: str, field: str | None = None, status: int = 422) -> None:
        super().__init__(message)
        self.message, self.field, self.status = message, field, status


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PredictRequest(_Body):
    """Rows of raw feature values (tables, windows), texts, or base64 images."""

    rows: list[dict[str, Value]] | None = Field(
        default=None,
        description="tables: one object per row, feature name → raw value; sequence models: the "
        "rows of the series (or of each sequence, naming it in the id column)",
        examples=[[{"lotsize": 5850, "bedrooms": 3, "bathrms": 1, "stories": 2, "airco": "no"}]],
    )
    texts: list[str] | None = Field(default=None, description="text models: one text per input")
    images: list[str] | None = Field(
        default=None, description="image models: base64 image files (PNG, JPEG …)"
    )


class Prediction(BaseModel):
    prediction: Value = Field(description="the predicted label or value (null when none)")
    probabilities: dict[str, float | None] | None = Field(
        default=None, description="class → probability (classification models)"
    )
    values: dict[str, Value] = Field(description="every output column of the model's prediction")


class PredictResponse(BaseModel):
    model: str
    version: int
    predictions: list[Prediction]
    notes: list[str] = Field(default_factory=list, description="inputs taken other than as given")


class ModelCard(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    version: int
    task: str
    arch: str
    input: dict[str, Any] = Field(description="what one input is: kind, features and types …")
    metrics: dict[str, Any]
    plots: list[str]
    endpoint: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class CompletionRequest(_Body):
    """OpenAI's completions request (the fields that apply to these models)."""

    model: str
    prompt: str | list[str] = ""
    max_tokens: int = Field(default=16, ge=0)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int = Field(default=1, ge=1, le=16)
    stream: bool = False
    stream_options: dict[str, bool] | None = None
    user: str | None = None


class Choice(BaseModel):
    text: str
    index: int
    logprobs: None = None
    finish_reason: str | None


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage | None = None


def records_from(body: PredictRequest, schema: dict[str, Any], max_rows: int) -> pd.DataFrame:
    """The request as the table the model's ``predict`` reads, or a BadRequest."""
    kind = str(schema.get("kind"))
    given = [k for k in ("rows", "texts", "images") if getattr(body, k) is not None]
    wanted = {"table": "rows", "windows": "rows", "text": "texts", "image": "images"}.get(kind)
    if wanted is None:
        raise BadRequest(f"this model does not predict ({kind} inputs): use /v1/completions")
    if given != [wanted] and not (kind == "text" and given == ["rows"]):
        raise BadRequest(f"a {kind} model reads '{wanted}'; got {given or 'nothing'}", wanted)
    values: list[Any] = getattr(body, given[0])
    if not values:
        raise BadRequest(f"'{given[0]}' is empty; give at least one", given[0])
    if len(values) > max_rows:
        raise BadRequest(f"{len(values)} {given[0]} in one request; at most {max_rows}", given[0])
    if kind == "text" and given == ["texts"]:
        return pd.DataFrame({schema["column"]: values})
    if kind == "image":
        return pd.DataFrame({"image": values})  # decoded by the app into files it owns
    columns = [f["name"] for f in schema["features"]] if kind == "table" else schema.get("columns")
    if kind == "text":
        columns = [schema["column"]]
    return _table(values, list(columns or []), schema if kind == "table" else None)


def _table(rows: list[dict[str, Any]], columns: list[str], schema: dict[str, Any] | None) -> Any:
    types = {f["name"]: f["type"] for f in schema["features"]} if schema else {}
    for i, row in enumerate(rows):
        missing = [c for c in columns if c not in row]
        unknown = [k for k in row if k not in columns]
        if missing:
            raise BadRequest(f"rows[{i}] lacks {', '.join(missing)}", f"rows[{i}].{missing[0]}")
        if unknown:
            raise BadRequest(
                f"rows[{i}] has unknown features {', '.join(unknown)}; the model reads "
                f"{', '.join(columns)}",
                f"rows[{i}].{unknown[0]}",
            )
        for name, value in row.items():
            _check_value(value, types.get(name), f"rows[{i}].{name}")
    return pd.DataFrame(rows, columns=columns)


def _check_value(value: Any, kind: str | None, where: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise BadRequest(f"{where} is {value}; give a finite number (or null when missing)", where)
    if kind == "number" and isinstance(value, str | bool):
        raise BadRequest(f"{where} must be a number, got {value!r}", where)
