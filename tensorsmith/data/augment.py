"""Image augmentation with torch ops: random crop with padding, horizontal flip, small rotation
and translation.

PyPI's ``torchvision`` does not import beside the CPU torch build this project pins, so these are
written with ``torch.nn.functional`` (``pad``, ``affine_grid``, ``grid_sample``). Every draw of
sample ``i`` in epoch ``e`` comes from a generator seeded by ``(seed, e, i)``: the same image gets
the same augmentation in a resumed run, in whichever ``DataLoader`` worker decodes it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["Augment", "augment"]

_DRAWS = 6  # uniforms per sample: angle, shift x, shift y, crop y, crop x, flip


@dataclass(frozen=True)
class Augment:
    """What to draw for each training image (``data.augment`` in the recipe)."""

    crop_padding: int = 0  # pixels of zero padding, then a random crop back to the size
    flip: bool = False  # horizontal flip with probability 1/2
    rotation: float = 0.0  # degrees: uniform in [-rotation, rotation]
    translate: float = 0.0  # fraction of each side: uniform in [-translate, translate]

    @property
    def active(self) -> bool:
        return bool(self.crop_padding or self.flip or self.rotation or self.translate)


def _draws(seed: int, epoch: int, ids: Sequence[int]) -> np.ndarray:
    """(B, _DRAWS) uniforms in [0, 1), row b from a generator seeded by (seed, epoch, ids[b])."""
    key = seed % 2**32
    return np.stack(
        [np.random.default_rng([key, epoch, int(i)]).random(_DRAWS) for i in ids]
    ).astype(np.float64)


def augment(
    x: torch.Tensor, spec: Augment, seed: int, epoch: int, ids: Sequence[int]
) -> torch.Tensor:
    """Augmented copies of normalised images ``x`` (B, C, H, W); zero is the train mean, so
    padding and the area rotated in are filled with the average colour."""
    if not spec.active or len(ids) == 0:
        return x
    B, C, H, W = x.shape
    u = torch.from_numpy(_draws(seed, epoch, ids))  # (B, 6)
    if spec.rotation or spec.translate:
        angle = (u[:, 0] * 2 - 1) * math.radians(spec.rotation)  # (B,)
        cos, sin = torch.cos(angle), torch.sin(angle)
        # affine_grid works in [-1, 1] coordinates: a pixel-space rotation needs the aspect
        # ratio, and a shift of a fraction f of the side is 2f
        tx = (u[:, 1] * 2 - 1) * spec.translate * 2
        ty = (u[:, 2] * 2 - 1) * spec.translate * 2
        theta = torch.stack(
            [
                torch.stack([cos, -sin * H / W, tx], dim=1),
                torch.stack([sin * W / H, cos, ty], dim=1),
            ],
            dim=1,
        ).to(x.dtype)  # (B, 2, 3)
        grid = F.affine_grid(theta, [B, C, H, W], align_corners=False)  # (B, H, W, 2)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if spec.crop_padding:
        p = spec.crop_padding
        padded = F.pad(x, (p, p, p, p))  # (B, C, H + 2p, W + 2p)
        dy = (u[:, 3] * (2 * p + 1)).long().clamp(max=2 * p)
        dx = (u[:, 4] * (2 * p + 1)).long().clamp(max=2 * p)
        x = torch.stack(
            [padded[b, :, dy[b] : dy[b] + H, dx[b] : dx[b] + W] for b in range(B)]
        )  # (B, C, H, W)
    if spec.flip:
        flip = u[:, 5] < 0.5  # (B,)
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    return x
