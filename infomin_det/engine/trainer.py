"""The Detectron2 trainer of one run, and ``train_worker(spec)``: one process's share of a run.

``Trainer`` is Detectron2's ``DefaultTrainer`` extended only through its documented hooks
(``build_train_loader``, ``build_hooks``, ``build_writers``, ``build_evaluator``, ``resume_or_load``):

* the training batches are a pure function of (seed, rank, iteration) (:mod:`.loader`) and every
  iteration is seeded the same way (:class:`.hooks.StepSeed`): an interrupted and resumed run trains
  on exactly what an uninterrupted one would, and ends with the same numbers;
* checkpoints are atomic and read back only as data (:mod:`.checkpoint`); a SIGUSR2 (preemption /
  time limit) checkpoints the current iteration before the job is requeued (:mod:`.hooks`);
* evaluation records reach ``metrics.json`` as soon as they exist; the final ones also
  ``final_results.json``, so a resumed run that had finished does not evaluate (or append) twice;
* DDP gets the device of the model (``device_ids=None`` on CPU, the current GPU on CUDA).

A directory is one run: rerunning it with another config is refused (the keys are named) instead of
rewriting ``config.yaml`` / ``run.json`` to describe a config the run never used.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sys
import weakref
from pathlib import Path
from typing import Any, Iterator

import torch
import yaml
from detectron2.data import MetadataCatalog
from detectron2.engine import DefaultTrainer, hooks
from detectron2.engine import defaults as d2_defaults
from detectron2.evaluation import COCOEvaluator, PascalVOCDetectionEvaluator
from detectron2.utils import comm
from detectron2.utils.env import seed_all_rng
from detectron2.utils.logger import setup_logger

from infomin_det import dist, wandb_log
from infomin_det.atomic import write_text_atomic
from infomin_det.engine import heads  # noqa: F401  (registers Res5ROIHeadsExtraNorm)
from infomin_det.engine import provenance
from infomin_det.engine.checkpoint import AtomicCheckpointer
from infomin_det.engine.config import base_config, build_config, leaf_config
from infomin_det.engine.overrides import apply_overrides
from infomin_det.engine.hooks import (FINAL_RESULTS, EvaluateAndRecord, PreciseBNSameOnEveryRank, PreemptionCheckpoint,
                                      StepSeed, WandbWriter, WriteProgress, append_record)
from infomin_det.engine.loader import KeyedLoader, build_resumable_loader
from infomin_det.engine.spec import TrainSpec
from infomin_det.errors import UserError
from infomin_det.filehash import sha256_file
from infomin_det.protocols import get_protocol
from infomin_det.rundir import RunInfo, weights_name_of

logger = logging.getLogger("infomin_det")
CONFIG = "config.yaml"


def _has_compiled_ops() -> bool:
    try:
        from detectron2 import _C  # noqa: F401
        return True
    except ImportError:
        return False


@contextlib.contextmanager
def _ddp_on_the_model_device() -> Iterator[None]:
    """``DefaultTrainer`` wraps the model with ``create_ddp_model(model, broadcast_buffers=False)``,
    which passes ``device_ids=[local rank]``: wrong on CPU (DDP refuses device ids) and wherever the
    rank's GPU is not ``cuda:<local rank>`` (one GPU per task). Give it the model's own device."""
    original = d2_defaults.create_ddp_model

    def create(model, **kwargs):
        device = next(model.parameters()).device
        kwargs.setdefault("device_ids", [device.index] if device.type == "cuda" else None)
        return original(model, **kwargs)

    d2_defaults.create_ddp_model = create
    try:
        yield
    finally:
        d2_defaults.create_ddp_model = original


class Trainer(DefaultTrainer):
    """``DefaultTrainer`` for the protocols (see module docstring)."""

    def __init__(self, cfg, wandb=None):
        self._writers = None
        self._wandb = wandb     # a wandb_log.WandbScalars on rank 0 with --wandb, else None
        with _ddp_on_the_model_device():
            super().__init__(cfg)

    @classmethod
    def build_train_loader(cls, cfg):
        return build_resumable_loader(cfg)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name):
        kind = MetadataCatalog.get(dataset_name).evaluator_type
        if kind == "coco":
            return COCOEvaluator(dataset_name, output_dir=os.path.join(cfg.OUTPUT_DIR, "inference"),
                                 use_fast_impl=_has_compiled_ops())
        if kind == "pascal_voc":
            return PascalVOCDetectionEvaluator(dataset_name)
        raise UserError(f"no evaluator for dataset {dataset_name} (type {kind!r})", "use a COCO-format or VOC dataset")

    def build_writers(self):
        if self._writers is None:       # one JSONWriter per run: the eval hook flushes the same one
            self._writers = super().build_writers() + ([WandbWriter(self._wandb)] if self._wandb else [])
        return self._writers

    def build_hooks(self):
        self.checkpointer = AtomicCheckpointer(self.checkpointer.model, self.cfg.OUTPUT_DIR,
                                               trainer=weakref.proxy(self))
        cfg, me = self.cfg, weakref.proxy(self)
        out: list = [StepSeed(cfg.SEED)]
        for h in super().build_hooks():
            if isinstance(h, hooks.PreciseBN):
                quiet = cfg.clone()
                quiet.defrost()
                quiet.DATALOADER.NUM_WORKERS = 0
                h = PreciseBNSameOnEveryRank(cfg.TEST.EVAL_PERIOD, self.model,
                                             KeyedLoader(build_resumable_loader(quiet, stream="precise_bn"),
                                                         key=lambda: me.iter),
                                             cfg.TEST.PRECISE_BN.NUM_ITER)
            elif isinstance(h, hooks.EvalHook):
                h = EvaluateAndRecord(cfg.TEST.EVAL_PERIOD)
            out.append(h)
        out += [WriteProgress(), PreemptionCheckpoint()]
        return out

    def resume_or_load(self, resume=True):
        if comm.is_main_process():
            self.checkpointer.remove_partial_saves()
        super().resume_or_load(resume=resume)
        self._trainer.data_loader.start = self.start_iter


def trunk_keys(model: torch.nn.Module) -> list[str]:
    """State-dict keys of the pretrained trunk (stem, res2..5, C4's roi_heads.res5 without ExtraNorm)."""
    pat = re.compile(r"^(module\.)?(backbone\.(bottom_up\.)?(stem|res[2-5])\.|roi_heads\.res5\.\d)")
    return [k for k in model.state_dict() if pat.match(k) and not k.endswith("num_batches_tracked")]


def _check_loaded(trainer: Trainer, weights: str) -> None:
    inc = getattr(trainer.checkpointer, "incompatible", None)
    if not weights or inc is None:
        return
    strip = lambda k: k[len("module."):] if k.startswith("module.") else k  # noqa: E731
    trunk = {strip(k) for k in trunk_keys(trainer.model)}
    missing = sorted(trunk & {strip(k) for k in inc.missing_keys})
    bad = [k for k, *_ in inc.incorrect_shapes if strip(k) in trunk]
    if missing or bad:
        raise UserError(f"{len(missing) + len(bad)} of {len(trunk)} backbone tensors were not loaded from {weights} "
                        f"(e.g. {(missing + bad)[0]})", "convert the checkpoint with `infomin-det convert` and "
                        "use the protocol of its architecture")
    # the values as loaded (the pre-flight reads only the file's metadata): NaN / Inf, or a negative
    # BN running variance, would train to garbage or stop with a NaN loss many minutes in
    state = {strip(k): v for k, v in trainer.model.state_dict().items()}
    broken = sorted(k for k in trunk if k in state and state[k].is_floating_point() and (
        not bool(torch.isfinite(state[k]).all()) or (k.endswith("running_var") and bool((state[k] < 0).any()))))
    if broken:
        raise UserError(f"{weights} loaded {len(broken)} backbone tensors with non-finite values or a negative BN "
                        f"variance (e.g. {broken[0]})", "convert the original checkpoint again with `infomin-det "
                        "convert` (it refuses such values) and check its source")


# ----------------------------------------------------------------------------------------------
# one directory = one run

_IGNORED = {"OUTPUT_DIR", "MODEL.WEIGHTS", "DATASETS.TRAIN", "DATASETS.TEST"}   # compared via run.json


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: node}


def config_differences(stored: str, current: str) -> list[tuple[str, Any, Any]]:
    """``[(key, stored value, current value)]`` between two config dumps (run identity keys aside)."""
    a, b = _flat(yaml.safe_load(stored) or {}), _flat(yaml.safe_load(current) or {})
    return [(k, a.get(k, "<absent>"), b.get(k, "<absent>")) for k in sorted(set(a) | set(b))
            if k not in _IGNORED and a.get(k, "<absent>") != b.get(k, "<absent>")]


def _identity(info: dict) -> dict[str, Any]:
    files = {role: f.get("sha256", f.get("path")) for role, f in (info.get("dataset") or {}).get("files", {}).items()}
    return {"protocol": info.get("protocol"), "family": info.get("family"), "variant": info.get("variant", ""),
            "seed": info.get("seed"), "weights_sha256": (info.get("provenance") or {}).get("weights_sha256", ""),
            "datasets": (info.get("dataset") or {}).get("train", []) + (info.get("dataset") or {}).get("test", [])
            if not files else files}


def has_progress(out: Path) -> bool:
    """Whether ``out`` holds work of an earlier attempt (a checkpoint or metrics)."""
    metrics = out / "metrics.json"
    return (out / "last_checkpoint").exists() or (metrics.is_file() and metrics.stat().st_size > 0)


def check_same_run(out: Path, cfg_dump: str, info: RunInfo) -> None:
    """Refuse to continue the run in ``out`` with a config or identity it was not started with."""
    if not has_progress(out) or not (out / CONFIG).is_file():
        return
    diffs = config_differences((out / CONFIG).read_text(), cfg_dump)
    try:
        stored = json.loads((out / "run.json").read_text())
    except (OSError, ValueError):
        stored = None
    if stored is not None:
        mine = _identity(json.loads(json.dumps(info.__dict__, default=str)))
        diffs += [(f"run.json:{k}", v, mine[k]) for k, v in _identity(stored).items()
                  if v not in ("", None, [], {}) and v != mine[k]]   # fields an older run.json lacks: not compared
    if diffs:
        shown = "; ".join(f"{k}: {a!r} then, {b!r} now" for k, a, b in diffs[:6])
        more = f" (+{len(diffs) - 6} more)" if len(diffs) > 6 else ""
        raise UserError(f"{out} holds a run made with another config: {shown}{more}",
                        "rerun with the options it was started with, or give this config its own run "
                        "directory (another --experiment / --output-dir)")


def batch_scaling(spec: TrainSpec, family: str, cfg, world: int) -> dict:
    """What the run was scaled from and to: the SOLVER values as given (leaf or config file, then the
    overrides) and their ``REFERENCE_WORLD_SIZE``, the values that run and the world size (config.yaml
    cannot tell: Detectron2 rewrites REFERENCE_WORLD_SIZE to the world size)."""
    given = base_config(spec, family)
    apply_overrides(given, spec.opts, custom_dataset=bool(spec.dataset))
    keys = ("IMS_PER_BATCH", "BASE_LR", "MAX_ITER")
    ref = given.SOLVER.REFERENCE_WORLD_SIZE
    return {"given": {k.lower(): given.SOLVER[k] for k in keys}, "run": {k.lower(): cfg.SOLVER[k] for k in keys},
            "reference_world_size": ref, "world_size": world,
            "rule": f"linear, x{world / ref:g} (Detectron2's SOLVER.REFERENCE_WORLD_SIZE)" if ref and ref != world else "none"}


def _run_info(spec: TrainSpec, cfg, family: str, meta, world: int, resumed: bool, start_iter: int) -> RunInfo:
    weights = cfg.MODEL.WEIGHTS
    sha = sha256_file(weights) if weights and Path(weights).is_file() else ""
    dump = cfg.dump()
    leaf = leaf_config(spec.protocol, family, spec.variant)
    return RunInfo(spec.experiment, spec.protocol, family, spec.weights_name or weights_name_of(spec.weights),
                   spec.weights, spec.seed, ",".join(get_protocol(spec.protocol).panels), list(sys.argv),
                   {"world_size": world, "device": cfg.MODEL.DEVICE, "resumed": resumed,
                    "resumed_from_iter": start_iter, "weights_arch": meta.arch.name if meta else ""},
                   variant=spec.row_variant,
                   dataset=provenance.dataset_record(cfg, leaf, spec.dataset),
                   provenance={"weights_sha256": sha, **provenance.versions(), "world_size": world,
                               "ims_per_batch": cfg.SOLVER.IMS_PER_BATCH, "base_lr": cfg.SOLVER.BASE_LR,
                               "max_iter": cfg.SOLVER.MAX_ITER, "batch_scaling": batch_scaling(spec, family, cfg, world),
                               **({"config_file": {"path": spec.config_file, "sha256": sha256_file(spec.config_file)}}
                                  if spec.config_file else {}),
                               "config_sha256": provenance.config_sha256(dump)})


def train_worker(spec: TrainSpec) -> dict:
    """Run this process's share of ``spec``; returns the final eval results on rank 0 ({} elsewhere).

    Assumes ``torch.distributed`` is initialised when the world size is > 1. Resumes iff
    ``spec.output_dir/last_checkpoint`` exists.
    """
    world, rank = comm.get_world_size(), comm.get_rank()
    if not torch.cuda.is_available():  # thread budget: the spec, else the launcher's OMP_NUM_THREADS, else cores / world
        # (never more: two 2-thread runs on 2 cores spin in OpenMP barriers at ~1/9 of their speed)
        torch.set_num_threads(int(spec.extra.get("threads") or os.environ.get("OMP_NUM_THREADS")
                                  or max(1, (os.cpu_count() or 1) // world)))
    cfg, family, meta = build_config(spec)
    out = Path(cfg.OUTPUT_DIR)
    if spec.eval_only:
        return _evaluate_only(cfg, out, rank)
    if comm.is_main_process():
        check_same_run(out, cfg.dump(), _run_info(spec, cfg, family, meta, world, False, 0))
    dist.wait_for_main()
    out.mkdir(parents=True, exist_ok=True)
    _setup_logging(out, rank)
    seed_all_rng(cfg.SEED + rank)
    wandb, failed = None, None
    if spec.extra.get("wandb"):     # rank 0 logs; a W&B that cannot start stops every rank, not only rank 0
        if comm.is_main_process():
            try:
                wandb = wandb_log.WandbScalars(
                    spec.extra["wandb"], out, step_key="iteration",
                    name=f"{spec.experiment}/{spec.protocol}/{spec.weights_name}/seed{spec.seed}",
                    config={"protocol": spec.protocol, "weights": spec.weights_name, "seed": spec.seed,
                            "experiment": spec.experiment, "variant": spec.row_variant, "world_size": world,
                            "opts": list(spec.opts), "family": family})
            except UserError as e:
                failed = e
        if dist.any_rank(failed is not None):
            raise failed or UserError("rank 0 could not start the run's W&B run", "see rank 0's error and fix")
    try:
        return _train(spec, cfg, out, family, meta, world, wandb)
    finally:
        if wandb is not None:
            wandb.close()


def _train(spec: TrainSpec, cfg, out: Path, family: str, meta, world: int, wandb) -> dict:
    trainer = Trainer(cfg, wandb)
    resume = trainer.checkpointer.has_checkpoint()
    trainer.resume_or_load(resume=resume)
    if not resume:
        _check_loaded(trainer, cfg.MODEL.WEIGHTS)
    if comm.is_main_process():
        write_text_atomic(out / CONFIG, cfg.dump())
        _run_info(spec, cfg, family, meta, world, resume, trainer.start_iter).write(out)
    final = out / FINAL_RESULTS
    if trainer.start_iter >= trainer.max_iter:
        logger.info("training already finished (iteration %d); not training or evaluating again", trainer.start_iter)
        if not final.exists():      # killed during its final evaluation: evaluate and record it now
            results = trainer.test(cfg, trainer.model)
            if comm.is_main_process():
                append_record(out, results, trainer.max_iter)
                write_text_atomic(final, json.dumps(results, indent=2))
    else:
        trainer.train()
    dist.wait_for_main()
    return json.loads(final.read_text()) if comm.is_main_process() and final.exists() else {}


train_worker.detectron2_comm = True  # type: ignore[attr-defined]  (the launcher creates Detectron2's local group)


def _setup_logging(out: Path, rank: int) -> None:
    """Log to ``out/log.txt`` (and rank 0's stderr) -- only there: the handlers an earlier run in this
    process attached are removed first, or that run's log.txt would receive this run's lines (and
    the report, reading an eval-only run's numbers from its log.txt, would take them for its own)."""
    names = ("detectron2", "fvcore", "infomin_det")
    for name in names:
        lg = logging.getLogger(name)
        for h in list(lg.handlers):
            lg.removeHandler(h)
    setup_logger.cache_clear()            # Detectron2's setup_logger is an lru_cache of (dir, rank, name)
    for name in names:
        lg = setup_logger(str(out), distributed_rank=rank, name=name, abbrev_name="d2" if name == "detectron2" else "")
        for h in lg.handlers:             # the log goes to stderr: stdout carries the results (JSON)
            if type(h) is logging.StreamHandler and h.stream is sys.stdout:
                h.setStream(sys.stderr)


def _evaluate_only(cfg, out: Path, rank: int) -> dict:
    """Evaluate the run's last checkpoint (or MODEL.WEIGHTS) on every rank; rank 0 returns the results."""
    out.mkdir(parents=True, exist_ok=True)
    _setup_logging(out, rank)
    seed_all_rng(cfg.SEED + rank)
    model = Trainer.build_model(cfg)
    AtomicCheckpointer(model, cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=True)
    results = Trainer.test(cfg, model)    # every rank: the evaluator's gather needs all of them
    dist.wait_for_main()
    return results if comm.is_main_process() else {}


