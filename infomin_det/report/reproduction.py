"""An experiment made by ``infomin-det reproduce``, set against the paper: per panel and cell our mean
± std over seeds, the paper's number, and the difference (ours - paper), plus the planned runs that
are not done yet.

``reproduction.json`` (written by :mod:`infomin_det.launch.reproduce_cli` next to the experiment's
runs) says which table the experiment reproduces and which (protocol, row, seeds) it planned. Only
runs of the paper's protocol on the paper's dataset, unmodified, are compared; other tables of the
same protocol are named as not comparable, with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infomin_det.errors import UserError
from infomin_det.report import paper
from infomin_det.report.aggregate import Stat, Table, rounded_gap
from infomin_det.report.render import fmt_gap, fmt_value
from infomin_det.report.runs import DONE, Run

REPRODUCTION_FILE = "reproduction.json"


@dataclass
class Cell:
    ours: Stat | None
    paper: float | None

    @property
    def diff(self) -> float | None:
        if self.ours is None or self.ours.mean is None or self.paper is None:
            return None
        return rounded_gap(self.ours.mean - self.paper)


@dataclass
class CompRow:
    label: str
    n: int                      # our seeds averaged (0: no run of ours)
    cells: dict[str, Cell]
    in_paper: bool


@dataclass
class PanelComparison:
    panel: str
    protocol: str
    caption: str
    metrics: tuple[str, ...]
    rows: list[CompRow] = field(default_factory=list)
    not_comparable: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


def read_record(experiment_dir: Path) -> dict[str, Any] | None:
    """``reproduction.json`` of ``experiment_dir`` (None when there is none); UserError if malformed."""
    from infomin_det.untrusted import read_json

    path = experiment_dir / REPRODUCTION_FILE
    if not path.is_file():
        return None
    rec = read_json(path, "reproduction record")
    ok = (isinstance(rec, dict) and isinstance(rec.get("table"), str) and isinstance(rec.get("runs"), list)
          and all(isinstance(r, dict) and isinstance(r.get("protocol"), str) and isinstance(r.get("weights_name"), str)
                  and isinstance(r.get("seeds"), list) and all(type(s) is int for s in r["seeds"]) for r in rec["runs"]))
    if not ok:
        raise UserError(f"{path} is not a reproduction record (table, runs[protocol, weights_name, seeds])",
                        "rewrite it with the same `infomin-det reproduce` command (add --dry-run to check), or move it away")
    return rec


def compare(record: dict[str, Any], tables: list[Table], runs: list[Run]) -> list[PanelComparison]:
    out = []
    for panel in paper.select(record["table"]):
        comp = PanelComparison(panel.id, panel.protocol, panel.caption, panel.metrics)
        mine = [t for t in tables if t.protocol == panel.protocol and t.rows]
        good = [t for t in mine if t.paper_dataset and not t.modified]
        for t in mine:
            if t not in good:
                why = f"modified: {', '.join(t.modified)}" if t.modified else f"dataset: {t.dataset}"
                comp.not_comparable.append(f"{', '.join(r.label for r in t.rows)} ({why})")
        # the paper's batch first; a row at another batch (fewer GPUs, linear scaling) is its own, marked row
        for t in sorted(good, key=lambda t: t.batch or 0):
            ours = {paper.normalise(r.label): r for r in t.rows}
            mark = f" (batch {t.batch})" if t.batch else ""
            seen = set()
            for prow in panel.rows:
                r = ours.get(paper.normalise(prow.key)) or ours.get(paper.normalise(prow.name))
                if r is None and (mark or any(x.label == prow.key for x in comp.rows)):
                    continue
                if r is not None:
                    seen.add(id(r))
                comp.rows.append(CompRow(prow.key + mark, r.n if r else 0,
                                         {m: Cell(r.stats.get(m) if r else None, prow.values.get(m))
                                          for m in panel.metrics}, True))
            for r in ours.values():
                if id(r) not in seen:
                    comp.rows.append(CompRow(r.label + mark, r.n, {m: Cell(r.stats.get(m), None) for m in panel.metrics},
                                             False))
        if not good:
            comp.rows = [CompRow(p.key, 0, {m: Cell(None, p.values.get(m)) for m in panel.metrics}, True)
                         for p in panel.rows]
        comp.missing = _missing(record, panel.protocol, runs)
        out.append(comp)
    return out


def _missing(record: dict[str, Any], protocol: str, runs: list[Run]) -> list[str]:
    by = {(r.protocol, r.weights, r.seed): r for r in runs}
    out = []
    for planned in record["runs"]:
        if planned["protocol"] != protocol:
            continue
        for seed in planned["seeds"]:
            r = by.get((protocol, planned["weights_name"], seed))
            if r is None or r.status != DONE:
                state = "not started" if r is None else r.status
                out.append(f"{planned['weights_name']}/seed{seed}: {state}")
    return out


def to_text(comps: list[PanelComparison]) -> str:
    """Markdown tables, one per panel: ``ours / paper (diff)`` per cell."""
    lines = []
    for c in comps:
        lines += ["", f"### {c.panel} ({c.protocol}): ours / paper (ours - paper) -- {c.caption}", ""]
        head = ["row", "n", *c.metrics]
        body = []
        for r in c.rows:
            cells = []
            for m in c.metrics:
                cell = r.cells[m]
                ours = fmt_value(cell.ours) if r.n else "-"
                theirs = "-" if cell.paper is None else f"{cell.paper:.1f}"
                cells.append(f"{ours} / {theirs}" + (f" ({fmt_gap(cell.diff, '+', '-').strip('()')})"
                                                      if cell.diff is not None else ""))
            body.append([r.label + ("" if r.in_paper else " (not in the paper)"), str(r.n), *cells])
        widths = [max(len(x) for x in col) for col in zip(head, *body)]
        for k, row in enumerate([head, *body]):
            lines.append("| " + " | ".join(v.ljust(w) for v, w in zip(row, widths)) + " |")
            if k == 0:
                lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
        lines.append("")
        for item in c.not_comparable:
            lines.append(f"not comparable with the paper: {item}")
        if c.missing:
            lines.append(f"missing ({len(c.missing)} runs): {'; '.join(c.missing)}")
        else:
            lines.append("every planned run is done")
    return "\n".join(lines) + "\n"


def to_dict(comps: list[PanelComparison]) -> list[dict[str, Any]]:
    def stat(s: Stat | None) -> dict | None:
        if s is None:
            return None
        r = lambda x: None if x is None else round(x, 4)  # noqa: E731
        return {"mean": r(s.mean), "std": r(s.std), "n": s.n}

    return [{"panel": c.panel, "protocol": c.protocol, "caption": c.caption, "metrics": list(c.metrics),
             "rows": [{"row": r.label, "in_paper": r.in_paper, "n": r.n,
                       "cells": {m: {"ours": stat(x.ours) if r.n else None, "paper": x.paper, "diff": x.diff}
                                 for m, x in r.cells.items()}} for r in c.rows],
             "not_comparable": c.not_comparable, "missing": c.missing} for c in comps]
