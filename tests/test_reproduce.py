"""``reproduce TABLE`` and ``submit --dry-run``: the plan (rows, seeds, GPU-hours), the pre-flight
refusals before anything is written, and the report of a reproduction beside the paper's numbers."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from infomin_det.convert import convert
from infomin_det.convert.synthetic import random_trunk
from infomin_det.errors import UserError
from infomin_det.launch import plan
from infomin_det.launch.reproduce_cli import plan_runs
from infomin_det.report.synthetic import config_yaml, write_run
from infomin_det.weights_meta import ResNetArch

CLI = [sys.executable, "-m", "infomin_det"]
R50_IN = "detectron2://ImageNetPretrained/MSRA/R-50.pkl"
W = str(Path(__file__).resolve())       # any readable file: planning reads no weights


@pytest.fixture(scope="module")
def r50(tmp_path_factory):
    """A converted full-size ResNet-50 (random values, real metadata) and an R-18 one."""
    d = tmp_path_factory.mktemp("w")
    out = {}
    for name, arch in (("r50", ResNetArch(50)), ("r18", ResNetArch(18, 1, 64, 64, 64))):
        torch.save(random_trunk(arch), d / f"{name}.pth")
        convert(d / f"{name}.pth", d / f"{name}.pkl")
        out[name] = d / f"{name}.pkl"
    return out


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    """Detectron2's COCO / VOC layout (placeholder files: presence is what the pre-flight checks)."""
    root = tmp_path_factory.mktemp("datasets")
    (root / "coco/annotations").mkdir(parents=True)
    for s in ("train2017", "val2017"):
        (root / "coco" / s).mkdir()
        (root / "coco" / s / "000000000001.jpg").write_bytes(b"\xff\xd8")
        (root / f"coco/annotations/instances_{s}.json").write_text("{}")
    for year, splits in (("2007", ("trainval", "test")), ("2012", ("trainval",))):
        for d in ("Annotations", "JPEGImages", "ImageSets/Main"):
            (root / f"VOC{year}" / d).mkdir(parents=True)
        (root / f"VOC{year}/JPEGImages/000001.jpg").write_bytes(b"\xff\xd8")
        for s in splits:
            (root / f"VOC{year}/ImageSets/Main/{s}.txt").write_text("")
    return root


def cli(*args, cwd, datasets=None, env=None):
    e = dict(os.environ, **(env or {}))
    e.pop("SLURM_CONF", None) if env is None or "SLURM_CONF" not in env else None
    if datasets is not None:
        e["DETECTRON2_DATASETS"] = str(datasets)
    return subprocess.run([*CLI, *map(str, args)], cwd=cwd, env=e, capture_output=True, text=True, timeout=300)


# --- the plan ----------------------------------------------------------------------------------

def test_t3a_plans_the_panels_baselines_and_your_rows_with_one_coco_seed():
    runs, panels = plan_runs("T3a", [f"infomin={W}"], None, None)
    assert panels == [{"panel": "T3a", "protocol": "coco/R50-FPN-1x"}]
    assert [(p, n, w, s) for p, n, w, s in runs] == [
        ("coco/R50-FPN-1x", "random", "", [0]), ("coco/R50-FPN-1x", "supervised", R50_IN, [0]),
        ("coco/R50-FPN-1x", "infomin", W, [0])]


def test_voc_gets_five_seeds_and_a_whole_table_every_panel():
    runs, _ = plan_runs("T4", [f"infomin={W}"], None, None)
    assert {n: s for _, n, _, s in runs} == {"random": [0, 1, 2, 3, 4], "supervised": [0, 1, 2, 3, 4],
                                           "infomin": [0, 1, 2, 3, 4]}
    runs, panels = plan_runs("T3", [f"infomin={W}"], None, ["3"])
    assert [p["panel"] for p in panels] == ["T3a", "T3b"]
    assert sorted({p for p, *_ in runs}) == ["coco/R50-FPN-1x", "coco/R50-FPN-2x"] and {tuple(s) for *_, s in runs} == {(3,)}


def test_panels_without_a_random_row_run_none_and_the_supervised_weights_follow_the_architecture():
    runs, _ = plan_runs("T10a", [f"infomin={W}"], None, None)
    assert [(n, w) for _, n, w, _ in runs] == [("supervised", "detectron2://ImageNetPretrained/FAIR/X-101-32x8d.pkl"),
                                               ("infomin", W)]
    runs, _ = plan_runs("T11a", [], ["supervised"], None)
    assert [w for *_, w, _ in runs] == ["catalog://ImageNetPretrained/FAIR/X-152-32x8d-IN5k"]


@pytest.mark.parametrize("table, weights, baselines, seeds, words", [
    ("T12", [f"a={W}"], None, None, "no detection table"),
    ("T3a", [], ["none"], None, "nothing to run"),
    ("T3a", [f"supervised={W}"], None, None, "baseline rows"),
    ("T3a", [f"a={W}"], ["imagenet"], None, "not a baseline row"),
    ("T3a", ["a=/nonexistent.pkl"], None, None, "does not exist"),
    ("T3a", [f"a={W}"], None, ["-1"], "whole number"),
    ("T3a", [f"a={W}", f"a={W}"], None, None, "share the row name"),
])
def test_bad_plans_are_refused(table, weights, baselines, seeds, words):
    with pytest.raises(UserError, match=words):
        plan_runs(table, weights, baselines, seeds)


def test_gpu_hours_are_the_published_iteration_times_and_fewer_gpus_only_stretch_the_wall_time():
    # pinned: R50-FPN 1x = 0.345 s/iter x 90k iterations x 8 GPUs; VOC 24k; a 6x schedule
    assert round(plan.gpu_hours("coco/R50-FPN-1x"), 1) == 69.0
    assert round(plan.gpu_hours("voc/R50-C4-24k"), 1) == 37.9
    assert round(plan.gpu_hours("coco/R50-FPN-6x"), 1) == 414.0
    assert plan.wall_hours("coco/R50-FPN-1x", 4) == pytest.approx(2 * plan.wall_hours("coco/R50-FPN-1x", 8))
    assert plan.wall_hours("coco/R50-FPN-1x", 0) is None
    assert {plan.iter_time(p.id).kind for p in __import__("infomin_det.protocols", fromlist=["x"]).list_protocols()} \
        == {"measured", "scaled", "extrapolated"}
    assert plan.requeues_needed(plan.wall_hours("coco/R50-FPN-6x", 8), 1440) == 2
    assert plan.requeues_needed(8.0, 1440) == 0 and plan.requeues_needed(24.01, 1440) == 1


# --- the CLI: dry runs and pre-flight -----------------------------------------------------------

def test_reproduce_dry_run_prints_the_plan_and_writes_nothing(tmp_path, r50, datasets):
    p = cli("reproduce", "T3a", "--weights", f"infomin={r50['r50']}", "--dry-run", "--cluster", "local",
            "--device", "cpu", "--gpus-per-node", "0", "--root", tmp_path / "runs", cwd=tmp_path, datasets=datasets)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0] == "reproduce T3a: panels T3a"
    rows = [l.split() for l in lines if l.startswith("coco/")]
    assert [(r[0], r[1], r[2], r[3]) for r in rows] == [("coco/R50-FPN-1x", "random", "random", "0"),
                                                        ("coco/R50-FPN-1x", "supervised", "supervised", "0"),
                                                        ("coco/R50-FPN-1x", "infomin", "ssl", "0")]
    assert "3 would-submit" in p.stdout and "nothing was queued or written" in p.stdout
    assert not (tmp_path / "runs").exists()


@pytest.mark.slurm
def test_reproduce_t4_on_slurm_shows_gpu_hours_then_the_schedulers_refusal(tmp_path, r50, datasets, slurm_cluster):
    """The loopback cluster has no GPUs: the plan (15 runs, GPU-hours) is printed, then sbatch --test-only refuses."""
    p = cli("reproduce", "T4", "--weights", f"infomin={r50['r50']}", "--dry-run", "--cluster", "slurm",
            "--root", tmp_path / "runs", cwd=tmp_path, datasets=datasets, env={"SLURM_CONF": os.environ["SLURM_CONF"]})
    assert p.returncode == 2
    assert "15 runs, 568 GPU-hours estimated" in p.stdout
    assert [l.split()[6] for l in p.stdout.splitlines() if l.startswith("voc/")] == ["37.9"] * 3   # GPU-h per run
    assert "error: SLURM refuses the job request" in p.stderr and "--gpus-per-node=8" in p.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("case", ["no-dataset", "empty-json", "no-images", "wrong-depth", "gpus-on-a-gpu-less-machine"])
def test_reproduce_pre_flight_refuses_before_anything_is_written(tmp_path, r50, datasets, case):
    import shutil

    args = ["reproduce", "T3a", "--dry-run", "--cluster", "local", "--root", tmp_path / "runs"]
    ds, weights, extra = datasets, r50["r50"], ["--device", "cpu", "--gpus-per-node", "0"]
    if case == "no-dataset":
        ds = tmp_path / "empty"
        ds.mkdir()
    elif case in ("empty-json", "no-images"):
        ds = tmp_path / "ds"
        shutil.copytree(datasets, ds)
        if case == "empty-json":
            (ds / "coco/annotations/instances_val2017.json").write_text("")
        else:
            shutil.rmtree(ds / "coco/train2017")
            (ds / "coco/train2017").mkdir()
    elif case == "wrong-depth":
        weights = r50["r18"]
    else:
        extra = []
    p = cli(*args, "--weights", f"infomin={weights}", *extra, cwd=tmp_path, datasets=ds,
            env={"CUDA_VISIBLE_DEVICES": ""})
    assert p.returncode == 2 and "Traceback" not in p.stderr
    err = p.stderr
    assert "error:" in err and "fix:" in err
    assert {"no-dataset": "instances_train2017.json (file) does not exist", "wrong-depth": "MODEL.RESNETS.DEPTH",
            "empty-json": "instances_val2017.json is empty", "no-images": "train2017 holds no images",
            "gpus-on-a-gpu-less-machine": "no GPU is visible"}[case] in err
    assert not (tmp_path / "runs").exists()


def test_submit_dry_run_checks_everything_and_writes_nothing(tmp_path, tiny_coco):
    ds = "coco-json:{}:{}:{}:{}".format(*tiny_coco["train"], *tiny_coco["val"])
    p = cli("submit", "--experiment", "e", "--root", tmp_path / "runs", "--protocol", "coco/R50-FPN-1x",
            "--weights", "random", "--seeds", "0", "1", "--dataset", ds, "--cluster", "local", "--device", "cpu",
            "--dry-run", "--", "SOLVER.MAX_ITER", "2", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "coco/R50-FPN-1x  random   random  0,1    2" in p.stdout
    assert "2 would-submit" in p.stdout and not (tmp_path / "runs").exists()
    j = cli("submit", "--experiment", "e", "--root", tmp_path / "runs", "--protocol", "coco/R50-FPN-1x",
            "--weights", "random", "--seeds", "0", "1", "--dataset", ds, "--cluster", "local", "--device", "cpu",
            "--dry-run", "--json", "--", "SOLVER.MAX_ITER", "2", cwd=tmp_path)
    doc = json.loads(j.stdout)             # only JSON on stdout; the text went to stderr
    assert j.returncode == 0 and "would-submit" in j.stderr
    assert doc["dry_run"] is True and doc["cluster"] == "local" and doc["plan"][0]["seeds"] == [0, 1]
    assert [r["action"] for r in doc["runs"]] == ["would-submit"] * 2 and doc["runs"][0]["key"].endswith("random/seed0")


# --- the report of a reproduction ---------------------------------------------------------------

def _metrics(ap):
    return {"bbox/AP": ap, "bbox/AP50": ap + 18, "bbox/AP75": ap + 2, "segm/AP": ap - 3, "segm/AP50": ap + 15,
            "segm/AP75": ap - 1}


def _reproduction(exp: Path, runs=(("random", [0]), ("supervised", [0]), ("infomin", [0, 1]))):
    exp.mkdir(parents=True, exist_ok=True)
    (exp / "reproduction.json").write_text(json.dumps({"table": "T3a", "panels": [], "runs": [
        {"protocol": "coco/R50-FPN-1x", "weights_name": n, "seeds": s} for n, s in runs]}))


def test_report_sets_a_reproduction_beside_the_paper_and_lists_what_is_missing(tmp_path):
    exp = tmp_path / "T3a"
    _reproduction(exp)
    p1 = "coco/R50-FPN-1x"
    write_run(exp / p1 / "random/seed0", p1, "random", 0, _metrics(32.9), max_iter=100, family="random")
    write_run(exp / p1 / "infomin/seed0", p1, "infomin", 0, _metrics(40.0), max_iter=100)
    write_run(exp / p1 / "infomin/seed1", p1, "infomin", 1, _metrics(41.0), max_iter=100)
    # a run on 8 images per iteration, scaled linearly (twice the iterations): the protocol, marked
    cfg = config_yaml(p1, seed=2, weights="/w/infomin.pkl", max_iter=180000).replace("IMS_PER_BATCH: 16", "IMS_PER_BATCH: 8")
    write_run(exp / p1 / "infomin/seed2", p1, "infomin", 2, _metrics(39.0), max_iter=180000, period=30000, config=cfg)
    p = cli("report", exp, "--format", "markdown", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    rows = {l.split("|")[1].strip(): [c.strip() for c in l.split("|")[2:-1]] for l in p.stdout.splitlines()
            if l.startswith("| ") and "/" in l}
    assert rows["random"][:2] == ["1", "32.9 / 32.8 (+0.1)"]
    assert rows["infomin"][:2] == ["2", "40.5±0.7 / 40.6 (-0.1)"]
    assert rows["infomin (batch 8)"][:2] == ["1", "39.0 / 40.6 (-1.6)"]
    assert rows["supervised"][:2] == ["0", "- / 39.7"]
    assert "missing (1 runs): supervised/seed0: not started" in p.stdout
    assert "(batch 8, paper 16: LR and schedule scaled linearly)" in p.stdout
    doc = json.loads(cli("report", exp, "--format", "json", cwd=tmp_path).stdout)
    cell = doc["reproduction"][0]["rows"][-2]["cells"]["bbox/AP"]
    assert cell == {"ours": {"mean": 40.5, "std": 0.7071, "n": 2}, "paper": 40.6, "diff": -0.1}


def test_a_modified_run_is_never_compared_with_the_paper(tmp_path):
    exp = tmp_path / "T3a"
    _reproduction(exp, runs=(("infomin", [0]),))
    p1 = "coco/R50-FPN-1x"
    write_run(exp / p1 / "infomin/seed0", p1, "infomin", 0, _metrics(40.0), max_iter=100,
              config=config_yaml(p1, seed=0, weights="/w/infomin.pkl", max_iter=100))
    out = cli("report", exp, cwd=tmp_path).stdout
    assert "not comparable with the paper: infomin (modified: SOLVER.MAX_ITER=100 (protocol: 90000))" in out
    assert "40.0 / 40.6" not in out


@pytest.mark.parametrize("record, words", [
    ("{", "reproduction record"), ('{"table": "T3a"}', "not a reproduction record"),
    ('{"table": "T3a", "runs": [{"protocol": "coco/R50-FPN-1x", "weights_name": "x", "seeds": ["0"]}]}',
     "not a reproduction record"),
    ('{"table": "T99", "runs": []}', "no detection table"),
])
def test_a_broken_reproduction_record_is_refused(tmp_path, record, words):
    exp = tmp_path / "T3a"
    write_run(exp / "coco/R50-FPN-1x/infomin/seed0", "coco/R50-FPN-1x", "infomin", 0, _metrics(40.0), max_iter=100)
    (exp / "reproduction.json").write_text(record)
    p = cli("report", exp, cwd=tmp_path)
    assert p.returncode == 2 and words in p.stderr and "fix:" in p.stderr and "Traceback" not in p.stderr


def test_reproduce_submits_records_the_plan_and_the_report_names_what_is_missing(tmp_path, datasets):
    """A real submission (local, CPU): ``reproduction.json`` says what was planned; the job fails on
    the placeholder COCO files, and the report of the experiment says so, beside the paper's rows."""
    from infomin_det.launch import experiment_status

    p = cli("reproduce", "T3a", "--baselines", "random", "--cluster", "local", "--device", "cpu",
            "--gpus-per-node", "0", "--root", tmp_path / "runs", cwd=tmp_path, datasets=datasets)
    assert p.returncode == 0, p.stderr
    assert "1 runs (1 submitted) on cluster local" in p.stdout
    record = json.loads((tmp_path / "runs/T3a/reproduction.json").read_text())
    assert record["table"] == "T3a" and record["runs"] == [
        {"protocol": "coco/R50-FPN-1x", "weights_name": "random", "seeds": [0]}]
    deadline = time.time() + 240
    while (st := experiment_status(tmp_path / "runs/T3a")[0]).state not in ("done", "failed"):
        assert time.time() < deadline, st
        time.sleep(1)
    assert st.state == "failed"
    rep = cli("report", tmp_path / "runs/T3a", "--format", "markdown", cwd=tmp_path)
    assert "missing (1 runs): random/seed0: failed" in rep.stdout
    assert "| random " in rep.stdout and "- / 32.8" in rep.stdout       # the paper's value, none of ours
