"""``infomin-det demo``: the whole toolkit end to end on CPU (see :mod:`infomin_det.demo.pipeline`)."""

from __future__ import annotations

import argparse
import signal

from infomin_det.demo.pipeline import DEFAULT_MINUTES, FULL, QUICK, run_demo
from infomin_det.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="CI-sized run (minutes): fewer images, steps, seeds")
    parser.add_argument("--minutes", type=float, default=None, metavar="M",
                        help=f"wall-time budget: a short calibration on this machine, then pretraining steps and "
                             f"fine-tuning iterations chosen to fit M minutes (default {DEFAULT_MINUTES:g}; "
                             "local runs only)")
    parser.add_argument("--out", default="runs/demo", help="output directory (default: runs/demo)")
    parser.add_argument("--cluster", default="local", choices=("local", "slurm", "debug", "auto"),
                        help="where the pretraining and fine-tuning jobs run (default: local processes)")


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(args: argparse.Namespace) -> int:
    from infomin_det.demo.budget import check_minutes

    # `kill` / a scheduler's SIGTERM stops the demo the way Ctrl-C does: its running local jobs are
    # cancelled (they would otherwise outlive it and keep the cores busy)
    signal.signal(signal.SIGTERM, _interrupt)
    minutes = args.minutes
    if minutes is not None and (args.quick or args.cluster != "local"):
        raise UserError(f"--minutes sizes the demo by this machine's speed; it does not apply to "
                        f"{'--quick' if args.quick else '--cluster ' + args.cluster}",
                        "drop --minutes (--quick and cluster runs have fixed sizes)")
    if minutes is None and not args.quick and args.cluster == "local":
        minutes = DEFAULT_MINUTES
    run_demo(args.out, QUICK if args.quick else FULL, cluster=args.cluster,
             minutes=None if minutes is None else check_minutes(minutes))
    return 0
