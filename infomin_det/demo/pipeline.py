"""The end-to-end demo as one function: data -> pretrain -> convert + verify -> fine-tune -> report.

Every step calls the toolkit's public pieces (nothing here re-implements them):

    data       infomin_det.data.pretrain_set / composites  (composites of real photos, cached)
    pretrain   pretrain.train.pretrain_worker              (InfoMin MoCo v2, ResNet-18, via the launcher)
    convert    infomin_det.convert.convert / verify.verify (exactness proof against torchvision)
    fine-tune  infomin_det.engine.trainer.train_worker     (Mask R-CNN R-18 FPN, via the launcher)
    report     infomin_det.report                          (mean +- std over seeds, gap to random init)

Sizes live in :class:`DemoSize`: ``QUICK`` is the CI smoke run, ``FULL`` the README's main job.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from rich.console import Console

from infomin_det.errors import UserError

PROTOCOL = "coco/R50-FPN-1x"  # Mask R-CNN FPN protocol; the backbone is overridden to R-18 below
CATEGORIES = 8  # tuxpaint cut-out classes in the composite set


@dataclass(frozen=True)
class DemoSize:
    """Budget of one demo run. Images in pixels; steps/iterations are optimiser steps."""

    pretrain_images: int
    pretrain_steps: int
    pretrain_batch: int
    det_train: int
    det_val: int
    det_size: int
    finetune_iters: int
    seeds: int


QUICK = DemoSize(pretrain_images=200, pretrain_steps=10, pretrain_batch=16, det_train=24, det_val=8,
                 det_size=128, finetune_iters=6, seeds=2)
FULL = DemoSize(pretrain_images=3000, pretrain_steps=600, pretrain_batch=32, det_train=240, det_val=60,
                det_size=256, finetune_iters=300, seeds=3)


def finetune_opts(size: DemoSize) -> tuple[str, ...]:
    """Overrides that turn the R50-FPN protocol into the demo's R-18 FPN on small composites."""
    it = size.finetune_iters
    return ("MODEL.RESNETS.DEPTH", "18", "MODEL.RESNETS.RES2_OUT_CHANNELS", "64",
            "MODEL.ROI_HEADS.NUM_CLASSES", str(CATEGORIES), "INPUT.MASK_FORMAT", "bitmask",
            "INPUT.MIN_SIZE_TRAIN", f"({size.det_size},)", "INPUT.MAX_SIZE_TRAIN", str(size.det_size),
            "INPUT.MIN_SIZE_TEST", str(size.det_size), "INPUT.MAX_SIZE_TEST", str(size.det_size),
            "SOLVER.IMS_PER_BATCH", "4", "SOLVER.BASE_LR", "0.02", "SOLVER.MAX_ITER", str(it),
            "SOLVER.STEPS", f"({int(it * 0.75)},)", "SOLVER.WARMUP_ITERS", str(max(1, it // 10)),
            "SOLVER.CHECKPOINT_PERIOD", str(max(1, it // 2)), "TEST.PRECISE_BN.NUM_ITER", "5",
            "DATALOADER.NUM_WORKERS", "0", "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "128",
            "MODEL.RPN.BATCH_SIZE_PER_IMAGE", "128")


def _wait(submitted, console: Console, what: str) -> list[dict]:
    """Block until every submitted job ends; a failed one is a UserError naming its log."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    jobs = [s for s in submitted if s.job is not None]
    with Progress(TextColumn(f"[bold]{what}"), BarColumn(), TextColumn("{task.completed}/{task.total} runs"),
                  TimeElapsedColumn(), console=console, transient=False) as bar:
        task = bar.add_task(what, total=len(jobs))
        while True:
            done = sum(j.job.done() for j in jobs)
            bar.update(task, completed=done)
            if done == len(jobs):
                break
            time.sleep(2)
    results = []
    for s in jobs:
        err = s.job.exception()
        if err is not None:
            raise UserError(f"{what}: run {s.key} failed: {str(err).strip().splitlines()[-1][:300]}",
                            f"see {s.job.paths.stderr} and {s.output_dir}/log.txt")
        results.append(s.job.result())
    return results


def run_demo(out: str | Path, size: DemoSize = FULL, cluster: str = "local", console: Console | None = None) -> dict:
    """Run the whole demo into ``out``; returns the summary written to ``out/summary.json``."""
    from infomin_det.convert.converter import convert
    from infomin_det.convert.verify import verify
    from infomin_det.data.composites import build_composites
    from infomin_det.data.pretrain_set import build_pretrain_set
    from infomin_det.engine.spec import TrainSpec
    from infomin_det.launch import DistributedTask, ExecutorOptions, submit_tasks
    from infomin_det.report.aggregate import build_tables
    from infomin_det.report.plot import plot_gaps
    from infomin_det.report.render import print_terminal, to_json, to_markdown
    from infomin_det.report.runs import find_runs
    from infomin_det.rundir import run_dir
    from pretrain.train import PretrainSpec

    console = console or Console()
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    timings: dict[str, float] = {}

    def step(name: str) -> None:
        timings[name] = round(time.perf_counter() - t0 - sum(timings.values()), 1)

    console.rule("[bold]1/5 data: composites of real photos (Debian packages, cached)")
    pre_root = build_pretrain_set(size.pretrain_images, 96, seed=0)
    det = build_composites(size.det_train, size.det_val, size.det_size, seed=0)
    console.print(f"pretraining crops: {pre_root}\ndetection composites: {det.root}")
    step("data")

    console.rule("[bold]2/5 pretrain InfoMin ResNet-18 (MoCo v2, InfoMin augmentation)")
    pspec = PretrainSpec(data=str(pre_root / "images"), output_dir=str(out / "pretrain"), arch="R-18",
                         epochs=10_000, max_steps=size.pretrain_steps, batch_size=size.pretrain_batch,
                         queue_size=size.pretrain_batch * 64, image_size=64, workers=0, device="cpu",
                         tensorboard=False, progress=False)
    opts = ExecutorOptions(cpus_per_task=2, timeout_min=120, array_parallelism=64)
    pre = submit_tasks([DistributedTask("pretrain.train:pretrain_worker", pspec, threads=2, label="pretrain")],
                       out / "pretrain_exp", opts, cluster=cluster, command=["infomin-det", "demo"])
    done = _wait(pre, console, "pretrain")
    ckpt = done[0]["checkpoint"] if done else str(_newest_checkpoint(out / "pretrain"))
    console.print(f"checkpoint {ckpt}")
    step("pretrain")

    console.rule("[bold]3/5 convert + verify")
    pkl = out / "infomin_r18.pkl"
    conv = convert(ckpt, pkl, force=True)
    ver = verify(pkl, source=ckpt)
    console.print(ver.render())
    if not ver.passed:
        raise UserError("the converted backbone does not reproduce its source", f"see the verify report above ({pkl})")
    step("convert+verify")

    console.rule("[bold]4/5 fine-tune Mask R-CNN R-18 FPN: random init vs InfoMin, seeds "
                 f"0..{size.seeds - 1}")
    tr, va = det.splits["train"], det.splits["val"]
    dataset = f"coco-json:{tr[0]}:{tr[1]}:{va[0]}:{va[1]}"
    runs_root = out / "runs"
    tasks = []
    for name, weights in (("random", ""), ("infomin-r18", str(pkl))):
        for seed in range(size.seeds):
            spec = TrainSpec(protocol=PROTOCOL, weights=weights, weights_name=name, seed=seed, experiment="demo",
                             output_dir=str(run_dir(runs_root, "demo", PROTOCOL, name, seed)),
                             opts=finetune_opts(size), dataset=dataset)
            tasks.append(DistributedTask("infomin_det.engine.trainer:train_worker", spec, detectron2_comm=True,
                                         threads=1, label=f"{name}/seed{seed}"))
    sub = submit_tasks(tasks, runs_root / "demo", ExecutorOptions(cpus_per_task=1, timeout_min=120),
                       cluster=cluster, command=["infomin-det", "demo"])
    _wait(sub, console, "fine-tune")
    step("fine-tune")

    console.rule("[bold]5/5 report")
    tables = build_tables(find_runs([runs_root / "demo"]), baseline="random")
    print_terminal(tables, console)
    (out / "report.md").write_text(to_markdown(tables))
    (out / "report.json").write_text(to_json(tables))
    png = plot_gaps(tables, out / "gaps.png")
    step("report")
    summary = {"size": asdict(size), "cluster": cluster, "timings_s": timings,
               "total_s": round(time.perf_counter() - t0, 1), "checkpoint": ckpt, "weights": str(pkl),
               "verify_passed": ver.passed, "converted_from": conv.meta.source_format,
               "report": json.loads(to_json(tables)), "plot": str(png)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    console.print(f"[bold]demo finished in {summary['total_s']} s[/] -- table {out / 'report.md'}, plot {png}")
    return summary


def _newest_checkpoint(d: Path) -> Path:
    cks = sorted(d.glob("checkpoint_*.pth"))
    if not cks:
        raise UserError(f"pretraining wrote no checkpoint in {d}", "see the pretrain logs under the demo directory")
    return cks[-1]
