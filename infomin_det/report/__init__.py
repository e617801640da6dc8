"""AP report: find fine-tuning runs, parse Detectron2's results, average seeds, print gaps.

Layers (each its own module; none imports detectron2 or torch)::

    runs.find_runs(paths) -> [Run]            discovery + identity (run.json / layout / config.yaml)
    parse                                       metrics.json (from the end) and log.txt copypaste
    aggregate.build_tables(runs, baseline)     -> [Table] (mean/std/n per metric, gaps)
    paper                                       the paper's Tables 1-11 (paper_tables.json)
    render.RENDERERS / print_terminal          markdown, latex, csv, json / rich
    plot.plot_gaps                              matplotlib PNG
    cli                                         ``infomin-det report``
"""

from infomin_det.report.aggregate import Row, Stat, Table, build_tables, paper_tables
from infomin_det.report.runs import Run, find_runs, load_run

__all__ = ["Row", "Run", "Stat", "Table", "build_tables", "find_runs", "load_run", "paper_tables"]
