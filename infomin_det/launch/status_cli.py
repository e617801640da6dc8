"""``infomin-det status [EXP]``: pending / running / requeued / done / failed per run of an experiment.

EXP is an experiment directory (``runs/<experiment>``) or a name under ``--root``; without EXP,
every experiment under ``--root`` that has a job registry. Failed runs show their cause and the
last lines of their log. ``--json`` prints the same as data.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
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
    if args.experiment:
        for cand in (Path(args.experiment), Path(args.root, args.experiment)):
            if (cand / LAUNCH_DIR / REGISTRY).is_file():
                return [cand]
        raise UserError(f"no job registry for experiment {args.experiment!r} "
                        f"(looked for {Path(args.experiment, LAUNCH_DIR, REGISTRY)} and under {args.root}/)",
                        "pass the experiment directory that infomin-det submit printed")
    found = sorted(p.parent.parent for p in Path(args.root).glob(f"*/{LAUNCH_DIR}/{REGISTRY}"))
    if not found:
        raise UserError(f"no submitted experiments under {args.root}/", "pass --root or an experiment directory")
    return found


def main(args: argparse.Namespace) -> int:
    if args.lines < 0:
        raise UserError(f"--lines {args.lines} is negative", "pass 0 or more")
    report = {str(exp): experiment_status(exp, args.lines) for exp in find_experiments(args)}
    if args.json:
        print(json.dumps({k: [dataclasses.asdict(s) for s in v] for k, v in report.items()}, indent=1))
        return 0
    for exp, runs in report.items():
        counts = {s: sum(r.state == s for r in runs) for s in STATES}
        print(f"{exp}: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n))
        width = max((len(r.key) for r in runs), default=0)
        for r in runs:
            attempt = f" attempt {r.attempt}" if r.attempt else ""
            cause = f"  {r.cause}" if r.cause else ""
            print(f"  {r.key:<{width}}  {r.state:<11} {r.job_id}{attempt}{cause}")
            for line in r.log_tail:
                print(f"      | {line}")
    return 0
