"""Detectron2-shaped run directories from given final metrics (paper rows as runs; benchmarks).

``write_run`` lays out what ``DefaultTrainer`` + our trainer leave behind: ``run.json``,
``metrics.json`` (one training record every ``period`` iterations with Detectron2's scalar names,
periodic evaluation records merged into the training record at ``k*eval_period - 1``, and the
final-evaluation record at ``max_iter`` holding only eval keys), ``last_checkpoint``. Values are
percentages; ``final`` is ``{"bbox/AP": 40.6, ...}``. Deterministic for a given ``seed``.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from infomin_det.rundir import RunInfo

_TRAIN_KEYS = ("data_time", "eta_seconds", "fast_rcnn/cls_accuracy", "fast_rcnn/false_negative",
               "fast_rcnn/fg_cls_accuracy", "loss_box_reg", "loss_cls", "loss_mask", "loss_rpn_cls",
               "loss_rpn_loc", "mask_rcnn/accuracy", "mask_rcnn/false_negative", "mask_rcnn/false_positive",
               "roi_head/num_bg_samples", "roi_head/num_fg_samples", "rank_data_time", "rpn/num_neg_anchors",
               "rpn/num_pos_anchors", "time", "total_loss")
COCO_CLASSES = 80


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
              experiment: str = "synthetic", family: str = "ssl") -> Path:
    """Write one finished run; returns the directory. ``eval_period`` 0 = final evaluation only."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    RunInfo(experiment, protocol, family, weights, "", seed).write(out)
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
