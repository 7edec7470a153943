"""Export scikit-learn's bundled 8×8 handwritten digits (1,797 images) as a folder of PNGs:
``images/<digit>/<index>.png``, one sub-folder per class, so the image-folder loader is what
trains the example.

    python examples/digits_cnn/export.py [FOLDER]      # default: images/ beside this script
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits


def export(folder: Path) -> int:
    digits = load_digits()
    # pixel values are 0..16 (counts of set pixels in 4×4 blocks of the 32×32 originals)
    pixels = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)  # (1797, 8, 8)
    for i, (image, label) in enumerate(zip(pixels, digits.target, strict=True)):
        out = folder / str(label) / f"{i:04d}.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(out)  # uint8 (8, 8): mode L
    return len(pixels)


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent / "images"
    print(f"wrote {export(target)} images to {target}")
