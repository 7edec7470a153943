"""What text classification and text regression share: a table with a text column, a tokenizer
trained on the train split, padded token ids, length-bucketed batches.

The table is read (bytes that are not UTF-8 replaced and named, empty texts left out and named)
and split like a table (stratified, grouped, or named groups such as plays). The tokenizer
(``char``, ``bpe`` or ``wordpiece``) is trained on the train texts only and saved as
``tokenizer.json`` with its truncation and padding to ``data.max_length``. A fine-tune reads as
its parent: a stored model's tokenizer, or a Hugging Face checkpoint's own ``tokenizer.json``
(``from_checkpoint``: BERT's WordPiece, ``[CLS]`` … ``[SEP]`` padded with ``[PAD]``), stored in
the version so that it predicts offline. Batches hold texts of similar length, cut to the
longest one, with a mask True on real tokens: the transformer reads it as a padding mask, the
RNN as lengths of packed sequences, a Hugging Face encoder as its ``attention_mask``.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from rich.console import Console
from torch import nn

from tensorsmith.data.loading import BucketSampler, EpochFeed, Padded, sequential
from tensorsmith.data.tabular import check_target, split_frame
from tensorsmith.data.text import DataWarning
from tensorsmith.data.text_table import clean_texts, read_text_table
from tensorsmith.data.tokenizer import TextTokenizer
from tensorsmith.errors import DataError, RecipeError
from tensorsmith.recipe import Recipe, TextData
from tensorsmith.tasks.base import Prepared
from tensorsmith.tasks.files import read_json_file
from tensorsmith.tasks.sequence_classification import EVAL_SEQUENCES, PaddedSplit
from tensorsmith.tasks.supervised import SupervisedTask

__all__ = ["TextSplit", "TextTask"]


class TextSplit(PaddedSplit):
    """Encoded texts with targets; ``texts`` keeps the raw texts for baselines and the card."""

    def __init__(
        self, data: Padded, texts: list[str], targets: list[Any], groups: list[str] | None
    ) -> None:
        super().__init__(data)
        self.texts, self.targets, self.groups = texts, targets, groups


class TextTask(SupervisedTask):
    """Base of the text tasks: ``target_kind`` says whether the target is a class or a number."""

    def __init__(
        self, recipe: Recipe, tokenizer: TextTokenizer | None = None, origin: str = "train split"
    ) -> None:
        super().__init__(recipe)
        self.tokenizer_ = tokenizer
        self.origin_ = origin  # where the tokenizer comes from: trained here, or a checkpoint's
        self._notes: list[str] = []

    @property
    def data_spec(self) -> TextData:
        assert isinstance(self.recipe.data, TextData)
        return self.recipe.data

    @property
    def tokenizer(self) -> TextTokenizer:
        if self.tokenizer_ is None:
            raise RuntimeError("the task is not fitted: call prepare() or from_state()")
        return self.tokenizer_

    # ------------------------------------------------------------------ data

    def _read(self, path: Path) -> pd.DataFrame:
        df, notes = read_text_table(path)
        kept, more = clean_texts(df, self.data_spec.text_column, path.name)
        self._notes = notes + more
        return kept

    def read_splits(self) -> dict[str, pd.DataFrame]:
        spec = self.data_spec
        path = self.recipe.path(spec.source)
        df = self._read(path)
        check_target(df, spec.target, "any", path.name)
        return split_frame(df, spec.split, spec.target, stratify=self.target_kind == "label")

    def read_file(self, path: Path) -> pd.DataFrame:
        return self._read(path)

    def read_inputs(self, path: Path) -> pd.DataFrame:
        df, notes = read_text_table(path)
        for note in notes:
            warnings.warn(note, DataWarning, stacklevel=2)
        return df

    def _encode(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
        ids, lengths, truncated = self.tokenizer.encode_padded(texts)
        return torch.from_numpy(ids), torch.from_numpy(lengths), truncated

    def _split(self, frame: pd.DataFrame, file: str) -> TextSplit:
        spec = self.data_spec
        texts = frame[spec.text_column].astype(str).tolist()
        ids, lengths, _ = self._encode(texts)
        y = torch.from_numpy(self.encode_target(frame[spec.target], file))
        group = spec.split.group
        groups = frame[group].astype(str).tolist() if group and group in frame.columns else None
        return TextSplit(Padded(ids, lengths, y), texts, frame[spec.target].tolist(), groups)

    def prepare(self, cache: Path, console: Console) -> Prepared:
        spec, file = self.data_spec, Path(self.data_spec.source).name
        frames = self.read_splits()
        notes = list(self._notes)
        train = frames["train"]
        texts = train[spec.text_column].tolist()
        tok = spec.tokenizer
        if isinstance(self.parent_, TextTask):  # a fine-tune reads as its parent
            self.tokenizer_ = self.parent_.tokenizer.with_max_length(spec.max_length)
            notes.append(f"tokenizer: the parent's ({self.parent_.origin_}); data.tokenizer unused")
            self.origin_ = self.parent_.origin_
        else:
            self.tokenizer_ = TextTokenizer.for_sequences(
                tok.kind, texts, tok.vocab_size, spec.max_length, tok.lowercase
            )
        y = torch.from_numpy(self.fit_target(train[spec.target], file))
        ids, lengths, truncated = self._encode(texts)
        data = Padded(ids, lengths, y)
        tspec = self.recipe.train
        batch = len(data) if tspec.batch_size == "full" else int(tspec.batch_size)
        feed = EpochFeed(data, batch, tspec.seed, sampler=BucketSampler(lengths, batch, tspec.seed))
        splits = {k: self._split(f, file) for k, f in frames.items() if k != "train" and len(f)}
        dims = {
            "vocab_size": self.tokenizer.vocab_size,
            "n_outputs": self.n_outputs(),
            "max_length": spec.max_length,
        }
        notes.append(
            f"vocabulary {self.tokenizer.vocab_size} ({self.tokenizer.kind}); train texts average "
            f"{float(lengths.float().mean()):.0f} tokens, {int(truncated.sum()):,} of "
            f"{len(texts):,} truncated to data.max_length = {spec.max_length}"
        )
        sizes = {k: len(f) for k, f in frames.items()}
        self.train_frame_ = train
        return Prepared(feed, dict(splits), dims, sizes, "texts", notes)

    def eval_split(self, raw: pd.DataFrame) -> TextSplit:
        if not isinstance(raw, pd.DataFrame):
            raise DataError(f"expected a pandas DataFrame, got {type(raw).__name__}")
        kept, notes = clean_texts(raw, self.data_spec.text_column, "the data")
        for note in notes:
            warnings.warn(note, DataWarning, stacklevel=2)
        return self._split(kept, "the data")

    # ------------------------------------------------------------------ state

    @classmethod
    def from_checkpoint(cls, recipe: Recipe, folder: Path) -> TextTask:
        """A task fitted by a Hugging Face checkpoint: its own ``tokenizer.json`` (its
        vocabulary, lower-casing and special tokens), truncating and padding to
        ``data.max_length``, which the encoder's positions must cover."""
        assert isinstance(recipe.data, TextData)
        max_length = recipe.data.max_length
        config = getattr(recipe.model, "config", None) or {}
        positions = config.get("max_position_embeddings")
        if positions is not None and max_length > int(positions):
            raise RecipeError(
                f"data.max_length = {max_length} is longer than the checkpoint's "
                f"max_position_embeddings = {positions} (its config.json); set data.max_length "
                f"to at most {positions}"
            )
        tokenizer = TextTokenizer.from_checkpoint(folder / "tokenizer.json", max_length)
        return cls(recipe, tokenizer, f"checkpoint {folder.name}")

    def state(self) -> dict[str, Any]:
        return {
            "tokenizer.json": self.tokenizer.to_json(),
            "preprocess.json": {
                "tokenizer": "tokenizer.json",
                "kind": self.tokenizer.kind,
                "origin": self.origin_,
                "vocab_size": self.tokenizer.vocab_size,
                "max_length": self.data_spec.max_length,
                **self.target_state(),
            },
        }

    @classmethod
    def from_state(cls, recipe: Recipe, folder: Path) -> TextTask:
        state = read_json_file(folder / "preprocess.json")
        tokenizer = TextTokenizer.load(folder / "tokenizer.json", documents=False)
        task = cls(recipe, tokenizer, str(state.get("origin", "train split")))
        task.load_target_state(state, str(folder / "preprocess.json"))
        return task

    def card_lines(self, run: dict[str, Any]) -> list[str]:
        spec = self.data_spec
        sizes = ", ".join(f"{k} {v:,}" for k, v in run.get("texts", {}).items())
        groups = ""
        if isinstance(spec.split.test, list):
            groups = f"; test {spec.split.group}: {', '.join(spec.split.test)}"
        return [
            f"- data: {Path(spec.source).name}, text `{spec.text_column}`, target "
            f"`{spec.target}`; texts {sizes}{groups}",
            f"- tokenizer: {self.tokenizer.kind} ({self.origin_}), vocabulary "
            f"{self.tokenizer.vocab_size}, max_length {spec.max_length} tokens",
        ]

    # ------------------------------------------------------------------ inference

    def _encoded(self, records: pd.DataFrame) -> tuple[torch.Tensor, torch.Tensor, str | None]:
        """Token ids and lengths of the records' texts, and what truncation there was."""
        column = self.data_spec.text_column
        if not isinstance(records, pd.DataFrame) or column not in records.columns:
            raise DataError(
                f"texts to predict come as a table with the column '{column}' (data.text_column)"
            )
        texts = records[column].fillna("").astype(str).tolist()
        ids, lengths, truncated = self._encode(texts)
        note = None
        if truncated.any():
            rows = ", ".join(str(i + 1) for i in np.flatnonzero(truncated)[:10])
            note = (
                f"{int(truncated.sum())} texts are longer than data.max_length = "
                f"{self.data_spec.max_length} tokens and were truncated to it (rows {rows}); "
                "the model reads only their first tokens"
            )
        return ids, lengths, note

    def _padded_scores(self, module: nn.Module, ids: torch.Tensor, lengths: torch.Tensor) -> Any:
        data = Padded(ids, lengths)
        chunks = [slice(s, s + EVAL_SEQUENCES) for s in range(0, len(data), EVAL_SEQUENCES)]
        return self.scores(module, sequential(data, chunks))

    def _text_scores(self, module: nn.Module, records: pd.DataFrame) -> np.ndarray:
        ids, lengths, note = self._encoded(records)
        if note:
            warnings.warn(note, DataWarning, stacklevel=3)
        return np.asarray(self._padded_scores(module, ids, lengths))

    def predict_proba(self, module: nn.Module, records: pd.DataFrame) -> np.ndarray:
        from tensorsmith.tasks.classification import probabilities

        return probabilities(self._text_scores(module, records))

    def predict(self, module: nn.Module, records: pd.DataFrame) -> pd.DataFrame:
        return self.predictions(self._text_scores(module, records), records.index)

    def input_schema(self) -> dict[str, Any]:
        spec = self.data_spec
        return {"kind": "text", "column": spec.text_column, "max_length": spec.max_length}

    def prepare_request(self, records: pd.DataFrame) -> tuple[pd.Index, torch.Tensor, Any]:
        """Each request's texts tokenized on their own; what was truncated is its own note."""
        ids, lengths, note = self._encoded(records)
        return records.index, ids, (lengths, [note] if note else [])

    def predict_prepared(self, module: nn.Module, parts: list[Any]) -> list[pd.DataFrame]:
        """Every request's texts in one padded batch (ids come padded to max_length)."""
        ids = torch.cat([ids for _, ids, _ in parts])
        lengths = torch.cat([extra[0] for _, _, extra in parts])
        scores = self._padded_scores(module, ids, lengths)
        out, start = [], 0
        for index, _, (_, notes) in parts:
            frame = self.predictions(scores[start : start + len(index)], index)
            frame.attrs["notes"] = notes
            out.append(frame)
            start += len(index)
        return out

    # ------------------------------------------------------------------ init
