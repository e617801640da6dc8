"""From runs to tables: seeds averaged per (protocol, dataset, weights), gaps to a baseline row.

Pure data, no rendering. A :class:`Table` is one protocol (one evaluation dataset); its rows are
weights with mean / std / n per metric (std is the sample std, None for n = 1); ``gaps[metric]`` is
``row mean - baseline mean`` in AP points (None for the baseline row, or when no baseline was asked).
Only ``done`` runs are averaged; the others are listed in ``Table.not_averaged``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from infomin_det.errors import UserError
from infomin_det.report import paper
from infomin_det.report.runs import DONE, Run

COCO_METRICS = ("AP", "AP50", "AP75")
SIZE_METRICS = ("APs", "APm", "APl")
VOC_METRICS = ("AP50", "AP", "AP75")  # the paper's column order for VOC
HIGHLIGHT = 0.5  # |gap| > 0.5 AP is highlighted, as in the paper


@dataclass
class Stat:
    """Mean / sample std (None when n = 1) / n of one metric over seeds, in percent. NaN propagates."""

    mean: float
    std: float | None
    n: int

    @classmethod
    def of(cls, values: list[float]) -> "Stat":
        n = len(values)
        mean = math.fsum(values) / n
        std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else None
        return cls(mean, std, n)


@dataclass
class Row:
    """One weights row. source: ``runs`` or ``paper T3a``. seeds: the seeds averaged (None = unknown)."""

    weights: str
    stats: dict[str, Stat]
    seeds: list[int | None] = field(default_factory=list)
    source: str = "runs"
    is_baseline: bool = False
    gaps: dict[str, float | None] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.seeds)


@dataclass
class Table:
    """One protocol's table. ``notes``: what the reader must know (missing baseline row, repeated
    seeds, the paper's own inconsistencies) -- printed under the table, never dropped."""

    protocol: str
    dataset: str
    metrics: list[str]
    rows: list[Row]
    baseline: str | None = None
    notes: list[str] = field(default_factory=list)
    title: str = ""
    not_averaged: list[Run] = field(default_factory=list)


def rounded_gap(gap: float | None) -> float | None:
    """The gap as printed (one decimal); highlight when ``abs(rounded_gap) > 0.5``."""
    return None if gap is None or math.isnan(gap) else round(gap + 0.0, 1) + 0.0


def highlighted(gap: float | None) -> bool:
    g = rounded_gap(gap)
    return g is not None and abs(g) > HIGHLIGHT


def metric_columns(protocol: str, present: set[str], sizes: bool = False) -> list[str]:
    """``bbox/AP ... segm/AP75`` (COCO, segm when present), ``bbox/AP50, AP, AP75`` (VOC)."""
    if protocol.startswith("voc/"):
        return [f"bbox/{m}" for m in VOC_METRICS]
    names = COCO_METRICS + (SIZE_METRICS if sizes else ())
    return [f"{t}/{m}" for t in ("bbox", "segm") if any(k.startswith(t + "/") for k in present)
            for m in names]


def build_tables(runs: list[Run], baseline: str | None = None, sizes: bool = False,
                 protocols: list[str] | None = None, single: bool = False) -> list[Table]:
    """One table per (protocol, dataset) of ``runs``; gaps to ``baseline`` (a row name or ``paper:NAME``).

    single: the caller wants exactly one table (``tools/ap_table.py``): runs of several protocols
    are refused rather than mixed. UserError also for a ``--protocol`` that no run has and for a
    baseline that names no row in any table (the message lists the row names there are).
    """
    known = sorted({r.protocol for r in runs if r.protocol})
    if protocols:
        missing = [p for p in protocols if p not in known]
        if missing:
            raise UserError(f"no runs of protocol {', '.join(missing)}",
                            f"protocols found: {', '.join(known) or 'none'}")
        runs = [r for r in runs if r.protocol in protocols]
    groups: dict[tuple[str, str], dict[str, list[Run]]] = {}
    for r in runs:
        if r.status != DONE:
            continue
        for dataset in r.metrics:
            groups.setdefault((r.protocol, dataset), {}).setdefault(r.weights, []).append(r)
    tables = []
    for (protocol, dataset), by_weights in sorted(groups.items()):
        rows = [_row(w, rs, dataset) for w, rs in sorted(by_weights.items())]
        present = {m for row in rows for m in row.stats}
        t = Table(protocol, dataset, metric_columns(protocol, present, sizes), rows)
        for row in rows:
            known_seeds = [s for s in row.seeds if s is not None]
            if len(known_seeds) != len(set(known_seeds)):
                t.notes.append(f"{row.weights}: seeds {known_seeds} repeat -- the same run given twice, "
                               "or runs of several experiments averaged together?")
        t.not_averaged = [r for r in runs if r.protocol == protocol and r.status != DONE]
        tables.append(t)
    seen = {t.protocol for t in tables}
    for p in sorted({r.protocol for r in runs if r.status != DONE and r.protocol} - seen):
        tables.append(Table(p, "", [], [], not_averaged=[r for r in runs if r.protocol == p and r.status != DONE]))
    if single and len(tables) > 1:
        names = [t.protocol + (f" [{t.dataset}]" if t.dataset else "") for t in tables]
        raise UserError(f"runs of {len(names)} protocols ({', '.join(names)}) asked into one table",
                        "pick one with --protocol, or use `infomin-det report` (one table per protocol)")
    if baseline:
        _apply_baseline(tables, baseline)
    return tables


def _row(weights: str, runs: list[Run], dataset: str) -> Row:
    metrics = sorted({m for r in runs for m in r.metrics[dataset]})
    stats = {m: Stat.of([r.metrics[dataset].get(m, math.nan) for r in runs]) for m in metrics}
    return Row(weights, stats, seeds=sorted((r.seed for r in runs), key=lambda s: (s is None, s or 0)))




def _apply_baseline(tables: list[Table], baseline: str) -> None:
    if baseline.startswith("paper:"):
        name = baseline[len("paper:"):]
        for t in tables:
            if not t.rows:
                continue
            panel, prow = paper.paper_row(t.protocol, name)
            base = Row(f"{prow.name} (paper {panel.id})", {m: Stat(v, None, 0) for m, v in prow.values.items()},
                       source=f"paper {panel.id}", is_baseline=True)
            t.rows.insert(0, base)
            _gaps(t, base)
            t.baseline = base.weights
        return
    want = paper.normalise(baseline)
    hits = 0
    for t in tables:
        base = next((r for r in t.rows if paper.normalise(r.weights) == want), None)
        if base is None:
            t.notes.append(f"no row {baseline!r} under {t.protocol}: no gaps")
            continue
        hits += 1
        t.rows.remove(base)
        t.rows.insert(0, base)  # first, as in the paper
        base.is_baseline = True
        t.baseline = base.weights
        _gaps(t, base)
    if not hits:
        names = sorted({r.weights for t in tables for r in t.rows})
        raise UserError(f"baseline {baseline!r} is not a row of any table",
                        f"use one of: {', '.join(names) or '(no finished runs)'}; or paper:<row> "
                        "(e.g. paper:supervised) to compare against the paper")


def _gaps(t: Table, base: Row) -> None:
    for row in t.rows:
        if row is base:
            continue
        row.gaps = {m: (row.stats[m].mean - base.stats[m].mean) if m in row.stats and m in base.stats
                    else None for m in t.metrics}


def paper_tables(table_id: str) -> list[Table]:
    """The paper's own table (``T8`` -> panels a, b, c) in the same form, with its gaps recomputed."""
    out = []
    for p in paper.select(table_id):
        rows = [Row(r.name, {m: Stat(v, None, 0) for m, v in r.values.items()}, source=f"paper {p.id}")
                for r in p.rows]
        t = Table(p.protocol, "", list(p.metrics), rows)
        t.title = f"{p.id}: {p.caption} [{p.protocol}]"
        base = next((r for r in rows if paper.normalise(r.weights) == p.baseline), None)
        if base is not None:
            base.is_baseline, t.baseline = True, base.weights
            _gaps(t, base)
        t.notes += [
            f"the paper prints {i['row']} {i['metric']} gap {i['printed_gap']:+.1f}, its values give "
            f"{i['values_gap']:+.1f}" for i in paper.data()["inconsistencies"] if i["panel"] == p.id]
        out.append(t)
    return out
