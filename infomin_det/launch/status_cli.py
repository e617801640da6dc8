"""``infomin-det status [EXP]``: pending / running / requeued / done / failed per run of an experiment.

EXP is an experiment directory (``runs/<experiment>``) or a name under ``--root``; without EXP,
every experiment under ``--root`` that has a job registry. Failed runs show their cause and the
last lines of their log; ``unknown``: the scheduler could not be asked. ``--json`` prints the same
as data. A broken registry is an error naming the file. Exit status: 0; 1 when a run failed; 2 bad input.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from pathlib import Path

from infomin_det.errors import UserError
from infomin_det.launch.registry import LAUNCH_DIR, REGISTRY
from infomin_det.launch.status import STATES, experiment_status


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("experiment", nargs="?", help="experiment directory or name (default: all under --root)")
    parser.add_argument("--root", default="runs", help="root of the run tree (default: runs)")
    parser.add_argument("--lines", type=int, default=8, help="log lines shown per failed run (default: 8)")
    parser.add_argument("--json", action="store_true", help="print the status as JSON")


def find_experiments(args: argparse.Namespace) -> list[Path]:
    """The experiment directories to show; a registry path that exists but is broken is returned
    (and refused with its cause by the registry), not reported missing."""
    root = Path(args.root)
    if args.experiment:
        for cand in (Path(args.experiment), root / args.experiment):
            if os.path.lexists(cand / LAUNCH_DIR / REGISTRY):
                return [cand]
            if (cand / LAUNCH_DIR).exists() and not (cand / LAUNCH_DIR).is_dir():
                return [cand]
        raise UserError(f"no job registry for experiment {args.experiment!r} "
                        f"(looked for {Path(args.experiment, LAUNCH_DIR, REGISTRY)} and under {args.root}/)",
                        "pass the experiment directory that infomin-det submit printed")
    if root.exists() and not root.is_dir():
        raise UserError(f"--root {args.root} is a file, not a directory", "pass the root of the run tree (default: runs)")
    try:
        found = sorted(p.parent.parent for p in root.glob(f"*/{LAUNCH_DIR}/{REGISTRY}"))
    except OSError as e:
        raise UserError(f"cannot list {args.root}: {e.strerror}", "check its permissions") from None
    if not found:
        raise UserError(f"no submitted experiments under {args.root}/", "pass --root or an experiment directory")
    return found


def main(args: argparse.Namespace) -> int:
    if not 0 <= args.lines <= 10_000:
        raise UserError(f"--lines {args.lines} is out of range", "pass 0 to 10000 (log lines per failed run)")
    report = {str(exp): experiment_status(exp, args.lines) for exp in find_experiments(args)}
    failed = any(r.state == "failed" for runs in report.values() for r in runs)
    if args.json:
        print(json.dumps({k: [dataclasses.asdict(s) for s in v] for k, v in report.items()}, indent=1))
        return 1 if failed else 0
    for exp, runs in report.items():
        counts = {s: sum(r.state == s for r in runs) for s in STATES}
        print(f"{exp}: " + (", ".join(f"{n} {s}" for s, n in counts.items() if n) or "no runs"))
        width = max((len(r.key) for r in runs), default=0)
        for r in runs:
            attempt = f" attempt {r.attempt}" if r.attempt else ""
            cause = f"  {r.cause}" if r.cause else ""
            print(f"  {r.key:<{width}}  {r.state:<11} {r.job_id}{attempt}{cause}")
            for line in r.log_tail:
                print(f"      | {line}")
    return 1 if failed else 0      # the CLI's convention: 1 = some runs failed
