"""Composites of real photos: a COCO-format instance-segmentation set built from photo cut-outs.

    build_composites(n_train=240, n_val=60, size=320, seed=0) -> CompositeSet(root, splits, ...)

Each image is a random crop of a real scene photo (``photos(scenes_only=True)``), resized to
``size`` x ``size`` px, with 1..``max_objects`` Tux Paint photo cut-outs alpha-blended on top. A
cut-out's mask is its alpha channel (>= 128); later pastes occlude earlier ones, so every mask and
box describes the *visible* part; instances left with < 30% of their area visible are dropped.
Cut-outs (per category) and background photos are split disjointly into train / val.

Deterministic for (parameters, package versions); cached under ``<cache>/composites/<key>/`` (built
in a temp dir, renamed into place) with ``manifest.json`` recording sources and licences. Masks are
COCO RLE: train with ``INPUT.MASK_FORMAT bitmask``. Not COCO: name it "composites of real photos".
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from infomin_det.atomic import atomic_directory
from infomin_det.cache import keyed_cache_dir
from infomin_det.data.debian import read_manifest
from infomin_det.data.photos import CUTOUT_CATEGORIES, Cutout, Photo, cutouts, photos

VAL_FRACTION = 0.25
MIN_VISIBLE = 0.3


@dataclass(frozen=True)
class CompositeSet:
    """``splits[name] = (json path, image dir)`` for ``train`` and ``val``."""

    root: Path
    splits: dict[str, tuple[Path, Path]]
    categories: list[str]


def _split(items: list, rng: np.random.Generator) -> tuple[list, list]:
    order = rng.permutation(len(items))
    n_val = max(1, int(round(len(items) * VAL_FRACTION)))
    return [items[i] for i in order[n_val:]], [items[i] for i in order[:n_val]]


def split_sources(seed: int) -> dict[str, tuple[list[Photo], list[Cutout]]]:
    """Disjoint train / val backgrounds and cut-outs (cut-outs split within each category)."""
    rng = np.random.default_rng(seed)
    bg_train, bg_val = _split(photos(scenes_only=True), rng)
    cut_train: list[Cutout] = []
    cut_val: list[Cutout] = []
    all_cuts = cutouts()
    for cat in CUTOUT_CATEGORIES:
        tr, va = _split([c for c in all_cuts if c.category == cat], rng)
        cut_train += tr
        cut_val += va
    return {"train": (bg_train, cut_train), "val": (bg_val, cut_val)}


def package_versions(srcs: dict[str, tuple[list[Photo], list[Cutout]]]) -> dict[str, str]:
    """Debian package -> version of every photo and cut-out in ``srcs`` (part of a set's cache key)."""
    names = {ph.source for bgs, _ in srcs.values() for ph in bgs} | {c.source for _, cuts in srcs.values() for c in cuts}
    return {p: read_manifest(p).version for p in sorted(names)}


def background_crop(photo: Photo, size: int, rng: np.random.Generator) -> np.ndarray:
    """A random square crop (40-100% of the short side) of ``photo``, resized to ``size`` px:
    (size, size, 3) float32 in 0..255."""
    with Image.open(photo.path) as im:
        im.draft("RGB", (size * 3, size * 3))
        im = im.convert("RGB")
    w, h = im.size
    side = int(min(w, h) * rng.uniform(0.4, 1.0))
    x0, y0 = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
    im = im.crop((x0, y0, x0 + side, y0 + side)).resize((size, size), Image.BILINEAR)
    return np.asarray(im, dtype=np.float32)


def paste_cutout(img: np.ndarray, cut: Cutout, size: int, rng: np.random.Generator,
                 scale: tuple[float, float] = (0.2, 0.5)) -> np.ndarray:
    """Alpha-blend ``cut`` into ``img`` (H x W x 3 float, in place); return its full mask (H x W bool).

    The cut-out's longest side is ``U(scale) * size`` px; it is flipped with p .5 and placed uniformly.
    """
    with Image.open(cut.path) as im:
        im = im.convert("RGBA")
    im = im.crop(im.getchannel("A").point(lambda a: 255 if a >= 128 else 0).getbbox())
    longest = rng.uniform(*scale) * size
    factor = longest / max(im.size)
    im = im.resize((max(4, int(im.width * factor)), max(4, int(im.height * factor))), Image.BILINEAR)
    if rng.random() < 0.5:
        im = im.transpose(Image.FLIP_LEFT_RIGHT)
    a = np.asarray(im, dtype=np.float32)
    h, w = a.shape[:2]
    y0, x0 = int(rng.integers(0, size - h + 1)), int(rng.integers(0, size - w + 1))
    alpha = a[..., 3:] / 255.0
    region = img[y0:y0 + h, x0:x0 + w]
    region[:] = alpha * a[..., :3] + (1 - alpha) * region
    mask = np.zeros((size, size), bool)
    mask[y0:y0 + h, x0:x0 + w] = a[..., 3] >= 128
    return mask


def _write_split(out: Path, name: str, n: int, bgs: list[Photo], cuts: list[Cutout], size: int,
                 max_objects: int, rng: np.random.Generator) -> tuple[Path, Path]:
    from pycocotools import mask as mask_util

    cat_ids = {c: i + 1 for i, c in enumerate(CUTOUT_CATEGORIES)}
    img_dir = out / name
    img_dir.mkdir()
    images, anns = [], []
    for i in tqdm(range(n), desc=f"composites/{name}", unit="img"):
        img = background_crop(bgs[int(rng.integers(len(bgs)))], size, rng)
        placed: list[tuple[Cutout, np.ndarray, int]] = []  # cut-out, visible mask, full area
        for _ in range(int(rng.integers(1, max_objects + 1))):
            cut = cuts[int(rng.integers(len(cuts)))]
            m = paste_cutout(img, cut, size, rng)
            placed = [(c, pm & ~m, a) for c, pm, a in placed] + [(cut, m, int(m.sum()))]
        fname = f"{i:06d}.jpg"
        Image.fromarray(np.clip(img + 0.5, 0, 255).astype(np.uint8)).save(img_dir / fname, quality=95)
        images.append({"id": i + 1, "file_name": fname, "height": size, "width": size})
        for cut, m, full_area in placed:
            area = int(m.sum())
            if area < 64 or area < MIN_VISIBLE * full_area:
                continue
            rle = mask_util.encode(np.asfortranarray(m.astype(np.uint8)))
            x, y, w, h = (float(v) for v in mask_util.toBbox(rle))
            rle["counts"] = rle["counts"].decode("ascii")
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": cat_ids[cut.category],
                         "bbox": [x, y, w, h], "area": float(area), "iscrowd": 0,
                         "segmentation": rle, "cutout": cut.path.name})
    json_path = out / f"{name}.json"
    json_path.write_text(json.dumps({
        "info": {"description": f"composites of real photos ({name}); not COCO"},
        "images": images, "annotations": anns,
        "categories": [{"id": i, "name": c} for c, i in cat_ids.items()]}))
    return json_path, img_dir


def build_composites(n_train: int = 240, n_val: int = 60, size: int = 320, seed: int = 0,
                     max_objects: int = 4) -> CompositeSet:
    """Build (or reuse from the cache) the composite set; see the module docstring."""
    srcs = split_sources(seed)
    params = {"n_train": n_train, "n_val": n_val, "size": size, "seed": seed,
              "max_objects": max_objects, "packages": package_versions(srcs), "format": 1}
    final = keyed_cache_dir("composites", f"{size}px-{n_train}+{n_val}-seed{seed}", params)
    if not (final / "manifest.json").is_file():
        with atomic_directory(final) as tmp:
            rng = np.random.default_rng(seed + 1)
            for name, n in (("train", n_train), ("val", n_val)):
                bgs, cuts = srcs[name]
                _write_split(tmp, name, n, bgs, cuts, size, max_objects, rng)
            manifest = {**params, "description": "composites of real photos (photo cut-outs on photo "
                        "backgrounds); not COCO", "licences": {p: list(read_manifest(p).licences) for p in params["packages"]},
                        "splits": {name: {"backgrounds": [str(ph.path) for ph in s[0]],
                                          "cutouts": [str(c.path) for c in s[1]]} for name, s in srcs.items()}}
            (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return CompositeSet(final, {n: (final / f"{n}.json", final / n) for n in ("train", "val")},
                        list(CUTOUT_CATEGORIES))
