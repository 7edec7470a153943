"""The recipe for ``task: image-classification``: a folder, a CSV of paths or an ``.npz``."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, field_validator

from tensorsmith.recipe.base import DataSpec, Recipe
from tensorsmith.recipe.models import CNNSpec
from tensorsmith.recipe.sections import SplitSpec, Strict
from tensorsmith.recipe.tables import ClassificationRecipe, ClassificationTrain

__all__ = ["AugmentSpec", "ImageClassificationRecipe", "ImageData", "ImageSpec"]


class ImageSpec(Strict):
    """How every image is read: resized to ``size`` and converted to ``mode``."""

    size: int | list[int] | None = None  # [height, width] or one side; default: most common
    mode: Literal["auto", "grayscale", "rgb"] = "auto"  # auto: rgb if any train image has colour

    @field_validator("size")
    @classmethod
    def _size(cls, v: int | list[int] | None) -> int | list[int] | None:
        sides = [v] if isinstance(v, int) else (v or [])
        if isinstance(v, list) and len(v) != 2:
            raise ValueError("data.image.size is one side or [height, width]")
        if any(s < 1 or s > 4096 for s in sides):
            raise ValueError("image sides must be between 1 and 4096 pixels")
        return v


class AugmentSpec(Strict):
    """Training-time augmentation, drawn per (seed, epoch, image): a resumed run sees the same."""

    crop_padding: int = Field(default=0, ge=0)  # pad by this many pixels, crop back at random
    flip: bool = False  # horizontal flip with probability 1/2
    rotation: float = Field(default=0.0, ge=0.0, le=180.0)  # degrees, uniform in ±rotation
    translate: float = Field(default=0.0, ge=0.0, lt=1.0)  # fraction of each side, uniform ±


class ImageData(DataSpec):
    # a folder with one sub-folder per class, a CSV of path,label, or an .npz with x and y
    image: ImageSpec = Field(default_factory=ImageSpec)
    augment: AugmentSpec = Field(default_factory=AugmentSpec)
    split: SplitSpec = Field(default_factory=SplitSpec)  # stratified; or train/valid/test sources
    path_column: str = "path"  # for a CSV source
    label_column: str = "label"  # for a CSV source
    workers: int | None = Field(default=None, ge=0, le=64)  # decoding processes; default 1 (files)


ImageModel = Annotated[CNNSpec, Field(discriminator="arch")]


class ImageClassificationRecipe(Recipe):
    metric_names: ClassVar[tuple[str, ...]] = ClassificationRecipe.metric_names
    key_metric: ClassVar[str] = "accuracy"
    losses: ClassVar[tuple[str, ...]] = ("cross_entropy",)
    defaults: ClassVar[dict[str, Any]] = {
        "train": {"epochs": 20, "batch_size": 64},
        "evaluate": {"metrics": ["accuracy", "f1_macro", "log_loss", "confusion_matrix"]},
    }
    arch_default: ClassVar[str] = "cnn"

    task: Literal["image-classification"]
    data: ImageData
    model: ImageModel
    train: ClassificationTrain = Field(default_factory=ClassificationTrain)
