"""Hostile input to ``infomin-det pretrain`` (training and ``--linear-eval``): every bad number, path,
folder and file is a clean error (exit 2, ``error:`` / ``fix:``, no traceback), nothing is left on
disk, and no code in a checkpoint ever runs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from infomin_det.cli import main as cli_main
from infomin_det.errors import UserError
from system_tools import apt_installed
from test_pretrain import tiny_spec, write_two_colour_classes

TINY = ["--arch", "R-18", "--batch-size", "8", "--queue-size", "256", "--image-size", "32", "--workers", "0",
        "--epochs", "1", "--no-tensorboard"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_two_colour_classes(tmp_path_factory.mktemp("inputs") / "data")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, data) -> str:
    from pretrain.train import pretrain_worker
    return pretrain_worker(tiny_spec(data, tmp_path_factory.mktemp("ck") / "run", max_steps=1))["checkpoint"]


def refused(argv: list[str], capsys, match: str = "") -> str:
    rc = cli_main(argv)
    err = capsys.readouterr().err
    assert rc == 2, (argv, rc, err)
    assert err.startswith("error: ") and "Traceback" not in err, err
    if "invalid choice" not in err and "invalid int" not in err and "invalid float" not in err:
        assert "\n  fix: " in err, err
    assert match in err, (match, err)
    return err


# (flags, words the message must contain); each is refused before anything is written
BAD_TRAINING = [
    (["--max-steps", "-1"], "--max-steps"), (["--epochs", "0"], "--epochs"), (["--epochs", "-3"], "--epochs"),
    (["--processes", "0"], "--processes"), (["--processes", "-1"], "--processes"),
    (["--processes", "100000"], "cores"), (["--threads", "0"], "--threads"), (["--threads", "-2"], "--threads"),
    (["--threads", "100000"], "--threads"), (["--workers", "-1"], "--workers"), (["--workers", "100000"], "--workers"),
    (["--checkpoint-every", "-5"], "--checkpoint-every"), (["--seed", "-1"], "--seed"),
    (["--seed", str(2**40)], "--seed"), (["--batch-size", "0"], "--batch-size"), (["--batch-size", "-8"], "--batch-size"),
    (["--lr", "nan"], "--lr"), (["--lr", "-0.1"], "--lr"), (["--lr", "0"], "--lr"), (["--lr", "inf"], "--lr"),
    (["--weight-decay", "nan"], "--weight-decay"), (["--weight-decay", "-1"], "--weight-decay"),
    (["--temperature", "nan"], "--temperature"), (["--temperature", "-0.1"], "--temperature"),
    (["--temperature", "0"], "--temperature"), (["--moco-momentum", "nan"], "--moco-momentum"),
    (["--moco-momentum", "1.5"], "--moco-momentum"), (["--crop-min", "0"], "--crop-min"),
    (["--crop-min", "1.5"], "--crop-min"), (["--crop-min", "-0.2"], "--crop-min"), (["--crop-min", "nan"], "--crop-min"),
    (["--jitter-strength", "nan"], "--jitter-strength"), (["--jitter-strength", "-1"], "--jitter-strength"),
    (["--warmup-epochs", "nan"], "--warmup-epochs"), (["--warmup-epochs", "-2"], "--warmup-epochs"),
    (["--warmup-epochs", "1000"], "--warmup-epochs"), (["--image-size", "1"], "--image-size"),
    (["--image-size", "8"], "--image-size"), (["--image-size", "100000"], "--image-size"),
    (["--queue-size", "0"], "--queue-size"), (["--queue-size", str(2**30)], "--queue-size"),
    (["--queue-size", "250"], "multiple"), (["--batch-size", "64"], "global batch"),
    (["--device", "cuda"], "CUDA"), (["--nodes", "2"], "--cluster"), (["--gpus-per-node", "1"], "--cluster"),
    (["--cluster", "debug", "--processes", "2"], "debug"),
    (["--cluster", "local", "--processes", "2", "--tasks-per-node", "3"], "disagree"),
    (["--cluster", "local", "--cpus-per-task", "0"], "cpus_per_task"),
    (["--cluster", "slurm"], "without GPUs"), (["--cluster", "slurm", "--device", "cpu"], "controller cannot be reached"),
]


@pytest.mark.parametrize("flags,match", BAD_TRAINING, ids=[" ".join(f) for f, _ in BAD_TRAINING])
def test_out_of_range_training_numbers_are_refused_up_front(data, tmp_path, capsys, monkeypatch, flags, match):
    if flags == ["--device", "cuda"] and torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    if flags == ["--cluster", "slurm", "--device", "cpu"]:   # the refusal comes from sbatch itself: it must
        apt_installed("sbatch", ["slurm-client"], "sbatch")   # exist (the SLURM tests install it later)
    # a cluster whose controller is down, whatever the session started (the loopback cluster sets
    # SLURM_CONF); sbatch answers in ~2 s (without a slurm.conf it searches for one for ~60 s)
    conf = tmp_path / "down" / "slurm.conf"
    conf.parent.mkdir()
    conf.write_text("ClusterName=down\nSlurmctldHost=localhost\nSlurmctldPort=9\nMessageTimeout=2\n"
                    "NodeName=localhost CPUs=1\nPartitionName=p Nodes=localhost Default=YES\n")
    monkeypatch.setenv("SLURM_CONF", str(conf))
    refused(["pretrain", str(data), "-o", str(tmp_path / "out"), *TINY, *flags], capsys, match)
    assert not (tmp_path / "out").exists()


def test_an_unknown_augmentation_recipe_is_refused(data, tmp_path, capsys):
    for bad in ("simclr", ""):
        with pytest.raises(SystemExit) as e:               # argparse's own refusal of a choice
            cli_main(["pretrain", str(data), "-o", str(tmp_path / "out"), *TINY, "--augment", bad])
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert "--augment: invalid choice" in err and "'mocov2'" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


BAD_LINEAR = [
    (["--linear-epochs", "0"], "--linear-epochs"), (["--linear-epochs", "-1"], "--linear-epochs"),
    (["--linear-lr", "nan"], "--linear-lr"), (["--linear-lr", "-1"], "--linear-lr"), (["--linear-lr", "0"], "--linear-lr"),
    (["--batch-size", "0"], "--batch-size"), (["--batch-size", "1000"], "fewer than one batch"),
    (["--image-size", "8"], "--image-size"), (["--workers", "-1"], "--workers"), (["--seed", "-1"], "--seed"),
    (["--threads", "0"], "--threads"), (["-o", "somewhere"], "-o"), (["--cluster", "local"], "--cluster"),
    (["--processes", "2"], "--processes"), (["--nodes", "2"], "--cluster"), (["--device", "cuda"], "CUDA"),
]


@pytest.mark.parametrize("flags,match", BAD_LINEAR, ids=[" ".join(f) for f, _ in BAD_LINEAR])
def test_out_of_range_linear_eval_numbers_are_refused(data, checkpoint, tmp_path, capsys, flags, match, monkeypatch):
    if flags == ["--device", "cuda"] and torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    monkeypatch.chdir(tmp_path)
    refused(["pretrain", str(data), "--linear-eval", checkpoint, "--val", str(data), "--batch-size", "8",
             "--image-size", "32", "--workers", "0", "--linear-epochs", "1", *flags], capsys, match)
    assert not (tmp_path / "somewhere").exists()


def test_linear_eval_without_val_and_with_bad_folders(data, checkpoint, tmp_path, capsys):
    base = ["pretrain", str(data), "--linear-eval", checkpoint, "--batch-size", "8", "--image-size", "32",
            "--workers", "0", "--linear-epochs", "1"]
    refused(base, capsys, "--val")
    refused([*base, "--val", str(tmp_path / "missing")], capsys, "does not exist")
    (tmp_path / "a_file").write_text("x")
    refused([*base, "--val", str(tmp_path / "a_file")], capsys, "is a file")
    (tmp_path / "empty").mkdir()
    refused([*base, "--val", str(tmp_path / "empty")], capsys, "no images")
    refused(["pretrain", str(tmp_path / "empty"), *base[2:], "--val", str(data)], capsys, "no images")


@pytest.mark.parametrize("kind", ["missing", "not_a_checkpoint", "truncated", "foreign_dict", "no_state"])
def test_broken_checkpoints_for_linear_eval_are_clean_errors(data, checkpoint, tmp_path, capsys, kind):
    p = tmp_path / "ck.pth"
    if kind == "not_a_checkpoint":
        p.write_bytes(b"hello, not a torch file")
    elif kind == "truncated":
        full = Path(checkpoint).read_bytes()
        p.write_bytes(full[: len(full) // 2])
    elif kind == "foreign_dict":
        torch.save({"state_dict": {"conv1.weight": torch.zeros(1)}}, p)
    elif kind == "no_state":
        ck = torch.load(checkpoint, weights_only=True)
        del ck["backbone"]
        torch.save(ck, p)
    refused(["pretrain", str(data), "--linear-eval", str(p), "--val", str(data), "--batch-size", "8",
             "--image-size", "32", "--workers", "0", "--linear-epochs", "1"], capsys)


class _Evil:
    """Unpickling this calls ``open(marker, "w")``: a file appears if anything runs pickled code."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _malicious(path: Path, marker: Path, like: dict | None = None) -> Path:
    torch.save({**(like or {}), "format": "infomin-det/pretrain", "format_version": 1, "payload": _Evil(marker)}, path)
    return path


def test_a_malicious_checkpoint_at_resume_runs_no_code(data, tmp_path, capsys):
    marker = tmp_path / "pwned"
    run = tmp_path / "run"
    run.mkdir()
    _malicious(run / "checkpoint_00000005.pth", marker)
    err = refused(["pretrain", str(data), "-o", str(run), *TINY], capsys, "checkpoint_00000005.pth")
    assert not marker.exists(), err
    from pretrain.train import pretrain_worker
    with pytest.raises(UserError):
        pretrain_worker(tiny_spec(data, run, max_steps=1))  # the library path too (no preflight of the caller)
    assert not marker.exists()


def test_a_malicious_checkpoint_at_linear_eval_runs_no_code(data, tmp_path, capsys):
    marker = tmp_path / "pwned"
    p = _malicious(tmp_path / "evil.pth", marker)
    refused(["pretrain", str(data), "--linear-eval", str(p), "--val", str(data), "--batch-size", "8",
             "--image-size", "32", "--workers", "0"], capsys, "evil.pth")
    assert not marker.exists()


def test_malicious_view_generator_and_moving_mnist_checkpoints_run_no_code(tmp_path):
    """``load_generator`` read with ``weights_only=False`` before: this test created the marker."""
    from pretrain.views.invertible import CHECKPOINT_FORMAT, load_generator
    from pretrain.views.moving_mnist import load_encoder

    marker = tmp_path / "pwned"
    gen = tmp_path / "generator.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "kind": "affine", "blocks": 1, "hidden": 4, "x": _Evil(marker)}, gen)
    with pytest.raises(UserError):
        load_generator(gen)
    enc = tmp_path / "model_final.pth"
    torch.save({"model": {}, "x": _Evil(marker)}, enc)
    with pytest.raises(UserError):
        load_encoder(enc)
    assert not marker.exists()


def _unwritable_dir() -> Path | None:
    for p in (Path("/sys/infomin-det-test"), Path("/proc/infomin-det-test")):
        try:
            p.mkdir()
        except OSError:
            return p
        p.rmdir()
    return None


@pytest.mark.parametrize("where", ["a_file", "under_a_file", "proc", "unwritable", "dangling_link", "empty_string"])
def test_unusable_output_dirs_are_refused_and_nothing_is_left(data, tmp_path, capsys, where):
    (tmp_path / "f").write_text("x")
    out = {"a_file": tmp_path / "f", "under_a_file": tmp_path / "f" / "run", "proc": Path("/proc/self/infomin-run"),
           "unwritable": _unwritable_dir(), "dangling_link": tmp_path / "link", "empty_string": ""}[where]
    if out is None:
        pytest.skip("no unwritable directory on this machine")
    if where == "dangling_link":
        os.symlink(tmp_path / "nowhere" / "deeper", out)
    before = sorted(tmp_path.rglob("*"))
    refused(["pretrain", str(data), "-o", str(out), *TINY], capsys)
    assert sorted(tmp_path.rglob("*")) == before
    if where in ("proc", "unwritable"):
        assert not Path(out).exists()


def test_data_that_is_a_file_or_has_no_images_is_refused(tmp_path, capsys):
    (tmp_path / "f.jpg").write_bytes(b"x")
    refused(["pretrain", str(tmp_path / "f.jpg"), "-o", str(tmp_path / "out"), *TINY], capsys, "is a file")
    (tmp_path / "txt").mkdir()
    (tmp_path / "txt" / "a.txt").write_text("x")
    refused(["pretrain", str(tmp_path / "txt"), "-o", str(tmp_path / "out"), *TINY], capsys, "no images")
    assert not (tmp_path / "out").exists()


def test_a_folder_of_32bit_integer_tiffs_is_refused_with_the_reason(tmp_path, capsys):
    import numpy as np
    from PIL import Image
    (tmp_path / "d").mkdir()
    for i in range(16):
        Image.fromarray(np.full((40, 40), 70000 + i, np.int32)).save(tmp_path / "d" / f"{i}.tif")
    err = refused(["pretrain", str(tmp_path / "d"), "-o", str(tmp_path / "out"), *TINY], capsys, "16 of 16")
    assert "8-bit range" in err and not (tmp_path / "out").exists()


def test_a_failure_inside_the_run_removes_only_the_empty_directories_it_created(tmp_path):
    """``pretrain.outdir.created`` (what ``pretrain_worker`` and ``run_local`` wrap a run in)."""
    from pretrain.outdir import created

    (tmp_path / "kept").mkdir()
    with pytest.raises(UserError):
        with created(tmp_path / "kept" / "a" / "b"):
            assert (tmp_path / "kept" / "a" / "b").is_dir()
            raise UserError("refused inside the run")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["kept"]
    with pytest.raises(UserError):
        with created(tmp_path / "kept" / "c") as d:
            (d / "checkpoint_00000001.pth").write_bytes(b"x")  # the run wrote something: keep it
            raise UserError("refused later")
    assert (tmp_path / "kept" / "c" / "checkpoint_00000001.pth").exists()
