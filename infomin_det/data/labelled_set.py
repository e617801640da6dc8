"""A labelled object-classification set of composites of real photos, in ImageNet folder layout.

    build_labelled_set(n_train_per_class=150, n_val_per_class=50, size=64, seed=0) -> Path
        <root>/train/<category>/*.jpg   <root>/val/<category>/*.jpg   <root>/manifest.json

Owns the classification stand-in for STL-10 of the view experiments (the paper's appendix B.1-B.3) and of
a supervised baseline backbone. Each image is a random square crop of a real scene photo, resized to
``size`` x ``size`` px, with ONE Tux Paint photo cut-out of the image's class alpha-blended on top,
its longest side ``U(0.5, 0.9) * size`` (:data:`OBJECT_SCALE`). The 8 classes are the cut-out
categories (:data:`CLASSES`, ``infomin_det.data.photos.CUTOUT_CATEGORIES``); class ``i``'s label is
its index in the sorted folder names, as ``pretrain.data.scan_folder`` assigns it.

Train and val draw from the disjoint backgrounds and cut-outs of
:func:`infomin_det.data.composites.split_sources` (same ``seed``): val objects and val scenes are
never seen in training. It is "composites of real photos", not STL-10.

Deterministic for (parameters, package versions): every (split, class) has its own generator, so
the bytes depend on nothing else. Cached under ``<cache>/labelled/<size>px-<n>+<n>-seed<s>-<key>/``,
built in a temp dir and renamed into place; ``manifest.json`` records parameters, sources, licences
and, per image, the cut-out and background it was made of.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from infomin_det.atomic import atomic_directory
from infomin_det.cache import keyed_cache_dir
from infomin_det.data.composites import background_crop, package_versions, paste_cutout, split_sources
from infomin_det.data.debian import read_manifest
from infomin_det.data.photos import CUTOUT_CATEGORIES
from infomin_det.errors import UserError

CLASSES: tuple[str, ...] = tuple(sorted(CUTOUT_CATEGORIES))
OBJECT_SCALE: tuple[float, float] = (0.5, 0.9)  # cut-out's longest side, fraction of the image side
SPLITS = ("train", "val")
FORMAT = 1  # bump when the recipe changes (it is part of the cache key)


def _check(n_train_per_class: int, n_val_per_class: int, size: int) -> None:
    if n_train_per_class < 1 or n_val_per_class < 1:
        raise UserError(f"labelled set needs >= 1 image per class and split, got "
                        f"{n_train_per_class} train / {n_val_per_class} val",
                        "pass n_train_per_class >= 1 and n_val_per_class >= 1")
    if not 16 <= size <= 1024:
        raise UserError(f"labelled set image size {size} px is outside 16..1024",
                        "use e.g. size=64 (the paper's view experiments) or 96")


def build_labelled_set(n_train_per_class: int = 150, n_val_per_class: int = 50, size: int = 64,
                       seed: int = 0) -> Path:
    """Build (or reuse from the cache) the set; return its root. See the module docstring."""
    _check(n_train_per_class, n_val_per_class, size)
    srcs = split_sources(seed)
    params = {"n_train_per_class": n_train_per_class, "n_val_per_class": n_val_per_class, "size": size,
              "seed": seed, "object_scale": list(OBJECT_SCALE), "packages": package_versions(srcs), "format": FORMAT}
    final = keyed_cache_dir("labelled", f"{size}px-{n_train_per_class}+{n_val_per_class}-seed{seed}", params)
    if (final / "manifest.json").is_file():
        return final
    counts = {"train": n_train_per_class, "val": n_val_per_class}
    with atomic_directory(final) as tmp:
        records: dict[str, list[dict[str, str]]] = {}
        bar = tqdm(total=len(CLASSES) * (n_train_per_class + n_val_per_class), desc="labelled set", unit="img")
        for split_index, split in enumerate(SPLITS):
            bgs, cuts = srcs[split]
            records[split] = []
            for class_index, category in enumerate(CLASSES):
                pool = [c for c in cuts if c.category == category]
                if not pool:
                    raise UserError(f"no {split} cut-outs of category {category!r}",
                                    "give every category >= 2 cut-outs (one goes to val)")
                (tmp / split / category).mkdir(parents=True)
                rng = np.random.default_rng([seed, split_index, class_index, 0x1ABE1])
                for i in range(counts[split]):
                    bg = bgs[int(rng.integers(len(bgs)))]
                    img = background_crop(bg, size, rng)
                    cut = pool[int(rng.integers(len(pool)))]
                    paste_cutout(img, cut, size, rng, scale=OBJECT_SCALE)
                    rel = f"{category}/{i:05d}.jpg"
                    Image.fromarray(np.clip(img + 0.5, 0, 255).astype(np.uint8)).save(tmp / split / rel, quality=95)
                    records[split].append({"file": rel, "cutout": str(cut.path), "background": str(bg.path)})
                    bar.update(1)
        bar.close()
        manifest = {**params, "classes": list(CLASSES),
                    "description": "composites of real photos: one photo cut-out of the class on a real "
                                   "scene crop (object classification, ImageNet layout); not STL-10",
                    "licences": {p: list(read_manifest(p).licences) for p in params["packages"]},
                    "splits": {name: {"backgrounds": [str(ph.path) for ph in s[0]],
                                      "cutouts": [str(c.path) for c in s[1]]} for name, s in srcs.items()},
                    "images": records}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return final
