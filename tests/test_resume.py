"""An interrupted and resumed run ends with exactly the numbers -- and the weights -- of an
uninterrupted one, and keeps every evaluation record.

A tiny Mask R-CNN (6 iterations, a checkpoint every 2, an evaluation after iteration 3 and at the
end, PreciseBN) runs once straight through and twice as a chain of attempts, each attempt stopped at
a named point (``infomin_det.faults``) and then resumed by the very same command: Ctrl-C between
iterations, during a checkpoint save and during an evaluation; kill -9 between iterations, during a
save, during the periodic and during the final evaluation; SIGUSR2 (preemption: checkpoint the
current iteration, exit 75). Every run is the real ``infomin-det train`` in a subprocess.
"""

import json
import os
import signal
import subprocess
import sys

import pytest
import torch

from infomin_det.engine.tiny import tiny

pytestmark = pytest.mark.detectron2
pytest.importorskip("detectron2")

OPTS = tiny("SOLVER.MAX_ITER", "6", "SOLVER.CHECKPOINT_PERIOD", "2", "TEST.EVAL_PERIOD", "3",
            "SOLVER.STEPS", "(4,)", "TEST.PRECISE_BN.NUM_ITER", "2", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0")


def train(tiny_coco, out, fault=None):
    (tj, ti), (vj, vi) = tiny_coco["train"], tiny_coco["val"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFOMIN_DET_FAULT")}
    env["OMP_NUM_THREADS"] = "1"
    if fault:
        env["INFOMIN_DET_FAULT"] = fault
    return subprocess.run([sys.executable, "-m", "infomin_det", "train", "--protocol", "coco/R50-FPN-1x",
                           "--weights", "none", "--dataset", f"coco-json:{tj}:{ti}:{vj}:{vi}", "--output-dir",
                           str(out), "--threads", "1", "--seed", "5", *OPTS],
                          env=env, capture_output=True, text=True, timeout=600,
                          # a background CI job inherits SIGINT ignored; Python then never raises
                          # KeyboardInterrupt -- give the run the disposition of a terminal's process
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def eval_iterations(out):
    lines = (out / "metrics.json").read_text().replace("NaN", "null").splitlines()
    return [json.loads(l)["iteration"] for l in lines if "bbox/AP" in l]


@pytest.fixture(scope="module")
def reference(tiny_coco, tmp_path_factory):
    out = tmp_path_factory.mktemp("straight") / "run"
    r = train(tiny_coco, out)
    assert r.returncode == 0, r.stderr[-2000:]
    assert eval_iterations(out) == [2, 6]
    return out


def assert_same_as(reference, out):
    assert json.loads((out / "final_results.json").read_text()) == json.loads(
        (reference / "final_results.json").read_text())
    mine = torch.load(out / "model_final.pth", weights_only=True)["model"]
    theirs = torch.load(reference / "model_final.pth", weights_only=True)["model"]
    assert mine.keys() == theirs.keys()
    assert all(torch.equal(mine[k], theirs[k]) for k in mine), "final weights differ"
    evals = eval_iterations(out)
    assert set(evals) == {2, 6} and evals.count(6) == 1        # every eval kept, the final one once
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]


def run_chain(tiny_coco, out, chain):
    for fault, code, check in chain:
        r = train(tiny_coco, out, fault)
        assert r.returncode == code, (fault, r.returncode, r.stderr[-2000:])
        assert "Traceback" not in r.stderr or code < 0 or code == 130, r.stderr[-2000:]
        if check:
            check(out)


def test_ctrl_c_anywhere_then_resume_gives_the_uninterrupted_numbers(tiny_coco, tmp_path, reference):
    run_chain(tiny_coco, tmp_path / "run", [
        ("step:2:INT", 130, lambda o: not (o / "last_checkpoint").exists() or pytest.fail("checkpoint too early")),
        ("save:2:INT", 130, lambda o: (o / "last_checkpoint").read_text() == "model_0000001.pth"
         or pytest.fail("an interrupted save must leave the previous checkpoint")),
        ("eval:1:INT", 130, None),
        (None, 0, None),
    ])
    assert_same_as(reference, tmp_path / "run")


def test_kill_9_and_preemption_anywhere_then_resume_gives_the_uninterrupted_numbers(tiny_coco, tmp_path, reference):
    def half_written_save(o):
        assert (o / "last_checkpoint").read_text() == "model_0000001.pth"
        assert [p for p in o.iterdir() if p.name.startswith(".model_0000003.pth.")], "kill -9 mid-save left no temp?"

    def preempted_at_3(o):
        assert (o / "last_checkpoint").read_text() == "model_0000003.pth"
        assert "preempted at iteration 3" in (o / "log.txt").read_text()

    def final_eval_lost(o):
        assert (o / "last_checkpoint").read_text() == "model_final.pth" and not (o / "final_results.json").exists()

    run_chain(tiny_coco, tmp_path / "run", [
        ("step:3:KILL", -9, lambda o: eval_iterations(o) == [] or pytest.fail("no eval yet")),
        ("save:1:KILL", -9, half_written_save),                # resumed at 2: its first save is iteration 3
        ("eval:1:KILL", -9, None),                             # the periodic evaluation after iteration 2
        ("step:2:USR2", 75, preempted_at_3),                   # signal before iteration 3: saved at 3
        ("eval:1:KILL", -9, final_eval_lost),                  # resumed at 4: its first eval is the final one
        (None, 0, None),
    ])
    assert_same_as(reference, tmp_path / "run")
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["extra"]["resumed"] and info["extra"]["resumed_from_iter"] == 6


def test_batches_are_a_function_of_the_iteration_whatever_the_loader_workers(tiny_coco, tmp_path):
    """Batch k (images, flips and sizes) is the same from the start, resumed at k, and with 0 or 2
    DataLoader workers -- the property the chains above rely on."""
    from infomin_det.engine.config import build_config
    from infomin_det.engine.loader import build_resumable_loader
    from infomin_det.engine.spec import TrainSpec

    (tj, ti), (vj, vi) = tiny_coco["train"], tiny_coco["val"]

    def batches(workers, start, n):
        spec = TrainSpec("coco/R50-FPN-1x", "", str(tmp_path), dataset=f"coco-json:{tj}:{ti}:{vj}:{vi}", seed=5,
                         opts=tiny("DATALOADER.NUM_WORKERS", str(workers), "INPUT.MIN_SIZE_TRAIN", "(64, 96, 128)"))
        cfg, _, _ = build_config(spec, world=1)
        loader = build_resumable_loader(cfg)
        loader.start = start
        it = iter(loader)
        return [[(d["image_id"], tuple(d["image"].shape), float(d["image"].float().sum())) for d in next(it)]
                for _ in range(n)]

    straight = batches(0, 0, 12)
    assert batches(0, 7, 5) == straight[7:]
    assert batches(2, 0, 12) == straight
    assert batches(2, 7, 5) == straight[7:]
    assert len({tuple(b) for b in straight}) > 6            # not the same batch over and over
