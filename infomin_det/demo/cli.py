"""``infomin-det demo``: the whole toolkit end to end on CPU (see :mod:`infomin_det.demo.pipeline`)."""

from __future__ import annotations

import argparse

from infomin_det.demo.pipeline import FULL, QUICK, run_demo


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="CI-sized run (minutes): fewer images, steps, seeds")
    parser.add_argument("--out", default="runs/demo", help="output directory (default: runs/demo)")
    parser.add_argument("--cluster", default="local", choices=("local", "slurm", "debug", "auto"),
                        help="where the pretraining and fine-tuning jobs run (default: local processes)")


def main(args: argparse.Namespace) -> int:
    run_demo(args.out, QUICK if args.quick else FULL, cluster=args.cluster)
    return 0
