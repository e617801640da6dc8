"""View sweep: family views have their defining properties, the CLI writes agreeing csv / json /
png, resumes without retraining, rejects bad input before writing anything, runs without detectron2."""

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from caches import private_cache
import torch
from PIL import Image

from infomin_det.cli import main as cli
from infomin_det.errors import UserError
from pretrain.augment import IMAGENET_MEAN, IMAGENET_STD, normalize
from pretrain.views import sweep as sw
from pretrain.views.families import VIEW_FAMILIES
from pretrain.views.sweep_data import load_labelled

pytestmark = pytest.mark.network  # the labelled set is built from Debian packages (downloaded on the first run)
REPO = Path(__file__).resolve().parents[1]
SMALL = ["--image-size", "32", "--batch-size", "32", "--steps", "20", "--n-train-per-class", "4",
         "--n-val-per-class", "4", "--probe-steps", "30", "--no-progress"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A cache root of its own (the labelled set is built there) with the unpacked packages hard-linked."""
    root = private_cache(tmp_path_factory.mktemp("cache"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("INFOMIN_DET_CACHE", str(root))
        yield root


@pytest.fixture(scope="module")
def batch(cache):
    """16 real labelled-set images, uint8 (16, 3, 32, 32)."""
    spec = sw.SweepSpec("crop", (0.5,), "unused", image_size=32, batch_size=32, n_train_per_class=4, n_val_per_class=4)
    return load_labelled(spec).images["train"][::2][:16]


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_frequency_views_split_the_image(batch):
    fam = VIEW_FAMILIES["frequency"]()
    x = normalize(batch)
    for sigma in (0.5, 2.0):
        v1, v2 = fam.make_views(sigma, 32)(batch, _gen())
        assert v1.shape == v2.shape == x.shape and v1.dtype == torch.float32
        assert torch.allclose(v1 + v2, x, atol=1e-5)
        # v1 is the low-pass part: far less pixel-to-pixel variation than x; v2 has mean ~0
        tv = lambda t: (t[..., 1:] - t[..., :-1]).abs().mean()
        assert tv(v1) < 0.9 * tv(x) and abs(float(v2.mean())) < 0.05
        e1, e2 = fam.eval_views(sigma)(batch)  # evaluation views are the same, deterministic split
        assert torch.equal(e1, v1) and torch.equal(e2, v2)
    lo_small, _ = fam.make_views(0.5, 32)(batch, _gen())
    lo_big, _ = fam.make_views(2.0, 32)(batch, _gen())
    assert tv(lo_big) < tv(lo_small)  # more blur, less detail in the low view


def test_crop_views(batch):
    fam = VIEW_FAMILIES["crop"]()
    v1, v2 = fam.make_views(1.0, 32)(batch, _gen())
    assert torch.equal(v1, v2) and torch.equal(v1, normalize(batch))  # c = 1: the whole image, twice
    v1, v2 = fam.make_views(0.08, 32)(batch, _gen())
    assert v1.shape == v2.shape == batch.shape
    differ = (v1 - v2).abs().flatten(1).amax(1) > 0.1
    assert int(differ.sum()) == len(batch)
    w1, w2 = fam.make_views(0.08, 32)(batch, _gen())
    assert torch.equal(v1, w1) and torch.equal(v2, w2)  # the generator fixes the views


def test_jitter_views(batch):
    fam = VIEW_FAMILIES["jitter"]()
    v1, v2 = fam.make_views(0.0, 32)(batch, _gen())
    assert torch.equal(v1, v2) and torch.equal(v1, normalize(batch))  # x = 0: no jitter
    v1, v2 = fam.make_views(1.0, 32)(batch, _gen())
    differ = (v1 - v2).abs().flatten(1).amax(1) > 0.05
    assert int(differ.sum()) >= len(batch) // 2  # each view jittered with p .8, independently
    # colour only: the spatial structure (sign of horizontal gradients of the luma) is kept mostly
    luma = lambda v: (v * torch.tensor(IMAGENET_STD).view(3, 1, 1) + torch.tensor(IMAGENET_MEAN).view(3, 1, 1)).mean(1)
    g1, g2 = (luma(v)[..., 1:] - luma(v)[..., :-1] for v in (v1, v2))
    strong = (g1.abs() > 0.05) & (g2.abs() > 0.05)
    assert float((torch.sign(g1) == torch.sign(g2))[strong].float().mean()) > 0.8


def test_patch_distance_views_are_d_apart():
    """On an image whose pixels encode their own coordinates, the two patches' corners lie d apart."""
    import numpy as np
    xs, ys = np.meshgrid(np.arange(600), np.arange(500))
    coded = np.stack([xs % 256, ys % 256, (xs // 256) * 16 + ys // 256], -1).astype(np.uint8)
    photo = Image.fromarray(coded, "RGB")
    fam = VIEW_FAMILIES["patch-distance"]()
    for d in (40.0, 150.0):
        v1, v2 = fam.make_views(d, 32)([photo] * 8, _gen(3))
        assert v1.shape == (8, 3, 32, 32)
        px = lambda v: (v * torch.tensor(IMAGENET_STD).view(3, 1, 1) * 255
                        + torch.tensor(IMAGENET_MEAN).view(3, 1, 1) * 255).round().long()[:, :, 0, 0]
        c1, c2 = px(v1), px(v2)
        pos = lambda c: torch.stack([c[:, 0] + 256 * (c[:, 2] // 16), c[:, 1] + 256 * (c[:, 2] % 16)], 1).float()
        dist = (pos(c1) - pos(c2)).norm(dim=1)
        assert torch.all((dist - d).abs() <= 0.75), dist


def _read(out):
    with open(out / "sweep.csv", newline="") as f:
        csv_rows = list(csv.DictReader(f))
    return csv_rows, json.loads((out / "sweep.json").read_text())


def test_cli_end_to_end_then_resume(cache, tmp_path, capsys):
    out = tmp_path / "sweep-freq"
    assert cli(["sweep", "--family", "frequency", "--values", "0.5,2", "--out", str(out), *SMALL]) == 0
    printed = capsys.readouterr().out
    assert str(out / "sweep.csv") in printed and str(out / "sweep.png") in printed
    rows, doc = _read(out)
    assert [(float(r["value"]), int(r["seed"])) for r in rows] == [(0.5, 0), (2.0, 0)]
    assert len(doc["rows"]) == 2 and doc["spec"]["family"] == "frequency" and doc["spec"]["steps"] == 20
    for r, j in zip(rows, doc["rows"]):
        point = json.loads((out / "points" / f"frequency_{j['value']:g}_seed0.json").read_text())["row"]
        assert point == j  # per-point file, json and csv tell the same numbers
        for key in ("i_nce", "log_k", "linear_top1", "init_linear_top1", "val_contrast_acc"):
            assert float(r[key]) == pytest.approx(j[key], rel=1e-12)
        assert j["k"] == 32 and j["log_k"] == pytest.approx(math.log(32))
        assert j["i_nce"] <= j["log_k"] + 1e-9
        assert all(0 <= j[k] <= 100 for k in ("linear_top1", "init_linear_top1", "val_contrast_acc"))
        assert j["train_seconds"] > 0
    for s, j in zip(doc["summary"], doc["rows"]):  # one seed: mean = the row, std = 0
        assert s["value"] == j["value"] and s["i_nce_mean"] == j["i_nce"] and s["linear_top1_std"] == 0
    with Image.open(out / "sweep.png") as im:
        assert im.format == "PNG" and im.size[0] >= 400
    assert not [p for p in out.rglob(".*")]  # no temp files left behind

    # resume + extend: finished points are read back, only sigma = 1 trains
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "points").iterdir()}
    assert cli(["sweep", "--family", "frequency", "--values", "0.5,1,2", "--out", str(out), *SMALL]) == 0
    assert "resumed" in capsys.readouterr().out
    after = {p.name: p.stat().st_mtime_ns for p in (out / "points").iterdir()}
    assert set(after) == set(stamps) | {"frequency_1_seed0.json"}
    assert all(after[n] == stamps[n] for n in stamps)
    rows2, doc2 = _read(out)
    assert [float(r["value"]) for r in rows2] == [0.5, 1.0, 2.0]
    assert doc2["rows"][0] == doc["rows"][0] and doc2["rows"][2] == doc["rows"][1]

    # other training settings in the same folder: refused, nothing retrained or overwritten
    assert cli(["sweep", "--family", "frequency", "--values", "0.5", "--out", str(out), *SMALL[:-1],
                "--steps", "21", "--no-progress"]) == 2
    assert "other settings" in capsys.readouterr().err
    assert {p.name: p.stat().st_mtime_ns for p in (out / "points").iterdir()} == after


@pytest.mark.parametrize("argv, words", [
    (["--family", "nope"], "unknown view family"),
    (["--family", "crop", "--values", "0.2,1.5"], "out of range"),
    (["--family", "frequency", "--values", "0"], "out of range"),
    (["--family", "frequency", "--values", "12", "--image-size", "32"], "blur radius"),
    (["--family", "jitter", "--values", "0.5,abc"], "not a number"),
    (["--family", "crop", "--values", "0.2,0.2"], "duplicate"),
    (["--family", "crop", "--steps", "0"], "steps must be > 0"),
    (["--family", "crop", "--batch-size", "1"], "no negatives"),
    (["--family", "crop", "--lr", "-1"], "lr must be > 0"),
    (["--family", "crop", "--steps", "2.5"], "whole number"),
    (["--family", "patch-distance", "--values", "1000"], "fits"),
])
def test_bad_input_exit_2_and_nothing_written(argv, words, cache, tmp_path, capsys):
    out = tmp_path / "never"
    assert cli(["sweep", *argv, "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert lines[-2].startswith("error: ") and lines[-1].startswith("  fix: ") and words in err
    assert not out.exists()


def test_spec_rejects_unknown_parameters_and_round_trips(tmp_path):
    spec = sw.SweepSpec("jitter", (0.5, 1), str(tmp_path), steps=7)
    assert sw.SweepSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    with pytest.raises(UserError) as e:
        sw.SweepSpec.from_dict({**spec.to_dict(), "stepz": 3})
    assert "stepz" in e.value.cause
    assert spec.point_key == sw.SweepSpec("jitter", (2.0,), "elsewhere", steps=7, seeds=3).point_key
    assert spec.point_key != sw.SweepSpec("jitter", (0.5,), str(tmp_path), steps=8).point_key


def test_list_families(capsys):
    assert cli(["sweep", "--list"]) == 0
    text = capsys.readouterr().out
    for name, fam in VIEW_FAMILIES.items():
        assert name in text and fam.param in text
    assert {"frequency", "crop", "jitter", "patch-distance"} <= set(VIEW_FAMILIES)


def test_sweep_runs_with_detectron2_blocked(cache, tmp_path):
    """A fresh interpreter where ``import detectron2`` fails runs a (tiny) crop sweep to the end;
    both values share the same initial encoder, so their untrained-encoder accuracy is equal."""
    out = tmp_path / "no-d2"
    code = ("import sys; sys.modules['detectron2'] = None\n"
            "from infomin_det.cli import main\n"
            f"rc = main(['sweep', '--family', 'crop', '--values', '0.3,1', '--out', {str(out)!r}, {', '.join(map(repr, SMALL))}, '--steps', '5'])\n"
            "assert sys.modules['detectron2'] is None and not any(m.startswith('detectron2.') for m in sys.modules)\n"
            "sys.exit(rc)\n")
    env = {**os.environ, "INFOMIN_DET_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows, doc = _read(out)
    assert len(rows) == 2 and {r["family"] for r in rows} == {"crop"} and doc["spec"]["steps"] == 5
    assert rows[0]["init_linear_top1"] == rows[1]["init_linear_top1"]
    assert doc["rows"][0]["i_nce"] != doc["rows"][1]["i_nce"]  # c = 1 (identical views) vs c = 0.3
