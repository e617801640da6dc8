"""The paper's reference numbers (``paper_tables.json``): InfoMin appendix Tables 1-11, as data.

Each printed panel (``T3a`` ... ``T11a``, ``T4`` for VOC) holds its protocol id, metric columns,
rows (``key``, printed ``name``, ``values`` in percent) and, per non-baseline row, the gaps to the
``supervised`` row as printed in brackets. ``inconsistencies`` lists where the paper's printed gap
disagrees with its own printed values. ``imagenet_linear`` holds Tables 1 and 2 (linear top-1/top-5).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any, Iterable

from infomin_det.errors import UserError


@dataclass(frozen=True)
class PaperRow:
    key: str
    name: str
    values: dict[str, float]
    printed_gaps: dict[str, float] | None
    note: str = ""


@dataclass(frozen=True)
class PaperPanel:
    id: str
    table: str
    protocol: str
    caption: str
    metrics: tuple[str, ...]
    baseline: str
    rows: tuple[PaperRow, ...]
    note: str = ""

    def row(self, name: str) -> PaperRow | None:
        want = normalise(name)
        return next((r for r in self.rows if want in (r.key, normalise(r.name))), None)


def normalise(name: str) -> str:
    """Row-name matching key: lower case, letters and digits only (``"InfoMin Aug."`` -> ``infominaug``)."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


@lru_cache(maxsize=1)
def data() -> dict[str, Any]:
    return json.loads(resources.files("infomin_det.report").joinpath("paper_tables.json").read_text())


@lru_cache(maxsize=1)
def panels() -> tuple[PaperPanel, ...]:
    out = []
    for p in data()["panels"]:
        rows = tuple(PaperRow(r["key"], r["name"], r["values"], r.get("printed_gaps"), r.get("note", ""))
                     for r in p["rows"])
        out.append(PaperPanel(p["id"], p["table"], p["protocol"], p["caption"], tuple(p["metrics"]),
                              p["baseline"], rows, p.get("note", "")))
    return tuple(out)


def table_ids() -> list[str]:
    return sorted({p.table for p in panels()} | set(data()["imagenet_linear"]), key=lambda t: int(t[1:]))


def select(table: str) -> list[PaperPanel]:
    """Panels of ``T8`` (all) or ``T8b`` (one); UserError listing the ids otherwise."""
    want = table.strip()
    got = [p for p in panels() if want.upper() in (p.id.upper(), p.table.upper())]
    if not got:
        raise UserError(f"the paper has no detection table {table!r}",
                        f"one of {', '.join(t for t in table_ids())} or a panel such as T3a, T8c")
    return got


def for_protocol(protocol: str) -> list[PaperPanel]:
    return [p for p in panels() if p.protocol == protocol]


def printed_name(panel_id: str) -> str:
    """How the paper names a panel: ``T3a`` -> ``Table 3(a)``, ``T4`` -> ``Table 4``."""
    m = re.fullmatch(r"T(\d+)([a-z]?)", panel_id)
    if m is None:
        raise ValueError(f"not a panel id: {panel_id!r}")
    return f"Table {m[1]}" + (f"({m[2]})" if m[2] else "")


def panels_of(protocol: str, sources: Iterable[str] = ()) -> list[PaperPanel]:
    """The paper's panels a table of ``protocol`` stands for: those its rows were taken from
    (row sources ``paper T3b``), else every panel printing that protocol (R50-FPN 2x: T3b and T6a)."""
    named = {s.removeprefix("paper ") for s in sources if s.startswith("paper ")}
    return [p for p in for_protocol(protocol) if p.id in named] or for_protocol(protocol)


def paper_row(protocol: str, name: str) -> tuple[PaperPanel, PaperRow]:
    """The paper's row ``name`` under ``protocol`` (first panel printing it); UserError if absent."""
    cands = for_protocol(protocol)
    if not cands:
        raise UserError(f"the paper has no numbers for protocol {protocol}",
                        "use a run of yours as the baseline (--baseline NAME) for this protocol")
    for p in cands:
        r = p.row(name)
        if r is not None:
            return p, r
    names = sorted({r.key for p in cands for r in p.rows})
    raise UserError(f"the paper has no row {name!r} for {protocol} (tables {', '.join(p.id for p in cands)})",
                    f"use one of: {', '.join('paper:' + n for n in names)}")
