"""The LaTeX table compiles: booktabs rules, a caption naming the paper's table, a label that
``\\ref`` resolves, coloured gaps, and names with LaTeX's special characters escaped.

Compiled by pdflatex (Debian texlive-latex-base + texlive-latex-recommended, installed by the
fixture where missing and the tests run as root; in CI a missing engine fails).
"""

from __future__ import annotations

import re
import subprocess

import pytest
from system_tools import apt_installed

from infomin_det.report import build_tables, find_runs
from infomin_det.report.aggregate import paper_tables
from infomin_det.report.render import tex_metric, to_latex
from infomin_det.report.synthetic import write_run

FINAL = {"bbox/AP": 40.0, "bbox/AP50": 60.0, "bbox/AP75": 44.0, "segm/AP": 36.0, "segm/AP50": 57.0,
         "segm/AP75": 39.0}
PROTO = "coco/R50-FPN-1x"


@pytest.fixture(scope="module")
def pdflatex():
    return apt_installed("pdflatex", ["texlive-latex-base", "texlive-latex-recommended"], "LaTeX engine")


def compile_tex(pdflatex, body: str, tmp_path, refs: list[str]) -> str:
    """Compile ``body`` in a bare article twice (for ``\\ref``); the log, after asserting a clean run."""
    doc = ("\\documentclass{article}\n\\usepackage{booktabs}\n\\usepackage{xcolor}\n\\usepackage{graphicx}\n"
           "\\begin{document}\n"
           + "".join(f"See Table~\\ref{{{r}}}.\n" for r in refs) + body + "\\end{document}\n")
    (tmp_path / "doc.tex").write_text(doc)
    for _ in range(2):
        proc = subprocess.run([pdflatex, "-interaction=nonstopmode", "-halt-on-error", "doc.tex"], cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stdout[-3000:]
    log = (tmp_path / "doc.log").read_text(errors="replace")
    assert "undefined" not in log.lower(), re.findall(r".*undefined.*", log, re.I)
    assert "Overfull" not in log, re.findall(r"Overfull.*", log)      # fits the text width of a plain article
    assert (tmp_path / "doc.pdf").read_bytes()[:5] == b"%PDF-"
    return log


@pytest.fixture
def ours(tmp_path):
    weights = {"infomin_v2-jig": (1.0, 1.4, 1.8), "supervised": (0.0, 0.2), "random": (-8.0,)}
    for name, shifts in weights.items():
        for seed, shift in enumerate(shifts):
            write_run(tmp_path / "exp" / PROTO / name / f"seed{seed}", PROTO, name, seed,
                      {k: v + shift for k, v in FINAL.items()}, max_iter=400, period=20, eval_period=200)
    return build_tables(find_runs([tmp_path / "exp"]), baseline="supervised")


def test_our_table_compiles_with_booktabs_caption_label_and_coloured_gaps(pdflatex, ours, tmp_path):
    tex = to_latex(ours)
    assert [l for l in tex.splitlines() if l.startswith("\\") and "rule" in l] == \
        ["\\toprule", "\\midrule", "\\midrule", "\\bottomrule"]          # head, after the baseline
    assert "\\hline" not in tex
    [caption] = re.findall(r"\\caption\{(.*)\}", tex)
    assert caption.startswith("Our runs as Table 3(a) of the paper (Mask R-CNN, R50-FPN, 1x schedule): coco/R50-FPN-1x")
    assert "gaps to supervised" in caption
    assert "\\label{tab:infomin-det:T3a}" in tex
    row = next(l for l in tex.splitlines() if l.startswith("infomin"))
    assert row.startswith(r"infomin\_v2-jig & ours & 3 & 41.4{\scriptsize$\pm$0.4} \textcolor{green!50!black}{($\uparrow$1.3)}")
    assert r"random & ours & 1 & 32.0 \textcolor{red}{($\downarrow$8.1)} &" in tex           # random: one seed, no std
    compile_tex(pdflatex, tex, tmp_path, ["tab:infomin-det:T3a"])


def test_the_papers_tables_compile_each_with_its_own_label(pdflatex, tmp_path):
    tables = paper_tables("T3") + paper_tables("T6") + paper_tables("T4")
    tex = to_latex(tables)
    labels = re.findall(r"\\label\{(.*)\}", tex)
    assert labels == ["tab:infomin-det:T3a", "tab:infomin-det:T3b", "tab:infomin-det:T6a", "tab:infomin-det:T6b",
                      "tab:infomin-det:T4"]
    assert "Table 6(a) of the paper, as printed: Mask R-CNN, R50-FPN, 2x schedule" in tex
    compile_tex(pdflatex, tex, tmp_path, labels)


def test_two_tables_of_one_protocol_get_distinct_labels(pdflatex, ours, tmp_path):
    tex = to_latex(ours + ours)
    labels = re.findall(r"\\label\{(.*)\}", tex)
    assert labels == ["tab:infomin-det:T3a", "tab:infomin-det:T3a-2"]
    compile_tex(pdflatex, tex, tmp_path, labels)


@pytest.mark.parametrize("metric, head", [
    ("bbox/AP", "AP$^\\mathrm{bb}$"), ("segm/AP75", "AP$^\\mathrm{mk}_{75}$"), ("bbox/APs", "AP$^\\mathrm{bb}_{S}$"),
    ("AP50", "AP$_{50}$"), ("AP", "AP"), ("keypoints/AP", "keypoints/AP"), ("bbox/AP-person", "bbox/AP-person"),
    ("my_metric", "my\\_metric")])
def test_metric_heads_as_the_paper_prints_them(metric, head):
    assert tex_metric(metric) == head
