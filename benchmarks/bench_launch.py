#!/usr/bin/env python
"""Launcher benchmark on the project's loopback SLURM cluster (started and stopped here).

0. Pre-submission checks of a 5-seed x 3-weights x 4-protocol sweep (60 runs, three converted
   R-50 weights of ~94 MB): ``submit``'s deduplicated ``check_specs`` (one check per distinct
   protocol x weights: 12) versus ``check_spec`` on every run. No cluster needed (``--checks-only``).
1. Submission overhead for 50 runs, command -> all 50 queued (confirmed by ``squeue -r -t all``):
   ``submit_tasks`` (validation + ``sbatch --test-only`` + registry + ONE array) and the whole
   ``infomin-det submit`` command line in a fresh process, versus a loop of 50 single
   ``executor.submit`` calls (plain submitit, no validation, no registry). Median of R.
2. Requeue cycle: ``scancel --signal=USR2`` on a training job -> the resubmitted attempt has trained
   its first iteration after resuming from the checkpoint. Median of C cycles on one job.

    python benchmarks/bench_launch.py [--runs 50] [--repeats 3] [--cycles 3] [--checks-only]
Needs root (the cluster's daemons); installs the SLURM packages on first use.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import infomin_det.launch
from infomin_det.launch import DistributedTask, ExecutorOptions, submit_tasks
from infomin_det.launch.selftest import ToySpec
from infomin_det.launch.submit import make_executor

SCRIPTS = Path(infomin_det.launch.__file__).parent / "slurm_local"
TOY = "infomin_det.launch.selftest:toy_worker"


def queued(ids: list[str]) -> int:
    mains = sorted({i.split("_")[0] for i in ids})
    out = subprocess.run(["squeue", "-h", "-r", "-t", "all", "-o", "%i", "-j", ",".join(mains)],
                         capture_output=True, text=True).stdout.split()
    return len(set(out) & set(ids))


def wait_queued(ids: list[str], timeout_s: float = 120) -> None:
    """Until the controller knows every id (any state: a fast job may already have finished)."""
    end = time.time() + timeout_s
    while queued(ids) < len(ids):
        if time.time() > end:
            raise RuntimeError(f"only {queued(ids)} of {len(ids)} jobs queued after {timeout_s} s")
        time.sleep(0.01)


def cancel(ids: list[str]) -> None:
    """scancel, then wait until none of them is pending, running or completing."""
    mains = sorted({i.split("_")[0] for i in ids})
    subprocess.run(["scancel", *mains], check=False)
    while subprocess.run(["squeue", "-h", "-o", "%i", "-j", ",".join(mains)],
                         capture_output=True, text=True).stdout.strip():
        time.sleep(0.2)


def bench_submission(root: Path, n: int, repeats: int) -> tuple[list[float], list[float]]:
    opts = ExecutorOptions(timeout_min=5, signal_delay_s=30, array_parallelism=1)
    array_s, single_s = [], []
    for r in range(repeats):
        tasks = [DistributedTask(TOY, ToySpec(str(root / f"a{r}/run{i}"), max_iter=1)) for i in range(n)]
        t0 = time.perf_counter()
        report = submit_tasks(tasks, root / f"a{r}", opts, cluster="slurm", command=["bench"])
        ids = [x.job_id for x in report]
        wait_queued(ids)
        array_s.append(time.perf_counter() - t0)
        cancel(ids)

        tasks = [DistributedTask(TOY, ToySpec(str(root / f"s{r}/run{i}"), max_iter=1)) for i in range(n)]
        t0 = time.perf_counter()
        ex = make_executor("slurm", root / f"s{r}/submitit/%j", opts, "bench-single")
        ids = [str(ex.submit(t).job_id) for t in tasks]
        wait_queued(ids)
        single_s.append(time.perf_counter() - t0)
        cancel(ids)
        print(f"  repeat {r + 1}/{repeats}: array {array_s[-1]:.2f} s, {n} singles {single_s[-1]:.2f} s", flush=True)
    return array_s, single_s


def tiny_dataset(root: Path) -> str:
    from infomin_det.data.tiny_coco import write_tiny_coco

    (tj, ti), (vj, vi) = (write_tiny_coco(root / "data", n, 64, seed=n, name=name)
                          for n, name in ((4, "train"), (2, "val")))
    return f"coco-json:{tj}:{ti}:{vj}:{vi}"


def bench_checks(root: Path) -> tuple[float, float, int]:
    """(deduplicated s, every-run s, checks run) for 5 seeds x 3 weights x 4 protocols."""
    import dataclasses

    import torch

    from infomin_det.convert import convert
    from infomin_det.convert.synthetic import random_trunk, wrap
    from infomin_det.engine.config import check_spec
    from infomin_det.engine.spec import TrainSpec
    from infomin_det.launch.submit_cli import check_specs
    from infomin_det.weights_meta import ResNetArch

    ds = tiny_dataset(root)
    weights = []
    for i in range(3):
        torch.save(wrap("moco-v1/v2", random_trunk(ResNetArch(50), seed=i), ResNetArch(50)), root / f"src{i}.pth.tar")
        convert(root / f"src{i}.pth.tar", root / f"w{i}.pkl")
        (root / f"src{i}.pth.tar").unlink()
        weights.append(str(root / f"w{i}.pkl"))
    protocols = ["coco/R50-FPN-1x", "coco/R50-FPN-2x", "coco/R50-FPN-6x", "coco/R50-C4-1x"]
    specs = [TrainSpec(p, w, str(root / f"runs/{p}/w{i}/seed{s}"), weights_name=f"w{i}", seed=s, dataset=ds)
             for p in protocols for i, w in enumerate(weights) for s in range(5)]
    check_spec(dataclasses.replace(specs[0], device="cpu"))      # imports and first-use costs out of both
    t0 = time.perf_counter()
    n = check_specs(specs)
    dedup = time.perf_counter() - t0
    t0 = time.perf_counter()
    for spec in specs:
        check_spec(dataclasses.replace(spec, device="cpu"))
    every = time.perf_counter() - t0
    return dedup, every, n


def bench_cli(root: Path, n: int, repeats: int) -> list[float]:
    """``infomin-det submit`` with n seeds in a fresh process: command line -> all n queued (the
    command checks the runs with Detectron2 first: its import is part of the time)."""
    times = []
    ds = tiny_dataset(root)
    for r in range(repeats):
        exp = f"cli{r}"
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "infomin_det", "submit", "--experiment", exp, "--root", str(root),
                        "--protocol", "coco/R50-FPN-1x", "--weights", "random", "--seeds", *map(str, range(n)),
                        "--dataset", ds, "--device", "cpu", "--cluster", "slurm", "--array-parallelism", "1",
                        "--timeout-min", "5", "--signal-delay-s", "30"], check=True, stdout=subprocess.DEVNULL)
        runs = json.loads((root / exp / "launch/registry.json").read_text())["runs"].values()
        ids = [rec["jobs"][-1]["job_id"] for rec in runs]
        wait_queued(ids)
        times.append(time.perf_counter() - t0)
        cancel(ids)
        print(f"  repeat {r + 1}/{repeats}: infomin-det submit ({n} seeds) {times[-1]:.2f} s", flush=True)
    return times


def bench_requeue(root: Path, cycles: int) -> list[float]:
    out = root / "requeue/run"
    [job] = submit_tasks([DistributedTask(TOY, ToySpec(str(out), max_iter=10_000, step_s=0.5))], root / "requeue",
                         ExecutorOptions(timeout_min=10, signal_delay_s=30), cluster="slurm", command=["bench"])
    metrics = out / "metrics.json"

    def lines() -> list[dict]:
        return [json.loads(l) for l in metrics.read_text().splitlines()] if metrics.exists() else []

    times = []
    try:
        for c in range(cycles):
            while not [l for l in lines() if l.get("attempt") == c]:
                time.sleep(0.05)
            t0 = time.perf_counter()
            subprocess.run(["scancel", "--signal=USR2", job.job_id], check=True)
            while not [l for l in lines() if l.get("attempt") == c + 1]:
                time.sleep(0.05)
            times.append(time.perf_counter() - t0)
            print(f"  cycle {c + 1}/{cycles}: USR2 -> resumed and trained: {times[-1]:.1f} s", flush=True)
        trained = [l["iteration"] for l in lines() if "attempt" in l]
        assert len(trained) == len(set(trained)), "an iteration was trained twice"
    finally:
        cancel([job.job_id])
    return times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cycles", type=int, default=3)
    ap.add_argument("--checks-only", action="store_true", help="only part 0 (no cluster, no root needed)")
    args = ap.parse_args()
    print("pre-submission checks, 5 seeds x 3 weights x 4 protocols = 60 runs:")
    with tempfile.TemporaryDirectory(prefix="bench_checks_") as tmp:
        dedup, every, n = bench_checks(Path(tmp))
    print(f"  {n} distinct checks {dedup:.2f} s; check_spec on all 60 runs {every:.2f} s ({every / dedup:.1f}x)")
    if args.checks_only:
        return 0
    if os.geteuid() != 0:
        print("bench_launch: needs root to start the loopback SLURM cluster", file=sys.stderr)
        return 2
    cluster_dir = Path(tempfile.gettempdir()) / "infomin-det-slurm-bench"
    env = dict(os.environ, SLURM_PORT_BASE="17017", SLURM_CPUS="8")
    t0 = time.perf_counter()
    subprocess.run(["bash", str(SCRIPTS / "start.sh"), str(cluster_dir)], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    print(f"loopback SLURM up in {time.perf_counter() - t0:.1f} s")
    os.environ["SLURM_CONF"] = str(cluster_dir / "etc/slurm.conf")
    try:
        with tempfile.TemporaryDirectory(prefix="bench_launch_") as tmp:
            root = Path(tmp)
            print(f"submission of {args.runs} runs, command -> all queued ({args.repeats} repeats):")
            array_s, single_s = bench_submission(root, args.runs, args.repeats)
            print(f"the CLI in a fresh process, command -> all {args.runs} queued ({args.repeats} repeats):")
            from importlib.util import find_spec

            if find_spec("infomin_det.engine.trainer") is not None:
                cli_s = bench_cli(root, args.runs, args.repeats)
            else:   # submit refuses a worker it cannot find
                print("  skipped: infomin_det.engine.trainer is not installed")
                cli_s = []
            print(f"requeue cycle ({args.cycles} cycles):")
            cycle_s = bench_requeue(root, args.cycles)
    finally:
        subprocess.run(["bash", str(SCRIPTS / "stop.sh"), str(cluster_dir)], check=False,
                       stderr=subprocess.DEVNULL)
    a, s, c = statistics.median(array_s), statistics.median(single_s), statistics.median(cycle_s)
    k = statistics.median(cli_s) if cli_s else float("nan")
    print()
    print(f"{'measure':<44} {'median':>9} {'baseline':>9} {'ratio':>7}")
    print(f"{'submit ' + str(args.runs) + ' runs as one array (submit_tasks)':<44} {a:>8.2f}s {s:>8.2f}s "
          f"{s / a:>6.1f}x   (baseline: {args.runs} single submitit jobs)")
    if cli_s:
        print(f"{'infomin-det submit, ' + str(args.runs) + ' seeds (fresh process)':<44} {k:>8.2f}s {s:>8.2f}s "
              f"{s / k:>6.1f}x")
    print(f"{'requeue cycle: USR2 -> resumed, trained':<44} {c:>8.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
