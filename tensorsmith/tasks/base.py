"""The ``Task`` interface: everything that differs between tasks lives behind it.

A task prepares its data (splits, preprocessing fitted on the train split only, a feed for the
training loop), builds its loss, turns a batch into outputs, names its metrics and plots, encodes
raw inputs and decodes model outputs, and saves its fitted state as JSON. The training loop, the
evaluation path, the store and the server hold a ``Task`` and never ask which one it is.

``__init__`` stores the recipe; ``prepare`` learns (fitted state in attributes ending in ``_``,
scikit-learn's habit); ``from_state`` rebuilds a fitted task from a stored version's files.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
import pandas as pd
import torch
from rich.console import Console
from torch import nn

from tensorsmith.errors import DataError
from tensorsmith.recipe import Recipe

__all__ = ["Batch", "EvalSplit", "LossOf", "Outputs", "Prepared", "Task", "Workload", "batches_of"]

Batch = tuple[torch.Tensor, ...]
LossOf = Callable[[nn.Module, Batch], torch.Tensor]


class EvalSplit(Protocol):
    """An encoded evaluation split: ``batches(limit)`` yields its batches in a fixed order."""

    def batches(self, limit: int | None = None) -> Iterable[Batch]: ...


@dataclass
class Outputs:
    """One split's evaluation, in the units its metrics read (targets decoded, not scaled)."""

    loss: float  # the training loss, averaged over the split
    y_true: np.ndarray | None = None
    y_pred: np.ndarray | None = None
    proba: np.ndarray | None = None  # (N, K) class probabilities
    n_classes: int = 0
    split: Any = None  # the EvalSplit these came from (set by the evaluation path), for plots


@dataclass
class Prepared:
    """What ``Task.prepare`` hands to training and evaluation."""

    train: Any  # data.loading.EpochFeed or StepFeed
    splits: dict[str, EvalSplit]  # the evaluation splits that hold data: "valid", "test"
    dims: dict[str, Any]  # the sizes the data decides, for models.build_model
    sizes: dict[str, int]  # rows or tokens of each split, for run.json and the card
    size_unit: str = "rows"
    notes: list[str] = field(default_factory=list)
    split_digests: dict[str, str] = field(default_factory=dict)  # which rows (or text) each held


@dataclass
class Workload:
    """A training job's size before training, for the planner: what the data decides."""

    dims: dict[str, Any]  # for models.build_model
    train_samples: int  # samples of one epoch (rows, images, texts …), or train tokens
    unit: str  # what a sample is: rows, images, windows, texts, tokens
    feed: Any  # the train feed (its batches are what a training step reads)
    eval_samples: int = 0  # the valid split's samples (an epoch task evaluates all of them)
    notes: list[str] = field(default_factory=list)
    estimated: bool = False  # sizes estimated from bytes, not counted
    prepared: Prepared | None = None  # the data as training prepares it, when it was


def batches_of(feed: Any) -> Iterator[Batch]:
    """A feed's training batches from the first on, epoch after epoch, without end."""
    if feed.unit != "epoch":
        yield from feed.stream(0)
        return
    epoch = 0
    while True:
        yield from feed.batches(epoch)
        epoch += 1


class Task(ABC):
    """Base class; one subclass per ``task:`` value, registered in ``tasks.TASKS``."""

    name: ClassVar[str]
    metric_names: ClassVar[tuple[str, ...]]  # the metrics this task can compute
    key_metric: ClassVar[str]  # the one `tensorsmith models` shows
    losses: ClassVar[tuple[str, ...]] = ()  # the train.loss values that fit
    loop_metrics: ClassVar[tuple[str, ...]] = ()  # measured at every evaluation in training
    verbs: ClassVar[tuple[str, ...]] = ("predict",)  # predict / generate

    def __init__(self, recipe: Recipe) -> None:
        self.recipe = recipe
        self.parent_: Task | None = None

    def inherit(self, parent: Task) -> None:
        """A fine-tune: ``prepare`` reuses the parent's fitted state (its preprocessing, its
        tokenizer) instead of fitting its own, so the parent's weights read the same inputs."""
        if type(parent) is not type(self):
            raise DataError(f"a {self.name} model cannot inherit from a {parent.name} model")
        self.parent_ = parent

    # ------------------------------------------------------------------ data and state

    @abstractmethod
    def prepare(self, cache: Path, console: Console) -> Prepared:
        """Read the recipe's data, split it, fit the preprocessing on train, build the feed."""

    def workload(self, cache: Path, console: Console, tokens: int | None = None) -> Workload:
        """The job's size for the planner. By default the data is prepared as for training
        (tables, images and texts of the sizes a recipe trains on take seconds); a task whose
        data can be large estimates instead (language modelling: tokens from bytes).
        ``tokens`` (a language model's training budget) does not apply here."""
        prepared = self.prepare(cache, console)
        return Workload(
            prepared.dims,
            prepared.sizes.get("train", 0),
            prepared.size_unit,
            prepared.train,
            prepared.sizes.get("valid", 0),
            prepared.notes,
            prepared=prepared,
        )

    @abstractmethod
    def data_files(self) -> list[Path]:
        """The files the recipe's data comes from (for the fingerprint in ``data.json``)."""

    @abstractmethod
    def read_splits(self) -> dict[str, Any]:
        """The raw splits of the recipe's own data: the same rows (or text) as in training."""

    @abstractmethod
    def read_file(self, path: Path) -> Any:
        """Raw data with targets from a file, for ``tensorsmith evaluate --data FILE``."""

    def read_inputs(self, path: Path) -> Any:
        """Raw inputs to predict, for ``tensorsmith predict --data PATH`` (a table by default)."""
        from tensorsmith.data.tables import read_table

        return read_table(path)

    @abstractmethod
    def eval_split(self, raw: Any) -> EvalSplit:
        """Encode raw data (with targets) with the fitted state, for evaluation."""

    @property
    def eval_limit(self) -> int | None:
        """Batches per evaluation inside the training loop (None: the whole split)."""
        return None

    @property
    def labels(self) -> list[str] | None:
        """Class names, for reports (None when the task has no classes)."""
        return None

    @property
    def scores_are_logits(self) -> bool:
        """Whether the model's outputs are logits of a distribution (over classes, or tokens),
        rather than values: a distillation matches logits by KL at a temperature, values by
        squared error. Read on a fitted task (after ``prepare`` or ``from_state``)."""
        return self.labels is not None

    @classmethod
    def from_checkpoint(cls, recipe: Recipe, folder: Path) -> Task:
        """A task fitted by a Hugging Face checkpoint folder (its tokenizer), for a fine-tune."""
        raise DataError(f"task {cls.name} cannot start from a Hugging Face checkpoint")

    @abstractmethod
    def state(self) -> dict[str, Any]:
        """Fitted state as files: name → JSON-able dict, or text (``tokenizer.json``)."""

    @classmethod
    @abstractmethod
    def from_state(cls, recipe: Recipe, folder: Path) -> Task:
        """A fitted task from the files ``state`` wrote into a version folder."""

    # ------------------------------------------------------------------ training and evaluation

    @abstractmethod
    def loss(self) -> LossOf:
        """``loss_of(module, batch)`` for training (after ``prepare``)."""

    @abstractmethod
    def batch_outputs(self, module: nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
        """``loss_sum`` and ``count`` of one batch, plus arrays ``outputs`` reads (concatenated)."""

    @abstractmethod
    def outputs(self, arrays: dict[str, np.ndarray], loss: float) -> Outputs:
        """A split's collected arrays decoded into what the metrics read."""

    def plots(self, module: nn.Module, outputs: Outputs) -> dict[str, dict[str, Any]]:
        """Plot name → its inputs (``evaluation.plots.PLOTS`` draws them)."""
        return {}

    def card_lines(self, run: dict[str, Any]) -> list[str]:
        """Bullet lines for the model card: what the model reads and what it was trained on."""
        return []

    def card_sections(self, module: nn.Module, outputs: Outputs | None, split: str) -> list[str]:
        """Extra sections for the model card (generated samples, per-class scores …);
        ``outputs`` are those of ``split``, the split the card reports (test, else valid)."""
        return []

    def loss_label(self) -> str:
        """What the training loss is, for the learning-curve axis ("MSE on log(price) …")."""
        return "loss"

    def reference_outputs(self, split: EvalSplit, outputs: Outputs) -> dict[str, Outputs]:
        """Simple baselines on the same split, by name (``naive``, ``majority`` …): their
        outputs, which the evaluation path scores with the same metrics as the model's."""
        return {}

    def usage(self, ref: str) -> str:
        """The command that uses a stored version of this task."""
        return f"tensorsmith predict {ref} --data FILE"

    # ------------------------------------------------------------------ inference

    def predict(self, module: nn.Module, records: pd.DataFrame) -> pd.DataFrame:
        """Decoded predictions, one row per input record."""
        raise DataError(self.wrong_verb("predict"))

    def prediction_table(self, records: Any, predictions: pd.DataFrame) -> pd.DataFrame:
        """What ``tensorsmith predict`` writes: the input rows beside their predictions."""
        return pd.concat([records, predictions], axis=1)

    def predict_proba(self, module: nn.Module, records: pd.DataFrame) -> np.ndarray:
        raise DataError(f"predict_proba is for classification models, not task {self.name}")

    def stream(self, module: nn.Module, prompt: str, **options: Any) -> Iterator[str]:
        """Generated text piece by piece."""
        raise DataError(self.wrong_verb("generate"))

    # ------------------------------------------------------------------ serving

    def input_schema(self) -> dict[str, Any]:
        """What one input is, for a server and its page: ``kind`` ("table", "text", "image",
        "windows" or "prompt") and what that kind needs (feature names and types …)."""
        return {"kind": "table", "features": []}

    def prepare_request(self, records: pd.DataFrame) -> Any:
        """One request's records checked (and encoded where the task can) on their own, before
        they join a batch: a bad request fails here, alone. Raises DataError."""
        return records

    def predict_prepared(self, module: nn.Module, parts: list[Any]) -> list[pd.DataFrame]:
        """Predictions for several prepared requests, one frame per request. By default each
        runs alone; tasks whose rows are independent run them in one forward pass."""
        return [self.predict(module, part) for part in parts]

    def predict_together(self, module: nn.Module, parts: list[pd.DataFrame]) -> list[pd.DataFrame]:
        """One ``predict`` over the rows of every part, split back one frame per part."""
        if len(parts) == 1:
            return [self.predict(module, parts[0])]
        joined = pd.concat(parts, ignore_index=True)
        result = self.predict(module, joined)
        out, start = [], 0
        for part in parts:
            piece = result.iloc[start : start + len(part)].copy()
            piece.index = part.index
            out.append(piece)
            start += len(part)
        return out

    def wrong_verb(self, verb: str) -> str:
        right = self.verbs[0]
        return (
            f"{verb} is not for task {self.name}; {self.recipe.name} is a {self.name} model: "
            f"use `tensorsmith {right}`"
        )
