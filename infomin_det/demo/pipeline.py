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

import dataclasses
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from infomin_det.errors import UserError

if TYPE_CHECKING:
    from infomin_det.engine.spec import TrainSpec

PROTOCOL = "coco/R50-FPN-1x"  # Mask R-CNN FPN protocol; the backbone is overridden to R-18 below
CATEGORIES = 8  # tuxpaint cut-out classes in the composite set
DEFAULT_MINUTES = 25.0  # the local demo's wall-time budget (infomin_det.demo.budget)


@dataclass(frozen=True)
class DemoSize:
    """Budget of one demo run. Images in pixels; steps/iterations are optimiser steps.

    supervised_epochs: epochs of the supervised R-18 on the labelled cut-out set (row (c)); 0 = no row.
    """

    pretrain_images: int
    pretrain_steps: int
    pretrain_batch: int
    det_train: int
    det_val: int
    det_size: int
    finetune_iters: int
    seeds: int
    supervised_epochs: int
    labelled_per_class: int  # training images per class of the labelled set (val: a third of it)


QUICK = DemoSize(pretrain_images=200, pretrain_steps=10, pretrain_batch=16, det_train=24, det_val=8,
                 det_size=128, finetune_iters=12, seeds=2, supervised_epochs=1, labelled_per_class=12)
FULL = DemoSize(pretrain_images=3000, pretrain_steps=1000, pretrain_batch=32, det_train=240, det_val=60,
                det_size=192, finetune_iters=150, seeds=3, supervised_epochs=30, labelled_per_class=150)


def finetune_opts(size: DemoSize) -> tuple[str, ...]:
    """Overrides that turn the R50-FPN protocol into the demo's R-18 FPN on small composites.

    Besides depth and input size, the FPN and head widths drop from 256 to 128 channels and the
    ROI sample from 512 to 64 per image: on CPU the 4conv1fc box head dominates an iteration
    (256 px, 1 thread: 4.5 s/iter at the protocol's widths, 1.25 s at these)."""
    it = size.finetune_iters
    return ("MODEL.RESNETS.DEPTH", "18", "MODEL.RESNETS.RES2_OUT_CHANNELS", "64",
            "MODEL.FPN.OUT_CHANNELS", "128", "MODEL.ROI_BOX_HEAD.CONV_DIM", "128",
            "MODEL.ROI_MASK_HEAD.CONV_DIM", "128", "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "64",
            "MODEL.RPN.BATCH_SIZE_PER_IMAGE", "128",
            "MODEL.ROI_HEADS.NUM_CLASSES", str(CATEGORIES), "INPUT.MASK_FORMAT", "bitmask",
            "INPUT.MIN_SIZE_TRAIN", f"({size.det_size},)", "INPUT.MAX_SIZE_TRAIN", str(size.det_size),
            "INPUT.MIN_SIZE_TEST", str(size.det_size), "INPUT.MAX_SIZE_TEST", str(size.det_size),
            "SOLVER.IMS_PER_BATCH", "4", "SOLVER.REFERENCE_WORLD_SIZE", "0", "SOLVER.BASE_LR", "0.02", "SOLVER.MAX_ITER", str(it),
            "SOLVER.STEPS", f"({int(it * 0.75)},)", "SOLVER.WARMUP_ITERS", str(max(1, it // 10)),
            "SOLVER.CHECKPOINT_PERIOD", str(max(1, it // 2)), "TEST.PRECISE_BN.NUM_ITER", "5",
            "DATALOADER.NUM_WORKERS", "0")


def _run(tasks: list, root: Path, options, cluster: str, console: Console, what: str) -> None:
    """Submit ``tasks`` through the launcher and block until all end; a failed run is a UserError.

    On ``local`` the runs go in waves of one per core (``options.cpus_per_task`` threads each): nine
    1-thread Detectron2 runs started at once on 2 cores run ~6x slower than in waves (cache and
    memory thrash). A scheduler (``slurm``) gets them all at once. Ctrl-C cancels the running jobs.
    """
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from infomin_det.launch import submit_tasks
    from infomin_det.launch.interrupts import deferred_interrupts
    from infomin_det.progress import read_progress

    per_wave = max(1, (os.cpu_count() or 1) // options.cpus_per_task) if cluster == "local" else len(tasks)
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[detail]}"),
                  TimeElapsedColumn(), console=console, transient=False) as bar:
        progress = bar.add_task(f"[bold]{what}", total=len(tasks), detail=f"0/{len(tasks)} runs")
        finished = 0
        for i in range(0, len(tasks), per_wave):
            wave = tasks[i:i + per_wave]
            jobs = []

            def show(done: int) -> None:   # each run's own progress.json: step / total, ETA
                for s in jobs:
                    p = read_progress(s.output_dir)
                    if s.job.done():
                        bar.update(lines[s.key], completed=p.total if p else 1, total=p.total if p else 1,
                                   detail="ended")
                    elif p is not None:
                        bar.update(lines[s.key], completed=p.step, total=p.total, detail=p.text())
                bar.update(progress, completed=finished + done, detail=f"{finished + done}/{len(tasks)} runs")

            try:
                with deferred_interrupts():  # a signal here acts once the wave's handles are held
                    submitted = submit_tasks(wave, root, options, cluster=cluster, command=["infomin-det", "demo"])
                    jobs = [s for s in submitted if s.job is not None]
                finished += len(wave) - len(jobs)  # finished by an earlier call: skipped
                lines = {s.key: bar.add_task(f"  {s.key}", total=None, detail="starting") for s in jobs}
                while (done := sum(s.job.done() for s in jobs)) < len(jobs):
                    show(done)
                    time.sleep(2)
                show(done)
            except KeyboardInterrupt:  # local jobs outlive the demo's SIGTERM otherwise
                for s in jobs:
                    if not s.job.done():
                        s.job.cancel(check=False)
                raise
            finished += len(jobs)
            for s in jobs:
                err = s.job.exception()
                if err is not None:
                    raise UserError(f"{what}: run {s.key} failed: {str(err).strip().splitlines()[-1][:300]}",
                                    f"see {s.job.paths.stderr} and {s.output_dir}/log.txt")


def pretrain_spec(size: DemoSize, pre_root: Path, out: Path, steps: int):
    """The demo's InfoMin pretraining (a ``pretrain.train.PretrainSpec``): R-18 at 64 px, queue 64
    batches, cosine ending at ``steps``; m = 0.99 (at 0.999 the key encoder of a 1000-step run would
    still be 37 % its random init). What this budget does and does not learn: ``docs/pretrain.md``,
    "Does the demo's pretraining learn?"."""
    from pretrain.train import PretrainSpec

    per_epoch = size.pretrain_images // size.pretrain_batch
    return PretrainSpec(data=str(pre_root / "images"), output_dir=str(out), arch="R-18",
                        epochs=-(-steps // per_epoch), max_steps=steps,
                        batch_size=size.pretrain_batch, queue_size=size.pretrain_batch * 64, moco_momentum=0.99,
                        image_size=64, workers=0, device="cpu", tensorboard=False, progress=False)


def supervised_spec(size: DemoSize, lab_root: Path, out: Path, epochs: int):
    """The supervised baseline on the labelled cut-outs (a ``pretrain.supervised.SupervisedSpec``)."""
    from pretrain.supervised import SupervisedSpec

    return SupervisedSpec(train=str(lab_root / "train"), val=str(lab_root / "val"), output_dir=str(out),
                          epochs=epochs, batch_size=min(64, size.labelled_per_class * CATEGORIES), progress=False,
                          device="cpu")


def finetune_spec(size: DemoSize, name: str, weights: str, seed: int, runs_root: Path, dataset: str) -> "TrainSpec":
    from infomin_det.engine.spec import TrainSpec
    from infomin_det.rundir import run_dir

    variant = "" if weights else "rgb"     # random init with the other rows' RGB/ImageNet input
    return TrainSpec(protocol=PROTOCOL, weights=weights, weights_name=name, seed=seed, experiment="demo",
                     output_dir=str(run_dir(runs_root, "demo", PROTOCOL, name, seed, variant)),
                     opts=finetune_opts(size), dataset=dataset, variant=variant, device="cpu")


def _calibration_jobs(size: DemoSize, pre_root: Path, lab_root: Path, dataset: str):
    """``jobs(kind, units, scratch)`` for :func:`infomin_det.demo.budget.calibrate`: the demo's own
    jobs (random-init fine-tuning) at ``units`` steps / epochs / iterations, writing under ``scratch``."""
    def job(kind: str, units: int, scratch: Path) -> tuple[str, object]:
        if kind == "pretrain":
            return "pretrain.train:pretrain_worker", pretrain_spec(size, pre_root, scratch / f"pre{units}", units)
        if kind == "supervised":
            return "pretrain.supervised:train_supervised", supervised_spec(size, lab_root, scratch / f"sup{units}", units)
        return "infomin_det.engine.trainer:train_worker", finetune_spec(
            dataclasses.replace(size, finetune_iters=units), "random", "", 0, scratch / f"ft{units}", dataset)
    return job


def _budgeted(size: DemoSize, minutes: float, out: Path, t0: float, pre_root: Path, lab_root: Path, dataset: str,
              console: Console) -> DemoSize:
    """``size`` with the steps and iterations that fit ``minutes`` here (:mod:`infomin_det.demo.budget`)."""
    from infomin_det.demo import budget

    parallel = max(1, min(2, os.cpu_count() or 1))
    job = _calibration_jobs(size, pre_root, lab_root, dataset)

    scratch = out / budget.SCRATCH
    budget.clear_scratch(scratch)        # left by a calibration that was killed

    def make() -> tuple:
        console.print(f"calibrating on this machine ({parallel} 1-thread jobs side by side, ~1-2 min) ...")
        cal = budget.calibrate(job, parallel, scratch)
        return cal, budget.fit(minutes, time.perf_counter() - t0, cal, size.seeds, size.supervised_epochs)

    cal, plan = budget.load_or_save(out, minutes, make)
    console.print(f"budget {minutes:g} min on this machine: {cal.pretrain_step_s:.2f} s/pretraining step, "
                  f"{cal.finetune_iter_s:.2f} s/fine-tuning iteration + {cal.finetune_fixed_s:.0f} s per run "
                  f"(calibration {cal.seconds:.0f} s) -> {plan.pretrain_steps} pretraining steps, "
                  f"{plan.supervised_epochs} supervised epochs, {plan.finetune_iters} fine-tuning iterations "
                  f"(expected: pretraining stage {plan.pretrain_stage_s:.0f} s, fine-tuning {plan.finetune_stage_s:.0f} s)")
    return budget.sized(size, plan)


def run_demo(out: str | Path, size: DemoSize = FULL, cluster: str = "local", console: Console | None = None,
             minutes: float | None = None) -> dict:
    """Run the whole demo into ``out``; returns the summary written to ``out/summary.json``. With
    ``minutes``, ``size``'s steps and iterations are fitted to that wall time on this machine."""
    from infomin_det.convert.converter import convert
    from infomin_det.convert.verify import verify
    from infomin_det.data.composites import build_composites
    from infomin_det.data.labelled_set import build_labelled_set
    from infomin_det.data.pretrain_set import build_pretrain_set
    from infomin_det.launch import DistributedTask, ExecutorOptions
    from infomin_det.report.aggregate import build_tables
    from infomin_det.report.plot import plot_gaps
    from infomin_det.report.render import print_terminal, to_json, to_markdown
    from infomin_det.report.runs import find_runs

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
    lab_root = build_labelled_set(size.labelled_per_class, max(1, size.labelled_per_class // 3), 64, seed=0)
    console.print(f"pretraining crops: {pre_root}\ndetection composites: {det.root}\nlabelled cut-outs: {lab_root}")
    tr, va = det.splits["train"], det.splits["val"]
    dataset = f"coco-json:{tr[0]}:{tr[1]}:{va[0]}:{va[1]}"
    step("data")
    if minutes is not None:
        console.rule(f"[bold]time budget: {minutes:g} minutes")
        size = _budgeted(size, minutes, out, t0, pre_root, lab_root, dataset, console)
        step("calibration")

    console.rule("[bold]2/5 pretrain InfoMin ResNet-18 (MoCo v2, InfoMin augmentation) | supervised ResNet-18")
    pspec = pretrain_spec(size, pre_root, out / "pretrain", size.pretrain_steps)
    sspec = supervised_spec(size, lab_root, out / "supervised", size.supervised_epochs)
    first = [DistributedTask("pretrain.train:pretrain_worker", pspec, threads=1, label="pretrain"),
             DistributedTask("pretrain.supervised:train_supervised", sspec, threads=1, label="supervised")]
    _run(first, out / "pretrain_exp", ExecutorOptions(cpus_per_task=1, timeout_min=120), cluster, console, "pretrain")
    ckpt, sup = _result(out / "pretrain")["checkpoint"], _result(out / "supervised")
    console.print(f"InfoMin checkpoint {ckpt}\nsupervised checkpoint {sup['checkpoint']} "
                  f"(top-1 {sup['top1']:.1f} % on the {sup['val_images']} held-out cut-out images)")
    step("pretrain")

    console.rule("[bold]3/5 convert + verify")
    weights = {"random": ""}
    verified = {}
    for name, src in (("infomin-r18", ckpt), ("supervised-r18", sup["checkpoint"])):
        pkl = out / f"{name}.pkl"
        conv = convert(src, pkl, force=True)
        ver = verify(pkl, source=src)
        console.print(f"[bold]{name}[/] ({conv.meta.source_format})")
        console.print(ver.render())
        if not ver.passed:
            raise UserError(f"the converted {name} backbone does not reproduce its source",
                            f"see the verify report above ({pkl})")
        weights[name], verified[name] = str(pkl), conv.meta.source_format
    step("convert+verify")

    console.rule("[bold]4/5 fine-tune Mask R-CNN R-18 FPN: random init vs InfoMin vs supervised, seeds "
                 f"0..{size.seeds - 1}")
    runs_root = out / "runs"
    tasks = []
    for name, w in weights.items():
        for seed in range(size.seeds):
            tasks.append(DistributedTask("infomin_det.engine.trainer:train_worker",
                                         finetune_spec(size, name, w, seed, runs_root, dataset),
                                         threads=1, label=f"{name}/seed{seed}"))
    _run(tasks, runs_root / "demo", ExecutorOptions(cpus_per_task=1, timeout_min=120), cluster, console, "fine-tune")
    step("fine-tune")

    console.rule("[bold]5/5 report")
    tables = build_tables(find_runs([runs_root / "demo"]), baseline="random")
    print_terminal(tables, console)
    (out / "report.md").write_text(to_markdown(tables))
    (out / "report.json").write_text(to_json(tables))
    png = plot_gaps(tables, out / "gaps.png")
    report = json.loads(to_json(tables))
    claim = claim_check(report)
    for metric, c in claim.items():
        if c["gap"] is None:
            console.print(f"[bold]claim[/] {metric}: no AP in one of the rows (nothing detected): not testable")
            continue
        console.print(f"[bold]claim[/] {metric}: InfoMin - random = {c['gap']:+.2f} AP, 2 std = {c['two_std']:.2f} -> "
                      + ("[green]gap larger than 2 std" if c["holds"] else "[yellow]not larger than 2 std at this scale"))
    step("report")
    summary = {"size": asdict(size), "minutes": minutes, "cluster": cluster, "timings_s": timings,
               "total_s": round(time.perf_counter() - t0, 1), "checkpoint": ckpt, "weights": weights,
               "verify_passed": True, "converted_from": verified, "supervised_top1": sup["top1"],
               "report": report, "claim": claim, "plot": str(png)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    console.print(f"[bold]demo finished in {summary['total_s']} s[/] -- table {out / 'report.md'}, plot {png}")
    return summary


def claim_check(report: dict, row: str = "infomin-r18", baseline: str = "random",
                metrics: tuple[str, ...] = ("bbox/AP", "segm/AP")) -> dict[str, dict]:
    """The demo's scientific smoke test on a ``to_json`` report: per metric, the gap ``row`` -
    ``baseline`` (AP points) and whether it exceeds 2 standard deviations, taking the larger of the
    two rows' std over seeds. A metric without a mean in either row (NaN: nothing detected) or
    with fewer than 2 seeds (no std) does not hold."""
    (table,) = report["tables"]
    rows = {r["weights"]: r["stats"] for r in table["rows"]}
    out = {}
    for metric in metrics:
        a, b = rows[row][metric], rows[baseline][metric]
        values = (a["mean"], b["mean"], a["std"], b["std"])
        if any(v is None for v in values):
            out[metric] = {"gap": None, "two_std": None, "holds": False}
            continue
        gap, two_std = a["mean"] - b["mean"], 2 * max(a["std"], b["std"])
        out[metric] = {"gap": gap, "two_std": two_std, "holds": gap > two_std}
    return out


def _result(run: Path) -> dict:
    """The worker's result of a finished launcher run (``launch_result.json``)."""
    from infomin_det.launch.task import RESULT_FILE

    path = run / RESULT_FILE
    if not path.is_file():
        raise UserError(f"{run} has no {RESULT_FILE} (the run did not finish)", f"see the logs under {run}")
    return json.loads(path.read_text())["result"]
