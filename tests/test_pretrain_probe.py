"""``infomin-det pretrain --probe DIR``: the linear probe of the query encoder during pretraining
(:mod:`pretrain.run_probe`): schedule, probe.jsonl, resume without duplicates, TensorBoard, the
refusals. Tiny: R-18 at 32 px, 16 images, a few steps on the CPU."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from infomin_det.cli import main as cli_main
from infomin_det.errors import UserError
from pretrain.run_probe import PROBE_FILE
from pretrain.steplog import append_step, read_steps
from pretrain.train import pretrain_worker
from test_pretrain import tiny_spec, write_images

COLOURS = {"red": (200, 50, 50), "green": (50, 180, 60), "blue": (50, 60, 200)}


def write_labelled(root: Path, n_train: int = 6, n_val: int = 3, classes=tuple(COLOURS), noise: float = 60,
                   val_classes=None) -> Path:
    """The labelled-set layout root/{train,val}/<class>/*.jpg: noisy blobs around a class colour."""
    rng = np.random.default_rng(3)
    for split, n, names in (("train", n_train, classes), ("val", n_val, val_classes or classes)):
        for c in names:
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(n):
                a = np.clip(np.array(COLOURS.get(c, (128, 128, 128))) + rng.normal(0, noise, (6, 8, 3)), 0, 255)
                Image.fromarray(a.astype(np.uint8)).resize((48, 40), Image.Resampling.BICUBIC).save(d / f"{i}.jpg")
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("probe")
    return write_images(root / "images"), write_labelled(root / "lab")


def steps_of(run: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run / PROBE_FILE).read_text().splitlines()]


def test_probe_schedule_records_and_resume_does_not_duplicate(data, tmp_path, capsys):
    images, lab = data
    run = tmp_path / "run"
    first = pretrain_worker(tiny_spec(images, run, epochs=3, max_steps=3, probe=str(lab), probe_every=2))
    assert steps_of(run) == [0, 2, 3]                       # random init, every 2 steps, the last step
    err = capsys.readouterr().err
    assert "probe step 0: val top-1 " in err and "(train " in err and "; random init)" in err, err
    assert "probe step 2: val top-1 " in err and "; step 0: " in err, err
    for rec in read_steps(run / PROBE_FILE).values():
        assert 0 <= rec["val_top1"] <= 1 and 0 <= rec["train_top1"] <= 1, rec
        assert (rec["n_train"], rec["n_val"]) == (18, 9), rec
    # the probe draws no training randomness: the same run without it ends with the same loss
    plain = pretrain_worker(tiny_spec(images, tmp_path / "plain", epochs=3, max_steps=3))
    assert plain["loss"] == first["loss"]
    assert not (tmp_path / "plain" / PROBE_FILE).exists()

    # resumed from step 3: continues the file (3 is not probed again), then 4 and the end, 6
    pretrain_worker(tiny_spec(images, run, epochs=3, probe=str(lab), probe_every=2))
    assert steps_of(run) == [0, 2, 3, 4, 6]
    assert "probe step 6: val top-1 " in capsys.readouterr().err
    # a rerun of the finished run (the last step is due but recorded) adds nothing
    before = (run / PROBE_FILE).read_bytes()
    pretrain_worker(tiny_spec(images, run, epochs=3, probe=str(lab), probe_every=2))
    assert (run / PROBE_FILE).read_bytes() == before


def test_probe_goes_to_tensorboard(data, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    images, lab = data
    pretrain_worker(tiny_spec(images, tmp_path / "run", max_steps=1, probe=str(lab), probe_every=5, tensorboard=True))
    acc = EventAccumulator(str(tmp_path / "run" / "tb"))
    acc.Reload()
    assert [s.step for s in acc.Scalars("pretrain/probe_top1")] == [0, 1]
    assert all(0 <= s.value <= 1 for s in acc.Scalars("pretrain/probe_train_top1"))


def test_a_torn_last_line_is_skipped_and_closed_off(tmp_path):
    path = tmp_path / PROBE_FILE
    append_step(path, {"step": 0, "val_top1": 0.5})
    with open(path, "a") as f:
        f.write('{"step": 2, "val_to')                     # a crash mid-write
    assert list(read_steps(path)) == [0]
    append_step(path, {"step": 2, "val_top1": 0.6})
    assert read_steps(path)[2]["val_top1"] == 0.6 and len(path.read_text().splitlines()) == 3


def _cli(images: Path, out: Path, *extra: str) -> int:
    return cli_main(["pretrain", str(images), "-o", str(out), "--arch", "R-18", "--batch-size", "8",
                     "--queue-size", "256", "--image-size", "32", "--workers", "0", "--max-steps", "1",
                     "--no-tensorboard", *extra])


def _bad_folder(root: Path, kind: str) -> Path:
    if kind == "missing":
        return root / "nowhere"
    if kind == "no_val":
        lab = write_labelled(root / "lab")
        for p in sorted((lab / "val").rglob("*"), reverse=True):
            p.unlink() if p.is_file() else p.rmdir()
        (lab / "val").rmdir()
        return lab
    if kind == "flat_train":
        lab = write_labelled(root / "lab")
        for p in (lab / "train" / "red").iterdir():
            p.rename(lab / "train" / f"red_{p.name}")
        return lab
    if kind == "val_class_not_in_train":
        return write_labelled(root / "lab", classes=("red", "blue"), val_classes=("red", "green"))
    if kind == "one_class":
        return write_labelled(root / "lab", classes=("red",))
    raise AssertionError(kind)


@pytest.mark.parametrize("kind, says", [("missing", "does not exist"), ("no_val", "no val/ sub-folder"),
                                        ("flat_train", "has no class layout"),
                                        ("val_class_not_in_train", "no train/ folder: green"),
                                        ("one_class", "a probe needs >= 2")])
def test_unusable_probe_folders_are_refused_before_anything_is_written(data, tmp_path, capsys, kind, says):
    images, _ = data
    lab = _bad_folder(tmp_path, kind)
    rc = _cli(images, tmp_path / "out", "--probe", str(lab))
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and says in err and "\n  fix: " in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("extra, says", [(["--probe-every", "0"], "--probe-every 0 must be an integer >= 1"),
                                         (["--probe-every", "-3"], "--probe-every -3 must be an integer >= 1"),
                                         (["--probe-every", "2.5"], "invalid int value"),
                                         ])
def test_bad_probe_every_is_refused(data, tmp_path, capsys, extra, says):
    images, lab = data
    try:
        rc = _cli(images, tmp_path / "out", "--probe", str(lab), *extra)
    except SystemExit as e:  # argparse's own usage error (not an int)
        rc = e.code
    err = capsys.readouterr().err
    assert rc == 2 and "error: " in err and says in err, err
    assert not (tmp_path / "out").exists()


def test_probe_flags_that_do_not_apply_are_refused(data, tmp_path, capsys):
    images, lab = data
    rc = _cli(images, tmp_path / "out", "--probe-every", "5")
    err = capsys.readouterr().err
    assert rc == 2 and "error: --probe-every needs --probe" in err and "\n  fix: " in err, err
    for empty in ("", "  "):
        rc = _cli(images, tmp_path / "out", "--probe", empty)
        err = capsys.readouterr().err
        assert rc == 2 and "error: --probe is empty" in err and "\n  fix: " in err, err
    rc = cli_main(["pretrain", str(lab / "train"), "--linear-eval", "ck.pth", "--val", str(lab / "val"),
                   "--probe", str(lab)])
    err = capsys.readouterr().err
    assert rc == 2 and "error: --probe does not apply to --linear-eval" in err and "\n  fix: " in err, err
    assert not (tmp_path / "out").exists()
    with pytest.raises(UserError, match="--probe-every True"):
        tiny_spec(images, tmp_path / "o", probe=str(lab), probe_every=True).check()
