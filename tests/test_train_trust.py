"""``train`` runs no code from a file, follows no path out of its run directory, never rewrites a run
to describe a config it did not use, and records what its numbers can be traced to.

Hostile files are real pickles whose ``__reduce__`` would create a marker file; every load site is
tried: ``--weights``, Detectron2's own checkpointer, a resume checkpoint (``.pth`` and ``.pkl``),
``--eval-only``. Runs are tiny Mask R-CNNs on the generated COCO set, through the real CLI.
"""

import hashlib
import json
import os
import pickle
import subprocess
import sys

import pytest
import torch

from infomin_det.cli import main as cli
from infomin_det.engine.tiny import tiny

pytestmark = pytest.mark.detectron2
pytest.importorskip("detectron2")

OPTS = tiny("SOLVER.MAX_ITER", "2", "SOLVER.CHECKPOINT_PERIOD", "1", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0")


class Evil:
    """Unpickling this runs ``open(marker, "w")``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def dataset(tiny_coco):
    (tj, ti), (vj, vi) = tiny_coco["train"], tiny_coco["val"]
    return f"coco-json:{tj}:{ti}:{vj}:{vi}"


def train_args(tiny_coco, out, *extra, weights="none", opts=OPTS):
    return ["train", "--protocol", "coco/R50-FPN-1x", "--weights", str(weights), "--dataset", dataset(tiny_coco),
            "--output-dir", str(out), "--threads", "1", *extra, *opts]


@pytest.fixture(scope="module")
def finished(tiny_coco, tmp_path_factory):
    """A finished tiny run (2 iterations, checkpoints model_0000000, model_0000001, model_final)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    assert cli(train_args(tiny_coco, out)) == 0
    return out


def copy_run(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_hostile_pickle_as_weights_runs_nothing(tiny_coco, tmp_path, capsys):
    marker = tmp_path / "owned"
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps({"model": Evil(marker), "__author__": "x"}))
    rc = cli(train_args(tiny_coco, tmp_path / "run", "--allow-mismatch", "all", "--family", "ssl", weights=evil))
    err = capsys.readouterr().err
    assert rc == 2 and "error:" in err and "not allowed" in err
    assert not marker.exists() and not (tmp_path / "run").exists()


def test_detectron2s_own_checkpointer_reads_pkl_as_data_only(tmp_path):
    from detectron2.checkpoint import DetectionCheckpointer

    import infomin_det.engine.checkpoint  # noqa: F401  (installs the guard, as the trainer does)

    marker = tmp_path / "owned"
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps({"model": Evil(marker), "__author__": "x"}))
    with pytest.raises(pickle.UnpicklingError, match="not allowed"):
        DetectionCheckpointer(torch.nn.Linear(2, 2)).load(str(evil))
    assert not marker.exists()
    benign = tmp_path / "caffe2.pkl"      # a Caffe2-style blob file still loads, as Detectron2 reads it
    import numpy as np

    benign.write_bytes(pickle.dumps({"blobs": {"weight": np.ones((2, 2), np.float32), "bias": np.zeros(2, np.float32)}}))
    m = torch.nn.Linear(2, 2)
    DetectionCheckpointer(m).load(str(benign))
    assert torch.equal(m.weight, torch.ones(2, 2))


@pytest.mark.parametrize("name,make", [
    ("model_0000001.pth", lambda p, marker: torch.save({"model": {}, "trainer": Evil(marker)}, p)),
    ("model_0000001.pkl", lambda p, marker: p.write_bytes(pickle.dumps({"model": Evil(marker), "__author__": "x"}))),
], ids=["pth", "pkl"])
@pytest.mark.parametrize("mode", ["resume", "eval-only"])
def test_hostile_resume_checkpoint_runs_nothing(tiny_coco, finished, tmp_path, capsys, name, make, mode):
    out = copy_run(finished, tmp_path / "run")
    marker = tmp_path / "owned"
    make(out / name, marker)
    (out / "last_checkpoint").write_text(name)
    rc = cli(train_args(tiny_coco, out, *(["--eval-only"] if mode == "eval-only" else [])))
    err = capsys.readouterr().err
    assert rc == 2 and "cannot be read as weights/checkpoint data" in err and "Traceback" not in err
    assert not marker.exists()


@pytest.mark.parametrize("pointer", ["../../outside.pth", "/etc/passwd", "sub/model.pth", "link.pth"])
def test_last_checkpoint_cannot_leave_the_run_directory(tiny_coco, finished, tmp_path, capsys, pointer):
    out = copy_run(finished, tmp_path / "run")
    outside = tmp_path / "outside.pth"
    torch.save({"model": {}}, outside)
    (out / "link.pth").symlink_to(outside)
    (out / "last_checkpoint").write_text(pointer)
    assert cli(train_args(tiny_coco, out)) == 2
    err = capsys.readouterr().err
    assert "error:" in err and ("not a plain file name" in err or "points outside" in err)


def test_rerun_with_other_overrides_is_refused_and_rewrites_nothing(tiny_coco, finished, tmp_path, capsys):
    out = copy_run(finished, tmp_path / "run")
    before = {n: (out / n).read_bytes() for n in ("config.yaml", "run.json", "metrics.json")}
    rc = cli(train_args(tiny_coco, out, opts=tiny("SOLVER.MAX_ITER", "2", "SOLVER.CHECKPOINT_PERIOD", "1",
                                                  "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0",
                                                  "SOLVER.BASE_LR", "0.5")))
    err = capsys.readouterr().err
    assert rc == 2 and "SOLVER.BASE_LR" in err and "another config" in err
    assert {n: (out / n).read_bytes() for n in before} == before
    rc = cli(train_args(tiny_coco, out, "--seed", "1"))   # another identity, same directory
    assert rc == 2 and "seed" in capsys.readouterr().err


def test_rerun_of_a_finished_run_prints_its_stored_results(tiny_coco, finished, tmp_path, capsys):
    out = copy_run(finished, tmp_path / "run")
    capsys.readouterr()
    assert cli(train_args(tiny_coco, out)) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["results"] == json.loads((out / "final_results.json").read_text())
    assert printed["results"]["bbox"]["AP"] >= 0


def test_run_json_traces_the_numbers(finished):
    info = json.loads((finished / "run.json").read_text())
    prov, data = info["provenance"], info["dataset"]
    cfg_text = (finished / "config.yaml").read_text()
    assert prov["config_sha256"] == hashlib.sha256(cfg_text.encode()).hexdigest()
    assert prov["torch"] == torch.__version__ and prov["detectron2"] and prov["infomin_det"]
    assert prov["world_size"] == 1 and prov["ims_per_batch"] == 2
    assert data["paper"] is False and data["id"].startswith("coco-json:val.json@")
    vj = data["files"]["val_json"]
    assert vj["sha256"] == hashlib.sha256(open(vj["path"], "rb").read()).hexdigest()


@pytest.mark.parametrize("flags,what", [(["--seed", "-1"], "seed"), (["--num-processes", "0"], "num_processes"),
                                        (["--threads", "-2"], "threads")])
def test_out_of_range_numbers_are_refused_before_anything_is_written(tiny_coco, tmp_path, capsys, flags, what):
    assert cli(train_args(tiny_coco, tmp_path / "run", *flags)) == 2
    assert what in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_device_cuda_without_a_gpu_is_refused(tiny_coco, tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert cli(train_args(tiny_coco, tmp_path / "run", "--device", "cuda")) == 2
    assert "sees no CUDA device" in capsys.readouterr().err


def test_eval_only_with_two_processes_evaluates_on_every_rank(tiny_coco, finished, tmp_path):
    """Only rank 0 used to run the test: the evaluator's gather then waits forever (NCCL) or crashes."""
    out = copy_run(finished, tmp_path / "run")
    r = subprocess.run([sys.executable, "-m", "infomin_det", *train_args(tiny_coco, out, "--eval-only",
                                                                         "--num-processes", "2")],
                       capture_output=True, text=True, timeout=600, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert r.returncode == 0, r.stderr[-3000:]
    results = json.loads(r.stdout)["results"]
    assert results == json.loads((out / "final_results.json").read_text())   # the same weights, the same numbers


def test_the_ddp_device_fix_still_reaches_detectron2s_trainer():
    """``Trainer`` gives DDP the model's own device by swapping ``create_ddp_model`` in Detectron2's
    ``engine.defaults`` while ``DefaultTrainer.__init__`` runs (Detectron2 offers no argument for
    it). If a Detectron2 release stops calling that module-level name, the CPU / one-GPU-per-task
    runs would break at the first multi-process job: fail here, loudly, instead."""
    from detectron2.engine import DefaultTrainer
    from detectron2.engine import defaults as d2_defaults

    from infomin_det.engine.trainer import _ddp_on_the_model_device

    assert "create_ddp_model" in DefaultTrainer.__init__.__code__.co_names
    assert DefaultTrainer.__init__.__globals__ is vars(d2_defaults)
    original = d2_defaults.create_ddp_model
    with _ddp_on_the_model_device():
        patched = d2_defaults.create_ddp_model
        assert patched is not original
        model = torch.nn.Linear(2, 2)
        assert patched(model, broadcast_buffers=False) is model       # one process: no DDP wrapper
    assert d2_defaults.create_ddp_model is original
