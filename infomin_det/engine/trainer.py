"""The Detectron2 trainer of one run, and ``train_worker(spec)``: one process's share of a run.

``Trainer`` is Detectron2's ``DefaultTrainer`` with: DDP without device ids on CPU, COCO (official
pycocotools when ``detectron2._C`` is absent) / VOC evaluators, atomic checkpoints (the .pth and
``last_checkpoint`` are each written to a temp file and renamed), and the final eval results saved
to ``final_results.json`` so a resumed run that had finished does not evaluate (or append) twice.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import weakref
from pathlib import Path

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.engine import DefaultTrainer, SimpleTrainer, AMPTrainer, TrainerBase, create_ddp_model, hooks
from detectron2.evaluation import COCOEvaluator, PascalVOCDetectionEvaluator
from detectron2.data import MetadataCatalog
from detectron2.utils import comm
from detectron2.utils.env import seed_all_rng
from detectron2.utils.logger import setup_logger

from infomin_det.atomic import atomic_write, write_text_atomic
from infomin_det.engine import heads  # noqa: F401  (registers Res5ROIHeadsExtraNorm)
from infomin_det.engine.config import build_config
from infomin_det.engine.spec import TrainSpec
from infomin_det.errors import UserError
from infomin_det.protocols import get_protocol
from infomin_det.rundir import RunInfo

FINAL_RESULTS = "final_results.json"
logger = logging.getLogger("infomin_det")


def _has_compiled_ops() -> bool:
    try:
        from detectron2 import _C  # noqa: F401
        return True
    except ImportError:
        return False


class AtomicCheckpointer(DetectionCheckpointer):
    """``DetectionCheckpointer`` whose files never exist half-written; records the load's key report."""

    def save(self, name: str, **kwargs) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict(), **{k: v.state_dict() for k, v in self.checkpointables.items()}}
        data.update(kwargs)
        basename = f"{name}.pth"
        self.logger.info("Saving checkpoint to %s", os.path.join(self.save_dir, basename))
        with atomic_write(os.path.join(self.save_dir, basename)) as tmp:
            torch.save(data, tmp)
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        write_text_atomic(os.path.join(self.save_dir, "last_checkpoint"), last_filename_basename)

    def _load_model(self, checkpoint):
        self.incompatible = super()._load_model(checkpoint)
        return self.incompatible


class Trainer(DefaultTrainer):
    """``DefaultTrainer`` for the protocols (see module docstring)."""

    def __init__(self, cfg):
        TrainerBase.__init__(self)
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        device_ids = None if cfg.MODEL.DEVICE == "cpu" else [comm.get_local_rank()]
        model = create_ddp_model(model, broadcast_buffers=False, device_ids=device_ids)
        self._trainer = (AMPTrainer if cfg.SOLVER.AMP.ENABLED else SimpleTrainer)(model, data_loader, optimizer)
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = AtomicCheckpointer(model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self))
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    @classmethod
    def build_evaluator(cls, cfg, dataset_name):
        kind = MetadataCatalog.get(dataset_name).evaluator_type
        if kind == "coco":
            return COCOEvaluator(dataset_name, output_dir=os.path.join(cfg.OUTPUT_DIR, "inference"),
                                 use_fast_impl=_has_compiled_ops())
        if kind == "pascal_voc":
            return PascalVOCDetectionEvaluator(dataset_name)
        raise UserError(f"no evaluator for dataset {dataset_name} (type {kind!r})", "use a COCO-format or VOC dataset")

    def build_hooks(self):
        ret = super().build_hooks()
        for h in ret:
            if isinstance(h, hooks.EvalHook):
                h._func = self._saving(h._func)
        return ret

    def _saving(self, func):
        def run():
            results = func()
            if comm.is_main_process() and self.iter + 1 >= self.max_iter:
                write_text_atomic(Path(self.cfg.OUTPUT_DIR, FINAL_RESULTS), json.dumps(results, indent=2))
            return results
        return run


def trunk_keys(model: torch.nn.Module) -> list[str]:
    """State-dict keys of the pretrained trunk (stem, res2..5, C4's roi_heads.res5 without ExtraNorm)."""
    import re

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
    out.mkdir(parents=True, exist_ok=True)
    for name in ("detectron2", "fvcore", "infomin_det"):
        setup_logger(str(out), distributed_rank=rank, name=name, abbrev_name="d2" if name == "detectron2" else "")
    seed_all_rng(cfg.SEED + rank)
    if spec.eval_only:
        model = Trainer.build_model(cfg)
        ck = AtomicCheckpointer(model, cfg.OUTPUT_DIR)
        ck.resume_or_load(cfg.MODEL.WEIGHTS, resume=True)
        return Trainer.test(cfg, model) if comm.is_main_process() else {}
    trainer = Trainer(cfg)
    resume = trainer.checkpointer.has_checkpoint()
    trainer.resume_or_load(resume=resume)
    if not resume:
        _check_loaded(trainer, cfg.MODEL.WEIGHTS)
    if comm.is_main_process():
        write_text_atomic(out / "config.yaml", cfg.dump())
        RunInfo(spec.experiment, spec.protocol, family, spec.weights_name or _weights_name(spec.weights),
                spec.weights, spec.seed, ",".join(get_protocol(spec.protocol).panels), list(sys.argv),
                {"world_size": world, "device": cfg.MODEL.DEVICE, "resumed": resume, "resumed_from_iter": trainer.start_iter,
                 "weights_arch": meta.arch.name if meta else ""}).write(out)
    final = out / FINAL_RESULTS
    if trainer.start_iter >= trainer.max_iter:
        logger.info("training already finished (iteration %d); not training or evaluating again", trainer.start_iter)
        if not final.exists():
            results = trainer.test(cfg, trainer.model)
            if comm.is_main_process():
                write_text_atomic(final, json.dumps(results, indent=2))
    else:
        trainer.train()
    comm.synchronize()
    return json.loads(final.read_text()) if comm.is_main_process() and final.exists() else {}


def _weights_name(weights: str) -> str:
    return Path(weights).stem if weights not in ("", "none") else "random"
