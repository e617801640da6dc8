"""The pretraining image set: STL-10-like square crops of real photos, as a folder of JPEGs.

    build_pretrain_set(n_images=3000, size=96, seed=0) -> Path   (<root>/images/*.jpg)

Crops (random square, 30-100% of the short side, resized to ``size`` px) of every curated photo
(``photos()``: scenes and object-centric ones) plus, for a third of the images, one *train-split*
cut-out pasted on a train-split scene crop (object-centric images as in STL-10). Val-split
backgrounds and cut-outs of the composite set (same ``seed``) never appear, so pretraining sees
nothing of the detection val set. Deterministic; cached under ``<cache>/pretrain/<key>/`` (temp dir
renamed into place) with a ``manifest.json`` of sources and licences. ``pretrain/`` reads the folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from infomin_det.atomic import atomic_directory
from infomin_det.cache import keyed_cache_dir
from infomin_det.data.composites import background_crop, paste_cutout, split_sources
from infomin_det.data.debian import read_manifest
from infomin_det.data.photos import photos


def build_pretrain_set(n_images: int = 3000, size: int = 96, seed: int = 0) -> Path:
    """Build (or reuse) the crop set; return its root (images under ``root/images``)."""
    train_bgs, train_cuts = split_sources(seed)["train"]
    val_bgs = {p.path for p in split_sources(seed)["val"][0]}
    pool = [p for p in photos() if p.path not in val_bgs]
    versions = {p: read_manifest(p).version for p in sorted({p.source for p in pool} | {c.source for c in train_cuts})}
    params = {"n_images": n_images, "size": size, "seed": seed, "packages": versions, "format": 1}
    final = keyed_cache_dir("pretrain", f"{size}px-{n_images}-seed{seed}", params)
    if (final / "manifest.json").is_file():
        return final
    with atomic_directory(final) as tmp:
        (tmp / "images").mkdir()
        rng = np.random.default_rng(seed + 2)
        for i in tqdm(range(n_images), desc="pretrain crops", unit="img"):
            if i % 3 == 2:
                img = background_crop(train_bgs[int(rng.integers(len(train_bgs)))], size, rng)
                paste_cutout(img, train_cuts[int(rng.integers(len(train_cuts)))], size, rng)
            else:
                img = background_crop(pool[int(rng.integers(len(pool)))], size, rng)
            Image.fromarray(np.clip(img + 0.5, 0, 255).astype(np.uint8)).save(
                tmp / "images" / f"{i:06d}.jpg", quality=95)
        manifest = {**params, "description": "crops of real photos (STL-10-like)",
                    "licences": {p: list(read_manifest(p).licences) for p in versions},
                    "photos": [str(p.path) for p in pool], "cutouts": [str(c.path) for c in train_cuts]}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return final
