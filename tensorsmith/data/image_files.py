"""Image files: find the images of a source and read their headers, with Pillow (no torch).

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

from tensorsmith.data.tables import TABLE_FORMATS, check_columns, read_table
from tensorsmith.errors import DataError

__all__ = [
    "GRAY_MODES",
    "IMAGE_SUFFIXES",
    "ImageList",
    "array_of",
    "common_shape",
    "image_files",
    "list_images",
    "listing",
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


def image_files(source: Path, path_column: str = "path", label_column: str = "label") -> list[Path]:
    """Every file a labelled source reads: the table or ``.npz`` itself and each image file."""
    refs = list_images(source, path_column, label_column).frame["path"]
    files = {Path(match.group(1)) if (match := _NPZ_REF.match(r)) else Path(r) for r in refs}
    return sorted(files | ({source} if source.is_file() else set()))


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


def array_of(ref: str) -> np.ndarray | None:
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

    arr = array_of(ref)
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


def common_shape(probes: Sequence[tuple[int, int, str]]) -> tuple[tuple[int, int], bool, Counter]:
    """The most common (height, width), whether any image has colour, and the size counts."""
    sizes = Counter((h, w) for h, w, _ in probes)
    colour = any(mode not in GRAY_MODES for _, _, mode in probes)
    return sizes.most_common(1)[0][0], colour, sizes
