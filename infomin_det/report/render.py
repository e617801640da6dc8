"""Rendering tables (from :mod:`aggregate`) as text: a registry of formats, one function each.

``RENDERERS[name](tables) -> str`` for ``markdown``, ``latex``, ``csv``, ``json``; the terminal
format is :func:`print_terminal` (rich, colours). Cells read like the paper: ``40.6 (↑0.9)``, with
``±std`` when a row averages several seeds; gaps with ``|gap| > 0.5`` are highlighted (green up,
red down; bold in markdown, ``\\textcolor`` in LaTeX). Numbers are rounded only here.
"""

from __future__ import annotations

import csv
import io
import json
import math
from typing import Callable

from infomin_det.report.aggregate import Row, Stat, Table, highlighted, rounded_gap

UP, DOWN = "↑", "↓"


def fmt_value(s: Stat | None) -> str:
    if s is None:
        return "-"
    if math.isnan(s.mean):
        return "nan"
    return f"{s.mean:.1f}" + (f"±{s.std:.1f}" if s.std is not None else "")


def fmt_gap(gap: float | None, up: str = UP, down: str = DOWN) -> str:
    g = rounded_gap(gap)
    if g is None:
        return ""
    return f"({up if g > 0 else down if g < 0 else '='}{abs(g):.1f})"


def cell(row: Row, metric: str, up: str = UP, down: str = DOWN) -> str:
    gap = fmt_gap(row.gaps.get(metric), up, down)
    return fmt_value(row.stats.get(metric)) + (f" {gap}" if gap else "")


def row_label(row: Row) -> str:
    return row.weights + (" [baseline]" if row.is_baseline and row.source == "runs" else "")


def row_n(row: Row) -> str:
    return row.source if row.source != "runs" else str(row.n)


def title(t: Table) -> str:
    if t.title:
        return t.title
    return t.protocol + (f" [{t.dataset}]" if t.dataset else "") + (
        f" -- gaps to {t.baseline}" if t.baseline else "")


def header(t: Table) -> list[str]:
    return ["weights", "n"] + t.metrics


def notes(t: Table) -> list[str]:
    out = list(t.notes)
    out += [f"{r.status}: {r.path} ({r.reason})" for r in t.not_averaged]
    return out


def to_markdown(tables: list[Table]) -> str:
    parts = []
    for t in tables:
        lines = [f"### {title(t)}", ""]
        if t.rows:
            lines += ["| " + " | ".join(header(t)) + " |", "|" + "---|" * len(header(t))]
            for r in t.rows:
                cells = [(f"**{cell(r, m)}**" if highlighted(r.gaps.get(m)) else cell(r, m)) for m in t.metrics]
                lines.append("| " + " | ".join([row_label(r), row_n(r)] + cells) + " |")
        lines += [f"- {n}" for n in notes(t)]
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def _tex(s: str) -> str:
    return s.replace("\\", r"\textbackslash{}").replace("_", r"\_").replace("%", r"\%").replace("&", r"\&").replace("#", r"\#")


def to_latex(tables: list[Table]) -> str:
    parts = ["% needs \\usepackage{xcolor}; gaps with |gap| > 0.5 AP coloured as in the paper"]
    for t in tables:
        if not t.rows:
            continue
        cols = "l" + "c" * (len(t.metrics) + 1)
        lines = [f"% {_tex(title(t))}", f"\\begin{{tabular}}{{{cols}}}", "\\hline",
                 " & ".join(_tex(h) for h in header(t)) + r" \\", "\\hline"]
        for r in t.rows:
            cells = []
            for m in t.metrics:
                c = _tex(cell(r, m, "\x01", "\x02")).replace("\x01", r"$\uparrow$").replace(
                    "\x02", r"$\downarrow$").replace("±", r"$\pm$")
                if highlighted(r.gaps.get(m)):
                    colour = "green!50!black" if r.gaps[m] > 0 else "red"
                    c = f"\\textcolor{{{colour}}}{{{c}}}"
                cells.append(c)
            lines.append(" & ".join([_tex(row_label(r)), _tex(row_n(r))] + cells) + r" \\")
        lines += ["\\hline", "\\end{tabular}"]
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


CSV_FIELDS = ["protocol", "dataset", "weights", "source", "n", "seeds", "baseline", "metric",
              "mean", "std", "gap"]


def to_csv(tables: list[Table]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_FIELDS)
    for t in tables:
        for r in t.rows:
            for m in t.metrics:
                s = r.stats.get(m)
                gap = r.gaps.get(m)
                w.writerow([t.protocol, t.dataset, r.weights, r.source, r.n if r.source == "runs" else "",
                            " ".join(str(x) for x in r.seeds), t.baseline or "", m,
                            "" if s is None else repr(s.mean), "" if s is None or s.std is None else repr(s.std),
                            "" if gap is None else repr(gap)])
    return buf.getvalue()


def table_dict(t: Table) -> dict:
    return {
        "protocol": t.protocol, "dataset": t.dataset, "metrics": t.metrics, "baseline": t.baseline,
        "notes": t.notes, "title": t.title,
        "rows": [{"weights": r.weights, "source": r.source, "is_baseline": r.is_baseline, "seeds": r.seeds,
                  "n": r.n,
                  "stats": {m: {"mean": _num(s.mean), "std": _num(s.std), "n": s.n} for m, s in r.stats.items()},
                  "gaps": {m: _num(g) for m, g in r.gaps.items()}} for r in t.rows],
        "not_averaged": [{"path": str(r.path), "status": r.status, "reason": r.reason} for r in t.not_averaged],
    }


def _num(x: float | None) -> float | None:
    return None if x is None or math.isnan(x) else x


def to_json(tables: list[Table]) -> str:
    return json.dumps({"tables": [table_dict(t) for t in tables]}, indent=1) + "\n"


RENDERERS: dict[str, Callable[[list[Table]], str]] = {
    "markdown": to_markdown, "latex": to_latex, "csv": to_csv, "json": to_json,
}
SUFFIXES = {".md": "markdown", ".tex": "latex", ".csv": "csv", ".json": "json"}


def print_terminal(tables: list[Table], console=None) -> None:
    """Rich tables on the terminal; highlighted gaps green (up) / red (down)."""
    from rich.console import Console
    from rich.table import Table as RichTable
    from rich.text import Text

    if console is None:
        console = Console()
        if not console.is_terminal:  # piped: never truncate cells to an assumed 80 columns
            console = Console(width=200)
    for t in tables:
        if t.rows:
            rt = RichTable(title=title(t), title_justify="left")
            for h in header(t):
                rt.add_column(h, justify="left" if h == "weights" else "right", no_wrap=True)
            for r in t.rows:
                cells = []
                for m in t.metrics:
                    style = ("green" if r.gaps[m] > 0 else "red") if highlighted(r.gaps.get(m)) else ""
                    cells.append(Text(cell(r, m), style=style))
                rt.add_row(Text(row_label(r), style="bold" if r.is_baseline else ""), row_n(r), *cells)
            console.print(rt)
        else:
            console.print(f"[bold]{title(t)}[/bold]: no finished runs")
        for n in notes(t):
            console.print(Text(f"  {n}", style="yellow"))
