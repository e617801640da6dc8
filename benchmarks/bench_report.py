#!/usr/bin/env python
"""Benchmark: parse + aggregate + render 1,000 run directories (goal < 1 s; median reported).

Each run directory holds run.json, last_checkpoint and a metrics.json of realistic size for a 1x
COCO schedule: 90k iterations logged every 20 (4,500 training records), periodic evaluations every
10k iterations, a final evaluation with 80 per-class APs per task (~2.7 MB). 20 distinct metrics.json
files are generated and hard-linked into the 1,000 directories (1,000 x 2.7 MB would be 2.7 GB of
disk); all are read through the page cache (warm), as on a second `report` call.

Baseline, in the same process: the straightforward parser (json.loads every line, keep the last
occurrence per iteration, final = last record with bbox/AP), timed on a 50-run subset and scaled
to 1,000 runs. Both use the same discovery, aggregation and rendering.

    .venv/bin/python benchmarks/bench_report.py [--runs 1000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from rich.console import Console

from infomin_det.report import build_tables, find_runs
from infomin_det.report import runs as runs_mod
from infomin_det.report.parse import MetricsFile, split_metrics
from infomin_det.report.render import print_terminal, to_markdown
from infomin_det.report.runs import PROTOCOLS
from infomin_det.report.synthetic import write_run
from infomin_det.rundir import RunInfo

METRICS = ("bbox/AP", "bbox/AP50", "bbox/AP75", "bbox/APs", "bbox/APm", "bbox/APl",
           "segm/AP", "segm/AP50", "segm/AP75", "segm/APs", "segm/APm", "segm/APl")


def generate(root: Path, n_runs: int, n_templates: int = 20) -> None:
    templates = []
    for k in range(n_templates):
        final = {m: 30.0 + k * 0.37 + i for i, m in enumerate(METRICS)}
        templates.append(write_run(root / "_templates" / f"t{k}", "coco/R50-FPN-1x", f"t{k}", k, final,
                                   max_iter=90000, period=20, eval_period=10000) / "metrics.json")
    protocols = [p for p in PROTOCOLS if p.startswith("coco/")][:10]
    per_protocol = n_runs // len(protocols)
    for i in range(n_runs):
        proto = protocols[min(i // per_protocol, len(protocols) - 1)]
        weights, seed = f"w{(i // 5) % 20:02d}", i % 5
        d = root / "exp" / proto / weights / f"seed{seed}"
        d.mkdir(parents=True)
        RunInfo("bench", proto, "ssl", "supervised" if weights == "w00" else weights, "", seed).write(d)
        (d / "last_checkpoint").write_text("model_final.pth")
        os.link(templates[i % n_templates], d / "metrics.json")


def naive_read(path) -> MetricsFile:
    """The baseline parser: every line through json.loads, last occurrence per iteration wins."""
    by_iter = {}
    with open(path) as f:
        for line in f:
            if line.strip():
                rec = json.loads(line)
                by_iter[rec["iteration"]] = rec
    out = MetricsFile()
    evals = [it for it, r in sorted(by_iter.items()) if "bbox/AP" in r]
    if evals:
        out.final = split_metrics(by_iter[evals[-1]])
        out.final_iteration = out.last_iteration = evals[-1]
    return out


def pipeline(root: Path) -> int:
    runs = find_runs([root / "exp"])
    tables = build_tables(runs, baseline="supervised")
    to_markdown(tables)
    print_terminal(tables, Console(file=io.StringIO(), width=200, force_terminal=True))
    return sum(r.status == "done" for r in runs)


def timed(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--baseline-runs", type=int, default=50)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_report_") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        generate(root, args.runs)
        size = (root / "exp").rglob("metrics.json").__next__().stat().st_size
        print(f"generated {args.runs} run dirs (metrics.json {size / 1e6:.1f} MB each) in "
              f"{time.perf_counter() - t0:.1f} s")
        assert pipeline(root) == args.runs
        ours = timed(lambda: pipeline(root), args.repeats)
        sub = root / "sub"
        generate(sub, args.baseline_runs)
        saved = runs_mod.read_metrics_json
        runs_mod.read_metrics_json = naive_read
        try:
            assert pipeline(sub) == args.baseline_runs
            base = timed(lambda: pipeline(sub), max(1, args.repeats // 2))
        finally:
            runs_mod.read_metrics_json = saved
        ours_m = statistics.median(ours)
        base_m = statistics.median(base) * args.runs / args.baseline_runs
        print(f"report over {args.runs} runs (find + parse + aggregate + render md & terminal):")
        print(f"  ours (tail read)          median {ours_m:.3f} s  over {args.repeats} repeats "
              f"{[round(x, 3) for x in ours]}   goal < 1 s: {'met' if ours_m < 1 else 'NOT met'}")
        print(f"  baseline (parse all lines) median {base_m:.1f} s  (measured on {args.baseline_runs} runs: "
              f"{statistics.median(base):.2f} s, scaled x{args.runs / args.baseline_runs:.0f})")
        print(f"  speed-up: {base_m / ours_m:.0f}x")


if __name__ == "__main__":
    main()
