#!/usr/bin/env python
"""Detectron2-style entry point over ``infomin-det train``: ``--config-file`` (a leaf under
transfer_configs/), ``--num-gpus``, ``--resume``, ``--eval-only``, trailing ``KEY VALUE`` overrides.

    python tools/train_net.py --config-file transfer_configs/coco/R50-FPN-1x.ssl.yaml \
        --num-gpus 8 MODEL.WEIGHTS w.pkl OUTPUT_DIR out/

The leaf path gives the protocol id, family and variant (``<protocol>.<family>[+<variant>].yaml``);
``MODEL.WEIGHTS`` / ``OUTPUT_DIR`` / ``SEED`` / ``MODEL.DEVICE`` in the overrides give the weights,
output dir, seed and device. The run itself is exactly ``infomin-det train`` (same checks, same
launch path; resume is decided from OUTPUT_DIR's ``last_checkpoint``, ``--resume`` is accepted for
compatibility). Several machines: use ``infomin-det submit --nodes N``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from detectron2.engine import default_argument_parser

from infomin_det.engine.spec import TrainSpec
from infomin_det.errors import UserError
from transfer_configs import ROOT

TAKEN = {"MODEL.WEIGHTS": "weights", "OUTPUT_DIR": "output_dir", "SEED": "seed", "MODEL.DEVICE": "device"}


def spec_from_d2_args(args) -> TrainSpec:
    leaf = Path(args.config_file).resolve()
    try:
        rel = leaf.relative_to(ROOT)
    except ValueError:
        raise UserError(f"{args.config_file} is not a leaf under {ROOT}",
                        "pass one of the files `infomin-det protocols --json` lists, or train your own config as "
                        "a custom variant: infomin-det train --protocol P --config-file FILE") from None
    if args.num_machines != 1:
        raise UserError(f"--num-machines {args.num_machines}: this entry point runs on one machine",
                        "use `infomin-det submit --nodes N` for multi-node runs")
    stem, _, leaf_name = rel.name[: -len(".yaml")].rpartition(".")
    family, _, variant = leaf_name.partition("+")
    opts = list(args.opts)
    if len(opts) % 2:
        raise UserError(f"overrides must be KEY VALUE pairs, got {len(opts)} words", "e.g. SOLVER.BASE_LR 0.01")
    pairs = list(zip(opts[::2], opts[1::2]))
    picked = {TAKEN[k]: v for k, v in pairs if k in TAKEN}
    rest = tuple(x for k, v in pairs if k not in TAKEN for x in (k, v))
    try:
        seed = int(picked.get("seed", 0))
    except ValueError:
        raise UserError(f"SEED {picked['seed']!r} is not a whole number", "pass SEED 0, 1, ...") from None
    return TrainSpec(f"{rel.parent}/{stem}", picked.get("weights", ""), picked.get("output_dir", "./output"),
                     seed=seed, opts=rest, eval_only=args.eval_only, num_processes=args.num_gpus, family=family,
                     variant=variant, device=picked.get("device", "auto"))


def main() -> int:
    from infomin_det.engine import cli

    args = default_argument_parser().parse_args()
    try:
        spec = spec_from_d2_args(args)
        ns = argparse.Namespace(protocol=spec.protocol, weights=spec.weights or "none", seed=spec.seed,
                                family=spec.family, variant=spec.variant, device=spec.device, dataset="",
                                root="runs", experiment="default", weights_name="", output_dir=spec.output_dir,
                                num_processes=spec.num_processes, threads=0, allow_mismatch=[],
                                eval_only=spec.eval_only, opts=list(spec.opts))
        return cli.main(ns)
    except UserError as e:
        print(f"error: {e.cause}\n  fix: {e.fix}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
