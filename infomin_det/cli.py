"""``infomin-det`` command line: one subcommand per capability, imported lazily.

Each subcommand module exposes ``add_arguments(parser)`` and ``main(args) -> int``. Modules are
imported only when their subcommand runs, so ``convert`` and ``report`` never pull in detectron2.
A :class:`~infomin_det.errors.UserError` becomes ``error: <cause>`` / ``  fix: <fix>`` and exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from infomin_det import __version__
from infomin_det.errors import UserError

# name -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "convert": ("infomin_det.convert.cli", "convert an SSL/supervised checkpoint to Detectron2 weights"),
    "verify": ("infomin_det.convert.verify_cli", "prove a converted .pkl reproduces its source (needs detectron2)"),
    "protocols": ("infomin_det.protocols.cli", "list the paper's transfer protocols"),
    "train": ("infomin_det.engine.cli", "fine-tune a detector under a protocol (local, 1..N processes)"),
    "submit": ("infomin_det.launch.submit_cli", "submit protocols x weights x seeds as one job array"),
    "reproduce": ("infomin_det.launch.reproduce_cli", "plan (--dry-run) and submit every run of one paper table"),
    "status": ("infomin_det.launch.status_cli", "show pending/running/done/failed runs of an experiment"),
    "report": ("infomin_det.report.cli", "AP tables over runs, with gaps to a baseline"),
    "pretrain": ("pretrain.cli", "pretrain an InfoMin backbone (MoCo v2 + JigSaw)"),
    "sweep": ("pretrain.views.sweep_cli", "vary one view parameter: pretrain + linear-evaluate, plot I_NCE vs accuracy"),
    "doctor": ("infomin_det.doctor", "check this machine: torch, CUDA, NCCL, GPUs, Detectron2 ops, datasets, SLURM"),
    "demo": ("infomin_det.demo.cli", "end-to-end demo on CPU: pretrain, convert, fine-tune, report"),
}


def _overview() -> str:
    width = max(map(len, SUBCOMMANDS))
    lines = [f"infomin-det {__version__} -- detection transfer benchmarks for SSL backbones", "",
             "usage: infomin-det <command> [options]   (infomin-det <command> -h for details)", ""]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in SUBCOMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_overview())
        return 0
    if argv[0] == "--version":
        print(__version__)
        return 0
    name = argv[0]
    if name not in SUBCOMMANDS:
        print(f"error: unknown command {name!r}\n  fix: one of {', '.join(SUBCOMMANDS)}", file=sys.stderr)
        return 2
    module_name, help_ = SUBCOMMANDS[name]
    try:
        module = importlib.import_module(module_name)
        parser = argparse.ArgumentParser(prog=f"infomin-det {name}", description=help_, allow_abbrev=False)
        module.add_arguments(parser)
        args = parser.parse_args(argv[1:])
        return int(module.main(args) or 0)
    except UserError as e:
        print(f"error: {e.cause}", file=sys.stderr)
        if e.fix:
            print(f"  fix: {e.fix}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
