#!/usr/bin/env python
"""Detectron2-style entry point over our trainer: ``--config-file`` (a leaf under transfer_configs/),
``--num-gpus``, ``--resume``, ``--eval-only``, trailing ``KEY VALUE`` overrides.

    python tools/train_net.py --config-file transfer_configs/coco/R50-FPN-1x.ssl.yaml \
        --num-gpus 8 MODEL.WEIGHTS w.pkl OUTPUT_DIR out/

The leaf path gives the protocol id and family; ``MODEL.WEIGHTS`` / ``OUTPUT_DIR`` / ``SEED`` in the
overrides give the weights, output dir and seed. Everything else is ``infomin_det.engine.trainer``
(resume is decided from OUTPUT_DIR's ``last_checkpoint``; ``--resume`` is accepted for compatibility).
"""

from __future__ import annotations

import sys
from pathlib import Path

from detectron2.engine import default_argument_parser, launch

from infomin_det.engine.spec import TrainSpec
from infomin_det.engine.trainer import train_worker
from infomin_det.errors import UserError
from transfer_configs import ROOT


def spec_from_d2_args(args) -> TrainSpec:
    leaf = Path(args.config_file).resolve()
    try:
        rel = leaf.relative_to(ROOT)
    except ValueError:
        raise UserError(f"{args.config_file} is not a leaf under {ROOT}",
                        "pass one of the files `infomin-det protocols --json` lists") from None
    stem, _, family = rel.name[: -len(".yaml")].rpartition(".")
    opts = list(args.opts)
    pick = {k: opts[i + 1] for i, k in enumerate(opts[:-1]) if i % 2 == 0}
    for key in ("MODEL.WEIGHTS", "OUTPUT_DIR", "SEED"):
        if key in pick:
            i = opts.index(key)
            del opts[i:i + 2]
    return TrainSpec(f"{rel.parent}/{stem}", pick.get("MODEL.WEIGHTS", ""), pick.get("OUTPUT_DIR", "./output"),
                     seed=int(pick.get("SEED", 0)), opts=tuple(opts), eval_only=args.eval_only,
                     num_processes=args.num_gpus, family=family)


def main() -> int:
    args = default_argument_parser().parse_args()
    try:
        spec = spec_from_d2_args(args)
        launch(train_worker, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
               dist_url=args.dist_url, args=(spec,))
    except UserError as e:
        print(f"error: {e.cause}\n  fix: {e.fix}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
