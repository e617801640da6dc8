"""Iteration time: our ``Trainer`` vs Detectron2's stock ``DefaultTrainer``, same config and data.

Tiny R50-FPN (reduced width, 128 px) on the generated COCO set, CPU, one thread. The two trainers
alternate in rounds; an iteration is ``before_step`` + ``run_step`` + ``after_step`` (our per-iteration
seeding, resumable loader and preemption check included; no evaluation or checkpoint falls in the
measured iterations). Prints median (min-max) s/iter of each and the ratio of the medians.
    .venv/bin/python benchmarks/bench_train.py [--rounds 5] [--iters 4]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from detectron2.engine import DefaultTrainer
from detectron2.evaluation import COCOEvaluator

from infomin_det.data.tiny_coco import write_tiny_coco
from infomin_det.engine.config import build_config
from infomin_det.engine.spec import TrainSpec
from infomin_det.engine.trainer import Trainer

OPTS = ("MODEL.RESNETS.WIDTH_PER_GROUP", "16", "MODEL.RESNETS.RES2_OUT_CHANNELS", "64",
        "MODEL.RESNETS.STEM_OUT_CHANNELS", "16", "INPUT.MIN_SIZE_TRAIN", "(128,)", "INPUT.MAX_SIZE_TRAIN", "128",
        "SOLVER.IMS_PER_BATCH", "2", "SOLVER.REFERENCE_WORLD_SIZE", "0", "SOLVER.BASE_LR", "0.001",
        "DATALOADER.NUM_WORKERS", "0",
        "TEST.PRECISE_BN.ENABLED", "False")


class StockTrainer(DefaultTrainer):
    @classmethod
    def build_evaluator(cls, cfg, name):
        return COCOEvaluator(name, use_fast_impl=False)


def seconds_per_iter(trainer, iters: int) -> float:
    t0 = time.perf_counter()
    for _ in range(iters):
        trainer.before_step()
        trainer.run_step()
        trainer.after_step()
        trainer.iter += 1
    return (time.perf_counter() - t0) / iters


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--iters", type=int, default=4)
    a = ap.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as d:
        js, imgs = write_tiny_coco(d, 8, 128, seed=0, name="train")
        vjs, vimgs = write_tiny_coco(d, 4, 128, seed=1, name="val")
        spec = TrainSpec("coco/R50-FPN-1x", "none", str(Path(d, "out")), opts=OPTS,
                         dataset=f"coco-json:{js}:{imgs}:{vjs}:{vimgs}")
        cfg, _, _ = build_config(spec)
        trainers = {"ours": Trainer(cfg), "stock DefaultTrainer": StockTrainer(cfg)}
        times = {k: [] for k in trainers}
        from detectron2.utils.events import EventStorage

        with EventStorage(0) as storage:
            for t in trainers.values():
                t.iter, t.storage, t.max_iter = 0, storage, 10**6
                t.before_train()
            for t in trainers.values():
                seconds_per_iter(t, 1)  # warm-up
            for r in range(a.rounds):
                for k, t in trainers.items():
                    times[k].append(seconds_per_iter(t, a.iters))
                print(f"round {r + 1}/{a.rounds}: " + ", ".join(f"{k} {v[-1]:.3f} s/iter" for k, v in times.items()))
    med = {k: statistics.median(v) for k, v in times.items()}
    print("median (min-max) s/iter: " + ", ".join(f"{k} {med[k]:.3f} ({min(v):.3f}-{max(v):.3f})"
                                                  for k, v in times.items())
          + f"; ratio ours/stock {med['ours'] / med['stock DefaultTrainer']:.3f}")


if __name__ == "__main__":
    main()
