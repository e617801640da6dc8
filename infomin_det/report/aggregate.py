"""From runs to tables: seeds averaged per table and row, gaps to a baseline row.

Pure data, no rendering. A :class:`Table` holds the runs of one protocol, modified the same way
(config.yaml's deviations from the protocol), on one dataset, evaluated on one test set; its rows
are (weights name, variant, family) -- never merged across any of these -- with mean / std / n per
metric (std is the sample std, None for n = 1). ``gaps[metric]`` is ``row mean - baseline mean`` in
AP points (None for the baseline row, when no baseline was asked, or when there is no mean).

NaN (Detectron2: no predictions; APs/APm/APl also: no ground truth of that size) is never averaged
or compared: a metric with NaN (or missing) in any seed has no mean (``Stat.why`` says which seeds),
hence no gap; a row whose main AP (``bbox/AP``) is NaN in any seed yields no gap at all
(``Row.no_gap``). Only ``done`` runs are averaged; the others are listed in ``Table.not_averaged``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from infomin_det.errors import UserError
from infomin_det.protocols import REFERENCE_BATCH, get_protocol
from infomin_det.report import paper
from infomin_det.report.identity import PAPER_LABELS, PAPER_SETS, PROTOCOLS
from infomin_det.report.runs import DONE, PENDING, Run, row_key, table_key

COCO_METRICS = ("AP", "AP50", "AP75")
SIZE_METRICS = ("APs", "APm", "APl")
VOC_METRICS = ("AP50", "AP", "AP75")  # the paper's column order for VOC
MAIN = "bbox/AP"
HIGHLIGHT = 0.5  # |gap| > 0.5 AP is highlighted, as in the paper


@dataclass
class Stat:
    """Mean / sample std (None when n = 1) / n of one metric over seeds, in percent.

    ``mean`` is None when a seed has NaN or lacks the metric; ``why`` then says which."""

    mean: float | None
    std: float | None
    n: int
    why: str = ""

    @classmethod
    def of(cls, values: list[tuple[int | None, float | None]], metric: str) -> "Stat":
        n = len(values)
        nan = [s for s, v in values if v is not None and math.isnan(v)]
        missing = [s for s, v in values if v is None]
        if nan or missing:
            why = []
            if nan:
                cause = ("no predictions, or no ground truth of that size in the test set"
                         if metric.rsplit("/", 1)[-1] in SIZE_METRICS else "the model made no predictions")
                why.append(f"NaN in {_seeds(nan, n)} ({cause})")
            if missing:
                why.append(f"missing in {_seeds(missing, n)}")
            return cls(None, None, n, "; ".join(why))
        xs = [v for _, v in values]
        mean = math.fsum(xs) / n
        std = math.sqrt(math.fsum((v - mean) ** 2 for v in xs) / (n - 1)) if n > 1 else None
        return cls(mean, std, n)


def _seeds(seeds: list[int | None], n: int) -> str:
    known = [s for s in seeds if s is not None]
    if len(known) == len(seeds):
        return ("seed " if len(known) == 1 else "seeds ") + ", ".join(map(str, sorted(known)))
    return f"{len(seeds)} of {n} runs"


@dataclass
class Row:
    """One row. source: ``runs`` or ``paper T3a``. seeds: the seeds averaged (None = unknown).
    label: what tables print (``random [rgb]``: the variant in brackets; the family in braces when
    two rows of a table share name and variant). no_gap: why the row yields no gaps ("" = it does)."""

    weights: str
    stats: dict[str, Stat]
    seeds: list[int | None] = field(default_factory=list)
    source: str = "runs"
    is_baseline: bool = False
    gaps: dict[str, float | None] = field(default_factory=dict)
    variant: str = ""
    family: str = ""
    label: str = ""
    no_gap: str = ""

    def __post_init__(self) -> None:
        self.label = self.label or self.weights

    @property
    def n(self) -> int:
        return len(self.seeds)


@dataclass
class Table:
    """One table. ``dataset``: what its runs trained/tested on (label); ``paper_dataset``: whether
    that is the paper's (None: unknown); ``eval_set``: the test set of Detectron2's metric keys
    (``""`` when it wrote unprefixed keys); ``modified``: config.yaml's deviations from the protocol.
    ``notes``: what the reader must know -- printed under the table, never dropped."""

    protocol: str
    dataset: str
    metrics: list[str]
    rows: list[Row]
    baseline: str | None = None
    notes: list[str] = field(default_factory=list)
    title: str = ""
    not_averaged: list[Run] = field(default_factory=list)
    modified: tuple[str, ...] = ()
    eval_set: str = ""
    paper_dataset: bool | None = None
    dataset_source: str = ""
    batch: int | None = None      # SOLVER.IMS_PER_BATCH where not the paper's (linear scaling of LR / schedule)


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
    """The tables of ``runs``; gaps to ``baseline`` (a row label / weights name, or ``paper:NAME``).

    single: the caller wants exactly one table (``tools/ap_table.py``): runs of several tables are
    refused rather than mixed. UserError also for an unknown ``--protocol`` or one that no run has,
    for a baseline that names no row (or several in one table), and for a paper baseline against
    runs that are not the paper's protocol on the paper's dataset.
    """
    known = sorted({r.protocol for r in runs if r.protocol})
    if protocols:
        for p in protocols:
            get_protocol(p)
        missing = [p for p in protocols if p not in known]
        if missing:
            raise UserError(f"no runs of protocol {', '.join(missing)}",
                            f"protocols found: {', '.join(known) or 'none'}")
        runs = [r for r in runs if r.protocol in protocols]
    groups: dict[tuple, dict[tuple, list[Run]]] = {}
    for r in runs:
        if r.status != DONE:
            continue
        for eval_set in r.metrics:
            groups.setdefault(table_key(r) + (eval_set,), {}).setdefault(row_key(r), []).append(r)
    tables = []
    # the protocol's own runs first, the paper's dataset first, then by dataset and test set
    order = lambda kv: (kv[0][0], kv[0][1], not next(iter(kv[1].values()))[0].dataset.paper, kv[0][2],  # noqa: E731
                        kv[0][3] or 0, kv[0][4])
    for key, by_row in sorted(groups.items(), key=order):
        first = next(iter(by_row.values()))[0]
        rows = [_row(k, rs, key[-1]) for k, rs in sorted(by_row.items())]
        _label(rows)
        present = {m for row in rows for m in row.stats}
        t = _table(first, metric_columns(first.protocol, present, sizes), rows, eval_set=key[-1])
        _row_notes(t, by_row)
        t.not_averaged = [r for r in runs if r.status not in (DONE, PENDING) and r.protocol
                          and table_key(r) == table_key(first)]
        tables.append(t)
    seen = {table_key(r) for r in runs if r.status == DONE}
    idle: dict[tuple, list[Run]] = {}
    for r in runs:
        if r.status not in (DONE, PENDING) and r.protocol and table_key(r) not in seen:
            idle.setdefault(table_key(r), []).append(r)
    for _, rs in sorted(idle.items(), key=lambda kv: str(kv[0])):
        tables.append(_table(rs[0], [], [], not_averaged=rs))
    for r in runs:  # a pending run has no dataset yet: listed under the first table of its protocol
        if r.status == PENDING:
            t = next((t for t in tables if t.protocol == r.protocol), None)
            if t is None:
                t = _table(r, [], [])
                tables.append(t)
            t.not_averaged.append(r)
    if single and len(tables) > 1:
        names = [title_of(t) for t in tables]
        raise UserError(f"runs of {len(names)} tables ({'; '.join(names)}) asked into one table",
                        "pick one with --protocol (and give runs of one dataset), or use `infomin-det report`")
    if baseline is not None:
        _apply_baseline(tables, baseline)
    return tables


def _table(r: Run, metrics: list[str], rows: list[Row], eval_set: str = "", not_averaged=None) -> Table:
    ds = r.dataset
    if r.status == PENDING:  # no directory yet: the registry states protocol and weights, no dataset
        label, paper_ds, source = "not known yet (pending)", None, "registry"
    else:
        label, paper_ds, source = ds.label, ds.paper, ds.source
    return Table(r.protocol, label, metrics, rows, modified=r.modified, eval_set=eval_set,
                 paper_dataset=paper_ds, dataset_source=source, not_averaged=not_averaged or [], batch=r.batch)


def title_of(t: Table) -> str:
    """``coco/R50-FPN-1x (modified: ...) | dataset: ... | evaluated on ...`` -- every table says it."""
    if t.title:
        return t.title
    head = t.protocol + (f" (modified: {', '.join(t.modified)})" if t.modified else "") + (
        f" (batch {t.batch}, paper {REFERENCE_BATCH}: LR and schedule scaled linearly)" if t.batch else "")
    parts = [head, f"dataset: {t.dataset}"] + ([f"evaluated on {t.eval_set}"] if t.eval_set else [])
    return " | ".join(parts) + (f" -- gaps to {t.baseline}" if t.baseline else "")


def _row(key: tuple[str, str, str], runs: list[Run], eval_set: str) -> Row:
    weights, variant, family = key
    runs = sorted(runs, key=lambda r: (r.seed is None, r.seed or 0, str(r.path)))
    metrics = sorted({m for r in runs for m in r.metrics[eval_set]})
    stats = {m: Stat.of([(r.seed, r.metrics[eval_set].get(m)) for r in runs], m) for m in metrics}
    row = Row(weights, stats, seeds=[r.seed for r in runs], variant=variant, family=family)
    main = stats.get(MAIN)
    if main is not None and main.mean is None:
        row.no_gap = f"{MAIN} {main.why}"
    return row


def _label(rows: list[Row]) -> None:
    count: dict[tuple[str, str], int] = {}
    for r in rows:
        count[(r.weights, r.variant)] = count.get((r.weights, r.variant), 0) + 1
    for r in rows:
        r.label = r.weights + (f" [{r.variant}]" if r.variant else "") + (
            f" {{{r.family or 'family unknown'}}}" if count[(r.weights, r.variant)] > 1 else "")


def _row_notes(t: Table, by_row: dict[tuple, list[Run]]) -> None:
    for row, runs in zip(t.rows, (by_row[k] for k in sorted(by_row))):
        unknown = sum(1 for r in runs if r.seed is None)
        if unknown:
            t.notes.append(f"{row.label}: {unknown} of {len(runs)} runs have no seed (no run.json, SEED -1, no "
                           "seed<k> directory) -- a run given twice cannot be ruled out")
        main_why = row.stats[MAIN].why if row.no_gap else None
        whys: dict[str, list[str]] = {}
        for m in t.metrics:
            s = row.stats.get(m)
            if s is not None and s.mean is None:
                whys.setdefault(s.why, []).append(m)
        if row.no_gap:
            same = [m for m in whys.pop(main_why, []) if m != MAIN]
            t.notes.append(f"{row.label}: n/a, no gaps -- {row.no_gap}" + (f"; likewise {', '.join(same)}" if same else ""))
        t.notes += [f"{row.label}: {', '.join(ms)} n/a -- {why}" for why, ms in whys.items()]
    if t.dataset_source and t.paper_dataset is None:
        t.notes.append(f"the dataset of these runs is unknown ({t.dataset_source}): runs of different "
                       "datasets cannot be told apart here")


def _refuse_paper(t: Table, baseline: str) -> str | None:
    """Why the paper's numbers cannot be the baseline of ``t`` (None: they can)."""
    kind = PROTOCOLS[t.protocol].dataset
    if t.modified:
        return f"deviate from the protocol ({', '.join(t.modified)})"
    if t.paper_dataset is None:
        return f"are on an unknown dataset ({t.dataset_source})"
    if not t.paper_dataset:
        return f"are on {t.dataset}, not the paper's {PAPER_LABELS[kind]}"
    if t.eval_set and t.eval_set not in PAPER_SETS[kind][1]:
        return f"are evaluated on {t.eval_set}, not the paper's {', '.join(PAPER_SETS[kind][1])}"
    return None


def _apply_baseline(tables: list[Table], baseline: str) -> None:
    if not baseline.strip() or baseline.strip() == "paper:":
        raise UserError("--baseline is empty", "give a row name (e.g. supervised) or paper:<row>")
    if baseline.startswith("paper:"):
        name = baseline[len("paper:"):]
        for t in tables:
            if not t.rows:
                continue
            why = _refuse_paper(t, baseline)
            if why:
                raise UserError(f"--baseline {baseline} compares with the paper's numbers, but the {t.protocol} runs {why}",
                                "compare with a row of your own (--baseline NAME); the paper's numbers are for "
                                "its protocol on its dataset only")
        for t in tables:
            if not t.rows:
                continue
            panel, prow = paper.paper_row(t.protocol, name)
            base = Row(f"{prow.name} (paper {panel.id})", {m: Stat(v, None, 0) for m, v in prow.values.items()},
                       source=f"paper {panel.id}", is_baseline=True)
            t.rows.insert(0, base)
            _gaps(t, base)
            t.baseline = base.label
        return
    want = paper.normalise(baseline)
    hits = 0
    for t in tables:
        cands = [r for r in t.rows if paper.normalise(r.label) == want] or [
            r for r in t.rows if paper.normalise(r.weights) == want]
        if len(cands) > 1:
            raise UserError(f"baseline {baseline!r} names {len(cands)} rows of {title_of(t)}: "
                            f"{', '.join(repr(r.label) for r in cands)}",
                            f"give the full label, e.g. --baseline {cands[-1].label!r}")
        if not cands:
            if t.rows:
                t.notes.append(f"no row {baseline!r} in this table: no gaps")
            continue
        base = cands[0]
        hits += 1
        t.rows.remove(base)
        t.rows.insert(0, base)  # first, as in the paper
        base.is_baseline = True
        t.baseline = base.label
        _gaps(t, base)
    if not hits:
        names = sorted({r.label for t in tables for r in t.rows})
        raise UserError(f"baseline {baseline!r} is not a row of any table",
                        f"use one of: {', '.join(names) or '(no finished runs)'}; or paper:<row> "
                        "(e.g. paper:supervised) to compare against the paper")


def _gaps(t: Table, base: Row) -> None:
    if base.no_gap:
        t.notes.append(f"the baseline {base.label} has no {MAIN} ({base.no_gap}): no gaps")
    for row in t.rows:
        if row is base:
            continue
        if row.no_gap or base.no_gap:
            row.gaps = {m: None for m in t.metrics}
            continue
        row.gaps = {m: _diff(row.stats.get(m), base.stats.get(m)) for m in t.metrics}


def _diff(a: Stat | None, b: Stat | None) -> float | None:
    if a is None or b is None or a.mean is None or b.mean is None:
        return None
    return a.mean - b.mean


def paper_tables(table_id: str, baseline: str | None = None) -> list[Table]:
    """The paper's own table (``T8`` -> panels a, b, c) in the same form, gaps recomputed from its
    values: to its ``supervised`` row (as printed), or to ``baseline`` -- any row the panel prints
    (``random``, ``paper:moco``, ...)."""
    out = []
    want = paper.normalise(baseline.removeprefix("paper:")) if baseline is not None else None
    if want == "":
        raise UserError("--baseline is empty", "give a row of the paper's table, e.g. --baseline random")
    for p in paper.select(table_id):
        rows = [Row(r.name, {m: Stat(v, None, 0) for m, v in r.values.items()}, source=f"paper {p.id}")
                for r in p.rows]
        kind = PROTOCOLS[p.protocol].dataset
        t = Table(p.protocol, PAPER_LABELS[kind], list(p.metrics), rows, paper_dataset=True, dataset_source="the paper")
        t.title = f"{p.id}: {p.caption} [{p.protocol}] | dataset: {PAPER_LABELS[kind]}"
        if want is None:
            base = next((r for r in rows if paper.normalise(r.weights) == p.baseline), None)
        else:
            prow = p.row(want)
            if prow is None:
                raise UserError(f"panel {p.id} of the paper has no row {baseline!r}",
                                f"use one of: {', '.join(r.key for r in p.rows)}")
            base = next(r for r in rows if r.weights == prow.name)
        if base is not None:
            base.is_baseline, t.baseline = True, base.label
            t.title += f" -- gaps to {base.label}"
            _gaps(t, base)
        t.notes += [
            f"the paper prints {i['row']} {i['metric']} gap {i['printed_gap']:+.1f}, its values give "
            f"{i['values_gap']:+.1f}" for i in paper.data()["inconsistencies"] if i["panel"] == p.id]
        out.append(t)
    return out
