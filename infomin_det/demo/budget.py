"""The demo's time budget: a short calibration on this machine, then the sizes that fit ``--minutes``.

Machines differ by several times in speed, so the demo is sized by wall time, not by fixed steps:

* :func:`calibrate` runs the demo's own workers (``pretrain_worker``, ``train_supervised``,
  ``train_worker``) at two tiny sizes each, side by side in ``parallel`` 1-thread processes -- the
  way the demo runs them, so the cores' contention is in the numbers -- and takes the differences:
  seconds per pretraining step and per supervised epoch, plus each job's fixed cost (start,
  evaluation, saving); the fine-tuning iteration's time is the one Detectron2 itself records
  (``metrics.json``), the rest of the short run its fixed cost. About 2 minutes on a 2-core machine.
* :func:`fit` spends what is left of ``--minutes`` after data and calibration: a quarter on the
  pretraining stage (InfoMin pretraining beside the supervised baseline), the rest on the
  fine-tuning waves (3 backbones x seeds, ``parallel`` runs at a time), with a 10 % margin. A budget
  that cannot buy :data:`MIN_PRETRAIN_STEPS` steps and :data:`MIN_FINETUNE_ITERS` iterations is
  refused, naming the smallest ``--minutes`` that would.

The calibration and the fitted size are stored in ``<out>/budget.json``; a second call with the same
``--out`` and ``--minutes`` reuses them (so finished runs are skipped, not redone with other sizes).
"""

from __future__ import annotations

import dataclasses
import json
import math
import multiprocessing
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from infomin_det.atomic import write_text_atomic
from infomin_det.errors import UserError

BUDGET_FILE = "budget.json"
SCRATCH = "calibration.tmp"  # the calibration's runs, inside the demo's output (removed after)
PRETRAIN_SHARE = 0.25       # of the budget left after data and calibration
MARGIN = 0.9                # plan for 90 % of it (evaluation and start-up vary)
MIN_PRETRAIN_STEPS = 100
MIN_FINETUNE_ITERS = 50
MAX_MINUTES = 24 * 60


@dataclass(frozen=True)
class Calibration:
    """Seconds measured on this machine, ``parallel`` 1-thread jobs side by side."""

    parallel: int
    pretrain_step_s: float
    pretrain_fixed_s: float
    supervised_epoch_s: float
    supervised_fixed_s: float
    finetune_iter_s: float
    finetune_fixed_s: float   # start + precise BN + evaluation of the val split + saving
    seconds: float            # the calibration's own wall time


def _timed(job: tuple[str, Any, str]) -> float:
    """Run ``module:function(spec)`` in this (spawned, 1-thread) process, its output to ``log``;
    returns its wall seconds."""
    import importlib

    os.environ["OMP_NUM_THREADS"] = "1"      # the launcher's thread budget of a demo job, before torch loads
    import torch

    name, spec, log = job
    with open(log, "w") as out:              # this pool process exists for the job: its fds are ours
        os.dup2(out.fileno(), 1)
        os.dup2(out.fileno(), 2)
    torch.set_num_threads(1)
    module, attr = name.split(":")
    fn: Callable[[Any], Any] = getattr(importlib.import_module(module), attr)
    t0 = time.perf_counter()
    fn(spec)
    return time.perf_counter() - t0


def _side_by_side(jobs: list[tuple[str, Any]], parallel: int, scratch: Path) -> list[float]:
    logs = [str(scratch / f"calibration-{i}-{job[0].split(':')[1]}.log") for i, job in enumerate(jobs)]
    try:
        with multiprocessing.get_context("spawn").Pool(parallel, maxtasksperchild=1) as pool:
            return pool.map(_timed, [(*job, log) for job, log in zip(jobs, logs)], chunksize=1)
    except Exception as e:   # a job's own error, re-raised here by the pool
        tails = [Path(log).read_text(errors="replace")[-1500:] for log in logs if Path(log).is_file()]
        raise UserError(f"a calibration job failed ({type(e).__name__}: {e}); last output:\n" + "\n".join(tails),
                        "run `infomin-det demo --quick` to check the pipeline, or see `infomin-det doctor`") from None


def _slope(small: float, large: float, n_small: int, n_large: int) -> tuple[float, float]:
    """(seconds per unit, fixed seconds) from two timings; a noisy negative slope is floored."""
    per = max((large - small) / (n_large - n_small), 1e-3)
    return per, max(small - n_small * per, 0.0)


#: units of the two calibration runs of each job: pretraining steps, supervised epochs, fine-tuning iterations
UNITS = {"pretrain": (4, 16), "supervised": (1, 3), "finetune": (2, 8)}


def _iteration_seconds(metrics: Path) -> float:
    """The last ``"time"`` (seconds per iteration) Detectron2's JSONWriter wrote to ``metrics``."""
    times = []
    for line in metrics.read_text(errors="replace").splitlines() if metrics.is_file() else []:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and isinstance(rec.get("time"), (int, float)) and math.isfinite(rec["time"]):
            times.append(float(rec["time"]))
    if not times or times[-1] <= 0:
        raise UserError(f"the calibration's fine-tuning run wrote no iteration time to {metrics}",
                        "run `infomin-det demo --quick` to check the pipeline")
    return times[-1]


def calibrate(jobs: Callable[[str, int, Path], tuple[str, Any]], parallel: int, scratch: Path) -> Calibration:
    """Time the demo's jobs. ``jobs(kind, units, scratch)`` -> ``("module:function", spec)``: the
    demo's job of ``kind`` (a key of :data:`UNITS`) at ``units`` steps / epochs / iterations, writing
    under ``scratch`` -- a directory of the demo's own output (what a killed calibration left there
    is cleared first; removed after). Pretraining and supervised runs go side by side first, then
    the two fine-tuning runs."""
    t0 = time.perf_counter()
    clear_scratch(scratch)
    scratch.mkdir(parents=True)
    try:
        first = [jobs(kind, n, scratch) for kind in ("pretrain", "supervised") for n in UNITS[kind]]
        t = _side_by_side(first, parallel, scratch)
        tune = [jobs("finetune", n, scratch) for n in UNITS["finetune"]]
        t += _side_by_side(tune, parallel, scratch)
        # a fine-tuning run's time is mostly start-up and evaluation, whose cost varies with what the
        # model detects: the iteration time is Detectron2's own (metrics.json "time", the median of
        # the timed iterations), the rest of the short run is the fixed cost
        it = _iteration_seconds(Path(tune[1][1].output_dir) / "metrics.json")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    (pre, pre_fixed), (sup, sup_fixed) = (
        _slope(t[2 * i], t[2 * i + 1], *UNITS[kind]) for i, kind in enumerate(("pretrain", "supervised")))
    it_fixed = max(t[4] - UNITS["finetune"][0] * it, 0.0)
    return Calibration(parallel, round(pre, 4), round(pre_fixed, 2), round(sup, 3), round(sup_fixed, 2),
                       round(it, 4), round(it_fixed, 2), round(time.perf_counter() - t0, 1))


def clear_scratch(scratch: Path) -> None:
    """Remove a calibration's scratch directory; anything else in its place (a link, a file, a FIFO)
    is unlinked, never followed."""
    if scratch.is_symlink() or (scratch.exists() and not scratch.is_dir()):
        scratch.unlink()
    elif scratch.exists():
        shutil.rmtree(scratch)


@dataclass(frozen=True)
class Plan:
    """What the budget buys, and the seconds it expects to spend on each stage."""

    pretrain_steps: int
    supervised_epochs: int
    finetune_iters: int
    pretrain_stage_s: float
    finetune_stage_s: float


def fit(minutes: float, spent_s: float, cal: Calibration, seeds: int, supervised_epochs: int) -> Plan:
    """The largest pretraining and fine-tuning that fit ``minutes`` (see the module docstring)."""
    left = (minutes * 60 - spent_s) * MARGIN
    waves = math.ceil(3 * seeds / cal.parallel)
    stage = left * PRETRAIN_SHARE
    # pretraining and the supervised baseline run side by side when there are two cores, else one after the other
    sup_share = 1.0 if cal.parallel >= 2 else 0.25
    sup_epochs = max(1, min(supervised_epochs, int((stage * sup_share - cal.supervised_fixed_s) // cal.supervised_epoch_s)))
    pre_time = stage - (0 if cal.parallel >= 2 else cal.supervised_fixed_s + sup_epochs * cal.supervised_epoch_s)
    steps = int((pre_time - cal.pretrain_fixed_s) // cal.pretrain_step_s)
    iters = int(((left - stage) / waves - cal.finetune_fixed_s) // cal.finetune_iter_s)
    if steps < MIN_PRETRAIN_STEPS or iters < MIN_FINETUNE_ITERS:
        need = needed_minutes(spent_s, cal, seeds)
        raise UserError(f"--minutes {minutes:g} buys {max(steps, 0)} pretraining steps and {max(iters, 0)} fine-tuning "
                        f"iterations on this machine (calibrated: {cal.pretrain_step_s:.2f} s/step, "
                        f"{cal.finetune_iter_s:.2f} s/iteration + {cal.finetune_fixed_s:.0f} s per run, "
                        f"{waves} waves); the demo needs >= {MIN_PRETRAIN_STEPS} and >= {MIN_FINETUNE_ITERS}",
                        f"give --minutes {need} or more (or --quick for the CI-sized smoke run)")
    pre_stage = max(cal.pretrain_fixed_s + steps * cal.pretrain_step_s,
                    cal.supervised_fixed_s + sup_epochs * cal.supervised_epoch_s)
    return Plan(steps, sup_epochs, iters, round(pre_stage, 1),
                round(waves * (cal.finetune_fixed_s + iters * cal.finetune_iter_s), 1))


def needed_minutes(spent_s: float, cal: Calibration, seeds: int) -> int:
    """The smallest whole ``--minutes`` that :func:`fit` accepts."""
    waves = math.ceil(3 * seeds / cal.parallel)
    sup = 0 if cal.parallel >= 2 else cal.supervised_fixed_s + cal.supervised_epoch_s
    stage = cal.pretrain_fixed_s + MIN_PRETRAIN_STEPS * cal.pretrain_step_s + sup
    tune = waves * (cal.finetune_fixed_s + MIN_FINETUNE_ITERS * cal.finetune_iter_s)
    left = max(stage / PRETRAIN_SHARE, tune / (1 - PRETRAIN_SHARE))
    return math.ceil((left / MARGIN + spent_s) / 60) + 1


def check_minutes(minutes: float) -> float:
    """``--minutes`` as a finite number in (0, MAX_MINUTES]."""
    if not isinstance(minutes, (int, float)) or isinstance(minutes, bool) or not math.isfinite(minutes) \
            or not 0 < minutes <= MAX_MINUTES:
        raise UserError(f"--minutes {minutes!r} is not a number of minutes in (0, {MAX_MINUTES}]",
                        "give the wall time the demo may take, e.g. --minutes 25 (the default)")
    return float(minutes)


def load_or_save(out: Path, minutes: float, make: Callable[[], tuple[Calibration, Plan]]) -> tuple[Calibration, Plan]:
    """The budget of ``out`` for ``minutes``: the stored one, else ``make()`` (then stored atomically).
    A stored budget for other minutes is refused: its runs were sized for it."""
    path = out / BUDGET_FILE
    if os.path.lexists(path) and (path.is_symlink() or not path.is_file()):
        raise UserError(f"{path} is not a regular file", f"remove {path} (the demo calibrates again) or use another --out")
    if path.is_file():
        try:
            rec = json.loads(path.read_text())
            cal, plan = Calibration(**rec["calibration"]), Plan(**rec["plan"])
            stored = float(rec["minutes"])
            _check_stored(cal, plan)
        except (ValueError, KeyError, TypeError) as e:
            raise UserError(f"{path} is not a demo budget ({type(e).__name__}: {e})",
                            f"remove {path} (the demo calibrates again) or use another --out") from None
        if stored != minutes:
            raise UserError(f"{out} holds a demo sized for --minutes {stored:g}, not {minutes:g}",
                            f"rerun with --minutes {stored:g} to continue it, or use another --out")
        return cal, plan
    cal, plan = make()
    write_text_atomic(path, json.dumps({"minutes": minutes, "calibration": asdict(cal), "plan": asdict(plan)}, indent=2))
    return cal, plan


def _check_stored(cal: Calibration, plan: Plan) -> None:
    """ValueError unless a read-back budget holds numbers :func:`fit` could have written."""
    if not (isinstance(cal.parallel, int) and cal.parallel >= 1):
        raise ValueError(f"parallel {cal.parallel!r}")
    for name, v in asdict(cal).items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise ValueError(f"calibration {name} = {v!r}")
    for name, lo in (("pretrain_steps", MIN_PRETRAIN_STEPS), ("supervised_epochs", 1), ("finetune_iters", MIN_FINETUNE_ITERS)):
        v = getattr(plan, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ValueError(f"plan {name} = {v!r}")


def sized(size: Any, plan: Plan) -> Any:
    """``size`` (a :class:`infomin_det.demo.pipeline.DemoSize`) with the plan's steps, epochs, iterations."""
    return dataclasses.replace(size, pretrain_steps=plan.pretrain_steps, supervised_epochs=plan.supervised_epochs,
                               finetune_iters=plan.finetune_iters)
