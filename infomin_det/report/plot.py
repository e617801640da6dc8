"""``--plot FILE``: the paper figure of the gaps to the baseline (matplotlib, no pyplot state).

This module owns the figure only; the numbers come from :mod:`infomin_det.report.aggregate`
(:func:`~infomin_det.report.aggregate.rounded_gap`, so every label reads as the tables do).

Layout: one panel per table with gaps, stacked top to bottom. A panel's heading names the paper's
table when the paper has one for the protocol (``Table 3(a): Mask R-CNN, R50-FPN, 1x schedule``;
of several panels of one protocol, the one a paper row of the table came from), else the protocol
and dataset; under it, in small print, the table's full title (:func:`title_of`: modifications,
batch scaling, dataset, test set, baseline). Methods (the non-baseline rows, ``(n=K)`` for ours)
read top to bottom as horizontal bars, one bar per metric in an Okabe-Ito colour (legend:
AP^bb, AP^mk, ...); each bar carries its gap as printed (``+0.9``, ``−7.2``), an ``n/a`` label where
there is no gap; error bars are the row's seed std, drawn only when the row averages > 1 seed.
Zero line, x label ``gap to <baseline> (AP points)``; x limits fit the bars, error bars and labels.

Far rows (random init: −7 to −25 AP while the others are ±1) get an axes of their own under the
panel, with its own x scale, so they do not flatten the others. The rule (:func:`split_far`): sort
the rows with a gap by ``max |rounded gap|`` over the metrics; a step from one row to the next of
more than ``FAR_RATIO`` (3×) up to a row above ``FAR_MIN_AP`` (2 AP) is a jump; at the largest
jump, the rows from there up are far. No jump: one axes. Rows without any gap stay near.

The figure is 3.5 in wide (a paper column; fonts 6-8.5 pt) and grows in height with the rows.
Output: :data:`SUFFIXES`; :func:`write` saves ``.png`` at :data:`DPI` dpi, ``.pdf`` / ``.svg`` as
vectors (TrueType fonts in the PDF), with every panel's full title in the file's metadata
(:func:`save` and :func:`plot_gaps` go through it).
"""

from __future__ import annotations

import math
import textwrap
import weakref
from pathlib import Path

from infomin_det.atomic import atomic_write
from infomin_det.errors import UserError
from infomin_det.report import paper
from infomin_det.report.aggregate import Row, Table, rounded_gap, title_of

SUFFIXES = (".png", ".pdf", ".svg")
DPI = 300
FAR_RATIO = 3.0     # a jump in max |gap| of more than this factor ...
FAR_MIN_AP = 2.0    # ... up to a row with max |gap| above this (AP points) splits far rows off
# Okabe & Ito (2008), colour-blind safe; boxes blue-green, masks red-orange-purple
PALETTE = ("#0072B2", "#56B4E9", "#009E73", "#D55E00", "#E69F00", "#CC79A7", "#F0E442", "#000000")
HATCHES = ("", "////", "....", "xxxx")   # beyond 8 metrics: the colour says the metric, the hatch the task

WIDTH = 3.5            # inches: a column of a two-column paper; the fonts below are legible there
BAR = 0.105            # inches per bar (one metric of one method)
GROUP_PAD = 0.12       # inches between methods
HEAD = 0.95            # inches per panel for heading, subtitle, x label, legend
FAR_HEAD = 0.45        # inches for the far axes' note and x label
FS_HEAD, FS_SUB, FS_TICK, FS_VALUE = 8.5, 6.5, 7.0, 6.0

_TITLES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()   # figure -> full titles (metadata)
_RAW: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()      # title artist -> its unwrapped text


def check_suffix(out: str | Path) -> str:
    """The matplotlib format of ``out`` from its suffix; UserError for any other suffix."""
    suffix = Path(out).suffix.lower()
    if suffix not in SUFFIXES:
        raise UserError(f"--plot {out}: {'no file suffix' if not suffix else repr(suffix)} -- the plot is written "
                        f"as {', '.join(SUFFIXES)}", "name the file e.g. gaps.png or gaps.pdf")
    return suffix[1:]


# ---------------------------------------------------------------------------------------------
# what the figure says (pure functions; tested without drawing)


def gap_text(gap: float | None) -> str:
    """The label of a bar: the gap as the tables print it (``+0.9``, ``−7.2``, ``0.0``), or ``n/a``."""
    g = rounded_gap(gap)
    if g is None:
        return "n/a"
    return "0.0" if g == 0 else f"{g:+.1f}".replace("-", "\u2212")


def row_name(row: Row) -> str:
    """A method's label: the row's label, ``(n=K)`` for ours."""
    return row.label + (f" (n={row.n})" if row.source == "runs" else "")


def metric_label(metric: str, protocol: str = "") -> str:
    """``bbox/AP50`` -> AP^bb_50 (mathtext), as the paper writes it; VOC (boxes only): AP_50."""
    task, _, name = metric.partition("/")
    if not name:
        task, name = "", task
    sub = name[2:] if name.startswith("AP") else ""
    base = "AP" if name.startswith("AP") else name
    sub = {"s": "S", "m": "M", "l": "L"}.get(sub, sub)
    sup = {"bbox": "bb", "segm": "mk", "keypoints": "kp"}.get(task, task)
    if protocol.startswith("voc/"):
        sup = ""
    if not sup and not sub:
        return _escape(base)
    return _escape(base) + "$" + (f"^{{\\mathrm{{{sup}}}}}" if sup else "") + (f"_{{{sub}}}" if sub else "") + "$"


def panel_of(t: Table) -> paper.PaperPanel | None:
    """The paper's panel for ``t``'s protocol: the one a paper row of ``t`` came from, else the first."""
    panels = paper.panels_of(t.protocol, (r.source for r in t.rows))
    return panels[0] if panels else None


def heading(t: Table) -> str:
    """The panel's heading, short: the paper's table and caption, or the protocol and dataset."""
    p = panel_of(t)
    if p is None:
        return f"{t.protocol} \u00b7 {t.dataset}"
    head = f"{paper.printed_name(p.id)}: {p.caption}"
    if t.paper_dataset is not True:
        head += f" \u00b7 {t.dataset}"
    if t.modified or t.batch:
        head += " (modified)"
    return head


def subtitle(t: Table) -> str:
    """The full :func:`title_of` -- without the paper table and caption the heading already says."""
    full = title_of(t)
    p = panel_of(t)
    if p is not None:
        lead = f"{p.id}: {p.caption} [{p.protocol}]"
        if full.startswith(lead):
            return p.protocol + full[len(lead):]
    return full


def max_gap(row: Row) -> float | None:
    """``max |rounded gap|`` over the row's metrics (None: the row has no gap at all)."""
    gs = [abs(g) for g in map(rounded_gap, row.gaps.values()) if g is not None]
    return max(gs) if gs else None


def split_far(rows: list[Row]) -> tuple[list[Row], list[Row]]:
    """(near, far) rows of one table, each in table order: the rule of the module docstring."""
    ranked = sorted(((max_gap(r), i) for i, r in enumerate(rows) if max_gap(r) is not None))
    best, cut = 0.0, None
    for k in range(1, len(ranked)):
        lo, hi = ranked[k - 1][0], ranked[k][0]
        if hi > FAR_MIN_AP and hi > FAR_RATIO * lo:
            ratio = hi / lo if lo > 0 else math.inf
            if cut is None or ratio > best:
                best, cut = ratio, k
    far = set() if cut is None else {i for _, i in ranked[cut:]}
    return [r for i, r in enumerate(rows) if i not in far], [r for i, r in enumerate(rows) if i in far]


# ---------------------------------------------------------------------------------------------
# drawing


def draw(tables: list[Table]):
    """The figure of the gaps (UserError when no table has a baseline and another row)."""
    with_gaps = [t for t in tables if t.baseline and len(t.rows) > 1]
    if not with_gaps:
        raise UserError("--plot draws gaps to a baseline, and no table has one",
                        "add --baseline NAME (or --baseline paper:supervised)")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    plans = []
    for t in with_gaps:
        near, far = split_far([r for r in t.rows if not r.is_baseline])
        group = len(t.metrics) * BAR + GROUP_PAD
        height = (HEAD + _lines(heading(t), FS_HEAD, bold=True) * FS_HEAD * 1.25 / 72
                  + _lines(subtitle(t), FS_SUB) * FS_SUB * 1.3 / 72
                  + len(near) * group + ((FAR_HEAD + len(far) * group) if far else 0.0))
        plans.append((t, near, far, height))
    fig = Figure(figsize=(WIDTH, sum(p[3] for p in plans)), layout="constrained")
    FigureCanvasAgg(fig)
    fig.get_layout_engine().set(h_pad=0.03, w_pad=0.03, hspace=0.02, wspace=0.02)
    subs = fig.subfigures(len(plans), 1, height_ratios=[p[3] for p in plans], squeeze=False)[:, 0]
    for sf, (t, near, far, _) in zip(subs, plans):
        _panel(sf, t, near, far)
    _fit_titles(fig)
    _fit_labels(fig)
    _TITLES[fig] = [f"{heading(t)} -- {title_of(t)}" for t in with_gaps]
    return fig


def _panel(sf, t: Table, near: list[Row], far: list[Row]) -> None:
    group = len(t.metrics) * BAR + GROUP_PAD
    if far:
        axes = sf.subplots(2, 1, height_ratios=[len(near) * group, len(far) * group + 0.15])
    else:
        axes = [sf.subplots(1, 1)]
    head = sf.suptitle(_escape(_wrap(heading(t), _chars(FS_HEAD, bold=True))), fontsize=FS_HEAD, fontweight="bold")
    sub = axes[0].set_title(_escape(_wrap(subtitle(t), _chars(FS_SUB))), fontsize=FS_SUB, color="0.3",
                            linespacing=1.2)
    _RAW[head], _RAW[sub] = heading(t), subtitle(t)
    for ax, rows in zip(axes, (near, far)):
        _bars(ax, t, rows)
    if far:
        axes[1].set_title("far rows (much larger gaps): own x scale", loc="left",
                          fontsize=FS_SUB, style="italic", color="0.3")
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles = [Patch(facecolor=c, hatch=h, edgecolor="white", linewidth=0.3, label=metric_label(m, t.protocol))
               for m, (c, h) in zip(t.metrics, styles(t.metrics))]
    if any(r.source == "runs" and r.n > 1 for r in near + far):
        handles.append(Line2D([], [], color="0.15", linewidth=0.6, marker="|", markersize=4, markeredgewidth=0.6,
                              label="\u00b1 seed std"))
    ncols = len(handles)
    if ncols > 6:   # one row per task; the std (last) at the end of the first row where it fits
        tasks = [m.partition("/")[0] for m in t.metrics]
        ncols = max(tasks.count(k) for k in tasks)
        if len(handles) > len(t.metrics) and ncols < 6:
            handles.insert(ncols, handles.pop())
            ncols += 1
    sf.legend(handles=_row_major(handles, ncols), loc="outside lower center", ncols=ncols, fontsize=FS_TICK,
              frameon=False, handlelength=1.2, handleheight=0.8, columnspacing=0.9, handletextpad=0.4,
              borderaxespad=0.1)


def _bars(ax, t: Table, rows: list[Row]) -> None:
    m = len(t.metrics)
    h = 0.86 / m
    style = styles(t.metrics)
    for i, r in enumerate(rows):
        ys = [i - 0.43 + (j + 0.5) * h for j in range(m)]
        gaps = [_num(r.gaps.get(k)) for k in t.metrics]
        seeded = r.source == "runs" and r.n > 1
        errs = [_num(r.stats[k].std) if k in r.stats and not math.isnan(g) else math.nan
                for k, g in zip(t.metrics, gaps)] if seeded else None
        bars = ax.barh(ys, [0.0 if math.isnan(g) else g for g in gaps], height=h * 0.9,
                       color=[c for c, _ in style], edgecolor="white", linewidth=0.3,
                       xerr=errs, label=_escape(row_name(r)), zorder=2,
                       error_kw=dict(elinewidth=0.6, capsize=1.3, capthick=0.6, ecolor="0.15", zorder=4))
        for j, b in enumerate(bars):
            if style[j][1]:
                b.set_hatch(style[j][1])
            if math.isnan(gaps[j]):
                b.set_visible(False)
        for j, (k, g, y) in enumerate(zip(t.metrics, gaps, ys)):
            e = errs[j] if errs is not None and not math.isnan(errs[j]) else 0.0
            missing = math.isnan(g)
            right = missing or g >= 0
            x = 0.0 if missing else g + (e if right else -e)
            ax.annotate(gap_text(r.gaps.get(k)), (x, y), xytext=(2 if right else -2, 0), textcoords="offset points",
                        ha="left" if right else "right", va="center", fontsize=FS_VALUE,
                        color="0.45" if missing else "0.1", style="italic" if missing else "normal",
                        gid=f"gap\t{r.label}\t{k}", annotation_clip=False)
        if i:
            ax.axhline(i - 0.5, color="0.88", linewidth=0.5, zorder=0)
    ax.set_yticks(range(len(rows)), [_escape(_wrap_label(row_name(r))) for r in rows], fontsize=FS_TICK)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.tick_params(axis="y", length=0, pad=3)
    ax.tick_params(axis="x", labelsize=FS_TICK - 0.5, length=2, width=0.5, pad=1.5)
    ax.axvline(0, color="black", linewidth=0.8, zorder=3)
    ax.grid(axis="x", color="0.9", linewidth=0.5, zorder=0)
    ax.set_axisbelow(True)
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    ax.spines["bottom"].set_linewidth(0.5)
    ax.set_xlabel(_escape(f"gap to {t.baseline} (AP points)"), fontsize=FS_TICK, labelpad=1.5)
    lo, hi = _extent(t, rows)
    ax.set_xlim(lo, hi)


def _extent(t: Table, rows: list[Row]) -> tuple[float, float]:
    """x limits holding 0, every bar and error bar, at least 1 AP wide (labels: :func:`_fit_labels`)."""
    xs = [0.0]
    for r in rows:
        for k in t.metrics:
            g = _num(r.gaps.get(k))
            if math.isnan(g):
                continue
            s = _num(r.stats[k].std) if r.source == "runs" and r.n > 1 and k in r.stats else math.nan
            e = 0.0 if math.isnan(s) else s
            xs += [g - e, g + e]
    lo, hi = min(xs), max(xs)
    if hi - lo < 1.0:   # 0 stays inside: lo <= 0 <= hi
        mid = (lo + hi) / 2
        lo, hi = mid - 0.5, mid + 0.5
    return lo, hi


def _fit_titles(fig) -> None:
    """Centre each subtitle on the figure, as its heading is (an axes title is centred on the
    axes, which the method labels push right), and re-wrap any heading or subtitle that still runs
    past the figure's edges, narrower each time, until all fit."""
    for _ in range(6):
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        width = fig.bbox.width
        done = True
        for text, raw in list(_RAW.items()):
            if text.get_figure(root=True) is not fig:
                continue
            ax = next((a for a in fig.axes if a.title is text), None)
            if ax is not None:
                box = ax.get_window_extent(renderer)
                x = (width / 2 - box.x0) / box.width
                if abs(x - text.get_position()[0]) > 1e-3:
                    text.set_x(x)
                    done = False
                    continue
            ext = text.get_window_extent(renderer)
            if ext.width > width - 6:
                done = False
                longest = max(len(line) for line in text.get_text().split("\n"))
                text.set_text(_escape(_wrap(raw, max(12, int(longest * (width - 6) / ext.width) - 1))))
        if done:
            return


def _fit_labels(fig) -> None:
    """Widen each axes' x limits until every value label lies inside it (labels have a fixed size
    in points, so the data range they need depends on the scale: solved by iteration)."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        box = ax.get_window_extent(renderer)
        lo, hi = ax.get_xlim()
        need = []   # (anchor x in data, pixels the label needs left of it, pixels right of it)
        for a in ax.texts:
            ext = a.get_window_extent(renderer)
            anchor = ax.transData.transform((a.xy[0], 0))[0]
            need.append((a.xy[0], max(0.0, anchor - ext.x0), max(0.0, ext.x1 - anchor)))
        pad = 3.0
        margin = 0.02 * (hi - lo)  # no bar end or zero line on the axes' edge
        lo, hi = lo - margin, hi + margin
        for _ in range(30):
            per_px = (hi - lo) / box.width
            new_lo = min([lo] + [x - (left + pad) * per_px for x, left, _ in need])
            new_hi = max([hi] + [x + (right + pad) * per_px for x, _, right in need])
            if new_lo == lo and new_hi == hi:
                break
            lo, hi = new_lo, new_hi
        ax.set_xlim(lo, hi)


def _num(x: float | None) -> float:
    return math.nan if x is None else float(x)


def styles(metrics: list[str]) -> list[tuple[str, str]]:
    """(colour, hatch) per metric: up to 8 metrics one Okabe-Ito colour each; more (``--sizes``):
    the colour says the metric (AP, AP50, ...), the hatch the task (boxes plain, masks hatched)."""
    if len(metrics) <= len(PALETTE):
        return [(PALETTE[j], "") for j in range(len(metrics))]
    tasks = list(dict.fromkeys(m.partition("/")[0] for m in metrics))
    names = list(dict.fromkeys(m.partition("/")[2] for m in metrics))
    return [(PALETTE[names.index(m.partition("/")[2]) % len(PALETTE)],
             HATCHES[tasks.index(m.partition("/")[0]) % len(HATCHES)]) for m in metrics]


def _row_major(handles: list, ncols: int) -> list:
    """matplotlib fills a legend column by column; order ``handles`` so that it reads row by row."""
    rows = -(-len(handles) // ncols)
    grid = [handles[i * ncols:(i + 1) * ncols] for i in range(rows)]
    return [grid[i][j] for j in range(ncols) for i in range(rows) if j < len(grid[i])]


def _escape(s: str) -> str:
    """Text from run records is literal: a ``$`` must not start mathtext (our metric labels do)."""
    return s.replace("$", r"\$")


def _chars(size: float, bold: bool = False, inches: float = WIDTH) -> int:
    """A first guess of how many characters of ``size`` pt fit in ``inches`` (refined when drawn)."""
    return max(20, int(inches * 72 * 0.95 / (size * (0.62 if bold else 0.55))))


def _lines(text: str, size: float, bold: bool = False) -> int:
    return _wrap(text, _chars(size, bold)).count("\n") + 1


def _wrap(text: str, width: int) -> str:
    """Break at `` | `` first (a title's parts), then before `` -- ``, then at spaces, into lines
    of ``width`` characters."""
    lines: list[str] = []
    for k, part in enumerate(text.split(" | ")):
        pieces = part.split(" -- ")
        pieces = pieces[:1] + ["-- " + p for p in pieces[1:]]
        for n, piece in enumerate(pieces):
            joiner = " | " if n == 0 else " "
            if lines and (k or n) and len(lines[-1]) + len(joiner) + len(piece) <= width:
                lines[-1] += joiner + piece
            else:
                lines += textwrap.wrap(piece, width, break_on_hyphens=False) or [""]
    return "\n".join(lines)


def _wrap_label(label: str, width: int = 22) -> str:
    return "\n".join(textwrap.wrap(label, width, break_on_hyphens=False)) if len(label) > width else label


# ---------------------------------------------------------------------------------------------
# writing


def write(fig, target: str | Path, fmt: str) -> None:
    """Save ``fig`` to ``target`` as ``fmt`` (png at :data:`DPI` dpi; pdf / svg vector, TrueType fonts)."""
    import matplotlib

    titles = "; ".join(_TITLES.get(fig, []))
    key = {"png": "Description", "pdf": "Subject", "svg": "Description"}[fmt]
    meta = {"Title": "gaps to the baseline" + (f": {titles}" if titles else ""), key: titles} if titles else None
    with matplotlib.rc_context({"pdf.fonttype": 42, "ps.fonttype": 42, "svg.fonttype": "path"}):
        fig.savefig(target, format=fmt, dpi=DPI, metadata=meta)


def save(fig, out: str | Path) -> Path:
    """Write ``fig`` to ``out`` atomically in the format of its suffix; closes the figure."""
    import matplotlib.pyplot as plt

    out = Path(out)
    fmt = check_suffix(out)
    try:
        with atomic_write(out) as tmp:
            write(fig, tmp, fmt)
    finally:
        plt.close(fig)
    return out


def plot_gaps(tables: list[Table], out: str | Path) -> Path:
    """Draw and write the gaps plot (the demo's call; the CLI checks the path first)."""
    check_suffix(out)
    return save(draw(tables), out)
