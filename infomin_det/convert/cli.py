"""``infomin-det convert SRC OUT.pkl``: any SSL/torchvision ResNet checkpoint -> Detectron2 weights."""

from __future__ import annotations

import argparse
import json

from infomin_det.convert.converter import convert
from infomin_det.convert.coverage import render


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", help="source checkpoint (.pth, .pth.tar, .ckpt, torchvision/timm state dict, ...)")
    parser.add_argument("out", help="output Detectron2 weights file (must end in .pkl)")
    parser.add_argument("--key", default=None,
                        help="dotted path to the state dict inside the checkpoint (skips layout recognition)")
    parser.add_argument("--prefix", default=None,
                        help="prefix of the trunk's keys in that state dict ('' for none); keys outside it are dropped")
    parser.add_argument("--ema", action="store_true", help="PyContrast: take the EMA model ('model_ema')")
    parser.add_argument("--force", action="store_true", help="overwrite OUT if it exists")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="load with weights_only=False (arbitrary code!) -- only for files you trust")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def main(args: argparse.Namespace) -> int:
    r = convert(args.src, args.out, key=args.key, prefix=args.prefix, ema=args.ema, force=args.force,
                trust_pickle=args.trust_pickle)
    if args.json:
        print(json.dumps(r.to_json(), indent=2))
    else:
        print(render(r.coverage, r.meta.arch.name, r.groups, r.meta.config_values(), str(r.out), r.seconds))
    return 0
