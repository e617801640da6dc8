#!/usr/bin/env python
"""One AP table from run directories (a thin wrapper over ``infomin-det report``).

    python tools/ap_table.py runs/myexp/coco/R50-FPN-1x --baseline supervised --format markdown

Same options as ``infomin-det report``, but exactly one table: runs of several tables (protocols,
modifications, datasets) are refused (``--protocol`` picks one) instead of being split.
"""

import argparse
import sys

from infomin_det.errors import UserError
from infomin_det.report import cli


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="ap_table.py", description=__doc__.splitlines()[0], allow_abbrev=False)
    cli.add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return cli.main(args, single=True)
    except UserError as e:
        print(f"error: {e.cause}", file=sys.stderr)
        if e.fix:
            print(f"  fix: {e.fix}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
