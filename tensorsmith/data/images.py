"""Image data: find the images of a source, check them, decode them with Pillow in workers.

A source is a folder with one sub-folder per class, a table (CSV, …) of ``path,label`` with
paths relative to the table's folder, or an ``.npz`` with arrays ``x`` (N×H×W or N×H×W×C) and
``y``. Every image is named by a *reference*: a file path, or ``file.npz#i`` for the i-th array
of an ``.npz``; a split is a table with a ``path`` and (when labelled) a ``label`` column.

Files that are not images, or that Pillow cannot decode, are skipped and named; images of other
sizes and modes are resized and converted. :class:`ImageDataset` decodes a batch at a time
(``__getitems__``), in ``DataLoader`` workers when the feed has them, normalises with the train
split's per-channel mean and std, and augments training batches (``data/augment.py``).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from tensorsmith.data.augment import Augment, augment
from tensorsmith.data.loading import sequential
from tensorsmith.data.tables import TABLE_FORMATS, check_columns, read_table
from tensorsmith.errors import DataError

__all__ = [
    "IMAGE_SUFFIXES",
    "ImageDataset",
    "ImageList",
    "ImageStats",
    "image_stats",
    "list_images",
    "listing",
    "load_image",
    "probe",
    "short",
    "skip_unreadable",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
GRAY_MODES = {"1", "L", "LA", "I", "I;16", "F"}
_NPZ_REF = re.compile(r"^(.*\.npz)#(\d+)$", re.IGNORECASE)
_ARRAYS: dict[str, np.ndarray] = {}  # the x array of each .npz, loaded once per process


@dataclass
class ImageList:
    """The images of a source: ``frame`` has ``path`` (a reference) and ``label`` columns (and a
    table's other columns); ``skipped`` names what was left out and why."""

    frame: pd.DataFrame
    skipped: list[str] = field(default_factory=list)


def _name(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def _folder(root: Path, labelled: bool) -> ImageList:
    files = sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
    rows: list[tuple[str, str]] = []
    skipped: list[str] = []
    for p in files:
        parts = p.relative_to(root).parts
        if labelled and len(parts) < 2:
            skipped.append(f"{_name(p, root)} (not in a class sub-folder)")
        elif p.suffix.lower() not in IMAGE_SUFFIXES:
            skipped.append(f"{_name(p, root)} (not a PNG, JPEG or BMP file)")
        else:
            rows.append((str(p.resolve()), parts[0] if labelled else ""))
    frame = pd.DataFrame(rows, columns=["path", "label"])
    if labelled and frame["label"].nunique() < 2:
        classes = sorted(frame["label"].unique())
        raise DataError(
            f"the image folder {root} has {len(classes)} class sub-folder"
            f"{'' if len(classes) == 1 else 's'} with images ({', '.join(classes) or 'none'}); "
            "expected one sub-folder per class and at least two classes: add a sub-folder of "
            "images for each class"
        )
    return ImageList(frame if labelled else frame[["path"]], skipped)


def _npz(path: Path, labelled: bool) -> ImageList:
    try:
        with np.load(path, allow_pickle=False) as npz:
            keys = list(npz.files)
            x = npz["x"] if "x" in keys else None
            y = npz["y"] if "y" in keys else None
    except (OSError, ValueError) as exc:
        raise DataError(f"{path.name} is not a readable .npz file: {exc}") from None
    wanted = ["x", "y"] if labelled else ["x"]
    missing = [k for k in wanted if k not in keys]
    if missing:
        raise DataError(
            f"{path.name} has arrays {', '.join(keys) or 'none'}, without {' and '.join(missing)}; "
            "expected x (images, N×H×W or N×H×W×C) and y (one label per image): save them "
            "with numpy.savez(file, x=images, y=labels)"
        )
    assert x is not None
    if x.ndim not in (3, 4) or (x.ndim == 4 and x.shape[3] not in (1, 3, 4)):
        raise DataError(
            f"{path.name}: x has shape {x.shape}; expected N×H×W (grayscale) or N×H×W×C with "
            "C = 1, 3 or 4"
        )
    if y is not None and len(y) != len(x):
        raise DataError(f"{path.name}: x holds {len(x)} images but y {len(y)} labels")
    refs = [f"{path.resolve()}#{i}" for i in range(len(x))]
    frame = pd.DataFrame({"path": refs})
    if labelled and y is not None:
        frame["label"] = [str(v) for v in y.tolist()]
    return ImageList(frame)


def _table(path: Path, path_column: str, label_column: str, labelled: bool) -> ImageList:
    frame = read_table(path)
    wanted = [path_column, label_column] if labelled else [path_column]
    check_columns(frame, wanted, "data.path_column / data.label_column", path.name)
    frame = frame.rename(columns={path_column: "path", label_column: "label"})
    folder = path.resolve().parent
    frame["path"] = [
        str(p) if _NPZ_REF.match(str(p)) or Path(str(p)).is_absolute() else str(folder / str(p))
        for p in frame["path"].astype(str)
    ]
    if labelled:
        frame["label"] = frame["label"].astype(str)
    return ImageList(frame.reset_index(drop=True))


def list_images(
    source: Path, path_column: str = "path", label_column: str = "label", labelled: bool = True
) -> ImageList:
    """The images a source names (a folder, a table of paths, an ``.npz``, or one image)."""
    if not source.exists():
        raise DataError(
            f"image source {source} does not exist; expected a folder with one sub-folder per "
            "class, a CSV of path,label or an .npz; check data.source (or --data)"
        )
    suffix = source.suffix.lower()
    if source.is_dir():
        found = _folder(source, labelled)
    elif suffix == ".npz":
        found = _npz(source, labelled)
    elif suffix in TABLE_FORMATS:
        found = _table(source, path_column, label_column, labelled)
    elif suffix in IMAGE_SUFFIXES and not labelled:
        found = ImageList(pd.DataFrame({"path": [str(source.resolve())]}))
    else:
        raise DataError(
            f"{source.name} is not an image source; expected a folder of images, a table (CSV, "
            f"…) of paths{'' if labelled else ', an image file'} or an .npz"
        )
    if found.frame.empty:
        skipped = f": skipped {', '.join(found.skipped[:5])}" if found.skipped else ""
        raise DataError(f"no images in {source}{skipped}; expected PNG, JPEG or BMP files")
    return found


# ----------------------------------------------------------------------------- checking


def short(ref: str) -> str:
    """An image's name in messages: its class folder and file name (``dot/3.png``)."""
    path = Path(ref)
    return f"{path.parent.name}/{path.name}" if path.parent.name else path.name


def listing(names: list[str], limit: int = 10) -> str:
    """The first ``limit`` names, and how many more."""
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def skip_unreadable(frame: pd.DataFrame, what: str) -> tuple[pd.DataFrame, list[Any], list[str]]:
    """(readable rows, their probes, names of the rest with the reason)."""
    probes = [probe(ref) for ref in frame["path"]]
    ok = np.array([not isinstance(p, str) for p in probes], dtype=bool)
    skipped = [
        f"{short(r)} ({p})"
        for r, p in zip(frame["path"], probes, strict=True)
        if isinstance(p, str)
    ]
    if not ok.any():
        raise DataError(
            f"no readable images in {what}: skipped {', '.join(skipped[:10])}; expected PNG, "
            "JPEG or BMP files that Pillow can decode"
        )
    return frame[ok], [p for p in probes if not isinstance(p, str)], skipped


# ----------------------------------------------------------------------------- decoding


def _array(ref: str) -> np.ndarray | None:
    match = _NPZ_REF.match(ref)
    if match is None:
        return None
    file, i = match.group(1), int(match.group(2))
    if file not in _ARRAYS:
        with np.load(file, allow_pickle=False) as npz:
            _ARRAYS[file] = npz["x"]
    return _ARRAYS[file][i]


def probe(ref: str) -> tuple[int, int, str] | str:
    """(height, width, Pillow mode) of an image, from its header; or why it cannot be read."""
    from PIL import Image, UnidentifiedImageError

    arr = _array(ref)
    if arr is not None:
        channels = 1 if arr.ndim == 2 else arr.shape[2]
        return int(arr.shape[0]), int(arr.shape[1]), {1: "L", 3: "RGB", 4: "RGBA"}[channels]
    try:
        with Image.open(ref) as img:
            width, height = img.size
            mode = img.mode
            img.verify()
    except FileNotFoundError:
        return "file not found"
    except UnidentifiedImageError:
        return "not an image Pillow can read"
    except (OSError, SyntaxError, ValueError) as exc:
        return f"damaged image: {exc}"
    return height, width, mode


def _from_array(arr: np.ndarray, size: tuple[int, int], channels: int) -> torch.Tensor:
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

    arr = _array(ref)
    if arr is not None:
        return _from_array(arr, size, channels)
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


def common_shape(probes: Sequence[tuple[int, int, str]]) -> tuple[tuple[int, int], bool, Counter]:
    """The most common (height, width), whether any image has colour, and the size counts."""
    sizes = Counter((h, w) for h, w, _ in probes)
    colour = any(mode not in GRAY_MODES for _, _, mode in probes)
    return sizes.most_common(1)[0][0], colour, sizes
