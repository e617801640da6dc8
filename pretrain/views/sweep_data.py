"""What a view sweep reads into memory: the labelled set and, for patch-distance, the photos.

Owns :class:`SweepData`, :func:`load_labelled` (the labelled cut-out set of
:func:`infomin_det.data.labelled_set.build_labelled_set`, built once and cached, read as uint8
tensors) and the patch-distance photo pools (:func:`photo_pools`, :func:`load_photos`).

patch-distance pretrains on patch pairs of the high-resolution photos of
:func:`infomin_det.data.photos.photos` (decoded with the long side reduced to
:data:`PHOTO_MAX_SIDE` px, DIV2K-like "2k"; patch side = ``image_size``; d in those pixels), keeping
only photos where a pair at the sweep's largest d has coverage >= .5 (``pretrain.views.spatial``).
Photos used as val backgrounds of the labelled set are held out: its I_NCE is measured on pairs of
those. Linear evaluation is on the labelled set like every family.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from infomin_det.errors import UserError
from pretrain.views.sweep_spec import SweepSpec

PHOTO_MAX_SIDE = 2048  # patch-distance photos are decoded with the long side reduced to this (px)


@dataclass
class SweepData:
    """The labelled set in memory: ``images[split]`` uint8 (N, 3, S, S), ``labels[split]`` int64 (N,);
    ``photos[split]``: PIL photos for patch-distance (train / val-held-out), else empty."""

    root: Path
    classes: tuple[str, ...]
    images: dict[str, torch.Tensor]
    labels: dict[str, torch.Tensor]
    photos: dict[str, list[Image.Image]] = field(default_factory=dict)
    photo_paths: dict[str, list[str]] = field(default_factory=dict)


def load_labelled(spec: SweepSpec) -> SweepData:
    """Build (or reuse) the labelled set of ``spec`` and read it into memory."""
    from infomin_det.data.labelled_set import build_labelled_set
    from pretrain.data import scan_folder
    root = build_labelled_set(spec.n_train_per_class, spec.n_val_per_class, spec.image_size, spec.data_seed)
    images, labels, classes = {}, {}, ()
    for split in ("train", "val"):
        lst = scan_folder(root / split)
        classes = lst.classes
        arr = np.stack([np.asarray(Image.open(f).convert("RGB"), dtype=np.uint8) for f in lst.files])
        images[split] = torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()
        labels[split] = torch.tensor(lst.labels, dtype=torch.int64)
    return SweepData(root, classes, images, labels)


def _load_photo(path: Path) -> Image.Image:
    with Image.open(path) as im:
        w, h = im.size
        s = min(1.0, PHOTO_MAX_SIDE / max(w, h))
        size = (max(1, round(w * s)), max(1, round(h * s)))
        if s < 1 and im.format == "JPEG":
            im.draft("RGB", size)
        im = im.convert("RGB")
        return im if im.size == size else im.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)


def photo_pools(spec: SweepSpec) -> dict[str, list[Path]]:
    """patch-distance photo paths: ``val`` = the labelled set's val backgrounds, ``train`` = every
    other photo; both keep only photos (at :data:`PHOTO_MAX_SIDE`) where a pair at the largest d has
    coverage >= .5. Reads image headers only. UserError when a pool ends up empty."""
    from infomin_det.data.composites import split_sources
    from infomin_det.data.photos import photos
    from pretrain.views.spatial import centre_coverage
    val_paths = {p.path for p in split_sources(spec.data_seed)["val"][0]}
    d_max = max(spec.values)
    pools: dict[str, list[Path]] = {"train": [], "val": []}
    for p in photos():
        with Image.open(p.path) as im:
            w, h = im.size
        s = min(1.0, PHOTO_MAX_SIDE / max(w, h))
        if centre_coverage(round(w * s), round(h * s), spec.image_size, d_max) >= 0.5:
            pools["val" if p.path in val_paths else "train"].append(p.path)
    for split, pool in pools.items():
        if not pool:
            raise UserError(f"no {split} photo fits {spec.image_size}-px patch pairs {d_max:g} px apart",
                            f"use distances below {PHOTO_MAX_SIDE // 3} px")
    return pools


def load_photos(spec: SweepSpec, data: SweepData, progress: bool) -> None:
    """Decode the :func:`photo_pools` photos (long side <= :data:`PHOTO_MAX_SIDE`) into ``data.photos``."""
    from tqdm import tqdm
    pools = photo_pools(spec)
    for split, paths in pools.items():
        data.photo_paths[split] = [str(p) for p in paths]
        data.photos[split] = [_load_photo(p) for p in tqdm(paths, desc=f"photos/{split}", unit="photo",
                                                            disable=not progress, leave=False)]
