"""``task: image-classification``: images from a folder, a CSV of paths or an ``.npz``; a label.

Images are listed and checked when the data is prepared (files that are not images, or that
Pillow cannot decode, are skipped and named), decoded a batch at a time in ``DataLoader``
workers, resized to ``data.image.size``, converted to grayscale or RGB, normalised with the
train split's per-channel mean and std (``preprocess.json``) and augmented in training only.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console
from torch import nn

from tensorsmith.data.augment import Augment
from tensorsmith.data.image_files import image_files
from tensorsmith.data.images import (
    ImageDataset,
    common_shape,
    image_stats,
    list_images,
    listing,
    load_image,
    probe,
    short,
    skip_unreadable,
)
from tensorsmith.data.loading import EpochFeed, EpochSampler, sequential
from tensorsmith.data.tabular import split_frame
from tensorsmith.data.text import DataWarning
from tensorsmith.errors import DataError
from tensorsmith.recipe import ImageClassificationRecipe, ImageData, Recipe
from tensorsmith.tasks.base import Batch, Outputs, Prepared
from tensorsmith.tasks.files import read_json_file
from tensorsmith.tasks.supervised import SupervisedTask

__all__ = ["ImageClassificationTask", "ImageSplit"]

EVAL_IMAGES = 256  # images per evaluation batch
GRID = 36  # images in the plot of test predictions


class ImageSplit:
    """Labelled images of one split, evaluated in order in batches of ``EVAL_IMAGES``."""

    def __init__(self, data: ImageDataset, workers: int) -> None:
        self.data, self.workers = data, workers

    def __len__(self) -> int:
        return len(self.data)

    def batches(self, limit: int | None = None) -> Iterable[Batch]:
        starts = range(0, len(self.data), EVAL_IMAGES)
        if limit is not None:
            starts = starts[:limit]
        return sequential(self.data, [slice(s, s + EVAL_IMAGES) for s in starts], self.workers)


class ImageClassificationTask(SupervisedTask):
    name = "image-classification"
    target_kind = "label"
    metric_names = ImageClassificationRecipe.metric_names
    key_metric = ImageClassificationRecipe.key_metric
    losses = ImageClassificationRecipe.losses

    def __init__(self, recipe: Recipe) -> None:
        super().__init__(recipe)
        self.size_: tuple[int, int] | None = None
        self.channels_: int = 1
        self.mean_: list[float] = [0.0]
        self.std_: list[float] = [1.0]

    @property
    def data_spec(self) -> ImageData:
        assert isinstance(self.recipe.data, ImageData)
        return self.recipe.data

    @property
    def target_name(self) -> str:
        return "label"

    @property
    def size(self) -> tuple[int, int]:
        if self.size_ is None:
            raise RuntimeError("the task is not fitted: call prepare() or from_state()")
        return self.size_

    def _workers(self, frame: pd.DataFrame) -> int:
        if self.data_spec.workers is not None:
            return self.data_spec.workers
        in_memory = frame["path"].astype(str).str.contains(r"\.npz#\d+$", case=False).all()
        return 0 if in_memory else 1  # decoding files runs beside the training loop

    # ------------------------------------------------------------------ data

    def _list(self, source: str) -> pd.DataFrame:
        spec = self.data_spec
        found = list_images(self.recipe.path(source), spec.path_column, spec.label_column)
        if found.skipped:
            warnings.warn(
                f"skipped {len(found.skipped)} files of {source} that are not images: "
                f"{listing(found.skipped)}",
                DataWarning,
                stacklevel=2,
            )
        return found.frame

    def data_files(self) -> list[Path]:
        spec = self.data_spec
        names = (
            [spec.source]
            if spec.split.train is None
            else [
                n
                for n in (spec.split.train, spec.split.valid, spec.split.test)
                if isinstance(n, str)
            ]
        )
        return [
            f
            for n in names
            for f in image_files(self.recipe.path(n), spec.path_column, spec.label_column)
        ]

    def read_splits(self) -> dict[str, pd.DataFrame]:
        spec = self.data_spec.split
        if spec.train is None:
            return split_frame(self._list(self.data_spec.source), spec, "label", stratify=True)
        out = {}
        for name in ("train", "valid", "test"):
            value = getattr(spec, name)
            out[name] = self._list(str(value)) if isinstance(value, str) else None
        train = out["train"]
        assert train is not None
        return {k: (v if v is not None else train.iloc[:0]) for k, v in out.items()}

    def read_file(self, path: Path) -> pd.DataFrame:
        return list_images(path, self.data_spec.path_column, self.data_spec.label_column).frame

    def read_inputs(self, path: Path) -> pd.DataFrame:
        spec = self.data_spec
        found = list_images(path, spec.path_column, spec.label_column, labelled=False)
        if found.skipped:
            warnings.warn(
                f"skipped files that are not images: {listing(found.skipped)}",
                DataWarning,
                stacklevel=2,
            )
        return found.frame

    def _fit_shape(self, probes: list[Any], every: list[Any]) -> list[str]:
        """Size and channels from the recipe or the train images (``probes``); notes on what
        is resized or converted among ``every`` image of the splits."""
        spec = self.data_spec.image
        common, colour, _ = common_shape(probes)
        sizes = common_shape(every)[2]
        given = spec.size
        self.size_ = (
            common
            if given is None
            else ((given, given) if isinstance(given, int) else (given[0], given[1]))
        )
        self.channels_ = 3 if spec.mode == "rgb" or (spec.mode == "auto" and colour) else 1
        notes = []
        if len(sizes) > 1 or common != self.size_:
            shown = ", ".join(f"{h}×{w} ({n})" for (h, w), n in sizes.most_common(5))
            h, w = self.size_
            notes.append(f"the images come in sizes {shown}; all are resized to {h}×{w}")
        modes = sorted({m for _, _, m in every})
        if len(modes) > 1:
            notes.append(
                f"the images have modes {', '.join(modes)}; all are converted to {self._mode}"
            )
        return notes

    @property
    def _mode(self) -> str:
        return "RGB" if self.channels_ == 3 else "grayscale"

    def prepare(self, cache: Path, console: Console) -> Prepared:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            frames = self.read_splits()
        notes = [str(w.message) for w in caught]
        kept: dict[str, pd.DataFrame] = {}
        probes: dict[str, list[Any]] = {}
        skipped: list[str] = []
        for name, frame in frames.items():
            if len(frame):
                kept[name], probes[name], lost = skip_unreadable(
                    frame, f"the {name} split of {self.data_spec.source}"
                )
                skipped += lost
        notes += self._fit_shape(probes["train"], [p for ps in probes.values() for p in ps])
        workers = self._workers(kept["train"])
        refs = [r for f in kept.values() for r in f["path"]]
        fit = np.concatenate([np.full(len(f), k == "train") for k, f in kept.items()])
        stats = image_stats(refs, fit, self.size, self.channels_, workers)
        self.mean_, self.std_ = stats.mean, stats.std
        start = 0
        for name, frame in list(kept.items()):
            ok = stats.ok[start : start + len(frame)]
            start += len(frame)
            skipped += [f"{short(r)} (Pillow cannot decode it)" for r in frame["path"][~ok]]
            kept[name] = frame[ok]
        if skipped:
            message = f"skipped {len(skipped)} unreadable images: {listing(skipped)}"
            warnings.warn(message, DataWarning, stacklevel=2)
            notes.append(message)
        if not len(kept["train"]):
            raise DataError(
                f"no readable images left in the train split of {self.data_spec.source}; "
                f"skipped: {listing(skipped)}"
            )
        return self._feed(kept, workers, notes)

    def _feed(self, kept: dict[str, pd.DataFrame], workers: int, notes: list[str]) -> Prepared:
        train_frame = kept["train"]
        file = self.data_spec.source
        y = self.fit_target(train_frame["label"], file)
        spec = self.recipe.train
        aug = Augment(**self.data_spec.augment.model_dump())
        data = ImageDataset(
            list(train_frame["path"]),
            y,
            self.size,
            self.channels_,
            self.mean_,
            self.std_,
            aug,
            spec.seed,
        )
        batch = len(data) if spec.batch_size == "full" else int(spec.batch_size)
        sampler = EpochSampler(len(data), batch, spec.seed, tag_epoch=True)
        feed = EpochFeed(data, batch, spec.seed, workers=workers, sampler=sampler)
        splits = {k: self._split(f, workers) for k, f in kept.items() if k != "train" and len(f)}
        dims = {
            "channels": self.channels_,
            "height": self.size[0],
            "width": self.size[1],
            "n_outputs": self.n_outputs(),
        }
        sizes = {k: len(f) for k, f in kept.items()}
        h, w = self.size
        notes.append(f"{len(self.classes.classes_)} classes; images {h}×{w}, {self._mode}")
        return Prepared(feed, dict(splits), dims, sizes, "images", notes)

    def _dataset(self, frame: pd.DataFrame, labels: np.ndarray | None) -> ImageDataset:
        return ImageDataset(
            list(frame["path"]), labels, self.size, self.channels_, self.mean_, self.std_
        )

    def _split(self, frame: pd.DataFrame, workers: int) -> ImageSplit:
        labels = self.encode_target(frame["label"], self.data_spec.source)
        return ImageSplit(self._dataset(frame, labels), workers)

    def eval_split(self, raw: pd.DataFrame) -> ImageSplit:
        if "label" not in raw.columns:
            raise DataError(
                "the images to evaluate need labels: a 'label' column, or a folder with a "
                "sub-folder per class"
            )
        frame, _, skipped = skip_unreadable(raw.reset_index(drop=True), "the data")
        if skipped:
            warnings.warn(
                f"skipped unreadable images: {listing(skipped)}", DataWarning, stacklevel=2
            )
        return self._split(frame, self._workers(frame))

    # ------------------------------------------------------------------ state

    def state(self) -> dict[str, Any]:
        return {
            "preprocess.json": {
                "size": list(self.size),
                "channels": self.channels_,
                "mean": self.mean_,
                "std": self.std_,
                **self.target_state(),
            }
        }

    @classmethod
    def from_state(cls, recipe: Recipe, folder: Path) -> ImageClassificationTask:
        state = read_json_file(folder / "preprocess.json")
        task = cls(recipe)
        task.load_target_state(state, str(folder / "preprocess.json"))
        try:
            task.size_ = (int(state["size"][0]), int(state["size"][1]))
            task.channels_ = int(state["channels"])
            task.mean_ = [float(v) for v in state["mean"]]
            task.std_ = [float(v) for v in state["std"]]
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            from tensorsmith.tasks.files import damaged

            raise damaged(folder / "preprocess.json", f"is damaged ({exc})") from None
        return task

    # ------------------------------------------------------------------ reports

    def plots(self, module: nn.Module, outputs: Outputs) -> dict[str, dict[str, Any]]:
        out = super().plots(module, outputs)
        split = outputs.split
        if (
            isinstance(split, ImageSplit)
            and outputs.y_true is not None
            and outputs.y_pred is not None
        ):
            wrong = np.flatnonzero(outputs.y_true != outputs.y_pred)[: GRID // 2]
            right = np.flatnonzero(outputs.y_true == outputs.y_pred)[: GRID - len(wrong)]
            chosen = np.sort(np.concatenate([wrong, right]))
            images = [
                load_image(split.data.refs[i], self.size, self.channels_).permute(1, 2, 0).numpy()
                for i in chosen
            ]
            out["image_grid"] = {
                "images": images,
                "y_true": outputs.y_true[chosen],
                "y_pred": outputs.y_pred[chosen],
                "labels": self.classes.classes_,
            }
        return out

    def card_lines(self, run: dict[str, Any]) -> list[str]:
        sizes = ", ".join(f"{k} {v:,}" for k, v in run.get("images", {}).items())
        return [
            f"- data: {Path(self.data_spec.source).name} ({sizes} images)",
            f"- input: {self.size[0]}×{self.size[1]} {self._mode}, normalised with the train "
            "mean and std",
            f"- classes: {', '.join(self.classes.classes_)}",
        ]

    def usage(self, ref: str) -> str:
        return f"tensorsmith predict {ref} --data IMAGE_OR_FOLDER_OR_CSV"

    # ------------------------------------------------------------------ inference

    def _inputs(self, records: pd.DataFrame) -> tuple[ImageDataset, np.ndarray]:
        if not isinstance(records, pd.DataFrame) or "path" not in records.columns:
            raise DataError(
                "images to predict come as a table with a 'path' column (image files, or "
                "file.npz#i)"
            )
        probes = [probe(str(r)) for r in records["path"]]
        ok = np.array([not isinstance(p, str) for p in probes], dtype=bool)
        bad = [
            f"{short(str(r))} ({p})"
            for r, p in zip(records["path"], probes, strict=True)
            if isinstance(p, str)
        ]
        if bad:
            warnings.warn(
                f"skipped {len(bad)} unreadable images (their predictions are empty): "
                f"{listing(bad)}",
                DataWarning,
                stacklevel=3,
            )
        other = sorted(
            {(p[0], p[1]) for p in probes if not isinstance(p, str) and (p[0], p[1]) != self.size}
        )
        if other:
            shown = ", ".join(f"{h}×{w}" for h, w in other[:5])
            warnings.warn(
                f"images of size {shown} were resized to {self.size[0]}×{self.size[1]}, the size "
                "the model was trained on",
                DataWarning,
                stacklevel=3,
            )
        return self._dataset(records[ok], None), ok

    def _proba(self, module: nn.Module, records: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        from tensorsmith.tasks.classification import probabilities

        data, ok = self._inputs(records)
        batches = sequential(
            data, [slice(s, s + EVAL_IMAGES) for s in range(0, len(data), EVAL_IMAGES)]
        )
        proba = np.full((len(records), self.classes.n_classes), np.nan)
        if len(data):
            proba[ok] = probabilities(self.scores(module, batches))
        return proba, ok

    def predict_proba(self, module: nn.Module, records: pd.DataFrame) -> np.ndarray:
        return self._proba(module, records)[0]

    def input_schema(self) -> dict[str, Any]:
        return {"kind": "image", "size": list(self.size), "mode": self._mode}

    def predict_prepared(self, module: nn.Module, parts: list[Any]) -> list[pd.DataFrame]:
        return self.predict_together(module, parts)  # images are independent: one batch

    def predict(self, module: nn.Module, records: pd.DataFrame) -> pd.DataFrame:
        proba, ok = self._proba(module, records)
        classes = self.classes.classes_
        out = pd.DataFrame(index=records.index)
        out["label_predicted"] = [
            classes[int(np.argmax(p))] if good else None for p, good in zip(proba, ok, strict=True)
        ]
        for i, c in enumerate(classes):
            out[f"proba_{c}"] = proba[:, i]
        return out

    # ------------------------------------------------------------------ init
