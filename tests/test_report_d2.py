"""The report parses what real Detectron2 training writes: a finished run that crashed and was
resumed (repeated iterations in metrics.json), the run while it was stopped (in progress), and an
``--eval-only`` run (results only in log.txt). Fixtures are made here by stock DefaultTrainer on
the tiny COCO set (R-18 FPN Mask R-CNN, 128 px, 4 iterations, COCOEvaluator without fast eval)."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys

import pytest

d2 = pytest.importorskip("detectron2")
pytestmark = pytest.mark.detectron2

PROTOCOL_DIR = ("coco", "R50-FPN-1x")


class _Crash(Exception):
    pass


def _tiny_cfg(tiny_coco, out_dir):
    from detectron2 import model_zoo
    from detectron2.config import get_cfg
    from detectron2.data.datasets import register_coco_instances
    from detectron2.data import DatasetCatalog

    for split in ("train", "val"):
        name = f"report_tiny_{split}"
        if name not in DatasetCatalog.list():
            register_coco_instances(name, {}, str(tiny_coco[split][0]), str(tiny_coco[split][1]))
    cfg = get_cfg()
    cfg.merge_from_file(model_zoo.get_config_file("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml"))
    cfg.merge_from_list([
        "MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu", "MODEL.RESNETS.DEPTH", "18",
        "MODEL.RESNETS.RES2_OUT_CHANNELS", "64", "MODEL.RESNETS.NORM", "BN", "MODEL.BACKBONE.FREEZE_AT", "0",
        "MODEL.FPN.OUT_CHANNELS", "32", "MODEL.ROI_BOX_HEAD.FC_DIM", "64", "MODEL.ROI_MASK_HEAD.CONV_DIM", "32",
        "MODEL.ROI_HEADS.NUM_CLASSES", "2", "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "64",
        "MODEL.PIXEL_STD", "[58.395, 57.120, 57.375]", "MODEL.PIXEL_MEAN", "[123.675, 116.280, 103.530]",
        "INPUT.FORMAT", "RGB", "INPUT.MASK_FORMAT", "bitmask",
        "INPUT.MIN_SIZE_TRAIN", "(128,)", "INPUT.MAX_SIZE_TRAIN", "128",
        "INPUT.MIN_SIZE_TEST", "128", "INPUT.MAX_SIZE_TEST", "128",
        "DATASETS.TRAIN", "('report_tiny_train',)", "DATASETS.TEST", "('report_tiny_val',)",
        "DATALOADER.NUM_WORKERS", "0", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.BASE_LR", "0.002",
        "SOLVER.MAX_ITER", "4", "SOLVER.STEPS", "()", "SOLVER.WARMUP_ITERS", "0",
        "SOLVER.CHECKPOINT_PERIOD", "2", "TEST.EVAL_PERIOD", "2", "SEED", "0",
        "OUTPUT_DIR", str(out_dir),
    ])
    return cfg


def _trainer_cls():
    from detectron2.engine import DefaultTrainer, HookBase, hooks
    from detectron2.evaluation import COCOEvaluator

    class Trainer(DefaultTrainer):
        @classmethod
        def build_evaluator(cls, cfg, dataset_name, output_folder=None):
            return COCOEvaluator(dataset_name, output_dir=cfg.OUTPUT_DIR, use_fast_impl=False)

        def build_hooks(self):
            hs = super().build_hooks()
            for h in hs:
                if isinstance(h, hooks.PeriodicWriter):
                    h._period = 1  # a record per iteration, so a resume visibly repeats iterations
            return hs

    class CrashAt(HookBase):
        def __init__(self, it):
            self.it = it

        def after_step(self):
            if self.trainer.iter == self.it:
                raise _Crash()

    return Trainer, CrashAt


class _LogTo:
    """log.txt in the output dir for the duration of the block (what default_setup does)."""

    def __init__(self, out_dir):
        self.handler = logging.FileHandler(out_dir / "log.txt")
        self.handler.setFormatter(logging.Formatter("[%(asctime)s] %(name)s %(levelname)s: %(message)s",
                                                    datefmt="%m/%d %H:%M:%S"))
        self.logger = logging.getLogger("detectron2")

    def __enter__(self):
        self.logger.setLevel(logging.INFO)
        self.logger.addHandler(self.handler)

    def __exit__(self, *exc):
        self.logger.removeHandler(self.handler)
        self.handler.close()


@pytest.fixture(scope="session")
def d2_runs(tiny_coco, tmp_path_factory):
    """{"resumed": dir, "stopped": dir, "eval_only": dir, "train_results": dict, "eval_results": dict}."""
    import torch
    from detectron2.checkpoint import DetectionCheckpointer

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("d2runs")
    run = root.joinpath("exp", *PROTOCOL_DIR, "tiny-r18", "seed0")
    run.mkdir(parents=True)
    cfg = _tiny_cfg(tiny_coco, run)
    (run / "config.yaml").write_text(cfg.dump())
    Trainer, CrashAt = _trainer_cls()
    with _LogTo(run):
        t = Trainer(cfg)
        t.resume_or_load(resume=False)
        t.register_hooks([CrashAt(2)])  # checkpoint at iteration 1 exists; iterations 0..2 logged
        with pytest.raises(_Crash):
            t.train()
    stopped = root.joinpath("stopped", *PROTOCOL_DIR, "tiny-r18", "seed0")
    shutil.copytree(run, stopped)
    with _LogTo(run):
        t = Trainer(cfg)
        t.resume_or_load(resume=True)  # from model_0000001.pth: iteration 2 is logged again
        t.train()
        train_results = t._last_eval_results  # what EvalHook returned at the end
    ev = root.joinpath("evalonly", *PROTOCOL_DIR, "tiny-r18", "seed1")
    ev.mkdir(parents=True)
    cfg_ev = cfg.clone()
    cfg_ev.OUTPUT_DIR, cfg_ev.SEED = str(ev), 1
    (ev / "config.yaml").write_text(cfg_ev.dump())
    with _LogTo(ev):
        model = Trainer.build_model(cfg_ev)
        DetectionCheckpointer(model).load(str(run / "model_final.pth"))
        eval_results = Trainer.test(cfg_ev, model)
    return {"resumed": run, "stopped": stopped, "eval_only": ev,
            "train_results": train_results, "eval_results": eval_results}


def _records(path):
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]


def test_resumed_run_parses_to_the_trainers_final_results(d2_runs):
    from infomin_det.report import load_run

    iters = [r["iteration"] for r in _records(d2_runs["resumed"] / "metrics.json")]
    assert len(iters) != len(set(iters)), "the fixture must repeat iterations (resume)"
    run = load_run(d2_runs["resumed"])
    assert run.status == "done", run.reason
    assert (run.protocol, run.weights, run.seed) == ("coco/R50-FPN-1x", "tiny-r18", 0)
    assert run.identity_from.startswith("directory")
    want = d2_runs["train_results"]
    got = run.metrics[""]
    for task in ("bbox", "segm"):
        for m in ("AP", "AP50", "AP75", "APs", "APm", "APl"):
            w = want[task][m]
            assert (got[f"{task}/{m}"] == w) or (w != w and got[f"{task}/{m}"] != got[f"{task}/{m}"])


def test_crashed_run_is_failed_with_its_cause_and_a_killed_one_is_in_progress(d2_runs, tmp_path):
    from infomin_det.report import build_tables, find_runs, load_run

    # the copy taken right after TrainerBase logged "Exception during training:" (was: in-progress)
    runs = find_runs([d2_runs["stopped"]])
    assert [r.status for r in runs] == ["failed"]
    assert "crashed at iteration 2: test_report_d2._Crash (log.txt)" in runs[0].reason
    tables = build_tables(runs)
    assert tables[0].rows == [] and tables[0].not_averaged == runs
    # the same run killed (SIGKILL: no traceback) one line before the crash marker: still in progress
    killed = tmp_path / "killed" / "coco" / "R50-FPN-1x" / "tiny-r18" / "seed0"
    shutil.copytree(d2_runs["stopped"], killed)
    log = (killed / "log.txt").read_text()
    (killed / "log.txt").write_text(log[: log.index("Exception during training:")].rsplit("\n", 2)[0] + "\n")
    run = load_run(killed)
    assert run.status == "in-progress" and "iteration 2" in run.reason and "not final" in run.reason


def test_eval_only_run_parses_from_log_copypaste(d2_runs):
    from infomin_det.report import load_run

    assert not (d2_runs["eval_only"] / "metrics.json").exists()
    run = load_run(d2_runs["eval_only"])
    assert run.status == "done", run.reason
    assert "copypaste" in run.identity_from and run.seed == 1
    for task in ("bbox", "segm"):
        for m in ("AP", "AP50", "AP75"):
            assert run.metrics[""][f"{task}/{m}"] == pytest.approx(d2_runs["eval_results"][task][m], abs=5e-5)


def test_cli_over_real_runs_and_config_fallback(d2_runs, tmp_path):
    root = d2_runs["resumed"].parents[4]
    proc = subprocess.run([sys.executable, "-m", "infomin_det", "report", str(root / "exp"), str(root / "evalonly"),
                           "--format", "json"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    (table,) = json.loads(proc.stdout)["tables"]
    # depth 18 and 4 iterations are not the protocol: said in the table, never the paper's numbers
    assert table["protocol"] == "coco/R50-FPN-1x" and table["rows"][0]["seeds"] == [0, 1]
    assert table["modified"] == ["RESNETS.DEPTH=18 (protocol: 50)", "SOLVER.MAX_ITER=4 at batch 2 (protocol: 90000 at batch 16)"]
    assert table["dataset"] == "report_tiny_train -> report_tiny_val" and table["paper_dataset"] is False
    proc = subprocess.run([sys.executable, "-m", "infomin_det", "report", str(root / "exp"), "--baseline",
                           "paper:supervised"], capture_output=True, text=True)
    assert proc.returncode == 2 and "deviate from the protocol (RESNETS.DEPTH=18" in proc.stderr
    # the whole root holds the crashed copy: exit 2, and nothing is written to --out
    out = tmp_path / "table.md"
    proc = subprocess.run([sys.executable, "-m", "infomin_det", "report", str(root), "--out", str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "crashed at iteration 2" in proc.stderr and not out.exists()
    # Without the directory layout the real config.yaml is read; MAX_ITER 4 is no paper protocol.
    loose = tmp_path / "loose"
    shutil.copytree(d2_runs["resumed"], loose)
    proc = subprocess.run([sys.executable, "-m", "infomin_det", "report", str(loose)],
                          capture_output=True, text=True)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr      # 1: a run failed to be read
    assert "cannot tell the protocol" in proc.stderr and "SOLVER.MAX_ITER=4" in proc.stderr


def test_final_results_cross_checked_and_recovered_from_log(d2_runs, tmp_path):
    from infomin_det.report import load_run

    run_dir = tmp_path / "exp" / "coco" / "R50-FPN-1x" / "tiny-r18" / "seed0"
    shutil.copytree(d2_runs["resumed"], run_dir)
    lines = (run_dir / "metrics.json").read_text().splitlines()
    final = json.loads(lines[-1])
    assert "total_loss" not in final and final["iteration"] == 4
    # metrics.json's final record edited (or copied from another run): log.txt's copypaste disagrees
    edited = dict(final, **{"bbox/AP": final["bbox/AP"] + 5.0})
    (run_dir / "metrics.json").write_text("\n".join(lines[:-1] + [json.dumps(edited)]) + "\n")
    run = load_run(run_dir)
    assert run.status == "failed" and f"disagree on bbox/AP ({edited['bbox/AP']!r} vs " in run.reason
    # the final record lost (truncated by a kill): log.txt's final round after the last iteration is used
    (run_dir / "metrics.json").write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:40])
    run = load_run(run_dir)
    assert run.status == "done", run.reason
    assert "log.txt copypaste" in run.identity_from and any("truncated" in w for w in run.warnings)
    want = d2_runs["train_results"]
    for m in ("AP", "AP50", "AP75"):
        assert run.metrics[""][f"bbox/{m}"] == pytest.approx(want["bbox"][m], abs=5e-5)


def test_every_protocol_leaf_reads_as_its_protocol(tmp_path):
    """Every leaf config (each family and variant), merged by Detectron2 and dumped as config.yaml,
    shows no deviation from its protocol, implies it, and reads the same by the fast path as by a
    full YAML parse."""
    import yaml
    from detectron2.config import get_cfg

    from infomin_det.protocols import FAMILIES, config_path, list_protocols, variants
    from infomin_det.report import identity

    checked = 0
    for p in list_protocols():
        for family in FAMILIES:
            for variant in ("", *variants(p.id, family)):
                cfg = get_cfg()
                cfg.merge_from_file(str(config_path(p.id, family, variant)))
                path = tmp_path / "config.yaml"
                path.write_text(cfg.dump())
                fields = identity.read_config(path)
                full = identity._fields(yaml.safe_load(path.read_text()), path, "")
                fast = identity._fields(identity._parse_subset(identity._subset(path.read_text())), path, "")
                assert fields == full == fast, (p.id, family, variant)
                assert identity.deviations(p, fields) == (), (p.id, family, variant)
                assert identity.implied_protocol(fields) == p, (p.id, family, variant)
                assert identity._dataset(p, None, fields, path).paper is True, (p.id, family, variant)
                checked += 1
    assert checked >= 3 * len(list_protocols())
