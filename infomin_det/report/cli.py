"""``infomin-det report``: AP tables over runs (or the paper's own tables), with gaps to a baseline.

    infomin-det report runs/myexp --baseline supervised            # rich table per protocol
    infomin-det report runs/myexp --baseline paper:supervised --format markdown --out table.md
    infomin-det report --paper T8                                    # the paper's Table 8

Exit status: 0; 1 when some run could not be read or failed -- the table of the others is still
printed (never written to --out / --plot: a file is written only when every run was read, else
exit 2), and each unreadable run gets ``error: <cause>`` / ``  fix: <fix>``; 2 for bad input.
Where --out / --plot may write: :mod:`infomin_det.report.outputs`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from infomin_det.errors import UserError



def add_arguments(parser: argparse.ArgumentParser) -> None:
    from infomin_det.report.render import RENDERERS

    parser.add_argument("paths", nargs="*", metavar="RUN_DIR_OR_EXPERIMENT",
                        help="run directories, experiment directories, or experiment names under ./runs")
    parser.add_argument("--baseline", metavar="NAME",
                        help="row to print gaps against (a row label or weights name), or paper:<row> "
                             "(e.g. paper:supervised; only for runs of the paper's protocol on its dataset)")
    parser.add_argument("--paper", metavar="TABLE", help="print the paper's table (T1..T11, or a panel like T8b)")
    parser.add_argument("--protocol", action="append", metavar="ID", help="only this protocol (repeatable)")
    parser.add_argument("--sizes", action="store_true", help="also show APs / APm / APl")
    parser.add_argument("--format", choices=("terminal", *RENDERERS), default=None,
                        help="output format (default: terminal, or from --out's suffix)")
    parser.add_argument("--out", metavar="FILE", help="write the table here (atomically; never into a run)")
    parser.add_argument("--plot", metavar="FILE.png",
                        help="draw the gaps per table and metric (.png, .pdf or .svg)")


def main(args: argparse.Namespace, single: bool = False) -> int:
    from infomin_det.report import aggregate, outputs, render
    from infomin_det.report.runs import FAILED, find_runs, resolve_path

    fmt = _format(args)
    if args.plot is not None:
        from infomin_det.report.plot import check_suffix

        check_suffix(args.plot)
    targets = outputs.check_targets(args.out, args.plot)
    runs = []
    if args.paper is not None:
        extra = [f for f, v in (("run paths", args.paths), ("--protocol", args.protocol), ("--sizes", args.sizes)) if v]
        if extra:
            raise UserError(f"--paper prints the paper's table on its own ({', '.join(extra)} given too)",
                            "drop them (--baseline ROW picks the paper's baseline row), or report your runs "
                            "with --baseline paper:<row>")
        if args.paper.strip().upper() in ("T1", "T2"):
            if args.plot is not None:
                raise UserError(f"--plot draws gaps, and Table {args.paper.strip()[1:]} has none (ImageNet accuracies)",
                                "drop --plot, or plot a detection table (T3..T11)")
            if args.baseline is not None:
                raise UserError(f"Table {args.paper.strip()[1:]} (ImageNet accuracies) has no gaps, so no baseline",
                                "drop --baseline, or use a detection table (T3..T11)")
            text = _linear_table(args.paper.strip().upper(), fmt)
            return _emit(text, fmt, targets, [])
        tables = aggregate.paper_tables(args.paper, args.baseline)
    else:
        if not args.paths:
            raise UserError("no runs given", "pass run or experiment directories, or --paper T3")
        runs = find_runs(args.paths)
        outputs.check_outside(targets, [r.path for r in runs] + [resolve_path(p) / "launch" for p in args.paths])
        tables = aggregate.build_tables(runs, args.baseline, args.sizes, args.protocol, single=single)
        for r in runs:
            for w in r.warnings:
                print(f"warning: {w}", file=sys.stderr)
    failed = [r for r in runs if r.status == FAILED]
    fig = None
    if args.plot is not None:
        from infomin_det.report.plot import draw

        fig = draw(tables)
    for r in failed:
        print(f"error: {r.reason}\n  fix: {r.fix}", file=sys.stderr)
    if failed and targets:
        if fig is not None:
            import matplotlib.pyplot as plt

            plt.close(fig)
        raise UserError(f"{len(failed)} run(s) could not be read (above): nothing written to "
                        f"{' / '.join(t.given for t in targets)} -- a file would hold a table without them",
                        "fix or move away those runs, or narrow the paths / --protocol to the runs you want")
    text = render.RENDERERS[fmt].render(tables) if fmt != "terminal" else None
    if fmt == "terminal":
        render.print_terminal(tables)
    if args.paper is None:
        text = _with_reproduction(args.paths, tables, runs, fmt, text)
    _emit(text, fmt, targets, [(t, fig) for t in targets if t.flag == "--plot"])
    return 1 if failed else 0    # the CLI's convention: 1 = the command ran, some runs failed


def _with_reproduction(paths: list[str], tables: list, runs: list, fmt: str, text: str | None) -> str | None:
    """An experiment made by ``reproduce``: its comparison with the paper after (json: beside) the tables."""
    from infomin_det.report import reproduction
    from infomin_det.report.runs import resolve_path

    records = [(p, reproduction.read_record(resolve_path(p))) for p in paths if resolve_path(p).is_dir()]
    records = [(p, r) for p, r in records if r is not None]
    if not records:
        return text
    if len(paths) != 1:
        raise UserError(f"{records[0][0]} is a reproduction of {records[0][1]['table']}, given with other paths",
                        "report a reproduction on its own (one experiment directory)")
    comps = reproduction.compare(records[0][1], tables, runs)
    if fmt == "terminal":
        sys.stdout.write(reproduction.to_text(comps))
        return text
    if fmt == "markdown":
        return text + reproduction.to_text(comps)
    if fmt == "json":
        import json

        doc = json.loads(text)
        doc["reproduction"] = reproduction.to_dict(comps)
        return json.dumps(doc, indent=1) + "\n"
    print(f"note: the comparison with the paper's {records[0][1]['table']} is printed in the terminal, markdown "
          "and json formats only", file=sys.stderr)
    return text


def _format(args: argparse.Namespace) -> str:
    from infomin_det.report.render import RENDERERS, format_of_suffix

    if args.out is None:
        return args.format or "terminal"
    guess = format_of_suffix(Path(args.out).suffix)
    if args.format == "terminal" or (args.format is None and guess is None):
        raise UserError(f"--out {args.out}: a file needs a file format",
                        f"add --format {{{','.join(RENDERERS)}}} or name the file "
                        f"{'/'.join(f.suffix for f in RENDERERS.values())}")
    if args.format and guess and args.format != guess:
        raise UserError(f"--format {args.format} but --out {args.out} is named like {guess}",
                        f"drop --format, or name the file {RENDERERS[args.format].suffix}")
    return args.format or guess


def _emit(text: str | None, fmt: str, targets: list, plots: list) -> int:
    from infomin_det.report import outputs

    items = []
    for t in targets:
        if t.flag == "--out":
            items.append((t, lambda tmp, text=text: tmp.write_text(text, encoding="utf-8")))
    for t, fig in plots:
        from infomin_det.report import plot

        fmt_ = plot.check_suffix(t.path)
        items.append((t, lambda tmp, fig=fig, fmt_=fmt_: plot.write(fig, tmp, fmt_)))
    if text is not None and not any(t.flag == "--out" for t in targets):
        sys.stdout.write(text)
    try:
        outputs.write_all(items)
    finally:
        if plots:
            import matplotlib.pyplot as plt

            for _, fig in plots:
                plt.close(fig)
    for t, _ in items:
        print(f"wrote {t.given}", file=sys.stderr)
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
    caption = f"{spec['caption']} | dataset: ImageNet-1K (paper)"
    if fmt == "json":
        return json.dumps({"table": table, "caption": spec["caption"], "dataset": "ImageNet-1K (paper)",
                           "rows": spec["rows"]}, indent=1) + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows([cols] + rows)
        return buf.getvalue()
    if fmt == "latex":
        body = [" & ".join(c.replace("_", r"\_") for c in r) + r" \\" for r in [cols] + rows]
        return "\n".join([f"% {table}: {caption}", "\\begin{tabular}{" + "l" * len(cols) + "}",
                          *body, "\\end{tabular}"]) + "\n"
    widths = [max(len(r[i]) for r in [cols] + rows) for i in range(len(cols))]
    lines = [f"{table}: {caption}", ""] if fmt == "terminal" else [f"### {table}: {caption}", ""]
    for k, r in enumerate([cols] + rows):
        lines.append("| " + " | ".join(v.ljust(w) for v, w in zip(r, widths)) + " |")
        if k == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines) + "\n"
