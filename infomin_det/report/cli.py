"""``infomin-det report``: AP tables over runs (or the paper's own tables), with gaps to a baseline.

    infomin-det report runs/myexp --baseline supervised            # rich table per protocol
    infomin-det report runs/myexp --baseline paper:supervised --format markdown --out table.md
    infomin-det report --paper T8                                    # the paper's Table 8

Exit status: 0; 2 for bad input (UserError) and when some run could not be read -- the table of
the others is still printed, and each unreadable run gets ``error: <cause>`` / ``  fix: <fix>``.
"""

from __future__ import annotations

import argparse
import sys

from infomin_det.atomic import write_text_atomic
from infomin_det.errors import UserError

FORMATS = ("terminal", "markdown", "latex", "csv", "json")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="*", metavar="RUN_DIR_OR_EXPERIMENT",
                        help="run directories, experiment directories, or experiment names under ./runs")
    parser.add_argument("--baseline", metavar="NAME",
                        help="row to print gaps against (a weights name), or paper:<row> (e.g. paper:supervised)")
    parser.add_argument("--paper", metavar="TABLE", help="print the paper's table (T1..T11, or a panel like T8b)")
    parser.add_argument("--protocol", action="append", metavar="ID", help="only this protocol (repeatable)")
    parser.add_argument("--sizes", action="store_true", help="also show APs / APm / APl")
    parser.add_argument("--format", choices=FORMATS, default=None,
                        help="output format (default: terminal, or from --out's suffix)")
    parser.add_argument("--out", metavar="FILE", help="write the table here (atomically)")
    parser.add_argument("--plot", metavar="FILE.png", help="draw the gaps per protocol and metric")


def main(args: argparse.Namespace, single: bool = False) -> int:
    from infomin_det.report import aggregate, render
    from infomin_det.report.runs import FAILED, find_runs

    fmt = _format(args)
    failed = []
    if args.paper:
        if args.paths or args.baseline:
            raise UserError("--paper prints the paper's table on its own",
                            "drop the run paths / --baseline, or use --baseline paper:<row> with your runs")
        if args.paper.upper() in ("T1", "T2"):
            return _emit(_linear_table(args.paper.upper(), fmt), fmt, args.out)
        tables = aggregate.paper_tables(args.paper)
    else:
        if not args.paths:
            raise UserError("no runs given", "pass run or experiment directories, or --paper T3")
        runs = find_runs(args.paths)
        failed = [r for r in runs if r.status == FAILED]
        tables = aggregate.build_tables(runs, args.baseline, args.sizes, args.protocol, single=single)
        for r in runs:
            for w in r.warnings:
                print(f"warning: {w}", file=sys.stderr)
    if fmt == "terminal":
        render.print_terminal(tables)
    else:
        _emit(render.RENDERERS[fmt](tables), fmt, args.out)
    if args.plot:
        from infomin_det.report.plot import plot_gaps

        print(f"plot: {plot_gaps(tables, args.plot)}", file=sys.stderr)
    for r in failed:
        print(f"error: {r.reason}\n  fix: {r.fix}", file=sys.stderr)
    return 2 if failed else 0


def _format(args: argparse.Namespace) -> str:
    from infomin_det.report.render import SUFFIXES

    if args.out:
        from pathlib import Path

        guess = SUFFIXES.get(Path(args.out).suffix.lower())
        fmt = args.format or guess
        if fmt in (None, "terminal"):
            raise UserError(f"--out {args.out}: a file needs a file format",
                            f"add --format {{{','.join(FORMATS[1:])}}} or name the file {'/'.join(SUFFIXES)}")
        return fmt
    return args.format or "terminal"


def _emit(text: str, fmt: str, out: str | None) -> int:
    if out:
        write_text_atomic(out, text)
        print(f"wrote {out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def _linear_table(table: str, fmt: str) -> str:
    """Tables 1/2 (ImageNet linear accuracy) as plain text in ``fmt`` (no gaps: no baseline there)."""
    import csv
    import io
    import json

    from infomin_det.report import paper

    spec = paper.data()["imagenet_linear"][table]
    cols = ["method", "architecture", "params_M", "head", "epochs", "top1", "top5"]
    if table == "T2":
        cols.append("group")
    rows = [[("-" if r.get(c) is None else str(r[c])) for c in cols] for r in spec["rows"]]
    if fmt == "json":
        return json.dumps({"table": table, "caption": spec["caption"], "rows": spec["rows"]}, indent=1) + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows([cols] + rows)
        return buf.getvalue()
    if fmt == "latex":
        body = [" & ".join(c.replace("_", r"\_") for c in r) + r" \\" for r in [cols] + rows]
        return "\n".join([f"% {table}: {spec['caption']}", "\\begin{tabular}{" + "l" * len(cols) + "}",
                          *body, "\\end{tabular}"]) + "\n"
    widths = [max(len(r[i]) for r in [cols] + rows) for i in range(len(cols))]
    lines = [f"{table}: {spec['caption']}", ""] if fmt == "terminal" else [f"### {table}: {spec['caption']}", ""]
    for k, r in enumerate([cols] + rows):
        lines.append("| " + " | ".join(v.ljust(w) for v, w in zip(r, widths)) + " |")
        if k == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines) + "\n"
