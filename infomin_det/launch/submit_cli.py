"""``infomin-det submit``: protocols x weights x seeds of fine-tuning as one job array.

Builds one :class:`~infomin_det.engine.spec.TrainSpec` per (protocol, weights, seed) with the run
directory ``<root>/<experiment>/<protocol>/<weights>/seed<k>``, wraps each in a
:class:`~infomin_det.launch.task.DistributedTask` running ``infomin_det.engine.trainer:train_worker``
and hands them to :func:`~infomin_det.launch.submit.submit_tasks`. Executor options are validated
(and, on SLURM, checked by the scheduler) before anything is queued.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from pathlib import Path

from infomin_det.errors import UserError
from infomin_det.launch.options import CLUSTERS, ExecutorOptions
from infomin_det.launch.submit import submit_tasks
from infomin_det.launch.task import DistributedTask

TRAIN_WORKER = "infomin_det.engine.trainer:train_worker"
RANDOM = "random"

_HELP = {
    "partition": "SLURM partition", "nodes": "machines per run (multi-node DDP)",
    "gpus_per_node": "GPUs per machine; one task per GPU", "tasks_per_node": "processes per machine "
    "(default: gpus-per-node, or 1; CPU runs may use more, with gloo)",
    "cpus_per_task": "CPUs per process", "mem_gb": "memory per machine in GB",
    "timeout_min": "time limit in minutes", "constraint": "SLURM --constraint",
    "account": "SLURM --account", "qos": "SLURM --qos", "comment": "SLURM --comment",
    "exclude": "nodes to avoid (SLURM --exclude)",
    "signal_delay_s": "USR2 this many seconds before the time limit (>= checkpoint time)",
    "max_requeues": "requeues allowed after time-outs", "array_parallelism": "array elements running at once",
}


def add_executor_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per :class:`ExecutorOptions` field (also used by the pretrain CLI)."""
    g = parser.add_argument_group("executor (validated before submission)")
    defaults = ExecutorOptions()
    for f in fields(ExecutorOptions):
        kind = {"int": int, "float": float}.get(str(f.type).split(" ")[0], str)
        default = getattr(defaults, f.name)
        g.add_argument(f"--{f.name.replace('_', '-')}", dest=f"ex_{f.name}", type=kind, default=default,
                       metavar={int: "N", float: "GB"}.get(kind, "NAME"),
                       help=f"{_HELP.get(f.name, f.name)} (default: {default})")
    g.add_argument("--cluster", choices=CLUSTERS, default="auto",
                   help="auto: SLURM when sbatch is on PATH, else local processes; debug: in this process")


def executor_options(args: argparse.Namespace) -> ExecutorOptions:
    return ExecutorOptions.from_mapping({f.name: getattr(args, f"ex_{f.name}") for f in fields(ExecutorOptions)})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--experiment", required=True, help="experiment name (a directory under --root)")
    parser.add_argument("--root", default="runs", help="root of the run tree (default: runs)")
    parser.add_argument("--protocol", nargs="+", required=True, metavar="P",
                        help="protocol ids, e.g. coco/R50-FPN-1x (see infomin-det protocols)")
    parser.add_argument("--weights", nargs="+", required=True, metavar="W",
                        help="converted .pkl files, NAME=PATH to name the row, detectron2:// URLs, or "
                             f"'{RANDOM}' for random init")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], metavar="K", help="seeds (default: 0)")
    parser.add_argument("--dataset", default="",
                        help="coco-json:<train.json>:<train_images>:<val.json>:<val_images> (default: the "
                             "protocol's datasets under $DETECTRON2_DATASETS)")
    parser.add_argument("--allow-mismatch", nargs="*", default=[], metavar="KEY",
                        help="config keys allowed to disagree with the weights' metadata")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads per process (default: --cpus-per-task)")
    add_executor_arguments(parser)
    parser.add_argument("opts", nargs=argparse.REMAINDER,
                        help="Detectron2 KEY VALUE overrides applied last (after the other options)")


def parse_weights(items: list[str]) -> list[tuple[str, str]]:
    """``[(weights_name, weights)]``; ``random`` -> ("random", ""); a local file must exist."""
    out = []
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            name, value = "", item
        if value == RANDOM:
            out.append((name or RANDOM, ""))
            continue
        if "://" not in value:
            p = Path(value)
            if not p.is_file():
                raise UserError(f"weights file {value} does not exist",
                                f"give a converted .pkl (infomin-det convert), a detectron2:// URL or '{RANDOM}'")
            value = str(p.resolve())
        out.append((name or Path(value.split("://")[-1]).stem, value))
    names = [n for n, _ in out]
    if len(set(names)) != len(names):
        raise UserError(f"two weights share the row name in {names}", "name them: --weights NAME=PATH ...")
    return out


def build_tasks(args: argparse.Namespace, threads: int) -> list[DistributedTask]:
    from infomin_det.engine.spec import TrainSpec
    from infomin_det.rundir import check_name, run_dir

    check_name("experiment", args.experiment)
    opts = tuple(args.opts[1:] if args.opts[:1] == ["--"] else args.opts)
    if len(opts) % 2:
        raise UserError(f"overrides must be KEY VALUE pairs, got {len(opts)} words", "e.g. SOLVER.MAX_ITER 100")
    tasks = []
    for protocol in args.protocol:
        for name, weights in parse_weights(args.weights):
            for seed in args.seeds:
                out = run_dir(args.root, args.experiment, protocol, name, seed).resolve()
                spec = TrainSpec(protocol=protocol, weights=weights, output_dir=str(out), weights_name=name,
                                 seed=seed, experiment=args.experiment, opts=opts, dataset=args.dataset,
                                 allow_mismatch=tuple(args.allow_mismatch))
                tasks.append(DistributedTask(TRAIN_WORKER, spec, detectron2_comm=True, threads=threads,
                                             label=f"{protocol}/{name}/seed{seed}"))
    return tasks


def print_report(report, experiment_dir: Path, cluster: str) -> None:
    width = max(len(r.key) for r in report)
    for r in report:
        extra = f"  {r.error}" if r.error else ""
        print(f"  {r.key:<{width}}  {r.action:<14}  {r.job_id}{extra}")
    counts = {a: sum(r.action == a for r in report) for a in dict.fromkeys(r.action for r in report)}
    print(f"{len(report)} runs ({', '.join(f'{n} {a}' for a, n in counts.items())}) on cluster {cluster}; "
          f"follow with: infomin-det status {experiment_dir}")


def main(args: argparse.Namespace) -> int:
    from infomin_det.launch.options import resolve_cluster

    options = executor_options(args)
    cluster = resolve_cluster(args.cluster)
    options.validate(cluster)
    tasks = build_tasks(args, threads=args.threads or options.cpus_per_task)
    exp = Path(args.root, args.experiment)
    report = submit_tasks(tasks, exp, options, cluster=cluster, command=sys.argv,
                          job_name=f"infomin-{args.experiment}")
    print_report(report, exp, cluster)
    return 1 if any(r.action == "failed" for r in report) else 0
