"""``infomin-det train --protocol P --weights W [--seed K] [OPTS...]``: one run, 1..N local processes."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from infomin_det.engine.spec import TrainSpec
from infomin_det.rundir import run_dir


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--protocol", required=True, help="protocol id, e.g. coco/R50-FPN-1x (see `infomin-det protocols`)")
    parser.add_argument("--weights", required=True, help="converted .pkl, detectron2:// catalog URL, or 'none' (random init)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--family", choices=("ssl", "supervised", "random"), default=None,
                        help="override the family chosen from the weights' metadata")
    parser.add_argument("--dataset", default="", help="coco-json:<train.json>:<train_images>:<val.json>:<val_images>")
    parser.add_argument("--root", default="runs", help="runs root (output dir: <root>/<experiment>/<protocol>/<weights>/seed<k>)")
    parser.add_argument("--experiment", default="default")
    parser.add_argument("--weights-name", default="", help="row name in reports (default: weights file stem)")
    parser.add_argument("--output-dir", default="", help="explicit output dir (overrides --root layout)")
    parser.add_argument("--num-processes", type=int, default=1, help="local processes (gloo on CPU, NCCL on GPU)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads per process on CPU (default cores/processes)")
    parser.add_argument("--allow-mismatch", action="append", default=[], metavar="KEY",
                        help="accept a weights/config disagreement on KEY ('*' for all)")
    parser.add_argument("--eval-only", action="store_true")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="Detectron2 KEY VALUE overrides")


def spec_from_args(args: argparse.Namespace) -> TrainSpec:
    name = args.weights_name or (Path(args.weights).stem if args.weights not in ("", "none") else "random")
    out = args.output_dir or str(run_dir(args.root, args.experiment, args.protocol, name, args.seed))
    return TrainSpec(args.protocol, args.weights, out, weights_name=name, seed=args.seed, experiment=args.experiment,
                     opts=tuple(args.opts), dataset=args.dataset, allow_mismatch=tuple(args.allow_mismatch),
                     eval_only=args.eval_only, num_processes=args.num_processes, family=args.family or "",
                     extra={"threads": args.threads})


def main(args: argparse.Namespace) -> int:
    from detectron2.engine import launch

    from infomin_det.engine.trainer import FINAL_RESULTS, train_worker

    spec = spec_from_args(args)
    if spec.num_processes > 1:
        from infomin_det.engine.config import build_config  # validate before spawning
        build_config(spec)
        launch(train_worker, spec.num_processes, dist_url="auto", args=(spec,))
        final = Path(spec.output_dir, FINAL_RESULTS)
        results = json.loads(final.read_text()) if final.exists() else {}
    else:
        results = train_worker(spec)
    print(json.dumps({"output_dir": spec.output_dir, "results": results}, indent=2))
    return 0
