"""MoCo v2 + InfoMin heads on CPU: queue, momentum, loss going down, resume, checkpoint format,
bad input. Tiny: R-18 at 32 px, queue 256, a handful of steps."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from infomin_det.cli import main as cli_main
from infomin_det.errors import UserError
from infomin_det.progress import PROGRESS_FILE
from pretrain.augment import InfoMinAugment
from pretrain.data import SkipUnreadable, scan_folder
from pretrain.model import MoCo, arch_of, build_backbone
from pretrain import steplog
from pretrain.train import METRICS_FILE, PretrainSpec, build, pretrain_worker


def write_images(root: Path, n_per_class: int = 8, classes=("a", "b"), size=(64, 48), seed=0) -> Path:
    """Small JPEGs of random blobs in ImageNet layout root/<class>/<i>.jpg."""
    rng = np.random.default_rng(seed)
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
            Image.fromarray(small).resize(size, Image.Resampling.BICUBIC).save(root / c / f"{i}.jpg", quality=90)
    return root


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return write_images(tmp_path_factory.mktemp("pt_images") / "train")


def tiny_spec(data: Path, out: Path, **kw) -> PretrainSpec:
    base = dict(data=str(data), output_dir=str(out), arch="R-18", epochs=2, batch_size=8, queue_size=256,
                image_size=32, workers=0, progress=False, tensorboard=False, seed=0)
    return PretrainSpec(**{**base, **kw})


def test_queue_enqueue_wraps_and_refuses_uneven_batches():
    torch.manual_seed(0)
    m = MoCo(arch_of("R-18"), dim=4, queue_size=8)
    keys = [torch.nn.functional.normalize(torch.randn(4, 4), dim=1) for _ in range(3)]
    m.enqueue(keys[0])
    assert torch.equal(m.queue[:, :4], keys[0].T) and int(m.queue_ptr) == 4
    m.enqueue(keys[1])
    assert torch.equal(m.queue[:, 4:], keys[1].T) and int(m.queue_ptr) == 0
    m.enqueue(keys[2])  # overwrites the oldest keys first
    assert torch.equal(m.queue[:, :4], keys[2].T) and torch.equal(m.queue[:, 4:], keys[1].T)
    with pytest.raises(UserError):
        m.enqueue(torch.randn(3, 4))


def test_momentum_update_is_ema_of_query():
    torch.manual_seed(0)
    m = MoCo(arch_of("R-18"), queue_size=8, momentum=0.9)
    with torch.no_grad():
        for p in m.encoder_q.parameters():
            p.add_(torch.randn_like(p))
    before_k = [p.clone() for p in m.encoder_k.parameters()]
    q = [p.clone() for p in m.encoder_q.parameters()]
    m.momentum_update()
    for pk, bk, pq in zip(m.encoder_k.parameters(), before_k, q):
        assert torch.allclose(pk, 0.9 * bk + 0.1 * pq, atol=1e-6)
        assert not pk.requires_grad
    assert not torch.equal(next(m.encoder_k.parameters()), q[0])


def test_loss_decreases_on_a_fixed_batch(images):
    torch.manual_seed(0)
    spec = tiny_spec(images, Path("unused"), jigsaw=True)
    model = build(spec)
    ds = SkipUnreadable(scan_folder(images), InfoMinAugment(spec.augment_config()), seed=0)
    batch = [ds[i] for i in range(8)]
    views = torch.stack([b["views"] for b in batch])
    jig = torch.stack([b["jigsaw"] for b in batch])
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1, momentum=0.9)
    queue0 = model.queue.clone()
    losses = []
    for _ in range(5):
        model.queue.copy_(queue0)  # same negatives every step: only the encoder's learning changes the loss
        out = model(views, jig)
        assert set(out) >= {"loss", "loss_main", "loss_jig"}
        assert torch.isclose(out["loss"], 0.5 * out["loss_main"] + 0.5 * out["loss_jig"])
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(float(out["loss"].detach()))
    assert losses[-1] < losses[0] - 0.1, losses


def assert_same_state(a: dict, b: dict) -> None:
    """Model (incl. key encoder, queue and queue pointer), optimizer and RNG state tensors equal."""
    for part in ("model", "optimizer", "scaler"):
        fa, fb = _tensors(a["state"][part]), _tensors(b["state"][part])
        assert fa.keys() == fb.keys(), part
        bad = [k for k in fa if not torch.equal(fa[k], fb[k])]
        assert not bad, (part, bad[:5])
    assert a["state"]["step"] == b["state"]["step"] and a["state"]["skipped_images"] == b["state"]["skipped_images"]
    for ra, rb in zip(a["state"]["rng"], b["state"]["rng"], strict=True):
        assert torch.equal(ra["torch"], rb["torch"])


def _tensors(d, prefix=""):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_tensors(v, f"{prefix}{k}/"))
        elif isinstance(v, torch.Tensor):
            out[f"{prefix}{k}"] = v
    return out


def test_checkpoint_format_and_resume_gives_identical_next_step(images, tmp_path):
    straight = pretrain_worker(tiny_spec(images, tmp_path / "straight", max_steps=3))
    first = pretrain_worker(tiny_spec(images, tmp_path / "resumed", max_steps=2))
    assert first["step"] == 2 and first["resumed_from"] is None
    steplog.append_step(tmp_path / "resumed" / METRICS_FILE, {"step": 3, "loss": -1.0})  # a step lost in a crash
    again = pretrain_worker(tiny_spec(images, tmp_path / "resumed", max_steps=3))
    assert again["resumed_from"].endswith("checkpoint_00000002.pth") and again["step"] == 3
    shown = json.loads((tmp_path / "resumed" / PROGRESS_FILE).read_text())
    assert (shown["step"], shown["total"], shown["attempt_first_step"]) == (3, 3, 2)   # ETA from this attempt's pace
    assert again["loss"] == straight["loss"]
    # the pretext log: one line per logged step, the lost step's line replaced by the redone one
    logs = [steplog.read_steps(tmp_path / run / METRICS_FILE) for run in ("straight", "resumed")]
    assert [list(log) for log in logs] == [[2, 3], [2, 3]]
    assert len((tmp_path / "resumed" / METRICS_FILE).read_text().splitlines()) == 2
    for a, b in zip(*(log.values() for log in logs)):
        assert {k: a[k] for k in ("loss", "loss_main", "acc", "lr")} == {k: b[k] for k in ("loss", "loss_main", "acc", "lr")}
    assert 0 <= logs[1][3]["acc"] <= 1 and logs[1][3]["loss"] > 0
    assert_same_state(torch.load(straight["checkpoint"], weights_only=True),
                      torch.load(again["checkpoint"], weights_only=True))

    ck = torch.load(again["checkpoint"], map_location="cpu", weights_only=True)
    assert ck["format"] == "infomin-det/pretrain" and ck["format_version"] == 1
    assert ck["arch"] == {"depth": 18, "num_groups": 1, "width_per_group": 64, "stem_out_channels": 64,
                          "res2_out_channels": 64, "name": "R-18"}
    tv_keys = {k for k in build_backbone(arch_of("R-18")).state_dict()}
    assert set(ck["backbone"]) == tv_keys and "conv1.weight" in tv_keys and "layer2.0.downsample.0.weight" in tv_keys
    assert not any(k.startswith("fc.") for k in ck["backbone"])
    assert set(ck["heads"]) == {"head_q", "head_k"}
    assert ck["state"]["step"] == 3 and ck["state"]["config"]["arch"] == "R-18"
    assert torch.equal(ck["backbone"]["conv1.weight"], ck["state"]["model"]["encoder_q.conv1.weight"])


def test_resume_from_other_arch_is_refused(images, tmp_path):
    pretrain_worker(tiny_spec(images, tmp_path / "run", max_steps=1))
    with pytest.raises(UserError, match="R-18"):
        pretrain_worker(tiny_spec(images, tmp_path / "run", arch="R-34", max_steps=2))


def test_corrupt_jpegs_are_skipped_and_counted(tmp_path):
    data = write_images(tmp_path / "imgs", n_per_class=24, classes=("x",))
    (data / "x" / "3.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    full = (data / "x" / "5.jpg").read_bytes()
    (data / "x" / "5.jpg").write_bytes(full[: len(full) // 3])  # truncated mid-scan
    r = pretrain_worker(tiny_spec(data, tmp_path / "out", epochs=1))  # 2 of 24 unreadable: within the 10 %
    assert r["step"] == 3 and r["skipped_images"] >= 1  # 3.jpg always; 5.jpg if PIL notices


def test_a_folder_of_mostly_unreadable_images_is_refused(tmp_path, capsys):
    """20 of 24 files broken: before, the run trained on the 4 readable ones (each file replaced by
    the next readable one) and exited 0."""
    data = write_images(tmp_path / "imgs", n_per_class=24, classes=("x",))
    for i in range(20):
        (data / "x" / f"{i}.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    rc = cli_main(["pretrain", str(data), "-o", str(tmp_path / "out"), "--arch", "R-18", "--batch-size", "8",
                   "--queue-size", "256", "--image-size", "32", "--workers", "0", "--epochs", "1", "--no-tensorboard"])
    err = capsys.readouterr().err
    assert rc == 2 and "20 of 24 images checked" in err and "\n  fix: " in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("make", ["missing", "empty", "no_images"])
def test_bad_folders_are_user_errors(tmp_path, make, capsys):
    folder = tmp_path / "data"
    if make != "missing":
        folder.mkdir()
    if make == "no_images":
        (folder / "notes.txt").write_text("hello")
    rc = cli_main(["pretrain", str(folder), "-o", str(tmp_path / "out"), "--arch", "R-18"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and "\n  fix: " in err
    assert not (tmp_path / "out").exists()


def test_too_few_images_and_bad_queue_are_refused(images, tmp_path):
    with pytest.raises(UserError, match="global batch"):
        pretrain_worker(tiny_spec(images, tmp_path / "o", batch_size=64))
    with pytest.raises(UserError, match="multiple"):
        pretrain_worker(tiny_spec(images, tmp_path / "o", queue_size=250))
    assert not (tmp_path / "o").exists()


def write_two_colour_classes(root: Path, n: int = 8) -> Path:
    """Class "red": reddish noisy blobs, class "blue": bluish ones -- linearly separable by colour."""
    rng = np.random.default_rng(7)
    for c, base in (("red", (200, 40, 40)), ("blue", (40, 40, 200))):
        (root / c).mkdir(parents=True)
        for i in range(n):
            a = np.clip(np.array(base) + rng.normal(0, 25, (6, 8, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(a).resize((64, 48), Image.Resampling.BICUBIC).save(root / c / f"{i}.jpg", quality=90)
    return root


def test_cli_pretrains_then_linear_eval_reports_top1_top5(tmp_path, capsys):
    import json
    data = write_two_colour_classes(tmp_path / "data")
    common = ["--arch", "R-18", "--batch-size", "8", "--image-size", "32", "--workers", "0", "--json"]
    rc = cli_main(["pretrain", str(data), "-o", str(tmp_path / "run"), "--epochs", "1", "--queue-size", "256",
                   "--no-tensorboard", *common])
    assert rc == 0
    run = json.loads(capsys.readouterr().out)
    assert run["step"] == 2 and Path(run["checkpoint"]).exists()
    rc = cli_main(["pretrain", str(data), "--linear-eval", run["checkpoint"], "--val", str(data),
                   "--linear-epochs", "4", *common])
    assert rc == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["classes"] == 2 and ev["val_images"] == 16 and ev["steps"] == 8
    assert ev["top1"] >= 90.0, ev  # colour alone separates the classes, even for a barely trained trunk


def test_linear_eval_needs_labelled_folders(images, tmp_path):
    from pretrain.linear_eval import LinearEvalSpec, linear_eval
    flat = tmp_path / "flat"
    flat.mkdir()
    for p in sorted(images.rglob("*.jpg"))[:4]:
        (flat / f"{p.parent.name}_{p.name}").write_bytes(p.read_bytes())
    run = pretrain_worker(tiny_spec(images, tmp_path / "run", max_steps=1))
    with pytest.raises(UserError, match="class layout"):
        linear_eval(LinearEvalSpec(run["checkpoint"], str(flat), str(flat), epochs=1, batch_size=2, workers=0))


def test_bf16_autocast_step_trains(images, tmp_path):
    r = pretrain_worker(tiny_spec(images, tmp_path / "bf16", amp="bf16", max_steps=1))
    assert r["step"] == 1 and np.isfinite(r["loss"])


def test_lr_schedule_warms_up_linearly_then_cosine_to_zero():
    from pretrain.train import lr_at
    lrs = [lr_at(s, 100, 10, 0.3) for s in range(100)]
    assert lrs[:10] == pytest.approx([0.03 * (s + 1) for s in range(10)])
    assert lrs[10] == pytest.approx(0.3) and all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert lrs[55] == pytest.approx(0.15, rel=0.05) and lrs[-1] < 0.001


def test_arch_names_round_trip_and_resnext_groups():
    from pretrain.model import ARCHS
    for name in ARCHS:
        assert arch_of(name).name == name
    net = build_backbone(arch_of("X-50-32x4d"))
    assert net.layer1[0].conv2.groups == 32 and net.layer1[0].conv2.in_channels == 128
    assert arch_of("R-18").res2_out_channels == 64 and arch_of("R-50").res2_out_channels == 256


@pytest.mark.parametrize("kind", ["directory", "symlink", "fifo"])
def test_a_metrics_log_that_is_not_a_regular_file_is_refused_before_training(images, tmp_path, kind):
    import os

    run = tmp_path / "run"
    run.mkdir()
    log = run / METRICS_FILE
    outside = tmp_path / "elsewhere.jsonl"
    if kind == "directory":
        log.mkdir()
    elif kind == "symlink":
        outside.write_text("")
        log.symlink_to(outside)
    else:
        os.mkfifo(log)
    with pytest.raises(UserError, match="not a regular file"):
        pretrain_worker(tiny_spec(images, run, max_steps=1))
    assert not list(run.glob("checkpoint_*.pth")) and (not outside.exists() or outside.read_text() == "")
