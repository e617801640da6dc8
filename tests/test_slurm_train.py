"""The real Detectron2 trainer (``train_worker``) launched by ``infomin-det submit`` on the loopback SLURM:
an array of 2 seeds with a failing run beside it, a 2-rank gloo job with synchronised BN, and USR2
preemption -> requeue -> resume with the full iteration count and one final evaluation.

Tiny Mask R-CNN R50-FPN (reduced widths, 96-128 px, 3 iterations, a checkpoint every iteration) on
the ``tiny_coco`` fixture; everything is submitted up front so the jobs share the wall time.
"""

import json
import time

import pytest

from infomin_det.cli import main as cli
from infomin_det.launch import experiment_status

pytestmark = [pytest.mark.slurm, pytest.mark.detectron2]
pytest.importorskip("detectron2")
trainer = pytest.importorskip("infomin_det.engine.trainer", reason="train_worker not written yet")

MAX_ITER = 3
TINY = ["MODEL.RESNETS.WIDTH_PER_GROUP", "16", "MODEL.RESNETS.RES2_OUT_CHANNELS", "64",
        "MODEL.RESNETS.STEM_OUT_CHANNELS", "16", "INPUT.MIN_SIZE_TRAIN", "(96,)", "INPUT.MAX_SIZE_TRAIN", "128",
        "INPUT.MIN_SIZE_TEST", "96", "INPUT.MAX_SIZE_TEST", "128", "SOLVER.MAX_ITER", str(MAX_ITER),
        "SOLVER.CHECKPOINT_PERIOD", "1", "SOLVER.IMS_PER_BATCH", "2", "MODEL.DEVICE", "cpu",
        "TEST.PRECISE_BN.ENABLED", "False"]
PROTOCOL = "coco/R50-FPN-1x"


def submit(root, experiment, tiny_coco, *extra, weights="random", seeds=("0",)):
    (tj, ti), (vj, vi) = tiny_coco["train"], tiny_coco["val"]
    return cli(["submit", "--experiment", experiment, "--root", str(root), "--protocol", PROTOCOL,
                "--weights", weights, "--seeds", *seeds, "--dataset", f"coco-json:{tj}:{ti}:{vj}:{vi}",
                "--cluster", "slurm", "--timeout-min", "15", "--signal-delay-s", "60", *extra, *TINY])


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
    assert submit(root, "array", tiny_coco, seeds=("0", "1")) == 0
    assert submit(root, "array", tiny_coco, weights=f"broken={bad}") == 0      # a failing run in the same experiment
    assert submit(root, "ddp", tiny_coco, "--tasks-per-node", "2") == 0
    assert submit(root, "preempt", tiny_coco) == 0
    return root


def run_dir(root, exp, weights="random", seed=0):
    return root / exp / PROTOCOL / weights / f"seed{seed}"


# first in the module: the signal must reach the job while it is still training
def test_usr2_preemption_resumes_from_checkpoint_with_one_final_eval(sweep, slurm_cluster):
    exp = sweep / "preempt"
    out = run_dir(sweep, "preempt")
    end = time.time() + 600
    while not (out / "model_0000000.pth").exists():
        assert time.time() < end, "no checkpoint before the deadline"
        time.sleep(0.2)
    [st] = experiment_status(exp)
    assert st.state == "running"
    first_ckpt = (out / "model_0000000.pth").stat().st_mtime_ns
    slurm_cluster.run("scancel", "--signal=USR2", st.job_id)
    seen = set()
    states = wait_for(exp, lambda s: seen.add(next(iter(s.values())).state)
                      or all(r.state in ("done", "failed") for r in s.values()))
    [st] = states.values()
    # attempt 1 = requeued once and restarted; the transient "requeued" display state is not asserted:
    # one CI run polled pending -> running -> done around it (a status gap noted in the closing note)
    assert st.state == "done" and st.attempt == 1 and "failed" not in seen, (seen, st)
    final = [l for l in lines(out) if "bbox/AP" in l]
    assert len(final) == 1 and final[0]["iteration"] == MAX_ITER
    assert (out / "last_checkpoint").read_text().strip() == "model_final.pth"
    assert (out / "model_0000000.pth").stat().st_mtime_ns == first_ckpt   # resumed, not retrained from 0


def test_array_of_two_seeds_trains_and_evaluates(sweep, capsys):
    exp = sweep / "array"
    keys = [f"{PROTOCOL}/random/seed{k}" for k in (0, 1)]
    states = wait_for(exp, lambda s: all(s[k].state in ("done", "failed") for k in keys))
    assert [states[k].state for k in keys] == ["done", "done"], states
    for seed in (0, 1):
        out = run_dir(sweep, "array", seed=seed)
        final = [l for l in lines(out) if l.get("iteration") == MAX_ITER and "bbox/AP" in l]
        assert len(final) == 1
        assert json.loads((out / "run.json").read_text())["seed"] == seed
    capsys.readouterr()
    assert cli(["status", str(exp)]) == 0
    assert "2 done" in capsys.readouterr().out


def test_failing_run_is_reported_and_spares_the_others(sweep, capsys):
    exp = sweep / "array"
    states = wait_for(exp, lambda s: all(r.state in ("done", "failed") for r in s.values()))
    bad = states[f"{PROTOCOL}/broken/seed0"]
    assert bad.state == "failed" and bad.cause and bad.log_tail
    assert sum(s.state == "done" for s in states.values()) == 2
    capsys.readouterr()
    cli(["status", str(exp)])
    out = capsys.readouterr().out
    assert "2 done, 1 failed" in out and bad.cause in out


def test_two_rank_gloo_job_trains_with_synchronised_bn(sweep):
    exp = sweep / "ddp"
    [st] = wait_for(exp, lambda s: all(r.state in ("done", "failed") for r in s.values())).values()
    assert st.state == "done", st
    out = run_dir(sweep, "ddp")
    assert json.loads((out / "launch_result.json").read_text())["world_size"] == 2
    cfg = (out / "config.yaml").read_text()
    assert "NORM: naiveSyncBN" in cfg                        # the protocol's SyncBN, synchronised over gloo on CPU
    assert [l for l in lines(out) if l.get("iteration") == MAX_ITER and "bbox/AP" in l]
