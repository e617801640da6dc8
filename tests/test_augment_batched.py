"""The batched (device) InfoMin augmentation against the CPU pipeline it stands in for: every op
kind on the same drawn parameters, crop + resize, whole batches of mixed-size images end to end,
the drawn rates as packed for the device, and pretraining fed by it."""

from __future__ import annotations

import io
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from infomin_det.errors import UserError
from pretrain.augment import (AFFINE_OPS, RANDAUG_OPS, AugmentConfig, InfoMinAugment, ViewParams, apply_jitter,
                              draw_jitter, gaussian_blur, grayscale, resized_crop, sample_crop)
from pretrain.augment_batched import BLUR, MATRIX, BatchedAugment, pack_views, resized_crops, run_slots
from pretrain.data import scan_folder
from pretrain.train import PretrainSpec, _Run

CPU = torch.device("cpu")


def _jpeg(w: int, h: int, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(1, h // 8), max(1, w // 8), 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC).save(buf, "JPEG", quality=90)
    return buf.getvalue()


S = 48
CFG = AugmentConfig(size=S)
PHOTO = np.array(Image.open(io.BytesIO(_jpeg(S, S, 7))).convert("RGB"))


def _on_device(v: ViewParams, a: np.ndarray = PHOTO) -> np.ndarray:
    """The slots of view ``v`` run by the batched ops on the (S, S) picture ``a``."""
    packed = pack_views([v], CFG)
    x = torch.from_numpy(a).permute(2, 0, 1)[None].float()
    return run_slots(x, {k: torch.from_numpy(packed[k]) for k in packed}, packed["kind"], packed["c"])[0].permute(1, 2, 0).numpy().astype(int)


def _view(**kw) -> ViewParams:
    return ViewParams(**{"box": (0, 0, S, S), "flip": False, "jitter_ops": None, "sigma": 0.0, "randaug": (),
                         "gray": False, **kw})


@pytest.mark.parametrize("name", sorted(RANDAUG_OPS))
def test_every_randaugment_op_is_the_cpu_pipelines_within_one_level(name):
    """measured: LUT, histogram, Invert, Brightness, Translate exact; the rest <= 1 level (rounding of
    float products), geometric ops included (grid_sample's weights vs OpenCV's 1/32 px)."""
    for mag in (0.0, 2.0, 5.0, 9.5, 10.0):
        for sign in ((1, -1) if name in AFFINE_OPS else (1,)):
            ref = RANDAUG_OPS[name](PHOTO, sign * mag).astype(int)
            d = np.abs(_on_device(_view(randaug=((name, sign * mag),))) - ref)
            assert d.max() <= 1 and d.mean() < 0.05, (name, mag, sign, d.max(), d.mean())


def test_jitter_blur_and_grayscale_are_the_cpu_pipelines():
    for op in range(4):  # each jitter op alone: <= 1 level
        for f in (0.2, 0.7, 1.0, 1.4, 1.8) if op < 3 else (-0.4, -0.1, 0.05, 0.3):
            d = np.abs(_on_device(_view(jitter_ops=((op, f),))) - apply_jitter(PHOTO, ((op, f),)).astype(int))
            assert d.max() <= 1, (op, f, d.max())
    means = []
    for i in range(100):  # four ops in a row: a 1-level rounding difference grows by up to 1.8x per op
        ops = draw_jitter(CFG.jitter, random.Random(i))
        d = np.abs(_on_device(_view(jitter_ops=ops)) - apply_jitter(PHOTO, ops).astype(int))
        means.append(d.mean())
        assert d.max() <= 10 and np.mean(d > 2) < 0.05, (i, ops, d.max())
    assert np.mean(means) < 0.25, np.mean(means)  # measured 0.08
    for sigma in (0.1, 0.3, 0.6, 1.0, 1.5, 2.0):
        d = np.abs(_on_device(_view(sigma=sigma)) - gaussian_blur(PHOTO, sigma).astype(int))
        assert d.max() <= 1 and d.mean() < 0.15, (sigma, d.max(), d.mean())
    assert np.abs(_on_device(_view(gray=True)) - grayscale(PHOTO).astype(int)).max() <= 1


def test_resized_crops_are_torchvisions_crop_then_resize():
    """Down- and up-scaling boxes, at the borders and inside, to 224 and 255 px: <= 1 level."""
    img = np.array(Image.open(io.BytesIO(_jpeg(500, 375, 3))).convert("RGB"))
    rng = random.Random(0)
    boxes = [sample_crop(500, 375, (0.2, 1.0), rng) for _ in range(6)]
    boxes += [(0, 0, 500, 375), (490, 360, 500, 375), (0, 200, 37, 375), (123, 45, 300, 46)]
    t = torch.from_numpy(img).permute(2, 0, 1)[None].float()
    for size in (224, 255):
        out = resized_crops(t, torch.tensor([boxes], dtype=torch.float64), size)[0]
        for box, o in zip(boxes, out):
            ref = torch.from_numpy(resized_crop(img, box, (size, size))[0]).permute(2, 0, 1).int()
            d = (o.int() - ref).abs()
            assert d.max() <= 1 and d.float().mean() < 0.3, (size, box, d.max())


@pytest.fixture(scope="module")
def mixed_files(tmp_path_factory) -> list[str]:
    """JPEGs of several sizes and orientations, a grey PNG, an EXIF-rotated JPEG: one padded batch."""
    root = tmp_path_factory.mktemp("mixed")
    files = []
    for i, (w, h) in enumerate([(500, 375), (375, 500), (300, 300), (640, 427), (260, 250), (500, 333)] * 3):
        p = root / f"{i}.jpg"
        p.write_bytes(_jpeg(w, h, seed=i))
        files.append(str(p))
    grey = root / "grey.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (280, 320), dtype=np.uint8)).resize((320, 280)).save(grey)
    rotated = root / "rotated.jpg"
    im = Image.open(io.BytesIO(_jpeg(400, 300, seed=9)))
    exif = im.getexif()
    exif[0x0112] = 6
    im.save(rotated, exif=exif, quality=90)
    return files + [str(grey), str(rotated)]


def test_a_batch_on_the_device_is_the_cpu_pipelines_batch(mixed_files):
    """Same files, same generators: the same drawn views (boxes, flips, permutations) and pixels
    within rounding end to end (measured mean 0.19 levels; a chain of ops moves a few pixels past a
    Solarize threshold, hence the tail)."""
    cfg = AugmentConfig(jigsaw=True)
    cpu, batched = InfoMinAugment(cfg), BatchedAugment(cfg)
    ref = [cpu(f, random.Random(i)) for i, f in enumerate(mixed_files)]
    out = batched.apply(batched.collate([batched.draw(f, random.Random(i)) for i, f in enumerate(mixed_files)]), CPU)
    assert out["views"].dtype == torch.uint8 and out["views"].shape == (len(mixed_files), 2, 3, 224, 224)
    d = (out["views"].int() - torch.stack([r["views"] for r in ref]).int()).abs().float()
    assert d.mean() < 0.5 and (d > 4).float().mean() < 0.01, (d.mean(), (d > 4).float().mean())
    per_view = d.flatten(2).mean(-1)
    assert per_view.max() < 2.0, per_view.max()  # no view is another view, flipped, or cropped elsewhere
    assert torch.equal(out["perm"], torch.stack([r["perm"] for r in ref]))
    dj = (out["jigsaw"].int() - torch.stack([r["jigsaw"] for r in ref]).int()).abs()
    assert out["jigsaw"].shape == (len(mixed_files), 9, 3, 64, 64) and dj.max() <= 1


def test_the_packed_ops_have_the_recipes_rates():
    """What reaches the device: over 2000 views, jitter p .8 (4 matrix slots), blur p .5 with sigma
    in [0.1, 2], RandAugment's 2 ops at p .5 each, grayscale p .2 (4.5 binomial std)."""
    batched = BatchedAugment(AugmentConfig(size=16))
    data = _jpeg(60, 45)
    kinds, sigma = [], []
    rng = random.Random(4)
    for _ in range(1000):
        s = batched.draw(io.BytesIO(data), rng)
        kinds.append(s["kind"])
        sigma.append(s["c"][:, 4][s["kind"][:, 4] == BLUR])
    kinds = torch.cat(kinds)  # (2000, 8): 4 jitter, blur, 2 RandAugment, grayscale
    n = len(kinds)

    def rate_ok(k, p):
        return abs(k - n * p) <= 4.5 * (n * p * (1 - p)) ** 0.5

    assert rate_ok(int((kinds[:, 0] == MATRIX).sum()), 0.8)
    assert torch.equal(kinds[:, 0] == MATRIX, (kinds[:, :4] == MATRIX).all(1))  # all four jitter ops, or none
    assert rate_ok(int((kinds[:, 4] == BLUR).sum()), 0.5)
    sig = torch.cat(sigma)
    assert sig.min() >= 0.1 and sig.max() <= 2.0 and abs(float(sig.mean()) - 1.05) < 0.06
    applied = int((kinds[:, 5:7] != 0).sum())
    assert abs(applied - n) <= 4.5 * (2 * n * 0.25) ** 0.5
    assert rate_ok(int((kinds[:, 7] == MATRIX).sum()), 0.2)


def _images(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(8):
            Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((64 + 8 * i, 48)).save(
                root / c / f"{i}.jpg", quality=90)
    return root


def test_pretraining_with_augment_on_device_sees_the_workers_batches(tmp_path, capsys):
    """The same batch (files, order, views, patches) reaches the model through a loader worker and
    the device path; a run trains on it."""
    from pretrain.train import pretrain_worker
    data = _images(tmp_path / "train")
    base = dict(data=str(data), arch="R-18", epochs=2, batch_size=8, queue_size=256, image_size=32, workers=1,
                progress=False, tensorboard=False, seed=0, jigsaw=True)
    got = {}
    for where in ("workers", "device"):
        run = _Run(PretrainSpec(**base, output_dir=str(tmp_path / where), augment_on=where), scan_folder(data), 0, 1, CPU)
        got[where] = run.inputs(next(iter(run.loader(1))))
    (vw, jw), (vd, jd) = got["workers"], got["device"]
    assert vd.shape == vw.shape == (8, 2, 3, 32, 32) and jd.shape == jw.shape
    d = (vd.int() - vw.int()).abs().float()
    assert d.mean() < 0.5 and d.flatten(2).mean(-1).max() < 2.0, d.mean()
    assert (jd.int() - jw.int()).abs().max() <= 1
    r = pretrain_worker(PretrainSpec(**base, output_dir=str(tmp_path / "run"), augment_on="device", max_steps=2))
    assert r["step"] == 2 and np.isfinite(r["loss"])
    assert "warning: --augment-on device on the CPU" in capsys.readouterr().err


def test_a_bad_augment_on_is_refused(tmp_path, capsys):
    with pytest.raises(UserError, match="augment-on"):
        PretrainSpec(data=str(tmp_path), output_dir=str(tmp_path / "o"), augment_on="gpu").check()
    from infomin_det.cli import main
    with pytest.raises(SystemExit) as e:
        main(["pretrain", str(tmp_path), "-o", str(tmp_path / "o"), "--augment-on", "gpu"])
    assert e.value.code == 2 and "invalid choice" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_loader_workers_start_after_the_parent_used_opencvs_threads(tmp_path):
    """A worker forked from a process whose OpenCV thread pool ran (an in-process probe, the demo's
    calibration, a test before) must not hang in its set-up. With cv2.setNumThreads(1) it hung here
    on an idle machine (3 of 3 runs) but not while another job loaded both cores (0 of 4): a race,
    so this test catches a regression often, not always."""
    import subprocess
    import sys
    script = tmp_path / "fork.py"
    script.write_text(
        "import cv2, numpy as np, torch\n"
        "from pretrain.data import worker_init\n"
        "a = np.random.default_rng(0).integers(0, 255, (1500, 1500, 3), dtype=np.uint8)\n"
        "for _ in range(3):\n"
        "    cv2.GaussianBlur(a, (13, 13), 2.0)\n"
        "class D(torch.utils.data.Dataset):\n"
        "    def __len__(self): return 4\n"
        "    def __getitem__(self, i): return cv2.GaussianBlur(a[:64, :64], (5, 5), 1.0).shape[0] + cv2.getNumThreads()\n"
        "print(sorted(torch.utils.data.DataLoader(D(), num_workers=2, worker_init_fn=worker_init, batch_size=None)))\n")
    import os
    import signal
    p = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         cwd=Path(__file__).resolve().parents[1], start_new_session=True)
    try:
        out, err = p.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)  # the hung workers too
        p.communicate()
        pytest.fail("the loader's workers hung in their set-up")
    assert p.returncode == 0, err
    assert out.strip() == "[65, 65, 65, 65]"  # OpenCV ran, sequentially (one thread), in every worker


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_cuda_a_batch_is_the_cpu_pipelines_batch(mixed_files):
    """The GPU check: the same batch on CUDA (cudnn / TF32 kernels) within the CPU bounds above."""
    cfg = AugmentConfig(jigsaw=True)
    cpu, batched = InfoMinAugment(cfg), BatchedAugment(cfg)
    ref = [cpu(f, random.Random(i)) for i, f in enumerate(mixed_files)]
    out = batched.apply(batched.collate([batched.draw(f, random.Random(i)) for i, f in enumerate(mixed_files)]),
                        torch.device("cuda"))
    assert out["views"].is_cuda
    d = (out["views"].cpu().int() - torch.stack([r["views"] for r in ref]).int()).abs().float()
    assert d.mean() < 0.5 and (d > 4).float().mean() < 0.01 and d.flatten(2).mean(-1).max() < 2.0, d.mean()
    assert torch.equal(out["perm"].cpu(), torch.stack([r["perm"] for r in ref]))
    assert (out["jigsaw"].cpu().int() - torch.stack([r["jigsaw"] for r in ref]).int()).abs().max() <= 1
