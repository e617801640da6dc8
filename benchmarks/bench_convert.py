#!/usr/bin/env python
"""Benchmark: convert + verify of R-50 and X-152-32x8d-sized random checkpoints (MoCo v2 layout).

Each measurement runs in a fresh child process (so peak RSS is its own): the converter
(``infomin_det.convert.convert``) side by side with a baseline -- the classic MoCo
``convert-pretrain-to-detectron2.py`` recipe (``torch.load`` everything, rename, ``.numpy()``,
``pickle.dump``) -- then ``verify`` against the source. Figures are medians of --repeat runs (>= 5).
Time is the work itself (imports excluded; convert never imports detectron2); memory is peak RSS (VmHWM) and its growth over the RSS
after imports, also as a multiple of the checkpoint's size on disk.

    .venv/bin/python benchmarks/bench_convert.py [--repeat 5] [--only R-50]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GOALS_S = {"R-50": 2.0, "X-152-32x8d": 6.0}
MEM_GOAL = 2.5  # peak memory growth < 2.5x the checkpoint size


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _child(mode: str, src: str, out: str) -> None:
    import pickle

    import torch
    torch.set_num_threads(1)
    from infomin_det.convert import convert
    if mode == "verify":
        import detectron2.modeling  # noqa: F401 -- imported up front so its import is not timed
        from infomin_det.convert.verify import verify

    base = _rss_kib("VmRSS")
    t0 = time.perf_counter()
    if mode == "ours":
        convert(src, out, force=True)
    elif mode == "baseline":  # MoCo's recipe: everything in memory, default pickle protocol
        obj = torch.load(src, map_location="cpu", weights_only=False)["state_dict"]  # our own file
        new = {}
        for k in list(obj):
            if not k.startswith("module.encoder_q.") or k.startswith("module.encoder_q.fc"):
                continue
            nk = k.replace("module.encoder_q.", "")
            if "layer" not in nk:
                nk = "stem." + nk
            for t in (1, 2, 3, 4):
                nk = nk.replace(f"layer{t}", f"res{t + 1}")
            for t in (1, 2, 3):
                nk = nk.replace(f"bn{t}", f"conv{t}.norm")
            nk = nk.replace("downsample.0", "shortcut").replace("downsample.1", "shortcut.norm")
            new[nk] = obj.pop(k).detach().numpy()
        with open(out, "wb") as f:
            pickle.dump({"model": new, "__author__": "MOCO", "matching_heuristics": True}, f)
    elif mode == "verify":
        assert verify(out, src).passed
    seconds = time.perf_counter() - t0
    print(json.dumps({"seconds": seconds, "base_kib": base, "peak_kib": _rss_kib("VmHWM")}))


def _run(mode: str, src: Path, out: Path) -> dict:
    r = subprocess.run([sys.executable, __file__, "--child", mode, str(src), str(out)], capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"{mode} run failed:\n{r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--only", default=None, help="R-50 or X-152-32x8d")
    ap.add_argument("--child", nargs=3, metavar=("MODE", "SRC", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _child(*args.child)
        return 0

    import torch
    from tqdm import tqdm

    from infomin_det.convert.synthetic import random_trunk, wrap
    from infomin_det.weights_meta import ResNetArch

    torch.set_num_threads(1)
    nets = {"R-50": ResNetArch(50), "X-152-32x8d": ResNetArch(152, 32, 8)}
    tmp = Path(tempfile.mkdtemp(prefix="bench_convert_"))
    rows = []
    try:
        for name, arch in nets.items():
            if args.only and name != args.only:
                continue
            src = tmp / f"{name}.pth.tar"
            torch.save(wrap("moco-v1/v2", random_trunk(arch), arch), src)
            mb = src.stat().st_size / 2**20
            runs: dict[str, list[dict]] = {"ours": [], "baseline": [], "verify": []}
            for _ in tqdm(range(args.repeat), desc=f"{name} ({mb:.0f} MiB)", file=sys.stderr):
                for mode in ("baseline", "ours", "verify"):  # verify reads ours' output
                    runs[mode].append(_run(mode, src, tmp / f"{name}.pkl"))
            med = {m: {k: statistics.median(r[k] for r in rs) for k in ("seconds", "base_kib", "peak_kib")}
                   for m, rs in runs.items()}
            rows.append((name, mb, med))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"\nmedians of {args.repeat} runs, each in a fresh process; growth = peak RSS - RSS after imports")
    print(f"{'net':<12} {'ckpt MiB':>8} | {'convert s':>9} {'baseline s':>10} {'ratio':>6} {'goal':>5} | "
          f"{'peak MiB':>8} {'growth MiB':>10} {'x ckpt':>6} {'baseline growth':>15} {'ratio':>6} | {'verify s':>8}")
    for name, mb, med in rows:
        o, b, v = med["ours"], med["baseline"], med["verify"]
        grow, bgrow = (o["peak_kib"] - o["base_kib"]) / 1024, (b["peak_kib"] - b["base_kib"]) / 1024
        print(f"{name:<12} {mb:8.0f} | {o['seconds']:9.2f} {b['seconds']:10.2f} {o['seconds'] / b['seconds']:6.2f} "
              f"{GOALS_S[name]:5.1f} | {o['peak_kib'] / 1024:8.0f} {grow:10.0f} {grow / mb:6.2f} {bgrow:15.0f} "
              f"{grow / max(bgrow, 1):6.2f} | {v['seconds']:8.2f}")
    print(f"goals: convert under the time above, growth under {MEM_GOAL}x the checkpoint size")
    return 0


if __name__ == "__main__":
    sys.exit(main())
