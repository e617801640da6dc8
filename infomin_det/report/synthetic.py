"""Detectron2-shaped run directories from given final metrics (paper rows as runs; tests; benchmarks).

``write_run`` lays out what ``DefaultTrainer`` + our trainer leave behind: ``run.json`` (with the
dataset the run trained on: by default the paper's for the protocol), ``metrics.json`` (one
training record every ``period`` iterations with Detectron2's scalar names, periodic evaluation
records merged into the training record at ``k*eval_period - 1``, and the final-evaluation record
at ``max_iter`` holding only eval keys), ``last_checkpoint`` and, when given, ``config.yaml``
(:func:`config_yaml` makes one in the block style of ``CfgNode.dump()``). Values are percentages;
``final`` is ``{"bbox/AP": 40.6, ...}``. Deterministic for a given ``seed``.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from infomin_det.report.identity import PAPER_SETS, PROTOCOLS, protocol_fields
from infomin_det.rundir import RunInfo

_TRAIN_KEYS = ("data_time", "eta_seconds", "fast_rcnn/cls_accuracy", "fast_rcnn/false_negative",
               "fast_rcnn/fg_cls_accuracy", "loss_box_reg", "loss_cls", "loss_mask", "loss_rpn_cls",
               "loss_rpn_loc", "mask_rcnn/accuracy", "mask_rcnn/false_negative", "mask_rcnn/false_positive",
               "roi_head/num_bg_samples", "roi_head/num_fg_samples", "rank_data_time", "rpn/num_neg_anchors",
               "rpn/num_pos_anchors", "time", "total_loss")
COCO_CLASSES = 80


def paper_dataset(protocol: str) -> dict[str, Any]:
    """run.json's ``dataset`` for a run on the paper's sets of ``protocol``."""
    kind = PROTOCOLS[protocol].dataset
    train, test = PAPER_SETS[kind]
    return {"id": f"{kind}-paper", "paper": True, "train": list(train), "test": list(test)}


def config_yaml(protocol: str, seed: int = -1, weights: str = "", max_iter: int | None = None,
                train: tuple[str, ...] | None = None, test: tuple[str, ...] | None = None,
                **changes: Any) -> str:
    """A merged-config excerpt as Detectron2 dumps it (block style), with the protocol's defining
    values unless overridden: ``changes`` take ``depth=18``, ``groups``, ``backbone``, ``heads``, ``mask_on``."""
    f = protocol_fields(PROTOCOLS[protocol])
    paper_train, paper_test = PAPER_SETS[PROTOCOLS[protocol].dataset]
    v = {"depth": f["RESNETS.DEPTH"], "groups": f["RESNETS.NUM_GROUPS"],
         "backbone": "build_resnet_fpn_backbone" if f["BACKBONE.NAME"] == "FPN" else "build_resnet_backbone",
         "heads": "Res5ROIHeadsExtraNorm" if f["ROI_HEADS.NAME"] == "Res5ROIHeads*" else f["ROI_HEADS.NAME"],
         "mask_on": f["MASK_ON"], **changes}
    sets = lambda names: "\n".join(f"  - {n}" for n in names)  # noqa: E731
    return (f"CUDNN_BENCHMARK: false\nDATASETS:\n  PRECOMPUTED_PROPOSAL_TOPK_TEST: 1000\n  TEST:\n"
            f"{sets(test or paper_test)}\n  TRAIN:\n{sets(train or paper_train)}\n"
            f"MODEL:\n  BACKBONE:\n    FREEZE_AT: 0\n    NAME: {v['backbone']}\n  DEVICE: cpu\n"
            f"  MASK_ON: {str(v['mask_on']).lower()}\n  RESNETS:\n    DEPTH: {v['depth']}\n"
            f"    NUM_GROUPS: {v['groups']}\n    STRIDE_IN_1X1: false\n  ROI_HEADS:\n    NAME: {v['heads']}\n"
            f"    NUM_CLASSES: 80\n  WEIGHTS: '{weights}'\nOUTPUT_DIR: ./output\nSEED: {seed}\nSOLVER:\n"
            f"  BASE_LR: 0.02\n  IMS_PER_BATCH: 16\n  MAX_ITER: {max_iter or f['SOLVER.MAX_ITER']}\n"
            f"TEST:\n  EVAL_PERIOD: 0\n")


def eval_record(final: dict[str, float], rng: random.Random, classes: int = COCO_CLASSES,
                scale: float = 1.0) -> dict[str, float]:
    """Eval keys as Detectron2 writes them: the summary metrics plus per-class ``<task>/AP-<name>``."""
    rec = {k: v * scale for k, v in final.items()}
    for task in sorted({k.split("/")[0] for k in final}):
        for c in range(classes):
            rec[f"{task}/AP-class{c:02d}"] = rng.uniform(0, 80) * scale
    return rec


def write_run(out_dir: str | Path, protocol: str, weights: str, seed: int, final: dict[str, float],
              max_iter: int = 90000, period: int = 20, eval_period: int = 0, classes: int = COCO_CLASSES,
              experiment: str = "synthetic", family: str = "ssl", variant: str = "",
              dataset: dict[str, Any] | None = None, config: str | None = None) -> Path:
    """Write one finished run; returns the directory. ``eval_period`` 0 = final evaluation only;
    ``dataset`` None = the paper's; ``config``: the text of config.yaml (none written when None)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    RunInfo(experiment, protocol, family, weights, "", seed, variant=variant,
            dataset=paper_dataset(protocol) if dataset is None else dataset).write(out)
    if config is not None:
        (out / "config.yaml").write_text(config)
    rng = random.Random(f"{protocol}/{weights}/{seed}")
    lines = []
    for it in range(period - 1, max_iter, period):
        rec = {k: rng.uniform(0, 2) for k in _TRAIN_KEYS}
        rec.update(iteration=it, lr=0.02)
        if eval_period and (it + 1) % eval_period == 0 and it + 1 != max_iter:
            rec.update(eval_record(final, rng, classes, scale=(it + 1) / max_iter))
        lines.append(json.dumps(rec, sort_keys=True))
    final_rec = eval_record(final, rng, classes)
    final_rec["iteration"] = max_iter
    lines.append(json.dumps(final_rec, sort_keys=True))
    (out / "metrics.json").write_text("\n".join(lines) + "\n")
    (out / "last_checkpoint").write_text("model_final.pth")
    return out
