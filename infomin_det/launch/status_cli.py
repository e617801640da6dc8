"""``infomin-det status [EXP]``: pending / running / requeued / done / failed per run of an experiment.

EXP is an experiment directory (``runs/<experiment>``) or a name under ``--root``; without EXP,
every experiment under ``--root`` that has a job registry. Failed runs show their cause and the
last lines of their log; running ones their progress (``step 120/1000 (12%), ETA 3m05s``, from
the run's ``progress.json``); ``unknown``: the scheduler could not be asked. ``--json`` prints the
same as data. ``--watch`` (``--every SECONDS``, default 5) redraws it until no run is pending, running or requeued (on a
terminal in place; piped, a new block whenever something changed); ``submit --wait`` is the same
after submitting. A broken registry is an error naming the file. Exit status: 0; 1 when a run
failed; 2 bad input; 130 when a watch is interrupted (the jobs go on).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
from pathlib import Path

from infomin_det.errors import UserError
from infomin_det.launch.registry import LAUNCH_DIR, REGISTRY
from infomin_det.launch.status import ACTIVE, STATES, RunStatus, experiment_status

DEFAULT_WATCH_S = 5.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("experiment", nargs="?", help="experiment directory or name (default: all under --root)")
    parser.add_argument("--root", default="runs", help="root of the run tree (default: runs)")
    parser.add_argument("--lines", type=int, default=8, help="log lines shown per failed run (default: 8)")
    parser.add_argument("--json", action="store_true", help="print the status as JSON")
    add_watch(parser, "--watch", "redraw until no run is pending, running or requeued")


def add_watch(parser: argparse.ArgumentParser, flag: str, help_: str) -> None:
    """``status --watch`` / ``submit --wait`` / ``reproduce --wait``, and their ``--every SECONDS``."""
    parser.add_argument(flag, action="store_true", help=help_)
    parser.add_argument("--every", type=float, default=DEFAULT_WATCH_S, metavar="SECONDS",
                        help=f"poll interval of {flag} in seconds (default {DEFAULT_WATCH_S:g})")


def check_watch(seconds: float) -> None:
    if not 0.1 <= seconds <= 3600:       # NaN fails both comparisons
        raise UserError(f"--every {seconds}: the poll interval is out of range", "pass 0.1 to 3600 seconds (default 5)")


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


def render(report: dict[str, list[RunStatus]]) -> str:
    """The text of ``status``: per experiment a count line, then one line per run."""
    out = []
    for exp, runs in report.items():
        counts = {s: sum(r.state == s for r in runs) for s in STATES}
        out.append(f"{exp}: " + (", ".join(f"{n} {s}" for s, n in counts.items() if n) or "no runs"))
        width = max((len(r.key) for r in runs), default=0)
        for r in runs:
            attempt = f" attempt {r.attempt}" if r.attempt else ""
            progress = f"  {r.progress.text()}" if r.progress else ""
            cause = f"  {r.cause}" if r.cause else ""
            out.append(f"  {r.key:<{width}}  {r.state:<11} {r.job_id}{attempt}{progress}{cause}")
            out += [f"      | {line}" for line in r.log_tail]
    return "\n".join(out)


def exit_status(report: dict[str, list[RunStatus]]) -> int:
    return 1 if any(r.state == "failed" for runs in report.values() for r in runs) else 0  # 1 = some runs failed


def watch(experiments: list[Path], seconds: float, lines: int = 8, stream=None) -> int:
    """Redraw the status every ``seconds`` until no run is active; the exit status of the last one."""
    import sys
    import time

    from rich.live import Live
    from rich.text import Text

    from infomin_det.console import stdout_console

    stream = stream or sys.stdout
    console = stdout_console(file=stream)
    live = Live(console=console, auto_refresh=False) if console.is_terminal else None
    shown = None
    try:
        with live if live is not None else contextlib.nullcontext():
            while True:
                report = {str(exp): experiment_status(exp, lines) for exp in experiments}
                text = render(report)
                if live is not None:
                    live.update(Text(text), refresh=True)
                elif text != shown:
                    print(f"-- {time.strftime('%H:%M:%S')}\n{text}", file=stream, flush=True)
                shown = text
                if not any(r.state in ACTIVE for runs in report.values() for r in runs):
                    return exit_status(report)
                time.sleep(seconds)
    except KeyboardInterrupt:
        print("stopped watching; the jobs go on (infomin-det status shows them)", file=sys.stderr)
        return 130


def main(args: argparse.Namespace) -> int:
    if not 0 <= args.lines <= 10_000:
        raise UserError(f"--lines {args.lines} is out of range", "pass 0 to 10000 (log lines per failed run)")
    check_watch(args.every)
    experiments = find_experiments(args)
    if args.watch:
        if args.json:
            raise UserError("--watch redraws text; --json prints one snapshot", "drop one of them")
        return watch(experiments, args.every, args.lines)
    report = {str(exp): experiment_status(exp, args.lines) for exp in experiments}
    if args.json:
        print(json.dumps({k: [dataclasses.asdict(s) for s in v] for k, v in report.items()}, indent=1))
    else:
        print(render(report))
    return exit_status(report)
