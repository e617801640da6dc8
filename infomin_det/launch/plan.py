"""What a set of fine-tuning runs will ask of a cluster, before anything is queued: the plan table
of ``submit --dry-run`` and ``reproduce``, with GPU-hours per run.

GPU-hours come from Detectron2's published training speeds (MODEL_ZOO.md: 8 V100, 2 images per
GPU, s/iter averaged over the whole training), since no run of ours on a GPU exists yet. Our leaves
use SyncBN and (FPN) the 4conv1fc box head; the zoo measured exactly that setting once, for R50-FPN
Mask R-CNN (``mask_rcnn_R_50_FPN_3x_syncbn``: 0.345 s/iter against 0.261 for the frozen-BN 2fc
baseline), and the other entries are the zoo's frozen-BN figure times that ratio (``scaled``) or,
where the zoo has no such model, derived from the nearest ones (``extrapolated``). The figure is
an estimate of training only (evaluation adds minutes); docs/launch.md lists every entry.

With fewer GPUs than the reference 8, linear scaling keeps the images seen, so GPU-hours stay and
the wall time grows by 8 / GPUs. CPU runs get no estimate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from infomin_det.protocols import REFERENCE_GPUS, get_protocol

SYNCBN_4CONV = 0.345 / 0.261   # zoo: R50-FPN SyncBN + 4conv1fc vs frozen BN + 2fc, same schedule


@dataclass(frozen=True)
class IterTime:
    """Seconds per iteration at the reference batch on ``REFERENCE_GPUS`` V100s, and where it comes from."""

    seconds: float
    kind: str          # measured | scaled | extrapolated
    source: str


ITER_TIMES: dict[tuple[str, str], IterTime] = {
    ("mask_fpn", "R-50"): IterTime(0.345, "measured", "mask_rcnn_R_50_FPN_3x_syncbn 0.345"),
    ("mask_c4", "R-50"): IterTime(0.575 * SYNCBN_4CONV, "scaled", "mask_rcnn_R_50_C4_3x 0.575 x SyncBN ratio"),
    ("mask_c4", "R-101"): IterTime(0.652 * SYNCBN_4CONV, "scaled", "mask_rcnn_R_101_C4_3x 0.652 x SyncBN ratio"),
    ("mask_fpn", "R-101"): IterTime(0.340 * SYNCBN_4CONV, "scaled", "mask_rcnn_R_101_FPN_3x 0.340 x SyncBN ratio"),
    ("mask_fpn", "X-101-32x8d"): IterTime(0.690 * SYNCBN_4CONV, "scaled",
                                          "mask_rcnn_X_101_32x8d_FPN_3x 0.690 x SyncBN ratio"),
    ("cascade_fpn", "R-101"): IterTime(0.317 * (0.340 / 0.261) * SYNCBN_4CONV, "extrapolated",
                                       "cascade_mask_rcnn_R_50_FPN_1x 0.317 x R101/R50 FPN 0.340/0.261 x SyncBN ratio"),
    ("mask_fpn", "X-152-32x8d"): IterTime(0.690 * (152 / 101) * SYNCBN_4CONV, "extrapolated",
                                          "X-101 FPN 0.690 x depth 152/101 x SyncBN ratio"),
    ("faster_c4", "R-50"): IterTime(0.537 * SYNCBN_4CONV, "scaled", "PascalVOC faster_rcnn_R_50_C4 0.537 x SyncBN ratio"),
}


def iter_time(protocol: str) -> IterTime:
    p = get_protocol(protocol)
    return ITER_TIMES[(p.meta_arch, p.arch)]


def gpu_hours(protocol: str) -> float:
    """Estimated GPU-hours of one training run of ``protocol`` (any GPU count: linear scaling)."""
    return iter_time(protocol).seconds * get_protocol(protocol).max_iter * REFERENCE_GPUS / 3600


def wall_hours(protocol: str, gpus: int) -> float | None:
    """Estimated wall-clock hours of one run on ``gpus`` GPUs (None without GPUs)."""
    return gpu_hours(protocol) / gpus if gpus > 0 else None


@dataclass(frozen=True)
class PlanRow:
    """Runs sharing protocol and weights row: their seeds and cost."""

    protocol: str
    weights_name: str
    weights: str
    family: str
    seeds: tuple[int, ...]
    gpus: int
    nodes: int

    @property
    def runs(self) -> int:
        return len(self.seeds)

    @property
    def gpu_hours_per_run(self) -> float | None:
        return gpu_hours(self.protocol) if self.gpus else None

    def to_dict(self, timeout_min: int) -> dict:
        w = wall_hours(self.protocol, self.gpus * self.nodes)
        per = self.gpu_hours_per_run
        return {"protocol": self.protocol, "weights_name": self.weights_name, "weights": self.weights,
                "family": self.family, "seeds": list(self.seeds), "runs": self.runs,
                "gpus_per_run": self.gpus * self.nodes, "nodes": self.nodes,
                "gpu_hours_per_run": None if per is None else round(per, 1),
                "wall_hours_per_run": None if w is None else round(w, 1),
                "time_limit_requeues": requeues_needed(w, timeout_min),
                "iter_time": iter_time(self.protocol).__dict__ if per is not None else None}


def requeues_needed(wall_h: float | None, timeout_min: int) -> int | None:
    """How many time-limit requeues one run needs to finish (None: unknown)."""
    if wall_h is None:
        return None
    return max(0, math.ceil(wall_h * 60 / timeout_min) - 1)


def plan_rows(specs: Sequence, gpus_per_node: int, nodes: int) -> list[PlanRow]:
    """Group ``TrainSpec`` s by (protocol, weights row) in their order."""
    from infomin_det.engine.weights_check import weights_meta
    from infomin_det.protocols import family_for_weights

    groups: dict[tuple[str, str], list] = {}
    for s in specs:
        groups.setdefault((s.protocol, s.weights_name), []).append(s)
    rows = []
    for (protocol, name), ss in groups.items():
        w = ss[0].weights
        family = ss[0].family or (family_for_weights(weights_meta(w), w) if w else "random")
        rows.append(PlanRow(protocol, name + (f"+{ss[0].row_variant}" if ss[0].row_variant else ""), w, family,
                            tuple(s.seed for s in ss), gpus_per_node, nodes))
    return rows


def render(rows: Sequence[PlanRow], timeout_min: int, max_requeues: int) -> str:
    """The plan as a plain-text table (never truncated) and its totals."""
    head = ("protocol", "weights", "family", "seeds", "runs", "GPUs/run", "GPU-h/run", "wall h/run", "requeues")
    body = []
    for r in rows:
        d = r.to_dict(timeout_min)
        seeds = ",".join(map(str, r.seeds))
        body.append((r.protocol, r.weights_name, r.family, seeds, str(r.runs), str(d["gpus_per_run"] or "cpu"),
                     _h(d["gpu_hours_per_run"]), _h(d["wall_hours_per_run"]),
                     "-" if d["time_limit_requeues"] is None else str(d["time_limit_requeues"])))
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in (head, *body)]
    runs = sum(r.runs for r in rows)
    known = [r for r in rows if r.gpu_hours_per_run is not None]
    total = sum(r.gpu_hours_per_run * r.runs for r in known)
    lines.append(f"{runs} runs, {total:,.0f} GPU-hours estimated" + ("" if len(known) == len(rows) else
                                                                     f" ({len(rows) - len(known)} rows on CPU: no estimate)")
                 + " (training only; from Detectron2's published V100 s/iter, see docs/launch.md)")
    worst = max((r.to_dict(timeout_min)["time_limit_requeues"] or 0 for r in rows), default=0)
    if worst > max_requeues:
        lines.append(f"warning: a run needs {worst} time-limit requeues at --timeout-min {timeout_min}, but "
                     f"--max-requeues is {max_requeues}: raise --max-requeues or --timeout-min, or use more GPUs")
    return "\n".join(lines)


def _h(x: float | None) -> str:
    return "-" if x is None else f"{x:,.1f}"
