"""Vary one view parameter; per value pretrain (CMC-style InfoNCE), measure I_NCE and linear accuracy.

Owns the orchestration of the paper's I_NCE-vs-accuracy experiment (appendix §B.1-B.3, Figure 1,
the "reverse U") at CPU scale: :func:`run_sweep` runs (or resumes) the points of a
:class:`~pretrain.views.sweep_spec.SweepSpec` and writes the outputs. Library use::

    from pretrain.views.sweep import SweepSpec, run_sweep
    result = run_sweep(SweepSpec("frequency", (0.3, 0.7, 1, 2, 4), "runs/sweep-freq"))

The parts, one concern each:

    pretrain.views.families       ViewFamily, the VIEW_FAMILIES registry, frequency / crop / jitter / patch-distance
    pretrain.views.sweep_spec     SweepSpec: the settings, validated; point_key
    pretrain.views.sweep_data     the labelled set and the patch-distance photos in memory
    pretrain.views.sweep_point    one (value, seed): pretrain, I_NCE on val, linear probe (before and after)
    pretrain.probe                the linear probe on frozen features (shared with Moving MNIST)
    pretrain.views.sweep_outputs  point files (resume), sweep.csv / sweep.json / sweep.png
    pretrain.views.sweep_cli      ``infomin-det sweep``

Cost at the defaults (64 px, 600 steps x 64 pairs, 150 + 50 images per class), one torch thread:
~110 s per frequency point (two encoders), ~80-90 s per crop / jitter point, + ~5 s of evaluation;
the labelled set is built once (~1 min) and cached. A 5-value, 1-seed sweep: ~7-10 min.
Never imports detectron2.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from infomin_det.errors import UserError
from pretrain.views.sweep_data import SweepData, load_labelled, load_photos, photo_pools
from pretrain.views.sweep_outputs import point_path, read_point, summarise, write_outputs, write_point
from pretrain.views.sweep_point import run_point
from pretrain.views.sweep_spec import SweepSpec

__all__ = ["SweepResult", "SweepSpec", "run_sweep"]


@dataclass(frozen=True)
class SweepResult:
    """``rows`` (one per point, value-major), per-value ``summary``, written paths, and which
    (value, seed) points were trained in this call / reused from finished point files."""

    rows: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    csv: Path
    json: Path
    png: Path
    trained: list[tuple[float, int]]
    reused: list[tuple[float, int]]


def run_sweep(spec: SweepSpec, progress: bool = True, log: Callable[[str], None] | None = None) -> SweepResult:
    """Run (or resume) the sweep of ``spec``: every (value, seed) point without a finished point
    file is trained and written as it finishes, the outputs rewritten after each. Checks everything
    that can be checked without training (finished point files, photo pools) before writing anything."""
    out = Path(spec.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a directory", "pass a new or existing directory")
    points = [(v, s) for v in spec.values for s in range(spec.seeds)]
    done = {p: read_point(point_path(out, spec.family, *p), spec) for p in points}
    if spec.fam.source == "photos":
        photo_pools(spec)  # refuse distances no photo fits before any work
    (out / "points").mkdir(parents=True, exist_ok=True)
    todo = [p for p in points if done[p] is None]
    rows = [r for r in done.values() if r is not None]
    trained = []
    data = load_labelled(spec) if todo else SweepData(out, (), {}, {})
    if todo and spec.fam.source == "photos":
        load_photos(spec, data, progress)
    for i, (value, seed) in enumerate(todo):
        if log:
            log(f"[{i + 1}/{len(todo)}] {spec.family} {spec.fam.param}={value:g} seed {seed}")
        row = run_point(spec, value, seed, data, progress)
        write_point(out, spec, row)
        rows.append(row)
        trained.append((value, seed))
        write_outputs(spec, rows, out)
    csv_p, json_p, png_p = write_outputs(spec, rows, out)
    rows = sorted(rows, key=lambda r: (r["value"], r["seed"]))
    return SweepResult(rows, summarise(rows), csv_p, json_p, png_p, trained, [p for p in points if done[p] is not None])
