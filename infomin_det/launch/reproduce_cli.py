"""``infomin-det reproduce TABLE``: every run of one of the paper's detection tables, planned and
submitted as one job array.

    infomin-det reproduce T3a --weights infomin=infomin_r50.pkl --dry-run     # the plan, GPU-hours
    infomin-det reproduce T4 --weights infomin=infomin_r50.pkl moco=moco_r50.pkl --partition gpu
    infomin-det report runs/T4                                                   # ours beside the paper

The plan is protocol x row x seed for every panel of the table (``T3`` = ``T3a`` + ``T3b``): the
paper's baseline rows the panel prints (``random``: random init; ``supervised``: the ImageNet
weights the protocol's supervised leaf names, from Detectron2's catalog) and one row per
``--weights NAME=FILE`` (name them as the paper does -- ``infomin``, ``moco`` -- to get the paper's
numbers beside yours). Seeds: 5 for VOC (the paper averages 5 trials), 1 for COCO, unless
``--seeds``. Runs go to ``<root>/<experiment>/<protocol>/<row>/seed<k>`` (experiment: the table id)
and ``reproduction.json`` in the experiment directory says which table they reproduce, so that
``infomin-det report`` prints our numbers beside the paper's, per cell, and lists missing runs.
Everything else -- pre-flight checks, ``--dry-run``, executor options -- is ``submit``'s.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from infomin_det.atomic import write_text_atomic
from infomin_det.dist import DEVICES
from infomin_det.errors import UserError
from infomin_det.report.reproduction import REPRODUCTION_FILE
from infomin_det.launch.status_cli import check_watch
from infomin_det.rundir import RANDOM_INIT
from infomin_det.launch.options import add_executor_arguments
from infomin_det.launch.submit_cli import (TRAIN_WORKER, add_submit_flags, parse_overrides, parse_seeds, parse_weights,
                                           submission_request, submit_planned, wait_for_runs)

BASELINE_ROWS = ("random", "supervised")
VOC_SEEDS, COCO_SEEDS = 5, 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("table", metavar="TABLE", help="a detection table or panel of the paper: T3, T3a, T4, T9b ...")
    parser.add_argument("--weights", nargs="*", default=[], metavar="NAME=FILE",
                        help="your converted .pkl weights, one row each; name them as the paper's rows "
                             "(infomin, moco, ...) to compare with its numbers")
    parser.add_argument("--baselines", nargs="*", default=None, metavar="ROW",
                        help=f"the paper's baseline rows to run (default: those the panel prints, of "
                             f"{', '.join(BASELINE_ROWS)}; none: only --weights)")
    parser.add_argument("--seeds", nargs="+", default=None, metavar="K",
                        help=f"seeds (default: {VOC_SEEDS} for VOC as in the paper, {COCO_SEEDS} for COCO)")
    parser.add_argument("--experiment", default=None, help="experiment name (default: the table id)")
    parser.add_argument("--root", default="runs", help="root of the run tree (default: runs)")
    parser.add_argument("--family", choices=("ssl", "supervised"), default=None,
                        help="weight family of --weights without metadata (default: from their metadata)")
    parser.add_argument("--allow-mismatch", action="append", default=[], metavar="KEY",
                        help="accept a weights/config disagreement on KEY ('all' for every key); repeat the flag")
    parser.add_argument("--device", choices=DEVICES, default="auto",
                        help="auto / cuda: the jobs' GPUs; cpu: on purpose without GPUs (--gpus-per-node 0)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads per process (default: as submit)")
    add_submit_flags(parser)
    add_executor_arguments(parser)
    parser.set_defaults(ex_gpus_per_node=8)
    for action in parser._actions:    # the table's protocols assume 8 GPUs: say so in --help
        if action.dest == "ex_gpus_per_node":
            action.help = "GPUs per machine (default: 8, the paper's; fewer scale batch and LR linearly)"
    parser.add_argument("opts", nargs="*", metavar="-- KEY VALUE",
                        help="Detectron2 overrides, last, after '--' (the runs are then not the paper's "
                             "protocol, and the report says so)")
    parse = parser.parse_args

    def parse_args(argv=None, namespace=None):   # TABLE is positional: the overrides are split off at '--'
        argv = list(argv or [])
        cut = argv.index("--") if "--" in argv else len(argv)
        args = parse(argv[:cut], namespace)
        args.opts = argv[cut + 1:]
        return args

    parser.parse_args = parse_args


def plan_runs(table: str, weights: list[str], baselines: list[str] | None,
              seeds: list[str] | None) -> tuple[list[tuple[str, str, str, list[int]]], list[dict]]:
    """``([(protocol, row name, weights, seeds)], panels)`` for ``table``; nothing read but the leaves."""
    from infomin_det.report.paper import select

    panels = select(table)
    own = parse_weights(weights) if weights else []
    for name, _ in own:
        if name in BASELINE_ROWS:
            raise UserError(f"--weights row name {name!r} is one of the paper's baseline rows",
                            f"name your weights otherwise; the {name} row is run from the catalog (--baselines)")
    if baselines is not None:
        for b in baselines:
            if b not in (*BASELINE_ROWS, "none"):
                raise UserError(f"--baselines {b!r} is not a baseline row", f"one of {', '.join(BASELINE_ROWS)}, or none")
        wanted = [] if "none" in baselines else list(dict.fromkeys(baselines))
    else:
        wanted = list(BASELINE_ROWS)
    plan: dict[str, list[tuple[str, str]]] = {}
    for p in panels:
        rows = plan.setdefault(p.protocol, [])
        for b in wanted:
            if p.row(b) is not None and all(n != b for n, _ in rows):
                rows.append((b, "" if b == RANDOM_INIT else supervised_weights(p.protocol)))
        for name, w in own:
            if all(n != name for n, _ in rows):
                rows.append((name, w))
    runs = []
    for protocol, rows in plan.items():
        n = VOC_SEEDS if protocol.startswith("voc/") else COCO_SEEDS
        ks = parse_seeds(seeds) if seeds is not None else list(range(n))
        runs += [(protocol, name, w, ks) for name, w in rows]
    if not runs:
        raise UserError(f"nothing to run for {table}: no baseline rows and no --weights",
                        "give --weights NAME=FILE, or drop --baselines none")
    return runs, [{"panel": p.id, "protocol": p.protocol} for p in panels]


def supervised_weights(protocol: str) -> str:
    """The ImageNet weights the protocol's supervised leaf names (``MODEL.WEIGHTS``; the leaf owns it)."""
    import yaml

    from infomin_det.protocols import config_path

    text = config_path(protocol, "supervised").read_text()
    weights = ((yaml.safe_load(text) or {}).get("MODEL") or {}).get("WEIGHTS", "")
    if not weights:
        raise UserError(f"the supervised leaf of {protocol} names no weights", "reinstall infomin-det")
    return weights


def main(args: argparse.Namespace) -> int:
    import json

    from infomin_det.engine.spec import TrainSpec
    from infomin_det.launch.task import DistributedTask
    from infomin_det.rundir import check_name, run_dir

    check_watch(args.every)

    options, cluster, threads = submission_request(args)
    runs, panels = plan_runs(args.table, args.weights, args.baselines, args.seeds)
    experiment = check_name("experiment", args.experiment or args.table.strip())
    opts, device = parse_overrides(args.opts, args.device)
    tasks = []
    for protocol, name, w, seeds in runs:
        family = args.family if (args.family and w and "://" not in w) else ""
        for seed in seeds:
            out = run_dir(args.root, experiment, protocol, name, seed).resolve()
            spec = TrainSpec(protocol=protocol, weights=w, output_dir=str(out), weights_name=name, seed=seed,
                             experiment=experiment, opts=opts, allow_mismatch=tuple(args.allow_mismatch),
                             family=family, device=device, num_processes=options.ntasks_per_node, nodes=options.nodes,
                             extra={"wandb": args.wandb})
            tasks.append(DistributedTask(TRAIN_WORKER, spec, threads=threads, label=f"{protocol}/{name}/seed{seed}"))
    record = {"table": args.table.strip(), "panels": panels,
              "runs": [{"protocol": p, "weights_name": n, "seeds": s} for p, n, _, s in runs]}
    text = sys.stderr if args.json else sys.stdout
    print(f"reproduce {args.table.strip()}: panels {', '.join(p['panel'] for p in panels)}", file=text)
    code = submit_planned(tasks, args.root, experiment, options, cluster, args.dry_run, args.json)
    if not args.dry_run:
        exp = Path(args.root, experiment)
        exp.mkdir(parents=True, exist_ok=True)
        write_text_atomic(exp / REPRODUCTION_FILE, json.dumps(record, indent=1) + "\n")
        print(f"when runs finish: infomin-det report {exp}  (ours beside the paper's {args.table.strip()})", file=text)
    return wait_for_runs(args, Path(args.root, experiment), code)
