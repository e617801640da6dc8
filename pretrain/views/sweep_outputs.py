"""What a view sweep writes: the per-point cache and the sweep's csv / json / png.

Owns the files in a sweep's ``out`` directory, each written atomically:

* ``points/<family>_<value>_seed<s>.json`` (:func:`write_point` as each point finishes): the row and
  the spec's :attr:`~pretrain.views.sweep_spec.SweepSpec.point_key`. :func:`read_point` reuses a
  finished point when the key agrees (a rerun with the same training settings skips it: resume, or
  extend a sweep with more values / seeds) and refuses one made with other settings.
* ``sweep.csv`` (a row per point, columns :data:`CSV_FIELDS`), ``sweep.json`` (spec, rows, and
  :func:`summarise`'s per-value mean / std over seeds -- sample std, 0 for one seed) and
  ``sweep.png`` (:func:`plot_sweep`, the paper's Figure 1: x I_NCE, y linear top-1, one marker per
  value at the seed mean with std error bars, annotated, joined in parameter order).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from infomin_det.atomic import atomic_write, write_text_atomic
from infomin_det.errors import UserError
from pretrain.views.sweep_spec import SweepSpec

CSV_FIELDS = ("family", "param", "value", "seed", "i_nce", "log_k", "k", "val_contrast_acc",
              "linear_top1", "init_linear_top1", "train_seconds", "seconds")


def point_path(out: Path, family: str, value: float, seed: int) -> Path:
    return out / "points" / f"{family}_{value:g}_seed{seed}.json"


def read_point(path: Path, spec: SweepSpec) -> dict[str, Any] | None:
    """The finished row in ``path``; None if absent; UserError if it was made with other settings."""
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
        key, row = doc["point_key"], doc["row"]
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(f"{path} is not a sweep point file", "delete it (it will be retrained) or use another --out") from None
    if key != spec.point_key:
        raise UserError(f"{path} was trained with other settings (steps, batch, lr, data, ...) than this sweep",
                        "use a new --out, the same settings as before, or delete the points/ folder")
    return row


def write_point(out: Path, spec: SweepSpec, row: dict[str, Any]) -> Path:
    """The finished point's file (its row, the spec and its ``point_key``), written atomically."""
    path = point_path(out, spec.family, row["value"], row["seed"])
    write_text_atomic(path, json.dumps({"point_key": spec.point_key, "spec": spec.to_dict(), "row": row}, indent=2) + "\n")
    return path


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per value (ascending): n seeds, mean and std (sample std; 0 for one seed) of the metrics."""
    out = []
    for value in sorted({r["value"] for r in rows}):
        rs = [r for r in rows if r["value"] == value]
        s: dict[str, Any] = {"value": value, "n": len(rs)}
        for m in ("i_nce", "linear_top1", "init_linear_top1", "val_contrast_acc", "train_seconds"):
            a = np.array([r[m] for r in rs], dtype=float)
            s[f"{m}_mean"] = float(a.mean())
            s[f"{m}_std"] = float(a.std(ddof=1)) if len(a) > 1 else 0.0
        s["log_k"] = rs[0]["log_k"]
        out.append(s)
    return out


def plot_sweep(spec: SweepSpec, summary: list[dict[str, Any]], path: Path) -> None:
    """The paper's Figure 1: linear top-1 (%) against I_NCE (nats), one marker per value (seed mean,
    std error bars when several seeds), annotated, joined in parameter order; dashed line at log K,
    dotted line at the untrained encoders' linear top-1 (mean over points)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fam = spec.fam
    x = [s["i_nce_mean"] for s in summary]
    y = [s["linear_top1_mean"] for s in summary]
    fig = Figure(figsize=(6, 4.5), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot(x, y, "-", color="0.6", zorder=1)
    multi = any(s["n"] > 1 for s in summary)
    ax.errorbar(x, y, xerr=[s["i_nce_std"] for s in summary] if multi else None,
                yerr=[s["linear_top1_std"] for s in summary] if multi else None,
                fmt="o", color="C0", ecolor="C0", capsize=3, zorder=2)
    for s, xi, yi in zip(summary, x, y):
        ax.annotate(f"{fam.param}={s['value']:g}", (xi, yi), textcoords="offset points", xytext=(5, 5), fontsize=8)
    if summary:
        init = float(np.mean([s["init_linear_top1_mean"] for s in summary]))
        ax.axhline(init, color="C3", ls=":", lw=1.0, label=f"untrained encoder(s): {init:.1f}%")
        ax.legend(loc="best", fontsize=7)
        ax.axvline(summary[0]["log_k"], color="0.4", ls="--", lw=0.8)
        ax.text(summary[0]["log_k"], ax.get_ylim()[0], " log K", rotation=90, va="bottom", ha="right", fontsize=7)
    n = max((s["n"] for s in summary), default=1)
    ax.set_xlabel("I_NCE on val views (nats)")
    ax.set_ylabel("linear top-1 on val (%)")
    ax.set_title(f"{spec.family}: {fam.summary}\n{spec.steps} steps x {spec.batch_size}, {spec.image_size} px, "
                 f"{n} seed(s)", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    with atomic_write(path) as tmp:
        tmp.write_bytes(buf.getvalue())


def write_outputs(spec: SweepSpec, rows: list[dict[str, Any]], out: Path) -> tuple[Path, Path, Path]:
    """``sweep.csv``, ``sweep.json``, ``sweep.png`` in ``out`` (each atomically)."""
    rows = sorted(rows, key=lambda r: (r["value"], r["seed"]))
    summary = summarise(rows)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    paths = out / "sweep.csv", out / "sweep.json", out / "sweep.png"
    write_text_atomic(paths[0], buf.getvalue())
    write_text_atomic(paths[1], json.dumps({"spec": spec.to_dict(), "point_key": spec.point_key,
                                            "rows": rows, "summary": summary}, indent=2) + "\n")
    plot_sweep(spec, summary, paths[2])
    return paths
