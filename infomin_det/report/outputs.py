"""Where ``report --out`` / ``--plot`` may write, and writing there all-or-nothing.

The rule (:func:`check_target`), checked before any run is read:

1. A file named like a run's own file is never written, wherever it would go (:data:`PROTECTED`:
   metrics.json, run.json, config.yaml, log.txt, last_checkpoint, final_results.json,
   registry.json, launch_*.json, progress.json, *.pth, *.pkl, events.out.tfevents.*): the next report, the trainer
   or the launcher would read it as a run's record.
2. The target -- with every symlink resolved, its own name's included -- must not lie in a run
   directory: not in (or below) any run directory being read (:func:`check_outside`), and neither
   its directory nor one above it may look like a run's (metrics.json, run.json or
   launch_state.json; log.txt beside config.yaml or last_checkpoint) or be an experiment's ``launch/``.
3. It must be a regular file or not exist yet; its directory must exist and be writable (tried by
   creating and removing a temporary file there). ``--out`` and ``--plot`` must be different files.

:func:`write_all` writes every target through a temporary file beside it and renames them only
after all were written (the resolved path is written: a symlink you pointed at stays a symlink).
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from infomin_det.atomic import atomic_write
from infomin_det.errors import UserError
from infomin_det.launch.registry import LAUNCH_DIR, REGISTRY
from infomin_det.launch.task import STATE_FILE
from infomin_det.progress import PROGRESS_FILE
from infomin_det.rundir import FINAL_RESULTS, RUN_JSON

PROTECTED = ("metrics.json", RUN_JSON, "config.yaml", "log.txt", "last_checkpoint", FINAL_RESULTS, REGISTRY,
             "launch_*.json", PROGRESS_FILE, "*.pth", "*.pkl", "events.out.tfevents.*")


@dataclass(frozen=True)
class Target:
    """An output file: the path as given, the resolved path written, and its flag (``--out``)."""

    given: str
    path: Path
    flag: str


_RUN_OWN = ("metrics.json", RUN_JSON, STATE_FILE, "log.txt", "config.yaml", "last_checkpoint")


def _protected(name: str) -> str | None:
    return next((p for p in PROTECTED if fnmatch.fnmatchcase(name, p)), None)


def check_target(given: str, flag: str) -> Target:
    """The checked target of ``flag`` (``--out`` / ``--plot``); UserError when it breaks the rule."""
    def refuse(cause: str, fix: str = "write the table somewhere else, e.g. --out tables/coco.md") -> UserError:
        return UserError(f"{flag} {given}: {cause}", fix)

    if not given.strip():
        raise refuse("an empty path")
    path = Path(given)
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError):
        raise refuse("a symlink loop") from None
    for name in {path.name, resolved.name}:
        hit = _protected(name)
        if hit:
            raise refuse(f"{name!r} is the name of a run's own file ({hit}); a report there would be read "
                         "as a run's record", "name the report e.g. table.md / table.json")
    if resolved.is_dir():
        raise refuse("is a directory", f"name a file in it, e.g. {flag} {path / 'table.md'}")
    if resolved.exists() and not resolved.is_file():
        raise refuse(f"{resolved} is not a regular file (a device, pipe or socket)")
    parent = resolved.parent
    if not parent.is_dir():
        raise refuse(f"the directory {parent} does not exist", f"create it first (mkdir -p {parent})")
    for d in (parent, *parent.parents):
        held = [f for f in _RUN_OWN if (d / f).exists()]
        if "log.txt" in held and not {"config.yaml", "last_checkpoint"} & set(held):
            held.remove("log.txt")
        if set(held) - {"config.yaml", "last_checkpoint"}:
            raise refuse(f"{d} is a run directory (it holds {', '.join(held)}); the report never writes "
                         "into a run")
        if d.name == LAUNCH_DIR and (d / REGISTRY).exists():
            raise refuse(f"{d} is an experiment's launcher directory")
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{resolved.name}.", suffix=".probe", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise refuse(f"cannot write in {parent} ({e.strerror or e})",
                     "pick a directory you can write to") from None
    return Target(given, resolved, flag)


def check_targets(out: str | None, plot: str | None) -> list[Target]:
    targets = [check_target(p, f) for p, f in ((out, "--out"), (plot, "--plot")) if p is not None]
    if len(targets) == 2 and targets[0].path == targets[1].path:
        raise UserError(f"--out {out} and --plot {plot} are the same file", "give them different names")
    return targets


def check_outside(targets: list[Target], run_dirs: list[Path]) -> None:
    """UserError when a target lies in (or below) one of the run directories being read."""
    for t in targets:
        for d in run_dirs:
            if t.path.is_relative_to(d):
                raise UserError(f"{t.flag} {t.given}: {t.path} is inside the run directory {d}, which this "
                                "report reads; the report never writes into a run",
                                "write the table somewhere else, e.g. --out tables/coco.md")


def write_all(items: list[tuple[Target, Callable[[Path], None]]]) -> None:
    """Call each writer on a temporary file beside its target; rename them all only when all succeeded."""
    try:
        with contextlib.ExitStack() as stack:
            for target, write in items:
                write(stack.enter_context(atomic_write(target.path)))
    except OSError as e:
        raise UserError(f"writing {', '.join(t.given for t, _ in items)} failed ({e.strerror or e}); nothing "
                        "was replaced", "free space or fix permissions, then run the report again") from None
