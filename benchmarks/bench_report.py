#!/usr/bin/env python
"""Benchmark: find + read + check + aggregate + render 1,000 run directories (goal < 1 s; median).

Each run directory holds what a finished 1x COCO run of the trainer holds, at realistic sizes:

* metrics.json: 90k iterations logged every 20 (4,500 training records), periodic evaluations every
  10k iterations, a final evaluation with 80 per-class APs per task (~3.8 MB);
* log.txt: the model print, 4,500 Detectron2 iteration lines and the final evaluation's tables and
  ``copypaste:`` lines (~1.3 MB), cross-checked by the report against metrics.json;
* config.yaml: Detectron2's merged config of the protocol's leaf (a real ``cfg.dump()`` when
  detectron2 is installed), with the run's SEED and MODEL.WEIGHTS;
* run.json with the dataset and the config's sha256 (checked), last_checkpoint.

100 distinct metrics.json / log.txt pairs are generated and hard-linked into the 1,000 directories
(every run of a table must differ: identical results are refused as a copied run); all are read
through the page cache (warm), as on a second ``report`` call.

Baseline, in the same process: the straightforward metrics.json parser (json.loads every line, keep
the last occurrence per iteration, final = last record with bbox/AP), timed on a 50-run subset and
scaled to 1,000 runs. Both use the same discovery, checks, aggregation and rendering.

    .venv/bin/python benchmarks/bench_report.py [--runs 1000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

from rich.console import Console

from infomin_det.report import build_tables, find_runs
from infomin_det.report import runs as runs_mod
from infomin_det.report.identity import PROTOCOLS
from infomin_det.report.parse import MetricsFile, split_metrics
from infomin_det.report.render import print_terminal, to_markdown
from infomin_det.report.synthetic import config_yaml, paper_dataset, write_run
from infomin_det.rundir import RunInfo

METRICS = ("bbox/AP", "bbox/AP50", "bbox/AP75", "bbox/APs", "bbox/APm", "bbox/APl",
           "segm/AP", "segm/AP50", "segm/AP75", "segm/APs", "segm/APm", "segm/APl")
N_TEMPLATES = 100


def dump_config(protocol: str) -> str:
    """The protocol's merged ssl leaf as Detectron2 dumps it (an excerpt without detectron2)."""
    try:
        from detectron2.config import get_cfg

        from infomin_det.protocols import config_path
    except ImportError:
        return config_yaml(protocol, seed=0, weights="/weights/w.pkl")
    cfg = get_cfg()
    cfg.merge_from_file(str(config_path(protocol, "ssl")))
    cfg.MODEL.WEIGHTS, cfg.SEED = "/weights/w.pkl", 0
    return cfg.dump()


def log_text(final: dict[str, float], rng: random.Random) -> str:
    """log.txt of a finished run: model print, iteration lines, final evaluation tables + copypaste."""
    ts = "[12/01 10:00:00]"
    lines = [f"{ts} d2.engine.defaults INFO: Model:"] + ["  (layer): Conv2d(256, 256, kernel_size=(3, 3))"] * 400
    lines.append(f"{ts} d2.engine.train_loop INFO: Starting training from iteration 0")
    for it in range(19, 90000, 20):
        lines.append(f"{ts} d2.utils.events INFO:  eta: 1:00:00  iter: {it}  total_loss: {rng.uniform(0, 2):.3f}  "
                     f"loss_cls: 0.1  loss_box_reg: 0.1  loss_mask: 0.1  time: 0.4  data_time: 0.01  lr: 0.02  max_mem: 5000M")
    lines.append(f"{ts} d2.engine.hooks INFO: Total training time: 10:00:00")
    for task in ("bbox", "segm"):
        lines.append(f"{ts} d2.evaluation.coco_evaluation INFO: Evaluation results for {task}: ")
        lines += ["| AP | AP50 | AP75 | APs | APm | APl |"] * 3
        lines += [f"| class{c:02d} | {rng.uniform(0, 80):.3f} |" for c in range(80)]
    lines.append(f"{ts} d2.engine.defaults INFO: Evaluation results for coco_2017_val in csv format:")
    for task in ("bbox", "segm"):
        names = [m.split("/")[1] for m in METRICS if m.startswith(task)]
        lines += [f"{ts} d2.evaluation.testing INFO: copypaste: Task: {task}",
                  f"{ts} d2.evaluation.testing INFO: copypaste: {','.join(names)}",
                  f"{ts} d2.evaluation.testing INFO: copypaste: "
                  + ",".join(f"{final[f'{task}/{n}']:.4f}" for n in names)]
    return "\n".join(lines) + "\n"


def make_templates(root: Path) -> list[Path]:
    templates = []
    for k in range(N_TEMPLATES):
        final = {m: 30.0 + k * 0.137 + i for i, m in enumerate(METRICS)}
        d = write_run(root / "_templates" / f"t{k}", "coco/R50-FPN-1x", f"t{k}", k, final,
                      max_iter=90000, period=20, eval_period=10000)
        (d / "log.txt").write_text(log_text(final, random.Random(k)))
        templates.append(d)
    return templates


def generate(root: Path, n_runs: int, templates: list[Path]) -> None:
    protocols = [p for p in PROTOCOLS if p.startswith("coco/")][:10]
    configs = {p: dump_config(p) for p in protocols}
    per_protocol = n_runs // len(protocols)
    for i in range(n_runs):
        proto = protocols[min(i // per_protocol, len(protocols) - 1)]
        weights, seed = f"w{(i // 5) % 20:02d}", i % 5
        name = "supervised" if weights == "w00" else weights
        d = root / "exp" / proto / name / f"seed{seed}"
        d.mkdir(parents=True)
        cfg = configs[proto].replace("SEED: 0\n", f"SEED: {seed}\n").replace("/weights/w.pkl", f"/weights/{name}.pkl")
        (d / "config.yaml").write_text(cfg)
        RunInfo("bench", proto, "ssl", name, f"/weights/{name}.pkl", seed, dataset=paper_dataset(proto),
                provenance={"config_sha256": hashlib.sha256(cfg.encode()).hexdigest()}).write(d)
        (d / "last_checkpoint").write_text("model_final.pth")
        t = templates[i % N_TEMPLATES]
        os.link(t / "metrics.json", d / "metrics.json")
        os.link(t / "log.txt", d / "log.txt")


def naive_read(path, max_iter=None) -> MetricsFile:
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
    bad = [r for r in runs if r.status != "done"]
    assert not bad, bad[0].reason
    return len(runs)


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
        templates = make_templates(root)
        generate(root, args.runs, templates)
        one = root / "exp" / "coco/R50-FPN-1x" / "supervised" / "seed0"
        sizes = ", ".join(f"{f} {(one / f).stat().st_size / 1e6:.2f} MB" for f in ("metrics.json", "log.txt", "config.yaml"))
        print(f"generated {args.runs} run dirs ({sizes}) in {time.perf_counter() - t0:.1f} s")
        assert pipeline(root) == args.runs
        ours = timed(lambda: pipeline(root), args.repeats)
        sub = root / "sub"
        generate(sub, args.baseline_runs, templates)
        saved = runs_mod.read_metrics_json
        runs_mod.read_metrics_json = naive_read
        try:
            assert pipeline(sub) == args.baseline_runs
            base = timed(lambda: pipeline(sub), max(1, args.repeats // 2))
        finally:
            runs_mod.read_metrics_json = saved
        ours_m = statistics.median(ours)
        base_m = statistics.median(base) * args.runs / args.baseline_runs
        print(f"report over {args.runs} runs (find + read + check + aggregate + render md & terminal):")
        print(f"  ours (tail reads)          median {ours_m:.3f} s  over {args.repeats} repeats "
              f"{[round(x, 3) for x in ours]}   goal < 1 s: {'met' if ours_m < 1 else 'NOT met'}")
        print(f"  baseline (parse all lines) median {base_m:.1f} s  (measured on {args.baseline_runs} runs: "
              f"{statistics.median(base):.2f} s, scaled x{args.runs / args.baseline_runs:.0f})")
        print(f"  speed-up: {base_m / ours_m:.0f}x")


if __name__ == "__main__":
    main()
