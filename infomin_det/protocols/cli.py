"""``infomin-det protocols``: the paper's transfer protocols, the table panels each reproduces, the configs."""

from __future__ import annotations

import argparse
import json

from infomin_det.protocols import FAMILIES, config_path, list_protocols, variants

_DETECTOR = {"mask_fpn": "Mask R-CNN FPN", "mask_c4": "Mask R-CNN C4",
             "cascade_fpn": "Cascade Mask R-CNN FPN", "faster_c4": "Faster R-CNN C4"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="machine-readable output")


def main(args: argparse.Namespace) -> int:
    rows = [{"protocol": p.id, "detector": _DETECTOR[p.meta_arch], "backbone": p.arch,
             "schedule": p.schedule, "dataset": p.dataset, "paper": list(p.panels),
             "configs": {f: str(config_path(p.id, f)) for f in FAMILIES},
             "variants": {f: variants(p.id, f) for f in FAMILIES}} for p in list_protocols()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    from rich.table import Table

    from infomin_det.console import stdout_console

    table = Table(caption="configs: transfer_configs/<protocol>.{ssl,supervised,random}.yaml (the authors' values); "
                          "named variants <protocol>.<family>+<name>.yaml: --json, docs/protocols.md")
    for col in ("protocol", "detector", "backbone", "schedule", "dataset", "paper panels"):
        table.add_column(col, no_wrap=True)
    for r in rows:
        table.add_row(r["protocol"], r["detector"], r["backbone"], r["schedule"], r["dataset"],
                      ", ".join(r["paper"]))
    stdout_console().print(table)
    return 0
