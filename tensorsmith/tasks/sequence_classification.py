"""``task: sequence-classification``: a label for each sequence of rows (one row per step).

Rows are grouped by ``data.id`` into sequences (steps in ``data.time`` order), each sequence
has one label, the sequences — not the rows — are split (stratified by label), values are scaled
with statistics of the train steps, and sequences are padded to the longest one in their batch
(length-bucketed batches) with their lengths passed to the model as a mask.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from rich.console import Console
from torch import nn

from tensorsmith.data.loading import BucketSampler, EpochFeed, Padded, sequential
from tensorsmith.data.series import Sequences, group_sequences, pad_sequences
from tensorsmith.data.tables import read_table
from tensorsmith.data.targets import Scaler
from tensorsmith.errors import DataError
from tensorsmith.recipe import LabelledSequenceData, Recipe, SequenceClassificationRecipe
from tensorsmith.tasks.base import Batch, Prepared
from tensorsmith.tasks.files import damaged, read_json_file
from tensorsmith.tasks.supervised import SupervisedTask

__all__ = ["PaddedSplit", "SequenceClassificationTask"]

EVAL_SEQUENCES = 256


class PaddedSplit:
    """Padded sequences (or texts) with targets, evaluated in order, each batch cut to its
    longest member."""

    def __init__(self, data: Padded) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def batches(self, limit: int | None = None) -> Iterable[Batch]:
        starts = range(0, len(self.data), EVAL_SEQUENCES)
        if limit is not None:
            starts = starts[:limit]
        return sequential(self.data, [slice(s, s + EVAL_SEQUENCES) for s in starts])


class SequenceClassificationTask(SupervisedTask):
    name = "sequence-classification"
    target_kind = "label"
    metric_names = SequenceClassificationRecipe.metric_names
    key_metric = SequenceClassificationRecipe.key_metric
    losses = SequenceClassificationRecipe.losses

    def __init__(self, recipe: Recipe) -> None:
        super().__init__(recipe)
        self.columns_: list[str] = []
        self.scaler_: Scaler | None = None
        self.max_length_ = 0

    @property
    def data_spec(self) -> LabelledSequenceData:
        assert isinstance(self.recipe.data, LabelledSequenceData)
        return self.recipe.data

    @property
    def scaler(self) -> Scaler:
        if self.scaler_ is None:
            raise RuntimeError("the task is not fitted: call prepare() or from_state()")
        return self.scaler_

    # ------------------------------------------------------------------ data

    def _group(self, df: pd.DataFrame, file: str, labelled: bool = True) -> Sequences:
        spec = self.data_spec
        target = spec.target if labelled else None
        return group_sequences(df, spec.id, spec.time, target, self.columns_ or spec.features, file)

    def read_splits(self) -> dict[str, pd.DataFrame]:
        from sklearn.model_selection import train_test_split

        spec = self.data_spec
        path = self.recipe.path(spec.source)
        df = read_table(path)
        seqs = self._group(df, path.name)
        ids, labels = np.array(seqs.ids), np.array(seqs.labels)
        stratify = labels if pd.Series(labels).value_counts().min() >= 2 else None
        split = spec.split
        parts: dict[str, np.ndarray] = {}
        rest, rest_labels = ids, labels
        for name, fraction, seed in (
            ("test", split.test, split.seed),
            ("valid", split.valid, split.seed + 1),
        ):
            share = fraction * len(ids) / max(len(rest), 1)
            if share <= 0 or len(rest) < 2:
                parts[name] = rest[:0]
                continue
            strat = (
                rest_labels
                if stratify is not None and pd.Series(rest_labels).value_counts().min() >= 2
                else None
            )
            rest, parts[name], rest_labels, _ = train_test_split(
                rest, rest_labels, test_size=share, random_state=seed, stratify=strat
            )
        parts["train"] = rest
        key = df[spec.id].astype(str)
        return {name: df[key.isin(set(parts[name]))] for name in ("train", "valid", "test")}

    def read_file(self, path: Path) -> pd.DataFrame:
        return read_table(path)

    def _padded(self, seqs: Sequences, file: str) -> Padded:
        x, lengths = pad_sequences([self.scaler.transform(s) for s in seqs.steps], self.max_length_)
        y = self.encode_target(pd.Series(seqs.labels), file)
        return Padded(torch.from_numpy(x), torch.from_numpy(lengths), torch.from_numpy(y))

    def prepare(self, cache: Path, console: Console) -> Prepared:
        spec, file = self.data_spec, Path(self.data_spec.source).name
        frames = self.read_splits()
        train = self._group(frames["train"], file)
        self.columns_ = train.columns
        self.scaler_ = Scaler(spec.scale).fit(np.concatenate(train.steps))
        longest = max(len(s) for s in train.steps)
        self.max_length_ = spec.max_length or longest
        y = self.fit_target(pd.Series(train.labels), file)
        x, lengths = pad_sequences(
            [self.scaler.transform(s) for s in train.steps], self.max_length_
        )
        data = Padded(torch.from_numpy(x), torch.from_numpy(lengths), torch.from_numpy(y))
        tspec = self.recipe.train
        batch = len(data) if tspec.batch_size == "full" else int(tspec.batch_size)
        sampler = BucketSampler(data.lengths, batch, tspec.seed)
        feed = EpochFeed(data, batch, tspec.seed, sampler=sampler)
        splits = {
            k: PaddedSplit(self._padded(self._group(f, file), file))
            for k, f in frames.items()
            if k != "train" and len(f)
        }
        dims = {
            "n_features": len(self.columns_),
            "n_outputs": self.n_outputs(),
            "max_length": self.max_length_,
        }
        sizes = {"train": len(data), **{k: len(v) for k, v in splits.items()}}
        notes = [f"{len(data)} train sequences of at most {longest} steps of {self.columns_}"]
        cut = int((np.array([len(s) for s in train.steps]) > self.max_length_).sum())
        if cut:
            notes.append(
                f"{cut} train sequences are longer than data.max_length = {self.max_length_}: "
                "they keep their last steps"
            )
        return Prepared(feed, dict(splits), dims, sizes, "sequences", notes)

    def eval_split(self, raw: pd.DataFrame) -> PaddedSplit:
        return PaddedSplit(self._padded(self._group(raw, "the data"), "the data"))

    # ------------------------------------------------------------------ state

    def state(self) -> dict[str, Any]:
        return {
            "preprocess.json": {
                "columns": self.columns_,
                "max_length": self.max_length_,
                "scaler": self.scaler.to_dict(),
                **self.target_state(),
            }
        }

    @classmethod
    def from_state(cls, recipe: Recipe, folder: Path) -> SequenceClassificationTask:
        state = read_json_file(folder / "preprocess.json")
        task = cls(recipe)
        task.load_target_state(state, str(folder / "preprocess.json"))
        try:
            task.columns_ = [str(c) for c in state["columns"]]
            task.max_length_ = int(state["max_length"])
            task.scaler_ = Scaler.from_dict(state["scaler"])
        except (KeyError, TypeError, ValueError) as exc:
            raise damaged(folder / "preprocess.json", f"is damaged ({exc})") from None
        return task

    def card_lines(self, run: dict[str, Any]) -> list[str]:
        sizes = ", ".join(f"{k} {v:,}" for k, v in run.get("sequences", {}).items())
        return [
            f"- data: {Path(self.data_spec.source).name}, sequences by `{self.data_spec.id}`, "
            f"label `{self.data_spec.target}`; sequences {sizes}",
            f"- values per step: {', '.join(self.columns_)}; at most {self.max_length_} steps",
        ]

    # ------------------------------------------------------------------ inference

    def input_schema(self) -> dict[str, Any]:
        """Rows of one or more sequences, each row naming its sequence in the id column."""
        spec = self.data_spec
        columns = [spec.id, *([spec.time] if spec.time else []), *self.columns_]
        return {"kind": "windows", "columns": columns, "id": spec.id}

    def _scores_of(self, module: nn.Module, records: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
        if not isinstance(records, pd.DataFrame):
            raise DataError(f"expected a pandas DataFrame, got {type(records).__name__}")
        seqs = self._group(records, "the data", labelled=False)
        x, lengths = pad_sequences([self.scaler.transform(s) for s in seqs.steps], self.max_length_)
        data = Padded(torch.from_numpy(x), torch.from_numpy(lengths))
        chunks = [slice(s, s + EVAL_SEQUENCES) for s in range(0, len(data), EVAL_SEQUENCES)]
        return self.scores(module, sequential(data, chunks)), seqs.ids

    def predict_proba(self, module: nn.Module, records: pd.DataFrame) -> np.ndarray:
        from tensorsmith.tasks.classification import probabilities

        return probabilities(self._scores_of(module, records)[0])

    def predict(self, module: nn.Module, records: pd.DataFrame) -> pd.DataFrame:
        """One row per sequence (indexed by its id): the label and class probabilities."""
        scores, ids = self._scores_of(module, records)
        out = self.predictions(scores, pd.Index(ids, name=self.data_spec.id))
        return out

    def prediction_table(self, records: Any, predictions: pd.DataFrame) -> pd.DataFrame:
        return predictions.reset_index()
