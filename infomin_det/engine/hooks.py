"""The trainer's own hooks (Detectron2 ``HookBase``): what makes a run resumable to the same numbers,
preemptible without losing work, and its evaluation records durable.

* :class:`StepSeed` -- before every iteration, torch (CPU and CUDA), numpy and Python are seeded from
  ``(seed, rank, iteration)``: the random choices of iteration k (RPN / ROI sampling, ...) do not depend
  on whether the run was resumed, so no RNG state has to travel with a checkpoint.
* :class:`EvaluateAndRecord` -- Detectron2's EvalHook schedule (every ``TEST.EVAL_PERIOD`` and after
  the last iteration); the results go to ``metrics.json`` at once (not at the next 20-iteration write:
  a kill -9 in between lost them), the final ones also to ``final_results.json``, and the other ranks
  wait for rank 0's pure-Python COCOeval in :func:`infomin_det.dist.wait_for_main` (long timeout).
* :class:`PreemptionCheckpoint` -- on SIGUSR2 (SLURM preemption or time limit, ``scancel --signal=USR2``,
  or ``kill -USR2`` of a local run) every rank finishes the current iteration, they agree, rank 0
  saves ``model_<iter>.pth`` atomically, and then submitit's own handler requeues the job (every
  rank ends with :class:`~infomin_det.preempt.Preempted`).
* :class:`PreciseBNSameOnEveryRank` -- Detectron2's PreciseBN, after which every rank holds rank 0's
  statistics (the ones ``model_final.pth`` stores).
* :class:`WriteProgress` -- rank 0 keeps ``progress.json`` (:mod:`infomin_det.progress`) current.
* :class:`WandbWriter` -- the Detectron2 event writer behind ``--wandb`` (:mod:`infomin_det.wandb_log`).
"""

from __future__ import annotations

import json
import logging
import os
import random
from pathlib import Path

import numpy as np
import torch
from detectron2.engine import HookBase
from detectron2.engine import hooks as d2_hooks
from detectron2.evaluation.testing import flatten_results_dict
from detectron2.utils import comm
from detectron2.utils.events import EventWriter, JSONWriter, get_event_storage
from fvcore.nn.precise_bn import get_bn_modules

from infomin_det import dist, faults
from infomin_det.atomic import write_text_atomic
from infomin_det.engine.loader import sample_seed
from infomin_det.errors import UserError
from infomin_det.preempt import PreemptionSignal
from infomin_det.progress import ProgressWriter
from infomin_det.rundir import FINAL_RESULTS

logger = logging.getLogger("infomin_det")


class StepSeed(HookBase):
    """Seed every RNG from ``(seed, rank, iteration)`` before each iteration."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def before_step(self) -> None:
        faults.point("step")
        s = sample_seed(self.seed, "step", comm.get_rank(), self.trainer.iter)
        torch.manual_seed(s)           # also every CUDA device
        np.random.seed(s)
        random.seed(s)


def check_results(results: dict) -> dict[str, float]:
    """The flat ``{"bbox/AP": ...}`` of an evaluation; refuses a value that is not a number."""
    flat = flatten_results_dict(results)
    for k, v in flat.items():
        if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)):
            raise UserError(f"evaluation result {k}={v!r} is not a number", "check the evaluator of the test set")
    return {k: float(v) for k, v in flat.items()}


def append_record(output_dir: str | Path, results: dict, iteration: int) -> None:
    """Append one evaluation record to ``metrics.json`` as Detectron2's JSONWriter would, durably (for a
    final evaluation made outside the training loop, e.g. after a run killed during its last one)."""
    line = json.dumps({**check_results(results), "iteration": iteration}, sort_keys=True)
    with open(Path(output_dir, "metrics.json"), "a") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


class PreciseBNSameOnEveryRank(d2_hooks.PreciseBN):
    """Detectron2's PreciseBN, then rank 0's BN statistics are broadcast to every rank.

    fvcore's ``update_bn_stats`` averages the statistics of its iterations (with SyncBN: already
    all-reduced over the ranks) weighted by *this rank's* batch size. Where that size differs between
    ranks -- the mask head's foreground RoIs, images of other sizes -- the ranks end with different
    running statistics: each evaluates its shard with statistics that ``model_final.pth`` (rank 0's)
    does not hold, and trains on with them (tests/test_multiprocess.py). After the broadcast every
    rank's model is the one that is saved; SyncBN keeps them equal until the next PreciseBN.
    """

    def update_stats(self) -> None:
        super().update_stats()
        if self._disabled or not dist.is_distributed():
            return
        import torch.distributed as tdist
        from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

        buffers = [b for bn in get_bn_modules(self._model) for b in (bn.running_mean, bn.running_var)]
        flat = _flatten_dense_tensors(buffers)
        tdist.broadcast(flat, src=0)
        for b, v in zip(buffers, _unflatten_dense_tensors(flat, buffers)):
            b.copy_(v)


class EvaluateAndRecord(HookBase):
    """Evaluate every ``period`` iterations (0: only at the end) and after the last one; record at once."""

    def __init__(self, period: int) -> None:
        self.period = period

    def _evaluate(self, final: bool) -> None:
        t = self.trainer
        results = t.test(t.cfg, t.model)
        faults.point("eval")
        t._last_eval_results = results
        if comm.is_main_process() and results:
            t.storage.put_scalars(**check_results(results), smoothing_hint=False)
            for w in t.build_writers():
                if isinstance(w, JSONWriter):
                    w.write()          # flushed and fsynced by Detectron2's JSONWriter
            if final:
                write_text_atomic(Path(t.cfg.OUTPUT_DIR, FINAL_RESULTS), json.dumps(results, indent=2))
        dist.wait_for_main()

    def after_step(self) -> None:
        next_iter = self.trainer.iter + 1
        if self.period > 0 and next_iter % self.period == 0 and next_iter != self.trainer.max_iter:
            self._evaluate(final=False)

    def after_train(self) -> None:
        if self.trainer.iter + 1 >= self.trainer.max_iter:   # not after a failed or preempted run
            self._evaluate(final=True)


class WriteProgress(HookBase):
    """Rank 0 writes ``progress.json`` (step / total of this run, this attempt's pace) for ``status``."""

    def before_train(self) -> None:
        t = self.trainer
        self.writer = ProgressWriter(t.cfg.OUTPUT_DIR, t.max_iter, t.start_iter) if comm.is_main_process() else None

    def after_step(self) -> None:
        if self.writer is not None:
            self.writer.update(self.trainer.iter + 1)


class PreemptionCheckpoint(HookBase):
    """Checkpoint the current iteration on SIGUSR2, then hand over (:mod:`infomin_det.preempt`)."""

    def __init__(self) -> None:
        self.signal = PreemptionSignal()

    def before_train(self) -> None:
        self.signal.install()

    def after_train(self) -> None:
        self.signal.restore()

    def after_step(self) -> None:
        if not self.signal.requested():
            return
        t, it = self.trainer, self.trainer.iter
        name = f"model_{it:07d}"
        if comm.is_main_process():
            t.checkpointer.save(name, iteration=it)
        dist.wait_for_main()
        logger.warning("preempted at iteration %d: saved %s.pth; the run resumes at iteration %d", it, name, it + 1)
        self.signal.hand_over(f"preempted at iteration {it}: checkpoint {name}.pth saved in {t.cfg.OUTPUT_DIR}; "
                              "the same command (or the requeued job) resumes from it")


class WandbWriter(EventWriter):
    """The event storage's new scalars to W&B, each at its own iteration, smoothed over ``window`` as
    Detectron2's TensorBoard writer smooths them (losses averaged, evaluation results as they are)."""

    def __init__(self, scalars, window: int = 20) -> None:
        self.scalars, self.window, self._last = scalars, window, -1

    def write(self) -> None:
        rows: dict[int, dict[str, float]] = {}
        for key, (value, it) in get_event_storage().latest_with_smoothing_hint(self.window).items():
            if it > self._last:
                rows.setdefault(it, {})[key] = value
        for it in sorted(rows):
            self.scalars.log(rows[it], it)
        if rows:
            self._last = max(rows)

    def close(self) -> None:
        self.scalars.close()
