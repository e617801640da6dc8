#!/usr/bin/env python
"""The first-GPU-run check: every CUDA path of the toolkit, tiny, in a few minutes, one JSON summary.

    python tools/gpu_check.py --out /tmp/gpu_check            # on a machine with a GPU
    python tools/gpu_check.py --out /tmp/gpu_check --device cpu   # dry run of the same steps on CPU

Steps (each the real CLI in a subprocess; tiny generated data, nothing downloaded):
  finetune-1       ``train --device cuda`` (Mask R-CNN R50-FPN at reduced width, 20 iterations, eval)
  finetune-2       ``train --num-processes 2`` (NCCL, one GPU per rank; on a 1-GPU machine: 2 CPU ranks
                   with --device cpu on the GPU node, which must pick gloo, not NCCL)
  eval-only-1/2    ``--eval-only`` of finetune-1's run, 1 process and 2 processes
  preempt          SIGUSR2 in iteration 5 (``INFOMIN_DET_FAULT``): exit 75, checkpoint of iteration 5;
                   the same command resumes at 6 and finishes
  pretrain         ``pretrain --device cuda`` (R-18, 64 px, 20 steps, JigSaw), then ``--linear-eval``
  speed-fp32/amp   the R50-FPN protocol at full width and COCO-like size (800 px short side, 2 images,
                   SyncBN/NCCL when 2 GPUs, else BN on one) for ``--speed-iters`` iterations (300),
                   AMP off and on: s/iter (median of Detectron2's ``time``), peak memory (``max_mem``)
                   and whether the loss falls; the figures go in docs/train.md. CPU dry run: 3
                   iterations at 320 px, AMP off only (AMP needs CUDA).
Writes ``<out>/gpu_check.json``: per step the exit status, seconds, and the facts checked; exit 0
iff every step passed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

TINY = ["MODEL.RESNETS.WIDTH_PER_GROUP", "16", "MODEL.RESNETS.RES2_OUT_CHANNELS", "64",
        "MODEL.RESNETS.STEM_OUT_CHANNELS", "16", "INPUT.MIN_SIZE_TRAIN", "(128,)", "INPUT.MAX_SIZE_TRAIN", "160",
        "INPUT.MIN_SIZE_TEST", "128", "INPUT.MAX_SIZE_TEST", "160", "SOLVER.IMS_PER_BATCH", "4",
        "SOLVER.REFERENCE_WORLD_SIZE", "0", "SOLVER.MAX_ITER", "20", "SOLVER.STEPS", "()",
        "SOLVER.CHECKPOINT_PERIOD", "100", "TEST.PRECISE_BN.NUM_ITER", "2", "DATALOADER.NUM_WORKERS", "2"]


def cli(*args: str, env: dict | None = None, timeout: int = 540) -> dict:
    t0 = time.time()
    r = subprocess.run([sys.executable, "-m", "infomin_det", *args], capture_output=True, text=True,
                       timeout=timeout, env={**os.environ, **(env or {})})
    out = {"rc": r.returncode, "seconds": round(time.time() - t0, 1), "stderr_tail": r.stderr[-1500:]}
    try:
        out["stdout"] = json.loads(r.stdout)
    except ValueError:
        out["stdout_tail"] = r.stdout[-500:]
    return out


def speed(a, out: Path, ds_small: str, record, two_cuda: bool) -> None:
    """The protocol as it runs (no width reduction) at COCO-like image size: s/iter, memory, loss."""
    import re
    import statistics

    from infomin_det.data.tiny_coco import write_tiny_coco

    cuda = a.device == "cuda"
    iters = a.speed_iters or (300 if cuda else 3)
    size = 640 if cuda else 320
    tr = write_tiny_coco(out / "data_big", 32, size, seed=2, name="train")
    va = write_tiny_coco(out / "data_big", 4, size, seed=3, name="val")
    ds = f"coco-json:{tr[0]}:{tr[1]}:{va[0]}:{va[1]}"
    procs = 2 if two_cuda else 1
    over = ["SOLVER.IMS_PER_BATCH", str(2 * procs), "SOLVER.REFERENCE_WORLD_SIZE", "0", "SOLVER.MAX_ITER", str(iters),
            "SOLVER.STEPS", "()", "SOLVER.WARMUP_ITERS", str(min(100, iters // 3)), "SOLVER.CHECKPOINT_PERIOD", "100000",
            "TEST.PRECISE_BN.NUM_ITER", "2", "DATALOADER.NUM_WORKERS", "4" if cuda else "0"]
    if not cuda:
        over += ["INPUT.MIN_SIZE_TRAIN", "(320,)", "INPUT.MAX_SIZE_TRAIN", "480", "INPUT.MIN_SIZE_TEST", "320",
                 "INPUT.MAX_SIZE_TEST", "480"]
    for amp in ((False, True) if cuda else (False,)):
        run = out / f"speed_{'amp' if amp else 'fp32'}"
        r = cli("train", "--protocol", "coco/R50-FPN-1x", "--weights", "none", "--variant", "rgb", "--dataset", ds,
                "--output-dir", str(run), "--device", a.device, "--num-processes", str(procs), "--",
                *over, "SOLVER.AMP.ENABLED", str(amp), timeout=590)
        recs = []
        if (run / "metrics.json").exists():
            recs = [json.loads(l) for l in (run / "metrics.json").read_text().splitlines() if l.strip()]
        train = [x for x in recs if "total_loss" in x]
        times = [x["time"] for x in train if "time" in x]
        log = (run / "log.txt").read_text() if (run / "log.txt").exists() else ""
        mem = [int(m) for m in re.findall(r"max_mem: (\d+)M", log)]
        k = max(1, len(train) // 5)
        first, last = ([statistics.fmean(x["total_loss"] for x in train[:k]),
                        statistics.fmean(x["total_loss"] for x in train[-k:])] if train else [None, None])
        record(f"speed-{'amp' if amp else 'fp32'}", r, iterations=iters, processes=procs, image_px=size,
               s_per_iter_median=round(statistics.median(times), 4) if times else None,
               s_per_iter_min_max=[round(min(times), 4), round(max(times), 4)] if times else None,
               peak_mem_mb=max(mem) if mem else None, loss_first_last=[first, last],
               ok_loss_falls=(first is not None and last < first) if cuda else bool(train))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    ap.add_argument("--speed-iters", type=int, default=0, help="iterations of the speed steps (default 300; CPU 3)")
    a = ap.parse_args()
    import torch

    from infomin_det.data.tiny_coco import write_tiny_coco

    gpus = torch.cuda.device_count()
    if a.device == "cuda" and gpus == 0:
        print("error: no CUDA device visible\n  fix: run on a GPU machine, or pass --device cpu for a dry run",
              file=sys.stderr)
        return 2
    out = Path(a.out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    tr, va = write_tiny_coco(out / "data", 16, 160, seed=0, name="train"), write_tiny_coco(out / "data", 8, 160, seed=1, name="val")
    ds = f"coco-json:{tr[0]}:{tr[1]}:{va[0]}:{va[1]}"
    summary: dict = {"torch": torch.__version__, "cuda": torch.version.cuda, "gpus": gpus,
                     "gpu": torch.cuda.get_device_name(0) if gpus else "", "device": a.device, "steps": {}}
    steps = summary["steps"]

    def train(run: str, *extra: str, env: dict | None = None) -> dict:
        return cli("train", "--protocol", "coco/R50-FPN-1x", "--weights", "none", "--variant", "rgb",
                   "--dataset", ds, "--output-dir", str(out / run), *extra, "--", *TINY, env=env)

    def record(name: str, r: dict, **facts) -> None:
        r.update(facts)
        r["passed"] = r["rc"] == facts.pop("want_rc", 0) and all(v for k, v in facts.items() if k.startswith("ok_"))
        steps[name] = r
        print(f"{name:12s} rc {r['rc']:>3}  {r['seconds']:7.1f} s  {'PASS' if r['passed'] else 'FAIL'}", flush=True)

    r = train("ft1", "--device", a.device)
    cfg = (out / "ft1" / "config.yaml").read_text() if (out / "ft1" / "config.yaml").exists() else ""
    record("finetune-1", r, ok_device=f"DEVICE: {a.device}" in cfg,
           ok_results="bbox" in (r.get("stdout") or {}).get("results", {}))
    two_cuda = a.device == "cuda" and gpus >= 2
    r = train("ft2", "--num-processes", "2", "--device", "cuda" if two_cuda else "cpu")
    cfg2 = (out / "ft2" / "config.yaml").read_text() if (out / "ft2" / "config.yaml").exists() else ""
    record("finetune-2", r, ranks_on="cuda" if two_cuda else "cpu (gloo) on this node",
           ok_norm=("NORM: SyncBN" in cfg2) if two_cuda else ("NORM: naiveSyncBN" in cfg2))
    r = train("ft1", "--device", a.device, "--eval-only")
    record("eval-only-1", r, ok_results="bbox" in (r.get("stdout") or {}).get("results", {}))
    r = train("ft1", "--device", "cuda" if two_cuda else "cpu", "--eval-only", "--num-processes", "2")
    record("eval-only-2", r, ok_results="bbox" in (r.get("stdout") or {}).get("results", {}))
    r = train("pre", "--device", a.device, env={"INFOMIN_DET_FAULT": "step:6:USR2"})
    record("preempt", r, want_rc=75, ok_saved=(out / "pre" / "model_0000005.pth").exists())
    r = train("pre", "--device", a.device)
    info = json.loads((out / "pre" / "run.json").read_text()) if (out / "pre" / "run.json").exists() else {}
    record("resume", r, ok_resumed_at_6=info.get("extra", {}).get("resumed_from_iter") == 6)

    imgs = out / "data" / "pretrain"
    for k, p in enumerate(sorted(Path(tr[1]).glob("*.jpg")) + sorted(Path(va[1]).glob("*.jpg"))):
        (imgs / f"c{k % 2}").mkdir(parents=True, exist_ok=True)
        shutil.copy(p, imgs / f"c{k % 2}" / p.name)
    r = cli("pretrain", str(imgs), "-o", str(out / "pt"), "--arch", "R-18", "--device", a.device, "--max-steps", "20",
            "--batch-size", "8", "--queue-size", "64", "--image-size", "64", "--jigsaw", "--workers", "2",
            "--no-tensorboard", "--json")
    ckpts = sorted((out / "pt").glob("checkpoint_*.pth"))
    record("pretrain", r, ok_checkpoint=bool(ckpts))
    if ckpts:
        r = cli("pretrain", str(imgs), "--linear-eval", str(ckpts[-1]), "--val", str(imgs), "--device", a.device,
                "--linear-epochs", "2", "--batch-size", "8", "--image-size", "64", "--workers", "2", "--json")
        record("linear-eval", r)
    speed(a, out, ds, record, two_cuda)
    (out / "gpu_check.json").write_text(json.dumps(summary, indent=2))
    ok = all(s["passed"] for s in steps.values())
    print(f"{'all passed' if ok else 'FAILED'}: {out / 'gpu_check.json'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
