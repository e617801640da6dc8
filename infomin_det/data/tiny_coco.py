"""A tiny generated COCO-format instance-segmentation set (ellipses and rectangles on noise).

For tests and smoke runs only: it exercises the real Detectron2 / pycocotools paths (boxes, RLE
masks, categories) in seconds. Deterministic for a given seed. Not a benchmark.

    write_tiny_coco(root, n_images=8, size=128, seed=0) -> (json_path, image_dir)

Images are RGB JPEGs (quality 95) of ``size`` x ``size`` pixels; each holds 1-3 objects of the
categories ``ellipse`` (id 1) and ``box`` (id 2). Masks are stored as COCO RLE (``INPUT.MASK_FORMAT
bitmask`` in Detectron2) so no polygon approximation is involved.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

CATEGORIES = [{"id": 1, "name": "ellipse"}, {"id": 2, "name": "box"}]


def _object_mask(rng: np.random.Generator, size: int, kind: int) -> np.ndarray:
    h = w = size
    cy, cx = rng.uniform(0.25, 0.75, 2) * (h, w)
    ry, rx = rng.uniform(0.10, 0.22, 2) * (h, w)
    yy, xx = np.mgrid[0:h, 0:w]
    if kind == 1:
        m = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
    else:
        m = (np.abs(yy - cy) <= ry) & (np.abs(xx - cx) <= rx)
    return m


def write_tiny_coco(root: str | Path, n_images: int = 8, size: int = 128, seed: int = 0,
                    name: str = "tiny") -> tuple[Path, Path]:
    """Write ``root/<name>.json`` and ``root/<name>/*.jpg``; return (json path, image dir)."""
    from pycocotools import mask as mask_util

    root = Path(root)
    img_dir = root / name
    img_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    images, annotations = [], []
    for i in range(n_images):
        img = rng.integers(60, 120, (size, size, 3)).astype(np.uint8)
        for _ in range(int(rng.integers(1, 4))):
            kind = int(rng.integers(1, 3))
            m = _object_mask(rng, size, kind)
            colour = rng.integers(150, 256, 3) if kind == 1 else rng.integers(0, 50, 3)
            img[m] = colour
            rle = mask_util.encode(np.asfortranarray(m.astype(np.uint8)))
            x, y, w, h = (float(v) for v in mask_util.toBbox(rle))
            rle["counts"] = rle["counts"].decode("ascii")
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": kind,
                                "bbox": [x, y, w, h], "area": float(m.sum()), "iscrowd": 0,
                                "segmentation": rle})
        fname = f"{i:06d}.jpg"
        Image.fromarray(img).save(img_dir / fname, quality=95)
        images.append({"id": i + 1, "file_name": fname, "height": size, "width": size})
    json_path = root / f"{name}.json"
    json_path.write_text(json.dumps({"images": images, "annotations": annotations,
                                     "categories": CATEGORIES}))
    return json_path, img_dir
