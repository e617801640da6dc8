"""Two patches at distance d from one image (the paper's appendix §B.1) and the border bias of small images.

Owns :func:`sample_patch_pair` (the sampler), :func:`centre_coverage` (how constrained a pair at
distance d is on a given image size), :class:`PatchPairViews` (PIL image -> two uint8 patch tensors,
refusing images that are too small for d) and :func:`check_folder` (which images of a data set
are usable).

Geometry (pixels): a patch is a ``patch`` x ``patch`` box ``(x0, y0, x0 + patch, y0 + patch)``
with integer ``0 <= x0 <= A = width - patch``, ``0 <= y0 <= B = height - patch``; its centre is
``(x0 + patch / 2, y0 + patch / 2)``. A pair's centres are ``distance`` apart along a direction
theta. theta is uniform over the directions for which a placement exists
(``|d cos theta| <= A`` and ``|d sin theta| <= B``); given theta, the first patch's position is
uniform over the positions from which the second also fits. The displacement is rounded to whole
pixels, so the measured centre distance equals ``distance`` to within sqrt(2)/2 px.

The paper's bias: on a 512x512 image a pair at d = 384 only fits with both patches pressed
against the border, so "distance" and "near the border" are confounded; the paper therefore uses
2k DIV2K images. :func:`centre_coverage` measures this exactly (closed form, continuous positions):

    coverage = (1 / 2 pi) * integral over theta of (A - |d cos theta|)+ (B - |d sin theta|)+ / (A B)

the fraction of (single-patch centre position, direction) combinations that also place the second
patch inside the image: 1 at d = 0, decreasing in d, 0 once d exceeds the diagonal sqrt(A^2 + B^2).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from infomin_det.errors import UserError

BoxInt = tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels, x1 - x0 = y1 - y0 = patch

_FIX = "use higher-resolution images (the paper uses 2K DIV2K images) or a smaller distance"


def _check_geometry(patch: int, distance: float) -> None:
    if int(patch) != patch or patch < 1:
        raise UserError(f"patch side must be a positive whole number of pixels, got {patch}", "e.g. patch=64")
    if not math.isfinite(distance) or distance < 0:
        raise UserError(f"patch distance must be a finite number >= 0 (pixels), got {distance}",
                        "e.g. distance=128")


def _angle_interval(a: int, b: int, distance: float) -> tuple[float, float] | None:
    """First-quadrant directions phi in [lo, hi] with d cos phi <= a and d sin phi <= b, or None."""
    if distance == 0:
        return 0.0, math.pi / 2
    lo = math.acos(min(1.0, a / distance))
    hi = math.asin(min(1.0, b / distance))
    return (lo, hi) if lo <= hi else None


def centre_coverage(width: int, height: int, patch: int, distance: float) -> float:
    """Exact fraction in [0, 1] of (centre position, direction) pairs that fit a pair at ``distance``.

    Closed form of the integral in the module docstring, over continuous positions
    (the integer sampler differs by at most a pixel per axis). 0 when the patch does not fit or
    d > sqrt(A^2 + B^2); 1.0 at d = 0; for an image exactly ``patch`` wide or high (A or B = 0)
    only axis-parallel pairs would fit, a set of directions of measure 0, so coverage is 0 for d > 0.
    """
    _check_geometry(patch, distance)
    a, b = width - patch, height - patch
    if a < 0 or b < 0:
        return 0.0
    if distance == 0:
        return 1.0
    if a == 0 or b == 0:
        return 0.0
    interval = _angle_interval(a, b, distance)
    if interval is None:
        return 0.0
    d = float(distance)

    def antiderivative(phi: float) -> float:  # of (a - d cos phi)(b - d sin phi) d phi
        return a * b * phi + a * d * math.cos(phi) - b * d * math.sin(phi) + d * d / 2 * math.sin(phi) ** 2

    lo, hi = interval
    return min(1.0, max(0.0, (antiderivative(hi) - antiderivative(lo)) / (a * b * math.pi / 2)))


def sample_patch_pair(width: int, height: int, patch: int, distance: float,
                      rng: random.Random) -> tuple[BoxInt, BoxInt]:
    """Two ``patch``-px square boxes (x0, y0, x1, y1) inside a ``width`` x ``height`` image whose
    centres are ``distance`` px apart (to within sqrt(2)/2 px); see the module docstring for the law."""
    _check_geometry(patch, distance)
    a, b = width - patch, height - patch
    interval = _angle_interval(a, b, distance) if a >= 0 and b >= 0 else None
    if interval is None:
        raise UserError(f"two {patch}-px patches {distance} px apart do not fit in a {width}x{height} image",
                        _FIX)
    phi = rng.uniform(*interval)
    # mirror the first-quadrant angle into a uniformly chosen quadrant
    dx = round(rng.choice((-1, 1)) * distance * math.cos(phi))
    dy = round(rng.choice((-1, 1)) * distance * math.sin(phi))
    x0 = rng.randint(max(0, -dx), a - max(0, dx))
    y0 = rng.randint(max(0, -dy), b - max(0, dy))
    first = (x0, y0, x0 + patch, y0 + patch)
    second = (x0 + dx, y0 + dy, x0 + dx + patch, y0 + dy + patch)
    return first, second


def _refuse_small(width: int, height: int, patch: int, distance: float, coverage: float,
                  min_coverage: float) -> UserError:
    return UserError(
        f"a {width}x{height} image is too small for {patch}-px patches at distance d={distance}: "
        f"pair coverage {coverage:.3f} < {min_coverage} (both patches would hug the border)", _FIX)


class PatchPairViews:
    """PIL image + ``random.Random`` -> two uint8 tensors (3, S, S): patches ``distance`` px apart.

    S = ``out_size`` (bilinear resize of each patch, antialiased) or ``patch`` when None. Images
    with :func:`centre_coverage` < ``min_coverage`` (or where the pair cannot fit) are refused with a
    :class:`UserError` naming the image size, d and the coverage.
    """

    def __init__(self, patch: int, distance: float, out_size: int | None = None,
                 min_coverage: float = 0.5) -> None:
        _check_geometry(patch, distance)
        if out_size is not None and (int(out_size) != out_size or out_size < 1):
            raise UserError(f"out_size must be a positive whole number of pixels or None, got {out_size}",
                            "e.g. out_size=64")
        if not 0.0 <= min_coverage <= 1.0:
            raise UserError(f"min_coverage must lie in [0, 1], got {min_coverage}", "e.g. min_coverage=0.5")
        self.patch = int(patch)
        self.distance = float(distance)
        self.out_size = int(out_size) if out_size is not None else self.patch
        self.min_coverage = float(min_coverage)

    def check_size(self, width: int, height: int) -> float:
        """Coverage of a ``width`` x ``height`` image; raises UserError when it is below the minimum."""
        cov = centre_coverage(width, height, self.patch, self.distance)
        if cov < self.min_coverage or cov == 0.0:
            raise _refuse_small(width, height, self.patch, self.distance, cov, self.min_coverage)
        return cov

    def __call__(self, img: Image.Image, rng: random.Random) -> tuple[torch.Tensor, torch.Tensor]:
        width, height = img.size
        self.check_size(width, height)
        img = img.convert("RGB")
        boxes = sample_patch_pair(width, height, self.patch, self.distance, rng)
        s = self.out_size
        out = []
        for box in boxes:
            crop = img.crop(box) if s == self.patch else img.resize((s, s), Image.BILINEAR, box=box)
            out.append(torch.from_numpy(np.asarray(crop, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous())
        return out[0], out[1]

    def __repr__(self) -> str:
        return (f"PatchPairViews(patch={self.patch}, distance={self.distance}, out_size={self.out_size}, "
                f"min_coverage={self.min_coverage})")


@dataclass(frozen=True)
class FolderCheck:
    """Outcome of :func:`check_folder`: usable image paths, and the refused ones with size and coverage."""

    usable: tuple[Path, ...]
    refused: tuple[tuple[Path, int, int, float], ...]  # path, width, height, coverage

    @property
    def n_usable(self) -> int:
        return len(self.usable)

    @property
    def n_refused(self) -> int:
        return len(self.refused)


def check_folder(paths: Iterable[str | Path], patch: int, distance: float, min_coverage: float = 0.5) -> FolderCheck:
    """Read each image's size (header only) and split ``paths`` into usable / refused for a pair
    of ``patch``-px patches at ``distance``. Raises UserError when no path is given, one is not a
    readable image, or no image is usable (naming the largest size seen and its coverage)."""
    views = PatchPairViews(patch, distance, min_coverage=min_coverage)
    usable: list[Path] = []
    refused: list[tuple[Path, int, int, float]] = []
    for p in map(Path, paths):
        try:
            with Image.open(p) as im:
                width, height = im.size
        except (OSError, UnidentifiedImageError) as e:
            raise UserError(f"cannot read image {p}: {e}", "remove non-image files from the folder") from None
        cov = centre_coverage(width, height, views.patch, views.distance)
        if cov >= views.min_coverage and cov > 0.0:
            usable.append(p)
        else:
            refused.append((p, width, height, cov))
    if not usable:
        if not refused:
            raise UserError("no images given to check", "point to a folder with .png / .jpg images")
        _, w, h, cov = max(refused, key=lambda r: r[3])
        err = _refuse_small(w, h, views.patch, views.distance, cov, views.min_coverage)
        raise UserError(f"none of {len(refused)} images is usable; the best: {err.cause}", _FIX)
    return FolderCheck(tuple(usable), tuple(refused))
