"""Rendering tables (from :mod:`aggregate`) as text: a registry of formats, one function each.

:data:`RENDERERS` (an :class:`~infomin_det.registry.Registry` of :class:`Format`: name, file suffix,
``render(tables) -> str``) holds ``markdown``, ``latex``, ``csv``, ``json``; ``report --format`` and
``--out``'s suffix come from it (docs/extending.md: adding a format). The terminal format is
:func:`print_terminal` (rich, colours). Cells read like the paper: ``40.6 (↑0.9)``, with
``±std`` when a row averages several seeds; gaps with ``|gap| > 0.5`` are highlighted (green up,
red down; bold in markdown, ``\\textcolor`` in LaTeX); ``n/a`` where a seed has NaN (the table's
notes say why). Every format carries the table's title (protocol, modifications, dataset, test set)
and its notes. Numbers are rounded only here.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from dataclasses import dataclass
from typing import Callable

from infomin_det.registry import Registry
from infomin_det.report import paper
from infomin_det.report.aggregate import Row, Stat, Table, highlighted, rounded_gap, title_of

UP, DOWN = "↑", "↓"


def fmt_value(s: Stat | None) -> str:
    if s is None:
        return "-"
    if s.mean is None:
        return "n/a"
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
    return row.label + (" (baseline)" if row.is_baseline and row.source == "runs" else "")


def row_n(row: Row) -> str:
    """Seeds averaged; ``-`` for the paper's rows (one printed value, no seeds)."""
    return str(row.n) if row.source == "runs" else "-"


def row_source(row: Row) -> str:
    """Where the numbers come from: ``ours`` (runs) or ``paper T3a``."""
    return "ours" if row.source == "runs" else row.source


def header(t: Table) -> list[str]:
    return ["weights", "source", "n"] + t.metrics


def notes(t: Table) -> list[str]:
    out = list(t.notes)
    out += [f"{r.status}: {r.path} ({r.reason.removeprefix(f'{r.path}: ')})" for r in t.not_averaged]
    return out


def one_line(s: str) -> str:
    """Text from run records on one line (a newline in a dataset id must not break a table or comment)."""
    return " ".join(str(s).split())


def _md(s: str) -> str:
    return one_line(s).replace("|", "\\|")  # inside a table row only


def to_markdown(tables: list[Table]) -> str:
    parts = []
    for t in tables:
        lines = [f"### {one_line(title_of(t))}", ""]
        if t.rows:
            lines += ["| " + " | ".join(header(t)) + " |", "|" + "---|" * len(header(t))]
            for r in t.rows:
                cells = [(f"**{cell(r, m)}**" if highlighted(r.gaps.get(m)) else cell(r, m)) for m in t.metrics]
                lines.append("| " + " | ".join([_md(row_label(r)), row_source(r), row_n(r)] + cells) + " |")
        else:
            lines.append("no finished runs")
        lines += [f"- {one_line(n)}" for n in notes(t)]
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


_TEX = {"\\": r"\textbackslash{}", "_": r"\_", "%": r"\%", "&": r"\&", "#": r"\#", "{": r"\{", "}": r"\}",
        "$": r"\$", "^": r"\^{}", "~": r"\~{}"}


def _tex(s: str) -> str:
    return "".join(_TEX.get(c, c) for c in one_line(s))


_TEX_TASK = {"bbox": "bb", "segm": "mk"}
_TEX_SIZE = {"s": "S", "m": "M", "l": "L"}


def tex_metric(metric: str) -> str:
    r"""Column head as the paper prints it: ``bbox/AP50`` -> ``AP$^\mathrm{bb}_{50}$``, ``AP`` -> ``AP``."""
    task, _, name = metric.rpartition("/")
    if not name.startswith("AP") or (task and task not in _TEX_TASK):
        return _tex(metric)
    sub = name[2:]
    sub = _TEX_SIZE.get(sub, sub)
    if not (sub == "" or sub.isdigit() or sub in _TEX_SIZE.values()):
        return _tex(metric)
    sup = f"^\\mathrm{{{_TEX_TASK[task]}}}" if task else ""
    return "AP" + (f"${sup}" + (f"_{{{sub}}}" if sub else "") + "$" if sup or sub else "")


def tex_label(t: Table, taken: set[str]) -> str:
    """``tab:infomin-det:T3a`` when the table stands for one panel of the paper, else from the
    protocol; ``-2``, ``-3`` ... when a document holds more than one table of that name."""
    panels = paper.panels_of(t.protocol, (r.source for r in t.rows))
    base = "tab:infomin-det:" + (panels[0].id if len(panels) == 1 else re.sub(r"[^A-Za-z0-9]+", "-", t.protocol))
    label, k = base, 1
    while label in taken:
        k += 1
        label = f"{base}-{k}"
    taken.add(label)
    return label


def tex_caption(t: Table) -> str:
    """The paper's name for the table and its full title: ``Table 3(a) of the paper (Mask R-CNN,
    R50-FPN, 1x schedule), ours: coco/R50-FPN-1x; dataset: ...``; the paper's own numbers say so."""
    panels = paper.panels_of(t.protocol, (r.source for r in t.rows))
    title = title_of(t).replace(" | ", "; ")
    if not panels:
        return _tex(title + ".")
    named = " / ".join(paper.printed_name(p.id) for p in panels)
    if all(r.source != "runs" for r in t.rows):
        return _tex(f"{named} of the paper, as printed: {title.split(': ', 1)[-1]}.")
    return _tex(f"Our runs as {named} of the paper ({panels[0].caption}): {title}.")


def _tex_cell(row: Row, metric: str) -> str:
    r"""``40.6{\scriptsize$\pm$0.2} \textcolor{...}{($\uparrow$0.9)}``: the value a plain decimal, the gap in colour
    when ``|gap| > 0.5`` (green up, red down), as the paper prints it."""
    value = fmt_value(row.stats.get(metric))
    if "±" in value:
        mean, std = value.split("±")
        value = f"{mean}{{\\scriptsize$\\pm${std}}}"
    gap = fmt_gap(row.gaps.get(metric), r"$\uparrow$", r"$\downarrow$")
    if gap and highlighted(row.gaps.get(metric)):
        gap = f"\\textcolor{{{'green!50!black' if row.gaps[metric] > 0 else 'red'}}}{{{gap}}}"
    return value + (f" {gap}" if gap else "")


# scales the tabular down to the text width only when it is wider (\width: its natural width)
FIT_TO_LINE = "\\resizebox{\\ifdim\\width>\\linewidth\\linewidth\\else\\width\\fi}{!}{%"


def to_latex(tables: list[Table]) -> str:
    r"""One ``table`` float per table: booktabs rules, a caption naming the paper's table and the
    full title, a label to ``\ref``; notes as comments under it. Preamble: booktabs, xcolor, graphicx."""
    parts = ["% infomin-det report: needs \\usepackage{booktabs}, \\usepackage{xcolor} and \\usepackage{graphicx}\n"
             "% in the preamble; gaps with |gap| > 0.5 AP coloured as in the paper (green up, red down);\n"
             "% a table wider than the text is scaled down to \\linewidth, a narrower one is left as it is"]
    taken: set[str] = set()
    for t in tables:
        if not t.rows:
            parts.append(f"% {_tex(title_of(t))}: no finished runs" + "".join(f"\n% {_tex(n)}" for n in notes(t)))
            continue
        heads = ["weights", "source", "$n$"] + [tex_metric(m) for m in t.metrics]
        lines = ["\\begin{table}[t]", "\\centering", "\\small", "\\setlength{\\tabcolsep}{4pt}",
                 f"\\caption{{{tex_caption(t)}}}", f"\\label{{{tex_label(t, taken)}}}", FIT_TO_LINE,
                 f"\\begin{{tabular}}{{llr{'l' * len(t.metrics)}}}", "\\toprule", " & ".join(heads) + r" \\", "\\midrule"]
        for r in t.rows:
            cells = [_tex(row_label(r)), _tex(row_source(r)), _tex(row_n(r))] + [_tex_cell(r, m) for m in t.metrics]
            lines.append(" & ".join(cells) + r" \\")
            if r.is_baseline and r is not t.rows[-1]:
                lines.append("\\midrule")
        lines += ["\\bottomrule", "\\end{tabular}}", "\\end{table}"] + [f"% {_tex(n)}" for n in notes(t)]
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


CSV_FIELDS = ["protocol", "modified", "dataset", "paper_dataset", "eval_set", "weights", "variant", "family",
              "label", "source", "n", "seeds", "baseline", "metric", "mean", "std", "gap", "note"]


def to_csv(tables: list[Table]) -> str:
    """Long form: one line per (table, row, metric), numbers to ``DECIMALS`` places (no binary float
    noise such as -6.900000000000006); ``note`` says why a value is missing. Schema: docs/report.md."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_FIELDS)
    for t in tables:
        head = [t.protocol, "; ".join(t.modified), t.dataset, _flag(t.paper_dataset), t.eval_set]
        for r in t.rows:
            for m in t.metrics:
                s = r.stats.get(m)
                gap = r.gaps.get(m)
                note = (s.why if s is not None else "missing") if s is None or s.mean is None else (
                    r.no_gap if r.no_gap and not r.is_baseline else "")
                w.writerow(head + [r.weights, r.variant, r.family, r.label, r.source,
                                   r.n if r.source == "runs" else "", " ".join(str(x) for x in r.seeds),
                                   t.baseline or "", m, _csv(s.mean if s else None), _csv(s.std if s else None),
                                   _csv(gap), note])
        for run in t.not_averaged:
            w.writerow(head + [run.weights, run.variant, run.family, "", "runs", "", "" if run.seed is None else run.seed,
                               t.baseline or "", "", "", "", "", f"{run.status}: {run.reason}"])
    return buf.getvalue()


DECIMALS = 6      # AP in percent: 1e-6 is far below anything printed, and above float noise


def _round(x: float | None) -> float | None:
    return None if x is None or math.isnan(x) else round(x, DECIMALS) + 0.0   # + 0.0: no -0.0


def _csv(x: float | None) -> str:
    r = _round(x)
    return "" if r is None else repr(r)


def _flag(x: bool | None) -> str:
    return "" if x is None else str(x).lower()


def table_dict(t: Table) -> dict:
    return {
        "protocol": t.protocol, "modified": list(t.modified), "dataset": t.dataset,
        "paper_dataset": t.paper_dataset, "eval_set": t.eval_set, "batch": t.batch, "metrics": t.metrics,
        "baseline": t.baseline, "notes": t.notes, "title": title_of(t),
        "rows": [{"weights": r.weights, "variant": r.variant, "family": r.family, "label": r.label,
                  "source": r.source, "is_baseline": r.is_baseline, "seeds": r.seeds, "n": r.n, "no_gap": r.no_gap,
                  "stats": {m: {"mean": _num(s.mean), "std": _num(s.std), "n": s.n, "why": s.why}
                            for m, s in r.stats.items()},
                  "gaps": {m: _num(g) for m, g in r.gaps.items()}} for r in t.rows],
        "not_averaged": [{"path": str(r.path), "status": r.status, "reason": r.reason} for r in t.not_averaged],
    }


def _num(x: float | None) -> float | None:
    return _round(x)


def to_json(tables: list[Table]) -> str:
    return json.dumps({"tables": [table_dict(t) for t in tables]}, indent=1) + "\n"


@dataclass(frozen=True)
class Format:
    """A report format: ``--format name``, the suffix of ``--out`` files that imply it, the renderer."""

    name: str
    suffix: str
    render: Callable[[list[Table]], str]


RENDERERS: Registry[Format] = Registry("report format")
for _f in (Format("markdown", ".md", to_markdown), Format("latex", ".tex", to_latex), Format("csv", ".csv", to_csv),
           Format("json", ".json", to_json)):
    RENDERERS.register(_f.name, _f)


def format_of_suffix(suffix: str) -> str | None:
    """The format an ``--out`` file named ``*.suffix`` is written in (None: no format has it)."""
    return next((f.name for f in RENDERERS.values() if f.suffix == suffix.lower()), None)


def print_terminal(tables: list[Table], console=None) -> None:
    """Rich tables on the terminal; highlighted gaps green (up) / red (down)."""
    from rich.table import Table as RichTable
    from rich.text import Text

    from infomin_det.console import stdout_console

    console = console or stdout_console()
    for t in tables:
        if t.rows:
            rt = RichTable(title=Text(title_of(t)), title_justify="left")
            for h in header(t):
                rt.add_column(h, justify="left" if h in ("weights", "source") else "right", no_wrap=True)
            for r in t.rows:
                cells = []
                for m in t.metrics:
                    style = ("green" if r.gaps[m] > 0 else "red") if highlighted(r.gaps.get(m)) else ""
                    cells.append(Text(cell(r, m), style=style))
                rt.add_row(Text(row_label(r), style="bold" if r.is_baseline else ""), row_source(r), row_n(r), *cells)
            console.print(rt)
        else:
            console.print(Text(f"{title_of(t)}: no finished runs", style="bold"))
        for n in notes(t):
            console.print(Text(f"  {n}", style="yellow"))
