"""``--plot``: the paper figure of the gaps (infomin_det.report.plot), checked on the figure's artists.

Titles name the paper's table; far rows (random init) get their own axes and x scale, the others
keep a scale of a few AP; every bar's label is the gap as the tables print it (n/a included);
error bars (the seed std) only on rows averaging more than one seed; nothing runs off its axes or
the figure; PNG at 300 dpi, PDF / SVG vector."""

from __future__ import annotations

import math

import pytest
from matplotlib.container import BarContainer

from infomin_det.errors import UserError
from infomin_det.report import paper, plot
from infomin_det.report.aggregate import Row, Stat, Table, paper_tables, rounded_gap, title_of

COCO = ["bbox/AP", "bbox/AP50", "bbox/AP75", "segm/AP", "segm/AP50", "segm/AP75"]
BASE = {m: 40.0 + k for k, m in enumerate(COCO)}


def _row(name: str, gaps: dict[str, float | None] | float, n: int = 3, std: float = 0.3, **kw) -> Row:
    """A row of ours averaging ``n`` seeds whose means sit ``gaps`` above BASE (None: NaN in a seed)."""
    gaps = {m: gaps for m in COCO} if isinstance(gaps, (int, float)) else gaps
    stats = {m: Stat(None, None, n, "NaN in seed 1") if gaps.get(m) is None
             else Stat(BASE[m] + gaps[m], std if n > 1 else None, n) for m in COCO}
    row = Row(name, stats, seeds=list(range(n)), **kw)
    row.gaps = {m: gaps.get(m) for m in COCO}   # exactly as given (aggregate: row mean - baseline mean)
    return row


def _table(*rows: Row, protocol: str = "coco/R50-FPN-1x", **kw) -> Table:
    base = Row("supervised", {m: Stat(v, 0.1, 2) for m, v in BASE.items()}, seeds=[0, 1], is_baseline=True)
    t = Table(protocol, "COCO train2017/val2017 (paper)", list(COCO), [base, *rows], baseline="supervised",
              paper_dataset=True, **kw)
    for r in rows:  # as aggregate has it: a row with no_gap has no gaps
        if r.no_gap:
            r.gaps = {m: None for m in COCO}
    return t


def _labels(ax) -> dict[tuple[str, str], str]:
    """(row label, metric) -> the text on that bar."""
    out = {}
    for a in ax.texts:
        kind, row, metric = a.get_gid().split("\t")
        assert kind == "gap"
        out[(row, metric)] = a.get_text()
    return out


def _bars(ax) -> dict[str, BarContainer]:
    return {c.get_label(): c for c in ax.containers if isinstance(c, BarContainer)}


def _headings(fig) -> list[str]:
    return [" ".join(t.get_text() for t in sf.texts) for sf in fig.subfigs]


def _assert_inside(fig) -> None:
    """Every value label inside its axes; every heading and subtitle inside the figure."""
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    for ax in fig.axes:
        box = ax.get_window_extent(r)
        for a in ax.texts:
            ext = a.get_window_extent(r)
            assert box.x0 <= ext.x0 and ext.x1 <= box.x1, a.get_text()
    for text in [ax.title for ax in fig.axes] + [x for sf in fig.subfigs for x in sf.texts]:
        ext = text.get_window_extent(r)
        assert 0 <= ext.x0 and ext.x1 <= fig.bbox.width, text.get_text()


def _close(fig) -> None:
    import matplotlib.pyplot as plt

    plt.close(fig)


# ---------------------------------------------------------------------------------------------
# titles


def test_panels_are_titled_like_the_paper_and_keep_the_full_title():
    fig = plot.draw(paper_tables("T3"))
    heads = _headings(fig)
    assert heads[0].replace("\n", " ") == "Table 3(a): Mask R-CNN, R50-FPN, 1x schedule"
    assert heads[1].startswith("Table 3(b):")
    sub = fig.axes[0].get_title().replace("\n", " ")
    assert "coco/R50-FPN-1x" in sub and "dataset: COCO train2017/val2017 (paper)" in sub and "gaps to supervised" in sub
    _assert_inside(fig)
    _close(fig)
    assert (paper.printed_name("T3a"), paper.printed_name("T4"), paper.printed_name("T11a")) == (
        "Table 3(a)", "Table 4", "Table 11(a)")
    # two panels print coco/R50-FPN-2x (T3b, T6a): the one a paper row came from names the table
    (t6a,) = paper_tables("T6a")
    assert plot.heading(t6a).startswith("Table 6(a):")
    assert plot.heading(_table(_row("infomin", 0.5), protocol="coco/R50-FPN-2x")).startswith("Table 3(b):")
    # no paper panel: protocol and dataset
    assert plot.heading(_table(_row("x", 0.5), protocol="coco/none")) == "coco/none \u00b7 COCO train2017/val2017 (paper)"


def test_modifications_and_batch_scaling_stay_visible():
    t = _table(_row("infomin", 0.5), modified=("MODEL.RESNETS.DEPTH=18", "SOLVER.MAX_ITER=400"), batch=2)
    t.paper_dataset, t.dataset = False, "toy-shapes"
    fig = plot.draw([t])
    (head,) = _headings(fig)
    assert head.replace("\n", " ").endswith("\u00b7 toy-shapes (modified)")
    shown = " ".join(fig.axes[0].get_title().split())
    assert shown == " ".join(title_of(t).split())   # wrapped, never shortened
    assert "MODEL.RESNETS.DEPTH=18" in shown and "batch 2, paper 16" in shown
    _assert_inside(fig)
    _close(fig)


# ---------------------------------------------------------------------------------------------
# far rows


def test_a_random_init_row_gets_its_own_axes_and_the_others_keep_a_few_ap():
    (t,) = paper_tables("T3a")   # random init -6.0 .. -8.7 AP, the others within 1.3 AP
    fig = plot.draw([t])
    near, far = fig.axes
    assert [x.get_text() for x in near.get_yticklabels()] == ["InstDis", "PIRL", "MoCo", "InfoMin Aug."]
    assert [x.get_text() for x in far.get_yticklabels()] == ["random init"]
    lo, hi = near.get_xlim()
    assert -3 < lo < -1.3 and 1.3 < hi < 3
    assert far.get_xlim()[0] < -8.7
    _close(fig)


def test_rows_within_a_few_ap_share_one_axes():
    fig = plot.draw([_table(_row("a", 0.9), _row("b", -1.1), _row("c", 0.2, n=1))])
    assert len(fig.axes) == 1
    assert [x.get_text() for x in fig.axes[0].get_yticklabels()] == ["a (n=3)", "b (n=3)", "c (n=1)"]
    _close(fig)


def test_the_far_rule():
    rows = lambda *gs: [_row(f"r{k}", g) for k, g in enumerate(gs)]  # noqa: E731
    names = lambda part: [r.weights for r in part]  # noqa: E731
    near, far = plot.split_far(rows(-7.5, 0.4, -1.1, 0.9))
    assert names(near) == ["r1", "r2", "r3"] and names(far) == ["r0"]       # 7.5 > 3 x 1.1, > 2 AP
    assert plot.split_far(rows(-4.2, 0.4, 1.5))[1] == []                     # 4.2 < 3 x 1.5
    assert plot.split_far(rows(0.2, 1.2))[1] == []                           # 6x, but 1.2 < 2 AP
    near, far = plot.split_far(rows(0.5, 2.1, 25.0))                          # the largest jump splits
    assert names(near) == ["r0", "r1"] and names(far) == ["r2"]
    no_gap = _row("broken", {})
    no_gap.no_gap = "bbox/AP NaN"
    near, far = plot.split_far(rows(0.3, -9.0) + [no_gap])                    # no gap at all: near
    assert names(near) == ["r0", "broken"] and names(far) == ["r1"]


# ---------------------------------------------------------------------------------------------
# labels, error bars, n/a


def test_every_bar_is_labelled_with_its_rounded_gap_and_n_a_where_there_is_none():
    gaps = dict(zip(COCO, (0.94, -1.25, 0.04, -0.04, None, 1.349)))
    broken = _row("broken", 0.0)
    broken.no_gap = "bbox/AP NaN in seed 1"
    t = _table(_row("infomin", gaps), broken, _row("moco", -0.31, n=1))
    fig = plot.draw([t])
    (ax,) = fig.axes
    labels = _labels(ax)
    assert set(labels) == {(r.label, m) for r in t.rows[1:] for m in COCO}
    for r in t.rows[1:]:
        for m in COCO:
            g = rounded_gap(r.gaps[m])
            text = labels[(r.label, m)]
            if g is None:
                assert text == "n/a"
            else:
                assert float(text.replace("\u2212", "-")) == g and (text[0] in "+\u2212" or g == 0)
    assert [labels[("infomin", m)] for m in COCO] == ["+0.9", "\u22121.2", "0.0", "0.0", "n/a", "+1.3"]
    assert {labels[("broken", m)] for m in COCO} == {"n/a"}
    # a bar with no gap is not drawn (a zero-length bar would read as 0.0)
    bars = _bars(ax)
    assert [b.get_visible() for b in bars["infomin (n=3)"]] == [True, True, True, True, False, True]
    assert not any(b.get_visible() for b in bars["broken (n=3)"])
    _close(fig)


def test_error_bars_are_the_seed_std_and_only_for_rows_of_several_seeds():
    t = _table(_row("infomin", 0.9, n=3, std=0.4), _row("moco", -0.3, n=1), _row("pirl", -0.5, n=2, std=0.2))
    paper_row = Row("InstDis (paper T3a)", {m: Stat(BASE[m] - 0.9, None, 0) for m in COCO}, source="paper T3a")
    paper_row.gaps = {m: -0.9 for m in COCO}
    t.rows.append(paper_row)
    fig = plot.draw([t])
    bars = _bars(fig.axes[0])
    assert set(bars) == {"infomin (n=3)", "moco (n=1)", "pirl (n=2)", "InstDis (paper T3a)"}
    assert bars["moco (n=1)"].errorbar is None and bars["InstDis (paper T3a)"].errorbar is None
    for name, gap, std in (("infomin (n=3)", 0.9, 0.4), ("pirl (n=2)", -0.5, 0.2)):
        (segments,) = [c.get_segments() for c in bars[name].errorbar.lines[2]]
        assert len(segments) == len(COCO)
        for seg in segments:
            assert sorted(x for x, _ in seg) == pytest.approx([gap - std, gap + std])
    legend = [x.get_text() for x in fig.subfigs[0].legends[0].get_texts()]
    assert "\u00b1 seed std" in legend
    _close(fig)


def test_legend_names_the_metrics_and_the_axis_says_the_baseline():
    fig = plot.draw([_table(_row("moco", -0.3, n=1))])
    (ax,) = fig.axes
    assert ax.get_xlabel() == "gap to supervised (AP points)"
    texts = [x.get_text() for x in fig.subfigs[0].legends[0].get_texts()]
    assert texts == [plot.metric_label(m) for m in COCO]      # no seed std: no row has seeds
    assert texts[0] == r"AP$^{\mathrm{bb}}$" and texts[4] == r"AP$^{\mathrm{mk}}_{50}$"
    assert plot.metric_label("bbox/AP50", "voc/R50-C4-24k") == "AP$_{50}$"
    colours = [p.get_facecolor() for p in fig.subfigs[0].legends[0].get_patches()]
    assert len(set(colours)) == len(COCO)                       # one colour per metric
    assert any(line.get_xdata()[0] == 0 for line in ax.get_lines())   # the zero line
    _close(fig)


def test_nothing_runs_off_its_axes_or_the_figure_and_height_grows_with_rows():
    t = _table(_row("a long method label [variant] {family}", 1.349), _row("cost $5", -0.4),
               _row("random", -24.9), _row("broken", {}))
    fig = plot.draw([t])
    _assert_inside(fig)
    assert "cost $5 (n=3)" in [x.get_text().replace("\\$", "$") for x in fig.axes[0].get_yticklabels()]
    tall = fig.get_figheight()
    _close(fig)
    fig = plot.draw([_table(_row("a", 0.5))])
    assert fig.get_figheight() < tall
    _close(fig)


def test_no_baseline_no_plot():
    t = _table(_row("a", 0.5))
    t.baseline = None
    with pytest.raises(UserError, match="no table has one"):
        plot.draw([t])


# ---------------------------------------------------------------------------------------------
# files


def test_png_at_300_dpi_and_vector_pdf_svg(tmp_path):
    from PIL import Image

    tables = paper_tables("T3a")
    png = plot.plot_gaps(tables, tmp_path / "gaps.png")
    with Image.open(png) as im:
        assert [round(d) for d in im.info["dpi"]] == [300, 300]
        assert "Table 3(a)" in im.info["Title"]
        assert im.size[0] == round(plot.WIDTH * 300)
    assert plot.plot_gaps(tables, tmp_path / "gaps.pdf").read_bytes()[:5] == b"%PDF-"
    assert b"<svg" in plot.plot_gaps(tables, tmp_path / "gaps.svg").read_bytes()[:2000]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    with pytest.raises(UserError, match="the plot is written as"):
        plot.plot_gaps(tables, tmp_path / "gaps.jpg")
    assert math.isclose(plot.DPI, 300)
