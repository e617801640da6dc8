"""``infomin-det verify OUT.pkl [--source SRC]``: prove a converted file reproduces its source."""

from __future__ import annotations

import argparse
import json

from infomin_det.convert.verify import SIZE_RANGE, verify


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pkl", help="Detectron2 weights written by infomin-det convert")
    parser.add_argument("--source", default=None, help="the original checkpoint (reference built from it)")
    parser.add_argument("--trust-pickle", action="store_true", help="as for convert: load the source unrestricted")
    lo, hi = SIZE_RANGE
    parser.add_argument("--size", type=int, default=64, help=f"input side in pixels, {lo}..{hi} (default 64)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def main(args: argparse.Namespace) -> int:
    r = verify(args.pkl, args.source, trust_pickle=args.trust_pickle, size=args.size)
    print(json.dumps(r.to_json(), indent=2) if args.json else r.render())
    return 0 if r.passed else 1
