"""AP report: find fine-tuning runs, parse Detectron2's results, average seeds, print gaps.

Layers (each its own module; none imports detectron2 or torch)::

    runs.find_runs(paths) -> [Run]            discovery, status (done / in-progress / failed / pending), duplicates
    identity.identify(dir)                      protocol / weights / seed / variant / dataset; sources must agree
    parse                                       metrics.json and log.txt, read from the end; value checks
    aggregate.build_tables(runs, baseline)     -> [Table] (mean/std/n per metric, NaN rule, gaps)
    paper                                       the paper's Tables 1-11 (paper_tables.json)
    render.RENDERERS / print_terminal          markdown, latex, csv, json / rich
    plot.draw / plot_gaps                       matplotlib PNG / PDF / SVG
    outputs                                     where --out / --plot may write; all-or-nothing writes
    cli                                         ``infomin-det report``
"""

from infomin_det.report.aggregate import Row, Stat, Table, build_tables, paper_tables
from infomin_det.report.runs import Run, find_runs, load_run

__all__ = ["Row", "Run", "Stat", "Table", "build_tables", "find_runs", "load_run", "paper_tables"]
