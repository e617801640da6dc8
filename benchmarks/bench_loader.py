"""Data loading: our resumable training loader vs Detectron2's ``build_detection_train_loader``.

Same config (tiny R50-FPN inputs, 128 px, batch 2, no workers) and data (32 generated images), one
thread; the two loaders alternate in rounds of 50 batches. Prints median (min-max) ms per batch and the
ratio of the medians. The difference is what planning batches on indices and seeding every sample
costs (the model step is seconds on CPU, tens of ms on a GPU).
    .venv/bin/python benchmarks/bench_loader.py [--rounds 7] [--batches 50]
"""
import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from detectron2.data import build_detection_train_loader

from infomin_det.data.tiny_coco import write_tiny_coco
from infomin_det.engine.config import build_config
from infomin_det.engine.loader import build_resumable_loader
from infomin_det.engine.spec import TrainSpec
from infomin_det.engine.tiny import tiny


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--batches", type=int, default=50)
    a = ap.parse_args()
    torch.set_num_threads(1)
    d = tempfile.mkdtemp()
    js, imgs = write_tiny_coco(d, 32, 128, seed=0, name="train")
    vj, vi = write_tiny_coco(d, 4, 128, seed=1, name="val")
    cfg, _, _ = build_config(TrainSpec("coco/R50-FPN-1x", "none", str(Path(d, "o")), opts=tiny(),
                                       dataset=f"coco-json:{js}:{imgs}:{vj}:{vi}"))
    loaders = {"ours": iter(build_resumable_loader(cfg)), "stock": iter(build_detection_train_loader(cfg))}
    res: dict[str, list[float]] = {k: [] for k in loaders}
    for _ in range(a.rounds):
        for k, it in loaders.items():
            t = time.perf_counter()
            for _ in range(a.batches):
                next(it)
            res[k].append((time.perf_counter() - t) / a.batches * 1000)
    for k, v in res.items():
        print(f"{k}: median {statistics.median(v):.2f} ms/batch ({min(v):.2f}-{max(v):.2f})")
    print(f"ratio ours/stock {statistics.median(res['ours']) / statistics.median(res['stock']):.3f}")


if __name__ == "__main__":
    main()
