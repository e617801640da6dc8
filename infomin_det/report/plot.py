"""``--plot FILE``: gaps to the baseline per table and metric (matplotlib, Agg backend).

One panel per table with gaps; per metric a group of bars, one per non-baseline row; error bars are
the row's seed std (drawn only when the row averages more than one seed). Units: AP points. A gap
that does not exist (n/a: NaN in a seed) is drawn as no bar and the legend says ``n/a``. Each
panel's title names the protocol, its modifications and the dataset, as the tables do.

Formats: :data:`SUFFIXES` (``.png``, ``.pdf``, ``.svg`` -- what papers take; matplotlib writes
others too, but those are the ones this toolkit tests).
"""

from __future__ import annotations

from pathlib import Path

from infomin_det.atomic import atomic_write
from infomin_det.errors import UserError
from infomin_det.report.aggregate import Table, title_of

SUFFIXES = (".png", ".pdf", ".svg")


def check_suffix(out: str | Path) -> str:
    """The matplotlib format of ``out`` from its suffix; UserError for any other suffix."""
    suffix = Path(out).suffix.lower()
    if suffix not in SUFFIXES:
        raise UserError(f"--plot {out}: {'no file suffix' if not suffix else repr(suffix)} -- the plot is written "
                        f"as {', '.join(SUFFIXES)}", "name the file e.g. gaps.png or gaps.pdf")
    return suffix[1:]


def draw(tables: list[Table]):
    """The figure of the gaps (UserError when no table has a baseline and another row)."""
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
            err = [(r.stats[m].std or 0.0) if m in r.stats and r.n > 1 and r.stats[m].std is not None else 0.0
                   for m in t.metrics]
            label = f"{r.label} (n={r.n})" if r.source == "runs" else r.label
            if r.no_gap:
                label += " n/a"
            ax.bar(xs, ys, width, yerr=err if any(err) else None, capsize=3, label=label.replace("$", r"\$"))
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_xticks(range(len(t.metrics)), t.metrics, fontsize=8)
        ax.set_ylabel("gap (AP points)")
        ax.set_title(title_of(t).replace("$", r"\$"), fontsize=8, wrap=True)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def save(fig, out: str | Path) -> Path:
    """Write ``fig`` to ``out`` atomically in the format of its suffix; closes the figure."""
    import matplotlib.pyplot as plt

    out = Path(out)
    fmt = check_suffix(out)
    try:
        with atomic_write(out) as tmp:
            fig.savefig(tmp, format=fmt, dpi=100)
    finally:
        plt.close(fig)
    return out


def plot_gaps(tables: list[Table], out: str | Path) -> Path:
    """Draw and write the gaps plot (the demo's call; the CLI checks the path first)."""
    check_suffix(out)
    return save(draw(tables), out)
