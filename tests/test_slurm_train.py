"""The real Detectron2 trainer (``train_worker``) launched by ``infomin-det submit`` on the loopback SLURM:
an array of 2 seeds with a failing run beside it, and a 2-rank gloo job (synchronised BN) preempted
by ``scancel --signal=USR2`` in the middle of an iteration k, with a checkpoint period longer than the
run: both ranks finish iteration k, rank 0 saves it, the job is requeued and the next attempt starts
at iteration k + 1 -- not at 0 -- and ends with one final evaluation.

Tiny Mask R-CNN R50-FPN (``infomin_det.engine.tiny``) on the ``tiny_coco`` fixture; everything is
submitted up front so the jobs share the wall time.
"""

import json
import os
import time

import pytest

from infomin_det.cli import main as cli
from infomin_det.engine.tiny import tiny
from infomin_det.launch import experiment_status

pytestmark = [pytest.mark.slurm, pytest.mark.detectron2]
pytest.importorskip("detectron2")

PROTOCOL = "coco/R50-FPN-1x"
ARRAY = tiny("SOLVER.MAX_ITER", "3", "SOLVER.CHECKPOINT_PERIOD", "1", "TEST.PRECISE_BN.ENABLED", "False")
PREEMPT_ITERS, PAUSED_AT = 6, 2          # the pause (and the signal) come before iteration 2
PREEMPT = tiny("SOLVER.MAX_ITER", str(PREEMPT_ITERS), "SOLVER.CHECKPOINT_PERIOD", "100",
               "TEST.PRECISE_BN.ENABLED", "False", "SOLVER.IMS_PER_BATCH", "4")


def submit(root, experiment, tiny_coco, *extra, weights="random", seeds=("0",), opts=ARRAY):
    (tj, ti), (vj, vi) = tiny_coco["train"], tiny_coco["val"]
    return cli(["submit", "--experiment", experiment, "--root", str(root), "--protocol", PROTOCOL,
                "--weights", weights, "--seeds", *seeds, "--dataset", f"coco-json:{tj}:{ti}:{vj}:{vi}",
                "--cluster", "slurm", "--device", "cpu", "--timeout-min", "15", "--signal-delay-s", "60",
                *extra, "--", *opts])


def wait_for(exp, done, timeout=900):
    end = time.time() + timeout
    while True:
        states = {s.key: s for s in experiment_status(exp)}
        if states and done(states):
            return states
        if time.time() > end:
            pytest.fail(f"timed out waiting on {exp}: {states}")
        time.sleep(1)


def lines(out):
    return [json.loads(l) for l in (out / "metrics.json").read_text().replace("NaN", "null").splitlines()]


@pytest.fixture(scope="module")
def sweep(slurm_cluster, tiny_coco, tmp_path_factory):
    root = tmp_path_factory.mktemp("slurm_train")
    bad = root / "corrupt.pkl"
    bad.write_bytes(b"this is not a pickle")
    mark = root / "paused"
    # the preempted job pauses before iteration PAUSED_AT of its first attempt, so that the test can
    # signal it from outside at a known iteration (infomin_det.faults; sbatch exports the variables)
    os.environ.update(INFOMIN_DET_FAULT=f"step:{PAUSED_AT + 1}:PAUSE20", INFOMIN_DET_FAULT_MARK=str(mark))
    try:
        assert submit(root, "ddp", tiny_coco, "--tasks-per-node", "2", "--cpus-per-task", "1", opts=PREEMPT) == 0
    finally:
        os.environ.pop("INFOMIN_DET_FAULT")
        os.environ.pop("INFOMIN_DET_FAULT_MARK")
    assert submit(root, "array", tiny_coco, seeds=("0", "1")) == 0
    assert submit(root, "array", tiny_coco, weights=f"broken={bad}") == 2     # refused before queueing
    return root


def run_dir(root, exp, weights="random", seed=0):
    return root / exp / PROTOCOL / weights / f"seed{seed}"


# first in the module: the signal must reach the job while it is paused
def test_usr2_in_iteration_k_checkpoints_k_and_the_requeued_attempt_starts_after_it(sweep, slurm_cluster):
    exp, out = sweep / "ddp", run_dir(sweep, "ddp")
    end = time.time() + 600
    while not (sweep / "paused").exists():
        assert time.time() < end, "the job never reached the pause"
        time.sleep(0.2)
    [st] = experiment_status(exp)
    assert st.state == "running"
    slurm_cluster.run("scancel", "--signal=USR2", st.job_id)
    [st] = wait_for(exp, lambda s: all(r.state in ("done", "failed") for r in s.values())).values()
    assert st.state == "done" and st.attempt == 1, st
    log = (out / "log.txt").read_text()
    assert f"preempted at iteration {PAUSED_AT}: saved model_{PAUSED_AT:07d}.pth" in log
    assert f"Starting training from iteration {PAUSED_AT + 1}" in log       # not from 0
    info = json.loads((out / "run.json").read_text())
    assert info["extra"]["resumed"] and info["extra"]["resumed_from_iter"] == PAUSED_AT + 1
    assert info["provenance"]["world_size"] == 2
    final = [l for l in lines(out) if "bbox/AP" in l]
    assert len(final) == 1 and final[0]["iteration"] == PREEMPT_ITERS
    assert (out / "last_checkpoint").read_text().strip() == "model_final.pth"
    assert "NORM: naiveSyncBN" in (out / "config.yaml").read_text()   # SyncBN, synchronised over gloo on CPU
    assert json.loads((out / "launch_result.json").read_text())["world_size"] == 2


def test_array_of_two_seeds_trains_and_evaluates(sweep, capsys):
    exp = sweep / "array"
    keys = [f"{PROTOCOL}/random/seed{k}" for k in (0, 1)]
    states = wait_for(exp, lambda s: all(s[k].state in ("done", "failed") for k in keys))
    assert [states[k].state for k in keys] == ["done", "done"], states
    for seed in (0, 1):
        out = run_dir(sweep, "array", seed=seed)
        final = [l for l in lines(out) if l.get("iteration") == 3 and "bbox/AP" in l]
        assert len(final) == 1
        assert json.loads((out / "run.json").read_text())["seed"] == seed
    assert not run_dir(sweep, "array", weights="broken").exists()        # refused: never queued
    capsys.readouterr()
    assert cli(["status", str(exp)]) == 0
    assert "2 done" in capsys.readouterr().out
