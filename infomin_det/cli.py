"""``infomin-det`` command line: one subcommand per capability, imported lazily.

Each subcommand module exposes ``add_arguments(parser)`` and ``main(args) -> int``. Modules are
imported only when their subcommand runs, so ``convert`` and ``report`` never pull in detectron2.

Exit status, the same for every command (docs/cli.md): 0 all good; 1 the command ran but some runs
failed (``status``, ``report``, ``submit``, ``doctor``: something required is missing); 2 bad input
-- a :class:`~infomin_det.errors.UserError` becomes ``error: <cause>`` / ``  fix: <fix>``, a
missing package (detectron2 ...) likewise; 75 a run stopped by preemption (run it again); 130
Ctrl-C. Output to a closed pipe (``| head``) ends the command quietly, as in any Unix tool.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys

from infomin_det import __version__
from infomin_det.errors import UserError
from infomin_det.registry import Registry

# name -> (module with add_arguments(parser) and main(args), one-line help): imported only when run
SUBCOMMANDS: Registry[tuple[str, str]] = Registry("command")
for _name, _module, _help in (
    ("convert", "infomin_det.convert.cli", "convert an SSL/supervised checkpoint to Detectron2 weights"),
    ("verify", "infomin_det.convert.verify_cli", "prove a converted .pkl reproduces its source (needs detectron2)"),
    ("protocols", "infomin_det.protocols.cli", "list the paper's transfer protocols"),
    ("train", "infomin_det.engine.cli", "fine-tune a detector under a protocol (local, 1..N processes)"),
    ("submit", "infomin_det.launch.submit_cli", "submit protocols x weights x seeds as one job array"),
    ("reproduce", "infomin_det.launch.reproduce_cli", "plan (--dry-run) and submit every run of one paper table"),
    ("status", "infomin_det.launch.status_cli", "show pending/running/done/failed runs of an experiment"),
    ("report", "infomin_det.report.cli", "AP tables over runs, with gaps to a baseline"),
    ("pretrain", "pretrain.cli", "pretrain an InfoMin backbone (MoCo v2 + JigSaw)"),
    ("sweep", "pretrain.views.sweep_cli", "vary one view parameter: pretrain + linear-evaluate, plot I_NCE vs accuracy"),
    ("doctor", "infomin_det.doctor", "check this machine: torch, CUDA, NCCL, GPUs, Detectron2 ops, datasets, SLURM"),
    ("completion", "infomin_det.completion", "print a bash/zsh completion script (eval \"$(infomin-det completion bash)\")"),
    ("demo", "infomin_det.demo.cli", "end-to-end demo on CPU: pretrain, convert, fine-tune, report"),
):
    SUBCOMMANDS.register(_name, (_module, _help))


def _overview() -> str:
    width = max(map(len, SUBCOMMANDS))
    lines = [f"infomin-det {__version__} -- detection transfer benchmarks for SSL backbones", "",
             "usage: infomin-det <command> [options]   (infomin-det <command> -h for details)", ""]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in SUBCOMMANDS.items()]
    return "\n".join(lines)


EXIT_OK, EXIT_RUNS_FAILED, EXIT_USAGE = 0, 1, 2
# what to install when a command's import fails for want of a package
_INSTALL = {"detectron2": "install Detectron2 (docs/install.md: `make setup`, or a source build against your torch)",
            "torch": "install torch (docs/install.md)", "submitit": "pip install submitit",
            "pycocotools": "pip install pycocotools", "rich": "pip install rich", "matplotlib": "pip install matplotlib"}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        code = _run(argv)
        sys.stdout.flush()           # a closed pipe shows here, not in the interpreter's exit flush
        return code
    except BrokenPipeError:          # `infomin-det ... | head`: the reader is gone; say nothing more
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


def _run(argv: list[str]) -> int:
    if argv[:1] in (["-h"], ["--help"]):
        print(_overview())
        return EXIT_OK
    if not argv:
        print(_overview(), file=sys.stderr)
        return EXIT_USAGE
    if argv[0] in ("--version", "-V"):
        print(f"infomin-det {__version__}")
        return EXIT_OK
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
        return EXIT_USAGE
    except ModuleNotFoundError as e:
        top = (e.name or "").split(".")[0]
        if top not in _INSTALL:
            raise
        print(f"error: infomin-det {name} needs {top}, which is not installed here ({e})\n  fix: {_INSTALL[top]}",
              file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
