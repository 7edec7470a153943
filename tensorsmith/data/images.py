"""Image data as tensors: decode the references that ``data/image_files.py`` lists (sources,
references and skipped files are described there), with Pillow, in ``DataLoader`` workers.

Images of other sizes and modes are resized and converted. :class:`ImageDataset` decodes a
batch at a time (``__getitems__``), in ``DataLoader`` workers when the feed has them, normalises
with the train split's per-channel mean and std, and augments training batches
(``data/augment.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from tensorsmith.data.augment import Augment, augment
from tensorsmith.data.image_files import (
    IMAGE_SUFFIXES,
    ImageList,
    array_of,
    common_shape,
    list_images,
    listing,
    probe,
    short,
    skip_unreadable,
)
from tensorsmith.data.loading import sequential

__all__ = [
    "IMAGE_SUFFIXES",
    "ImageDataset",
    "ImageList",
    "ImageStats",
    "common_shape",
    "image_stats",
    "list_images",
    "listing",
    "load_image",
    "probe",
    "short",
    "skip_unreadable",
]


def _fromarray_of(arr: np.ndarray, size: tuple[int, int], channels: int) -> torch.Tensor:
    x = torch.from_numpy(np.asarray(arr)).float()
    if np.issubdtype(arr.dtype, np.integer):
        x = x / 255.0
    x = x[None] if x.dim() == 2 else x.permute(2, 0, 1)  # (C, H, W)
    if x.shape[0] == 4:
        x = x[:3]  # drop alpha
    if channels == 1 and x.shape[0] == 3:
        x = (x * torch.tensor([0.299, 0.587, 0.114])[:, None, None]).sum(0, keepdim=True)
    elif channels == 3 and x.shape[0] == 1:
        x = x.expand(3, -1, -1)
    if tuple(x.shape[1:]) != size:
        x = F.interpolate(x[None], size=size, mode="bilinear", antialias=True)[0]
    return x.contiguous()


def load_image(ref: str, size: tuple[int, int], channels: int) -> torch.Tensor:
    """One image as (C, H, W) float32 in [0, 1], converted to ``channels`` and resized."""
    from PIL import Image

    arr = array_of(ref)
    if arr is not None:
        return _fromarray_of(arr, size, channels)
    with Image.open(ref) as img:
        converted = img.convert("L" if channels == 1 else "RGB")
    if converted.size != (size[1], size[0]):
        converted = converted.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    pixels = np.asarray(converted, dtype=np.uint8)
    x = torch.from_numpy(pixels.copy()).float() / 255.0
    return x[None] if channels == 1 else x.permute(2, 0, 1).contiguous()


class ImageDataset(Dataset[tuple[torch.Tensor, ...]]):
    """Images by reference, decoded a batch at a time: ``(x, y)`` or ``(x,)`` without labels.

    ``x`` is (B, C, H, W), normalised by ``mean``/``std`` per channel. A batch index that comes
    as ``(epoch, index)`` (a training feed) is augmented with draws seeded by (seed, epoch, i).
    """

    def __init__(
        self,
        refs: Sequence[str],
        labels: np.ndarray | None,
        size: tuple[int, int],
        channels: int,
        mean: Sequence[float],
        std: Sequence[float],
        spec: Augment | None = None,
        seed: int = 0,
    ) -> None:
        self.refs = list(refs)
        self.labels = None if labels is None else torch.from_numpy(np.asarray(labels))
        self.size, self.channels = size, channels
        self.mean = torch.tensor(mean, dtype=torch.float32)[:, None, None]  # (C, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32)[:, None, None]
        self.spec, self.seed = spec or Augment(), seed

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        return tuple(t[0] for t in self.__getitems__([index]))

    def __getitems__(self, batch: Any) -> tuple[torch.Tensor, ...]:
        epoch, index = batch if isinstance(batch, tuple) else (None, batch)
        ids = _ids(index, len(self.refs))
        x = torch.stack([load_image(self.refs[i], self.size, self.channels) for i in ids])
        x = (x - self.mean) / self.std  # (B, C, H, W)
        if epoch is not None:
            x = augment(x, self.spec, self.seed, epoch, ids)
        if self.labels is None:
            return (x,)
        return x, self.labels[ids]


def _ids(index: Any, n: int) -> list[int]:
    if isinstance(index, slice):
        return list(range(n))[index]
    return [int(i) for i in (index.tolist() if hasattr(index, "tolist") else index)]


# ----------------------------------------------------------------------------- statistics


class _Check(Dataset[tuple[torch.Tensor, ...]]):
    """Decode each image once: (ok, per-channel sum, per-channel sum of squares)."""

    def __init__(self, refs: Sequence[str], size: tuple[int, int], channels: int) -> None:
        self.refs, self.size, self.channels = list(refs), size, channels

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        return tuple(t[0] for t in self.__getitems__([index]))

    def __getitems__(self, index: Any) -> tuple[torch.Tensor, ...]:
        ok, sums, squares = [], [], []
        for i in _ids(index, len(self.refs)):
            try:
                x = load_image(self.refs[i], self.size, self.channels).double()
            except Exception:  # a damaged file: Pillow raises many kinds of errors
                ok.append(False)
                sums.append(torch.zeros(self.channels, dtype=torch.float64))
                squares.append(torch.zeros(self.channels, dtype=torch.float64))
                continue
            ok.append(True)
            sums.append(x.sum(dim=(1, 2)))
            squares.append((x * x).sum(dim=(1, 2)))
        return torch.tensor(ok), torch.stack(sums), torch.stack(squares)


@dataclass
class ImageStats:
    ok: np.ndarray  # (N,) bool: decoded without error
    mean: list[float]  # per channel, over the images marked in ``fit``
    std: list[float]


def image_stats(
    refs: Sequence[str],
    fit: np.ndarray,
    size: tuple[int, int],
    channels: int,
    workers: int,
) -> ImageStats:
    """Decode every image once (in ``workers`` processes); mean and std of the ``fit`` ones."""
    data = _Check(refs, size, channels)
    chunks = [slice(s, s + 256) for s in range(0, len(data), 256)]
    parts = list(sequential(data, chunks, workers))
    ok = torch.cat([p[0] for p in parts]).numpy()
    sums, squares = torch.cat([p[1] for p in parts]), torch.cat([p[2] for p in parts])
    use = torch.from_numpy(ok & fit)
    pixels = float(use.sum()) * size[0] * size[1]
    if pixels == 0:
        return ImageStats(ok, [0.0] * channels, [1.0] * channels)
    mean = sums[use].sum(0) / pixels
    var = (squares[use].sum(0) / pixels - mean * mean).clamp(min=0.0)
    std = torch.where(var.sqrt() > 1e-6, var.sqrt(), torch.ones_like(var))
    return ImageStats(ok, mean.tolist(), std.tolist())
