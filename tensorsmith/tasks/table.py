"""What regression and classification on tables share: the table, its preprocessing, the feed.

``TableTask`` reads and splits the table, fits the ``Preprocessor`` on the train rows and feeds
the encoded rows to the loop; ``tasks/regression.py`` and ``tasks/classification.py`` add the
loss, the decoding of outputs and the plots of their task.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from rich.console import Console
from torch import nn

from tensorsmith.data.fingerprint import digest_values
from tensorsmith.data.loading import EpochFeed, Tensors, sequential
from tensorsmith.data.preprocess import Encoded, Preprocessor, describe_issues
from tensorsmith.data.tables import check_columns, read_table
from tensorsmith.data.tabular import check_target, load_tabular, read_splits
from tensorsmith.errors import DataError, StoreError
from tensorsmith.recipe import Recipe, TableData, TableTrain
from tensorsmith.tasks.base import Batch, LossOf, Prepared, Task
from tensorsmith.tasks.losses import LossFn, build_loss, class_weights

__all__ = ["TableSplit", "TableTask"]

EVAL_ROWS = 8192  # rows per evaluation batch


def _tensors(enc: Encoded, float_target: bool = False) -> tuple[torch.Tensor, ...]:
    x = torch.from_numpy(np.array(enc.x))
    inputs = (x,) if enc.cat is None else (x, torch.from_numpy(np.array(enc.cat)))
    if enc.y is None:
        return inputs
    y = torch.from_numpy(np.array(enc.y))
    return (*inputs, y.float() if float_target else y)


class TableSplit:
    """Encoded rows with their targets, evaluated in batches of ``EVAL_ROWS``."""

    def __init__(self, enc: Encoded) -> None:
        self.data = Tensors(*_tensors(enc))
        self.n = len(self.data)

    def batches(self, limit: int | None = None) -> Iterable[Batch]:
        starts = range(0, self.n, EVAL_ROWS)
        if limit is not None:
            starts = starts[:limit]
        return sequential(self.data, [slice(s, s + EVAL_ROWS) for s in starts])


class TableTask(Task):
    """Base of the table tasks: ``target_kind`` says how the target column is read."""

    target_kind: ClassVar[str]  # "number" or "label"

    def __init__(self, recipe: Recipe, preprocessor: Preprocessor | None = None) -> None:
        super().__init__(recipe)
        self.preprocessor_ = preprocessor
        self.loss_name_: str | None = getattr(recipe.train, "loss", None)
        self.class_weights_: torch.Tensor | None = None
        self._loss: LossFn | None = None

    @property
    def data_spec(self) -> TableData:
        assert isinstance(self.recipe.data, TableData)
        return self.recipe.data

    @property
    def preprocessor(self) -> Preprocessor:
        if self.preprocessor_ is None:
            raise RuntimeError("the task is not fitted: call prepare() or from_state()")
        return self.preprocessor_

    def _target_transform(self) -> str:
        return "none"

    def _n_outputs(self) -> int:
        return 1

    def _resolve_loss(self) -> str:
        assert self.loss_name_ is not None
        return self.loss_name_

    # ------------------------------------------------------------------ data

    def prepare(self, cache: Path, console: Console) -> Prepared:
        base = self.parent_.preprocessor if isinstance(self.parent_, TableTask) else None
        data = load_tabular(
            self.data_spec, self.recipe.path, self.target_kind, self._target_transform(), base
        )
        self.preprocessor_ = data.preprocessor
        notes = list(data.notes)
        if data.dropped_text:
            notes.append(
                f"text columns {', '.join(data.dropped_text)} are not used by "
                f"model.arch {self.recipe.model.arch}"
            )
        self.loss_name_ = self._resolve_loss()
        train = self.recipe.train.model_copy(update={"loss": self.loss_name_})
        self.recipe = self.recipe.model_copy(update={"train": train})
        enc = data.encoded["train"]
        assert enc.y is not None and isinstance(train, TableTrain)
        prep = self.preprocessor
        spec = getattr(train, "class_weights", None)
        targets = torch.from_numpy(np.array(enc.y))
        self.class_weights_ = class_weights(spec, prep.n_classes, targets, prep.classes)
        self._loss = None
        n = len(enc.x)
        batch = n if train.batch_size == "full" else int(train.batch_size)
        feed = EpochFeed(Tensors(*_tensors(enc, self.loss_name_ == "bce")), batch, train.seed)
        splits = {k: TableSplit(data.encoded[k]) for k in ("valid", "test") if len(data.frames[k])}
        dims = {
            "n_inputs": int(enc.x.shape[1]),
            "n_outputs": self._n_outputs(),
            "cardinalities": self.preprocessor.cardinalities(),
        }
        self.train_frame_ = data.frames["train"]
        sizes = {k: len(v) for k, v in data.frames.items()}
        digests = {k: digest_values(v.index) for k, v in data.frames.items()}
        return Prepared(feed, dict(splits), dims, sizes, "rows", notes, digests)

    def data_files(self) -> list[Path]:
        split = self.data_spec.split
        if split.train is None:
            return [self.recipe.path(self.data_spec.source)]
        names = (split.train, split.valid, split.test)
        return [self.recipe.path(str(n)) for n in names if isinstance(n, str)]

    def read_splits(self) -> dict[str, pd.DataFrame]:
        return read_splits(self.data_spec, self.recipe.path, self.target_kind == "label")

    def read_file(self, path: Path) -> pd.DataFrame:
        return read_table(path)

    def encode(self, frame: pd.DataFrame, with_target: bool) -> Encoded:
        if not isinstance(frame, pd.DataFrame):
            raise DataError(f"expected a pandas DataFrame, got {type(frame).__name__}")
        prep = self.preprocessor
        check_columns(frame, prep.features, "features the model was trained on", "the data")
        if with_target:
            check_target(frame, prep.target, "any", "the data")
        if len(frame) == 0:
            raise DataError("the data has no rows")
        return prep.transform(frame, with_target=with_target)

    def eval_split(self, raw: pd.DataFrame) -> TableSplit:
        return TableSplit(self.encode(raw, with_target=True))

    # ------------------------------------------------------------------ state

    def state(self) -> dict[str, Any]:
        weights = self.class_weights_
        return {
            "preprocess.json": {
                **self.preprocessor.to_dict(),
                "loss": self._resolve_loss(),
                "class_weights": None if weights is None else weights.tolist(),
            }
        }

    @classmethod
    def from_state(cls, recipe: Recipe, folder: Path) -> TableTask:
        from tensorsmith.tasks.files import read_json_file

        state = read_json_file(folder / "preprocess.json")
        try:
            prep = Preprocessor.from_dict(state)
            task = cls(recipe, prep)
            task.loss_name_ = str(state["loss"])
            weights = state["class_weights"]
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise StoreError(
                f"{folder / 'preprocess.json'} is damaged ({type(exc).__name__}: {exc}); "
                "train the model again"
            ) from None
        task.class_weights_ = None if weights is None else torch.tensor(weights)
        return task

    # ------------------------------------------------------------------ training and evaluation

    def _loss_fn(self) -> LossFn:
        if self._loss is None:
            self._loss = build_loss(self._resolve_loss(), self.class_weights_)
        return self._loss

    def loss(self) -> LossOf:
        fn = self._loss_fn()
        return lambda module, batch: fn(module(*batch[:-1]), batch[-1])

    def batch_outputs(self, module: nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
        scores = module(*batch[:-1])
        y = batch[-1]
        n = torch.tensor(y.shape[0])
        loss = self._loss_fn()(scores, y) * n
        return {"loss_sum": loss, "count": n, "scores": scores, "y": y}

    def predict(self, module: nn.Module, records: pd.DataFrame) -> pd.DataFrame:
        """Decoded predictions; ``attrs["notes"]`` says which input values preprocessing could
        not take as given (text in a number column, values far outside the training range …)."""
        enc = self.encode(records, with_target=False)
        out = self._decode(self._scores(module, enc), records.index)
        out.attrs["notes"] = describe_issues(enc.issues)
        return out

    def _decode(self, scores: np.ndarray, index: pd.Index) -> pd.DataFrame:
        raise NotImplementedError

    def input_schema(self) -> dict[str, Any]:
        """The features with their types; numbers with their training range, categories with
        their values; ``example`` is the value preprocessing fills in for a missing one."""
        keep = ("name", "type", "categories", "min", "max")
        features = [
            {**{k: c[k] for k in keep if k in c}, "example": c.get("fill")}
            for c in self.preprocessor.columns_
        ]
        return {"kind": "table", "features": features}

    def prepare_request(self, records: pd.DataFrame) -> pd.DataFrame:
        """The request's columns checked on their own; the fitted preprocessing runs once per
        batch in ``predict_prepared`` (pandas takes about as long for 1 row as for 32)."""
        if not isinstance(records, pd.DataFrame) or len(records) == 0:
            raise DataError("the request has no rows")
        check_columns(records, self.preprocessor.features, "features the model was trained on",
                      "the request")  # fmt: skip
        return records

    def predict_prepared(self, module: nn.Module, parts: list[pd.DataFrame]) -> list[pd.DataFrame]:
        """Every request's rows preprocessed together and run in one forward pass, decoded back
        per request. Should the batch's preprocessing fail or say something about its values,
        each request runs alone: the failure, or the note, stays with its own request."""
        if len(parts) == 1:
            return [self.predict(module, parts[0])]
        joined = pd.concat(parts, ignore_index=True)
        try:
            enc = self.encode(joined, with_target=False)
        except DataError:
            enc = None
        if enc is None or enc.issues:
            return [self.predict(module, part) for part in parts]
        scores = self._scores(module, enc)
        out, start = [], 0
        for part in parts:
            frame = self._decode(scores[start : start + len(part)], part.index)
            frame.attrs["notes"] = []
            out.append(frame)
            start += len(part)
        return out

    def _scores(self, module: nn.Module, enc: Encoded) -> np.ndarray:
        out = []
        with torch.no_grad():
            for batch in TableSplit(enc).batches():
                out.append(module(*batch).float())
        return torch.cat(out).numpy()

    def card_lines(self, run: dict[str, Any]) -> list[str]:
        rows = ", ".join(f"{k} {v:,}" for k, v in run.get("rows", {}).items())
        return [
            f"- data: {Path(self.data_spec.source).name}, target `{self.data_spec.target}`; "
            f"rows {rows}",
            f"- features: {', '.join(self.preprocessor.features)}",
        ]
