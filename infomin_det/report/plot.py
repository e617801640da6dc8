"""``--plot FILE.png``: gaps to the baseline per protocol and metric (matplotlib, Agg backend).

One panel per table; per metric a group of bars, one per non-baseline row; error bars are the
row's seed std (drawn only when the row averages more than one seed). Units: AP points.
"""

from __future__ import annotations

from pathlib import Path

from infomin_det.atomic import atomic_write
from infomin_det.errors import UserError
from infomin_det.report.aggregate import Table


def plot_gaps(tables: list[Table], out: str | Path) -> Path:
    with_gaps = [t for t in tables if t.baseline and len(t.rows) > 1]
    if not with_gaps:
        raise UserError("--plot draws gaps to a baseline, and no table has one",
                        "add --baseline NAME (or --baseline paper:supervised)")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(with_gaps), 1, figsize=(8, 3 * len(with_gaps)), squeeze=False)
    for ax, t in zip(axes[:, 0], with_gaps):
        rows = [r for r in t.rows if not r.is_baseline]
        width = 0.8 / len(rows)
        for i, r in enumerate(rows):
            xs = [j + (i - (len(rows) - 1) / 2) * width for j in range(len(t.metrics))]
            ys = [r.gaps.get(m) if r.gaps.get(m) is not None else float("nan") for m in t.metrics]
            err = [(r.stats[m].std or 0.0) if m in r.stats and r.n > 1 else 0.0 for m in t.metrics]
            ax.bar(xs, ys, width, yerr=err if any(err) else None, capsize=3,
                   label=f"{r.weights} (n={r.n})" if r.source == "runs" else r.weights)
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_xticks(range(len(t.metrics)), t.metrics, fontsize=8)
        ax.set_ylabel("gap (AP points)")
        ax.set_title(f"{t.protocol}{' [' + t.dataset + ']' if t.dataset else ''}: gap to {t.baseline}", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    out = Path(out)
    with atomic_write(out) as tmp:
        fig.savefig(tmp, format=out.suffix.lstrip(".") or "png", dpi=100)
    plt.close(fig)
    return out
