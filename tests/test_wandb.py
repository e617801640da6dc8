"""``--wandb PROJECT``: real W&B (offline mode, the locked versions of requirements-wandb.lock,
installed into the cache -- never into the venv, whose runs must not depend on it), real tiny
fine-tuning and pretraining runs, the rows read back from W&B's own transaction log; and the
refusals where wandb is missing or the input is bad."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from infomin_det.cache import cache_dir
from infomin_det.cli import main as cli_main
from infomin_det.convert import convert
from infomin_det.convert.synthetic import random_trunk
from infomin_det.engine.tiny import tiny
from infomin_det.errors import UserError
from infomin_det.wandb_log import ID_FILE, _stored_id
from infomin_det.weights_meta import ResNetArch
from test_pretrain import write_images

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements-wandb.lock"
READER = Path(__file__).with_name("wandb_records.py")


@pytest.fixture(scope="session")
def wandb_site() -> Path:
    """A folder holding wandb and its dependencies at the locked versions (installed on first use)."""
    target = cache_dir() / "wandb" / hashlib.sha256(LOCK.read_bytes()).hexdigest()[:16]
    if not (target / ".complete").exists():
        tmp = target.with_name(target.name + f".tmp{os.getpid()}")
        p = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps",
                            "--target", str(tmp), "-r", str(LOCK)], capture_output=True, text=True)
        assert p.returncode == 0, p.stderr[-3000:]
        (tmp / ".complete").write_text("")
        try:
            tmp.rename(target)
        except OSError:          # another session installed it first
            pass
    return target


def _env(site: Path | None, tmp: Path, mode: str = "offline") -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(PYTHONPATH=os.pathsep.join([str(site)] if site else []), OMP_NUM_THREADS="1",
               WANDB_MODE=mode, WANDB_CONFIG_DIR=str(tmp / "wbconfig"), WANDB_CACHE_DIR=str(tmp / "wbcache"),
               WANDB_DATA_DIR=str(tmp / "wbdata"), WANDB_ERROR_REPORTING="false")
    return env


def _cli(args: list[str], env: dict, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "infomin_det", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def _rows(site: Path, run_dir: Path, env: dict) -> list[dict]:
    """Every history row of every W&B run (one per start) in ``run_dir/wandb``."""
    files = sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert files, f"no W&B offline run in {run_dir}/wandb"
    out = []
    for f in files:
        p = subprocess.run([sys.executable, str(READER), str(f)], env=env, capture_output=True, text=True,
                           check=True)
        out += [json.loads(line) for line in p.stdout.splitlines()]
    return out


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("w")
    torch.save(random_trunk(ResNetArch(50, 1, 16, 16, 64)), d / "tv.pth")
    convert(d / "tv.pth", d / "r50tiny.pkl")
    return d / "r50tiny.pkl"


@pytest.mark.network
@pytest.mark.detectron2
def test_finetuning_logs_losses_and_the_final_ap_to_one_wandb_run(wandb_site, tiny_coco, weights, tmp_path):
    env = _env(wandb_site, tmp_path)
    out = tmp_path / "run"
    ds = "coco-json:{}:{}:{}:{}".format(*tiny_coco["train"], *tiny_coco["val"])
    args = ["train", "--protocol", "coco/R50-FPN-1x", "--weights", str(weights), "--dataset", ds,
            "--device", "cpu", "--output-dir", str(out), "--wandb", "infomin-det-test", "--",
            *tiny("SOLVER.MAX_ITER", "3", "SOLVER.BASE_LR", "0.001", "SOLVER.CHECKPOINT_PERIOD", "1")]
    p = _cli(args, env)
    assert p.returncode == 0, p.stderr[-3000:]
    run_id = (out / ID_FILE).read_text().strip()
    rows = _rows(wandb_site, out, env)
    final = json.loads((out / "final_results.json").read_text())
    train_rows = [r for r in rows if "total_loss" in r]
    ap_rows = [r for r in rows if "bbox/AP" in r]
    assert train_rows and all(r["iteration"] == 2 for r in train_rows)      # Detectron2 writes at the last iter
    metrics = [json.loads(l) for l in (out / "metrics.json").read_text().splitlines()]
    assert train_rows[-1]["total_loss"] == pytest.approx(
        [m for m in metrics if "total_loss" in m][-1]["total_loss"], rel=1e-6)
    recorded = [m for m in metrics if "bbox/AP" in m]      # the evaluation's own record, at the same iteration
    assert len(ap_rows) == len(recorded) == 1 and ap_rows[0]["iteration"] == recorded[0]["iteration"] == 3
    assert ap_rows[0]["bbox/AP"] == pytest.approx(final["bbox"]["AP"], abs=1e-9, nan_ok=True)
    assert ap_rows[0]["segm/AP"] == pytest.approx(final["segm"]["AP"], abs=1e-9, nan_ok=True)
    # a rerun of the finished run continues the same W&B run and logs nothing new
    p = _cli(args, env)
    assert p.returncode == 0, p.stderr[-3000:]
    assert (out / ID_FILE).read_text().strip() == run_id
    runs = sorted((out / "wandb").glob("offline-run-*"))
    assert runs and all(r.name.endswith("-" + run_id) for r in runs)
    assert len(_rows(wandb_site, out, env)) == len(rows)


@pytest.mark.network
def test_pretraining_logs_its_pretext_scalars_by_step(wandb_site, tmp_path):
    env = _env(wandb_site, tmp_path)
    data = write_images(tmp_path / "imgs", n_per_class=16)
    out = tmp_path / "pt"
    p = _cli(["pretrain", str(data), "-o", str(out), "--arch", "R-18", "--batch-size", "8", "--queue-size", "256",
              "--image-size", "32", "--workers", "0", "--epochs", "10", "--no-tensorboard", "--wandb", "pt-test",
              "--json"], env)
    assert p.returncode == 0, p.stderr[-3000:]
    rows = _rows(wandb_site, out, env)
    logged = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    by_step = {r["step"]: r for r in rows if "pretrain/loss" in r}
    assert sorted(by_step) == [m["step"] for m in logged] and len(logged) >= 2 and logged[-1]["step"] == 40
    for m in logged:
        assert by_step[m["step"]]["pretrain/loss"] == pytest.approx(m["loss"], abs=1e-6)
        assert by_step[m["step"]]["pretrain/acc"] == pytest.approx(m["acc"], abs=1e-6)
    assert not (out / "tb").exists()          # --no-tensorboard still holds: W&B alone


@pytest.mark.network
def test_a_wandb_that_cannot_start_is_an_error_not_a_silent_run(wandb_site, tmp_path):
    """Online mode with no API key and no network: refused at the start, said so, nothing trained."""
    env = _env(wandb_site, tmp_path, mode="online")
    env.update(WANDB_API_KEY="", WANDB_BASE_URL="http://127.0.0.1:9", WANDB_INIT_TIMEOUT="20")
    data = write_images(tmp_path / "imgs", n_per_class=8)
    out = tmp_path / "pt"
    p = _cli(["pretrain", str(data), "-o", str(out), "--arch", "R-18", "--batch-size", "8", "--queue-size", "256",
              "--image-size", "32", "--workers", "0", "--epochs", "1", "--no-tensorboard", "--wandb", "p"], env,
             timeout=300)
    assert p.returncode != 0 and "error: W&B could not start run" in p.stderr and "\n  fix: " in p.stderr, \
        p.stderr[-3000:]
    assert "Traceback" not in p.stderr
    assert not list(out.glob("*.pth")) and not (out / ID_FILE).exists()


# ---------------------------------------------------------------------------------------------
# refusals (this venv has no wandb: that is the default install)

def test_the_default_install_has_no_wandb():
    import importlib.util

    assert importlib.util.find_spec("wandb") is None, "wandb is optional: requirements.lock must not pull it in"


@pytest.mark.parametrize("command", [
    ["train", "--protocol", "coco/R50-FPN-1x", "--weights", "random", "--device", "cpu"],
    ["submit", "--experiment", "e", "--protocol", "coco/R50-FPN-1x", "--weights", "random", "--dry-run"],
    ["reproduce", "T3a", "--weights", "w=random", "--dry-run"],
    ["pretrain", "DATA", "-o", "OUT"],
])
def test_wandb_without_the_package_is_refused_before_anything_runs(command, tmp_path, capsys):
    command = [str(tmp_path / "data") if a == "DATA" else str(tmp_path / "out") if a == "OUT" else a
               for a in command]
    write_images(tmp_path / "data", n_per_class=8)
    args = command[:1] + ["--wandb", "p"] + command[1:]
    if command[0] in ("submit", "reproduce", "train"):
        args += ["--root", str(tmp_path / "runs")]
    rc = cli_main(args)
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and "--wandb needs the wandb package" in err and "fix: pip install wandb" in err, err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "out").exists()


@pytest.mark.parametrize("project", ["a/b", "x" * 129, " p", "p\n", "team:p", "50%"])
def test_a_malformed_project_name_is_refused(project, tmp_path, capsys):
    write_images(tmp_path / "data", n_per_class=8)
    rc = cli_main(["pretrain", str(tmp_path / "data"), "-o", str(tmp_path / "out"), "--wandb", project])
    err = capsys.readouterr().err
    assert rc == 2 and "is not a W&B project name" in err and "fix: " in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("plant", ["garbage", "dir", "symlink", "huge", "fifo"])
def test_a_stored_run_id_that_is_not_one_is_refused(plant, tmp_path):
    path = tmp_path / ID_FILE
    if plant == "garbage":
        path.write_text("../../etc/passwd\n")
    elif plant == "dir":
        path.mkdir()
    elif plant == "symlink":
        (tmp_path / "elsewhere").write_text("abcdefgh12\n")
        path.symlink_to(tmp_path / "elsewhere")
    elif plant == "huge":
        path.write_text("a" * 10_000)
    else:
        os.mkfifo(path)
    with pytest.raises(UserError) as e:
        _stored_id(tmp_path)
    assert str(path) in e.value.cause and "remove" in e.value.fix


def test_a_stored_run_id_is_read_back_and_none_is_empty(tmp_path):
    assert _stored_id(tmp_path) == ""
    (tmp_path / ID_FILE).write_text("k3x9ab12cd\n")
    assert _stored_id(tmp_path) == "k3x9ab12cd"
