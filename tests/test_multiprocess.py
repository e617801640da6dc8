"""Several processes on the CPU as the stand-in for GPUs: gloo ranks of the real ``infomin-det train``.

Every run is the real CLI in a subprocess on the ``tiny_coco`` set with a tiny Mask R-CNN R50-FPN
(``infomin_det.engine.tiny``; naiveSyncBN in backbone, FPN and heads, PreciseBN). What a wrong
multi-process implementation would break, and where it is caught:

* 8 ranks on 2 cores, the batch and LR scaled linearly from a reference world size of 2: the run
  finishes with one result, every val image evaluated exactly once although 4 of the 8 ranks have
  none, run.json records world size and the scaled values (and the scaling itself);
* ``--eval-only`` with 1, 2 and 3 processes (3 does not divide the 4 val images): the same numbers
  *and the same predictions, image by image* as the 2-rank training's own final evaluation -- a
  dropped or duplicated shard, or a rank evaluating with other weights or BN statistics, changes them;
* SyncBN and PreciseBN statistics equal on every rank and equal to ``model_final.pth``, seen from
  inside each rank (:func:`bn_window_worker`), on data that really differs between the ranks;
* kill -9 of rank 0 during a checkpoint save and of rank 1 between iterations, each attempt resumed
  by the same command: final weights bitwise equal to the uninterrupted 2-rank run's.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from infomin_det.engine.tiny import tiny

pytestmark = pytest.mark.detectron2
pytest.importorskip("detectron2")

TESTS = Path(__file__).resolve().parent
PROTOCOL = "coco/R50-FPN-1x"
# 6 iterations, a checkpoint every 2 (iterations 1, 3, 5), an evaluation and PreciseBN after
# iteration 2 and at the end; 1 image per rank and iteration
OPTS = tiny("SOLVER.MAX_ITER", "6", "SOLVER.CHECKPOINT_PERIOD", "2", "TEST.EVAL_PERIOD", "3",
            "SOLVER.STEPS", "(4,)", "TEST.PRECISE_BN.NUM_ITER", "2", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0")
VAL_IMAGES = {1, 2, 3, 4}                 # tiny_coco's val split
DETECTIONS = 100                          # TEST.DETECTIONS_PER_IMAGE: every box is kept at score threshold 0


def dataset(tiny_coco):
    (tj, ti), (vj, vi) = tiny_coco["train"], tiny_coco["val"]
    return f"coco-json:{tj}:{ti}:{vj}:{vi}"


def start(tiny_coco, out, *flags, opts=OPTS, fault=None, mark=None, worker=None):
    """``infomin-det train`` in a new process. ``worker``: the launcher runs this ``module:function``
    instead of the trainer's (it must call it)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFOMIN_DET_FAULT")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(p for p in (str(TESTS), env.get("PYTHONPATH")) if p),
               # a rank waiting on a dead peer fails within 2 minutes instead of the loop's 30
               INFOMIN_DET_DIST_TIMEOUT_S="120")
    if fault:
        env["INFOMIN_DET_FAULT"] = fault
    if mark:
        env["INFOMIN_DET_FAULT_MARK"] = str(mark)
    patches = [f"c.TRAIN_WORKER = {worker!r}"] * bool(worker)
    code = "\n".join(["import sys", "import infomin_det.engine.cli as c", *patches,
                      "from infomin_det.cli import main", "sys.exit(main(sys.argv[1:]))"])
    return subprocess.Popen([sys.executable, "-c", code, "train", "--protocol", PROTOCOL, "--weights", "none",
                             "--dataset", dataset(tiny_coco), "--output-dir", str(out), "--threads", "1",
                             "--seed", "5", "--device", "cpu", *flags, *opts],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc, timeout=300):
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_tree(proc.pid)
        stdout, stderr = proc.communicate()
        pytest.fail(f"train did not finish in {timeout} s: {stderr[-3000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def train(tiny_coco, out, *flags, timeout=300, **kw):
    return finish(start(tiny_coco, out, *flags, **kw), timeout)


def children(pid):
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def kill_tree(pid):
    for kid in children(pid):
        kill_tree(kid)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def rank_pid(cli_pid, out, rank):
    """The PID of rank ``rank`` (> 0) among the CLI's spawned processes: the one holding its log open."""
    log = str(out / f"log.txt.rank{rank}")
    for kid in children(cli_pid):
        try:
            if any(os.readlink(fd) == log for fd in Path(f"/proc/{kid}/fd").iterdir()):
                return kid
        except OSError:
            continue
    raise AssertionError(f"no child of {cli_pid} has {log} open")


def eval_iterations(out):
    lines = (out / "metrics.json").read_text().replace("NaN", "null").splitlines()
    return [json.loads(l)["iteration"] for l in lines if "bbox/AP" in l]


def predictions(out):
    """The last evaluation's detections (COCOEvaluator's json), in a canonical order."""
    preds = json.loads((out / "inference" / "coco_instances_results.json").read_text())
    return sorted(preds, key=lambda d: (d["image_id"], d["category_id"], d["bbox"], d["score"]))


def final_weights(out):
    return torch.load(out / "model_final.pth", weights_only=True)["model"]


# ------------------------------------------------------------------------------------------------
# a window into every rank (runs inside the spawned ranks: imported there by its module name)

def _state(model):
    return {k.removeprefix("module."): v.detach().clone() for k, v in model.state_dict().items()}


def bn_window_worker(spec):
    """The trainer's own worker, watched from inside each rank: every PreciseBN call (the trainer's
    hook, whatever its class) writes ``window-<iter>-rank<r>.pt`` with the rank's full model state
    before and after it, the batch size each BN layer saw in it, and the image ids of every batch the
    rank's model was given so far. Reads only; the run's numbers are those of the plain CLI."""
    from detectron2.engine import hooks as d2_hooks
    from detectron2.utils import comm
    from fvcore.nn.precise_bn import get_bn_modules

    from infomin_det.engine import trainer

    out = Path(spec.output_dir)
    build = trainer.Trainer.build_hooks

    def build_hooks(self):
        hooks = build(self)
        images = []
        self.model.register_forward_pre_hook(lambda m, args: images.append(sorted(d["image_id"] for d in args[0])))
        for h in hooks:
            if isinstance(h, d2_hooks.PreciseBN) and not h._disabled:
                h.update_stats = _watched(h, h.update_stats, images, out, comm, get_bn_modules)
        return hooks

    trainer.Trainer.build_hooks = build_hooks
    return trainer.train_worker(spec)


bn_window_worker.detectron2_comm = True


def _watched(hook, update, images, out, comm, get_bn_modules):
    def update_stats():
        names = {m: n.removeprefix("module.") for n, m in hook._model.named_modules()}
        sizes = {}
        handles = [bn.register_forward_pre_hook(lambda m, a: sizes.setdefault(names[m], []).append(a[0].shape[0]))
                   for bn in get_bn_modules(hook._model)]
        before = _state(hook._model)
        try:
            update()
        finally:
            for h in handles:
                h.remove()
        torch.save({"before": before, "after": _state(hook._model), "sizes": sizes, "images": list(images)},
                   out / f"window-{hook.trainer.iter}-rank{comm.get_rank()}.pt")
    return update_stats


@pytest.fixture(scope="module")
def two_ranks(tiny_coco, tmp_path_factory):
    """The uninterrupted 2-rank run (through :func:`bn_window_worker`), and its final predictions."""
    out = tmp_path_factory.mktemp("two_ranks") / "run"
    r = train(tiny_coco, out, "--num-processes", "2", worker="test_multiprocess:bn_window_worker")
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout)["results"] == json.loads((out / "final_results.json").read_text())
    assert eval_iterations(out) == [2, 6]
    return out


# ------------------------------------------------------------------------------------------------
# 8 ranks, linear scaling

SCALED = tiny("SOLVER.REFERENCE_WORLD_SIZE", "2", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.BASE_LR", "0.01",
              "SOLVER.MAX_ITER", "8", "SOLVER.WARMUP_ITERS", "4", "SOLVER.CHECKPOINT_PERIOD", "8",
              "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0")


@pytest.fixture(scope="module")
def eight_ranks(tiny_coco, tmp_path_factory):
    """8 gloo ranks on this 2-core machine. The CLI refuses more processes than cores on the CPU
    (``infomin_det.dist.check_local_processes``), so it is told the machine has 8: everything else
    is the CLI's own path (run_local, one thread per rank)."""
    out = tmp_path_factory.mktemp("eight_ranks") / "run"
    t0 = time.monotonic()
    r = train(tiny_coco, out, "--num-processes", "8", opts=SCALED, timeout=400)
    assert r.returncode == 0, r.stderr[-3000:]
    return out, json.loads(r.stdout), time.monotonic() - t0


def test_eight_ranks_train_scaled_from_the_reference_world_size_and_write_one_result(eight_ranks):
    out, printed, seconds = eight_ranks
    info = json.loads((out / "run.json").read_text())
    prov = info["provenance"]
    # reference 2 -> 8 ranks: x4 -- batch 2 -> 8 (1 image per rank), LR 0.01 -> 0.04, 8 -> 2 iterations
    assert (prov["world_size"], prov["ims_per_batch"], prov["max_iter"]) == (8, 8, 2)
    assert prov["base_lr"] == pytest.approx(0.04)
    assert info["extra"]["world_size"] == 8
    assert sorted(p.name for p in out.glob("log.txt.rank*")) == [f"log.txt.rank{r}" for r in range(1, 8)]
    assert "NORM: naiveSyncBN" in (out / "config.yaml").read_text()
    # one result: printed once (rank 0), recorded once, the final evaluation once
    assert printed["results"] == json.loads((out / "final_results.json").read_text())
    assert set(printed["results"]) == {"bbox", "segm"}
    assert json.loads((out / "launch_result.json").read_text())["world_size"] == 8
    assert eval_iterations(out) == [2]
    assert (out / "last_checkpoint").read_text().strip() == "model_final.pth"
    # 4 val images on 8 ranks: ranks 4-7 get none; each image is evaluated once, none twice
    per_image = {}
    for d in predictions(out):
        per_image[d["image_id"]] = per_image.get(d["image_id"], 0) + 1
    assert per_image == {i: DETECTIONS for i in VAL_IMAGES}
    print(f"8 ranks: {seconds:.1f} s")


def test_run_json_records_the_scaling_from_the_reference_world_size(eight_ranks):
    """What the run was scaled from must be recoverable from run.json: the reference world size it
    was given (2, not the leaf's 8), the values before scaling (batch 2, LR 0.01, 8 iterations) and
    the world size -- config.yaml cannot tell (Detectron2 rewrites REFERENCE_WORLD_SIZE to 8)."""
    out, _, _ = eight_ranks
    scaling = json.loads((out / "run.json").read_text())["provenance"].get("batch_scaling")
    assert scaling, "run.json does not record the batch/LR scaling"
    assert scaling["world_size"] == 8 and scaling["reference_world_size"] == 2, scaling
    given = {"ims_per_batch": 2, "base_lr": 0.01, "max_iter": 8}
    assert any(isinstance(v, dict) and {k: v.get(k) for k in given} == given for v in scaling.values()), scaling


# ------------------------------------------------------------------------------------------------
# --eval-only on 1 and 3 processes

# 2 processes is the training's own final evaluation, compared against below; 3 gives uneven shards
@pytest.mark.parametrize("processes", [1, 3])
def test_eval_only_gives_the_same_results_and_predictions_with_any_process_count(tiny_coco, two_ranks, tmp_path,
                                                                                processes):
    """The weights of the 2-rank run, evaluated by 1, 2 or 3 processes (3: shards of 2, 1 and 1
    images): the numbers and every detection equal those of the training's final evaluation -- which
    each rank made with its own in-memory model (so a rank whose BN statistics were not rank 0's, i.e.
    not model_final.pth's, shows up here too)."""
    out = tmp_path / "run"
    shutil.copytree(two_ranks, out, ignore=shutil.ignore_patterns("window-*", "model_000*"))
    (out / "inference").rename(tmp_path / "training_inference")
    r = train(tiny_coco, out, "--eval-only", *(["--num-processes", str(processes)] if processes > 1 else []))
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout)["results"] == json.loads((two_ranks / "final_results.json").read_text())
    mine = predictions(out)
    assert {d["image_id"] for d in mine} == VAL_IMAGES and len(mine) == DETECTIONS * len(VAL_IMAGES)
    assert mine == predictions(two_ranks)


# ------------------------------------------------------------------------------------------------
# SyncBN / PreciseBN statistics on every rank

def test_sync_and_precise_bn_statistics_are_the_same_on_every_rank_and_in_the_checkpoint(two_ranks):
    """Detectron2's DDP does not broadcast buffers (``broadcast_buffers=False``), and fvcore's PreciseBN
    weights each iteration by the rank's own batch size: equality has to come from naiveSyncBN in
    training and from the trainer after PreciseBN. Checked on every rank at both PreciseBN calls
    (after iteration 2 and the final one), before (SyncBN's running statistics) and after."""
    bn_keys, uneven = None, []
    for it in (2, 5):
        w0, w1 = (torch.load(two_ranks / f"window-{it}-rank{r}.pt", weights_only=True) for r in (0, 1))
        # the ranks did see different data: statistics kept per rank would differ
        assert w0["images"] != w1["images"]
        uneven.append(any(w0["sizes"][k] != w1["sizes"][k] for k in w0["sizes"]))
        bn_keys = [k for k in w0["after"] if k.endswith(("running_mean", "running_var"))]
        assert len(bn_keys) > 100
        for phase in ("before", "after"):
            differ = [k for k in w0[phase] if not torch.equal(w0[phase][k], w1[phase][k])]
            assert not differ, f"{phase} PreciseBN after iteration {it}, ranks 0 and 1 differ in {differ[:6]}"
        # not equal by doing nothing: training moved the statistics, PreciseBN replaced them
        assert all(w0["before"][k].abs().sum() > 0 for k in bn_keys if k.endswith("running_mean"))
        changed = [k for k in bn_keys if not torch.equal(w0["before"][k], w0["after"][k])]
        assert len(changed) > len(bn_keys) // 2, "PreciseBN left the statistics alone"
    # in at least one window a BN layer saw batches of different sizes on the two ranks (the mask
    # head's foreground ROIs, 5 vs 8 after iteration 2; once both ranks reach the sampler's cap of 8
    # they can be equal) -- the case in which fvcore weights each rank's statistics differently
    assert any(uneven), "every BN layer saw equal batch sizes in both windows"
    final = final_weights(two_ranks)
    assert final.keys() == w0["after"].keys()
    assert all(torch.equal(final[k], w0["after"][k]) for k in final), "model_final.pth is not what the ranks hold"


# ------------------------------------------------------------------------------------------------
# kill -9 of one rank, resumed by the same command

def test_kill_9_of_one_rank_then_resume_gives_the_uninterrupted_weights(tiny_coco, two_ranks, tmp_path):
    out, mark = tmp_path / "run", tmp_path / "paused"
    two = ("--num-processes", "2")

    # rank 0 (the only one that saves) killed while writing its second checkpoint (iteration 3);
    # rank 1 is then waiting for it in a collective
    r = train(tiny_coco, out, *two, fault="save:2:KILL")
    assert r.returncode != 0
    assert "rank 0 of 2 was killed by signal SIGKILL" in r.stderr, r.stderr[-3000:]
    assert (out / "last_checkpoint").read_text() == "model_0000001.pth"
    assert [p for p in out.iterdir() if p.name.startswith(".model_0000003.pth.")], "kill -9 mid-save left no temp?"

    # resumed at 2; rank 1 killed from outside before iteration 4 (the third step of this attempt),
    # after rank 0 saved iteration 3
    proc = start(tiny_coco, out, *two, fault="step:3:PAUSE60", mark=mark)
    end = time.monotonic() + 240
    while not mark.exists():
        if proc.poll() is not None or time.monotonic() > end:
            kill_tree(proc.pid)
            pytest.fail(f"the run never reached the pause: {proc.communicate()[1][-3000:]}")
        time.sleep(0.2)
    os.kill(rank_pid(proc.pid, out, 1), signal.SIGKILL)
    r = finish(proc, timeout=120)
    assert r.returncode != 0
    assert "rank 1 of 2 was killed by signal SIGKILL" in r.stderr, r.stderr[-3000:]
    assert (out / "last_checkpoint").read_text() == "model_0000003.pth"

    r = train(tiny_coco, out, *two)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Starting training from iteration 4" in (out / "log.txt").read_text()
    assert json.loads((out / "final_results.json").read_text()) == json.loads(
        (two_ranks / "final_results.json").read_text())
    mine, theirs = final_weights(out), final_weights(two_ranks)
    assert mine.keys() == theirs.keys()
    assert all(torch.equal(mine[k], theirs[k]) for k in mine), "final weights differ"
    evals = eval_iterations(out)
    assert set(evals) == {2, 6} and evals.count(6) == 1          # every eval kept, the final one once
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp") or p.name.startswith(".model_")]
    assert json.loads((out / "run.json").read_text())["extra"]["resumed_from_iter"] == 4
