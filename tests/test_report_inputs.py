"""``infomin-det report`` against hostile inputs: it never hands back a wrong number and never
destroys a record. Every case ends in a clean ``error:`` / ``  fix:`` (exit 2) or a correct table.

Groups: where --out / --plot may write; identity agreement (layout / run.json / config.yaml);
values that are not finite numbers and NaN; crashed runs; the paper's dataset; variants and
families; other inputs (paths, trees, registry, duplicates, flags). Runs are real files laid out as
Detectron2 + the trainer leave them (``report.synthetic``); the CLI is called in-process.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from infomin_det.cli import main
from infomin_det.report import build_tables, find_runs, load_run
from infomin_det.report.synthetic import config_yaml, write_run

FINAL = {"bbox/AP": 40.0, "bbox/AP50": 60.0, "bbox/AP75": 44.0, "bbox/APs": 20.0, "bbox/APm": 44.0,
         "bbox/APl": 52.0, "segm/AP": 36.0, "segm/AP50": 57.0, "segm/AP75": 39.0, "segm/APs": 16.0,
         "segm/APm": 39.0, "segm/APl": 53.0}
PROTO = "coco/R50-FPN-1x"
TOY = {"id": "toy-shapes", "paper": False, "train": ["toy_train"], "test": ["toy_val"]}


def run_(root: Path, weights: str, seed: int, shift: float = 0.0, protocol: str = PROTO, exp: str = "exp",
         final: dict | None = None, **kw) -> Path:
    values = {k: v + shift for k, v in (final or FINAL).items()}
    row_dir = f"{weights}+{kw['variant']}" if kw.get("variant") else weights     # as rundir.run_dir lays it out
    return write_run(root / exp / protocol / row_dir / f"seed{seed}", protocol, weights, seed, values,
                     max_iter=90000, period=30000, **kw)


@pytest.fixture
def report(capsys):
    """``infomin-det report ARGS`` in-process -> (exit status, stdout, stderr)."""
    def call(*args):
        rc = main(["report", *map(str, args)])
        got = capsys.readouterr()
        return rc, got.out, got.err
    return call


def refused(result, *needles: str, want: int = 2) -> None:
    """``error:`` / ``fix:``, no traceback; exit 2 (bad input) or, ``want=1``, 1 (some runs failed)."""
    rc, out, err = result
    assert rc == want, out + err
    assert "error: " in err and "  fix: " in err and "Traceback" not in err, err
    for n in needles:
        assert n in err, err


@pytest.fixture
def exp(tmp_path):
    for s, shift in enumerate((0.0, 0.4, 0.8)):
        run_(tmp_path, "infomin", s, 1.0 + shift)
    for s in range(2):
        run_(tmp_path, "supervised", s, 0.2 * s)
    return tmp_path


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink()}


# ---------------------------------------------------------------------------------------------
# 1 + 5: where --out / --plot may write; unwritable targets; formats


@pytest.mark.parametrize("name", ["metrics.json", "run.json", "config.yaml", "log.txt", "last_checkpoint",
                                  "final_results.json", "registry.json", "launch_state.json",
                                  "launch_result.json", "progress.json", "model_final.pth", "R-50.pkl"])
def test_out_never_takes_a_run_files_name(exp, report, tmp_path, name):
    before = _snapshot(exp)
    run = exp / "exp" / PROTO / "infomin" / "seed0"
    for target in (run / name, tmp_path / "elsewhere" / name):
        target.parent.mkdir(exist_ok=True)
        refused(report(exp, "--format", "json", "--out", target), "the name of a run's own file")
    refused(report(exp, "--baseline", "supervised", "--plot", run / name))
    assert _snapshot(exp) == before and not (tmp_path / "elsewhere" / name).exists()


def test_out_never_writes_into_a_run_directory(exp, report, tmp_path):
    run = exp / "exp" / PROTO / "infomin" / "seed0"
    other = run_(tmp_path / "other", "x", 0, 7.0)
    (tmp_path / "outdir").mkdir()
    before = _snapshot(exp)
    refused(report(exp, "--out", run / "table.md"), "is a run directory")
    (run / "inference").mkdir()
    refused(report(exp, "--out", run / "inference" / "table.md"), "is a run directory")
    link_dir = tmp_path / "link_to_run"
    link_dir.symlink_to(run)
    refused(report(exp, "--out", link_dir / "table.md"), "is a run directory")
    link_file = tmp_path / "outdir" / "table.json"
    link_file.symlink_to(run / "metrics.json")  # a harmless-looking name that resolves to the run's data
    refused(report(exp, "--out", link_file), "'metrics.json' is the name of a run's own file")
    # a run directory this report does not read is protected too
    refused(report(exp, "--out", other / "table.md"), "is a run directory")
    refused(report(exp, "--baseline", "supervised", "--plot", run / "gaps.png"), "is a run directory")
    assert _snapshot(exp) == before


def test_out_never_writes_into_the_launch_directory(exp, report):
    from infomin_det.launch.registry import Registry

    reg = Registry(exp / "exp")
    reg.save()
    refused(report(exp / "exp", "--out", exp / "exp" / "launch" / "table.md"), "launch")


@pytest.mark.parametrize("target,needle", [
    ("missing/table.md", "does not exist"),
    ("a_dir", "is a directory"),
    ("/proc/table.md", "cannot write in /proc"),
    ("/proc/self/table.md", "cannot write in"),
    ("/sys/table.md", "cannot write in /sys"),
    ("/dev/null", "not a regular file"),
    ("fifo.md", "not a regular file"),
    ("", "an empty path"),
    ("loop.md", "symlink loop"),
])
def test_unwritable_out_is_refused_before_anything_is_read(exp, report, tmp_path, target, needle):
    (tmp_path / "a_dir").mkdir()
    os.mkfifo(tmp_path / "fifo.md")
    (tmp_path / "loop.md").symlink_to(tmp_path / "loop.md")
    path = target if target.startswith("/") or not target else str(tmp_path / target)
    refused(report(exp, "--format", "markdown", "--out", path), needle)
    assert not (tmp_path / "missing").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".") and "probe" in p.name]


@pytest.mark.parametrize("plot,ok", [("g.png", True), ("g.PDF", True), ("g.svg", True), ("g.jpg", False),
                                     ("g", False), ("g.json", False), ("g.png.tmp", False)])
def test_plot_suffixes(exp, report, tmp_path, plot, ok):
    rc, out, err = report(exp, "--baseline", "supervised", "--plot", tmp_path / plot)
    if ok:
        assert rc == 0, err
        head = (tmp_path / plot).read_bytes()[:5]
        assert head in (b"\x89PNG\r", b"%PDF-") or b"<?xml" in head or head.startswith(b"<")
    else:
        refused((rc, out, err), "the plot is written as .png, .pdf, .svg")
        assert not (tmp_path / plot).exists()


def test_format_and_out_suffix_must_agree(exp, report, tmp_path):
    refused(report(exp, "--format", "csv", "--out", tmp_path / "t.md"), "--format csv but --out", "named like markdown")
    refused(report(exp, "--out", tmp_path / "t.txt"), "a file needs a file format")
    refused(report(exp, "--format", "terminal", "--out", tmp_path / "t.md"), "a file needs a file format")
    rc, _, err = report(exp, "--format", "markdown", "--out", tmp_path / "t.txt")
    assert rc == 0 and (tmp_path / "t.txt").read_text().startswith("### coco/R50-FPN-1x")
    refused(report(exp, "--format", "markdown", "--baseline", "supervised", "--out", tmp_path / "same.png",
                   "--plot", tmp_path / "same.png"), "are the same file")


def test_nothing_half_written(exp, report, tmp_path):
    out, png = tmp_path / "t.md", tmp_path / "g.png"
    out.write_text("the previous table\n")
    # the plot cannot be drawn (no baseline): the table is not written either
    refused(report(exp, "--out", out, "--plot", png), "--plot draws gaps to a baseline")
    assert out.read_text() == "the previous table\n" and not png.exists()
    # a run fails: the files would hold a table without it -> neither is written, the old one stays
    bad = run_(exp, "broken", 0)
    (bad / "metrics.json").write_text('{"iteration": 3, "bbox/AP": "40.0"}\n')
    refused(report(exp, "--baseline", "supervised", "--out", out, "--plot", png), "nothing written to")
    assert out.read_text() == "the previous table\n" and not png.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_out_through_a_symlink_writes_the_target_and_keeps_the_link(exp, report, tmp_path):
    real = tmp_path / "paper" / "table.md"
    real.parent.mkdir()
    real.write_text("old\n")
    link = tmp_path / "current.md"
    link.symlink_to(real)
    rc, _, err = report(exp, "--out", link)
    assert rc == 0, err
    assert link.is_symlink() and real.read_text().startswith("### coco/R50-FPN-1x")


# ---------------------------------------------------------------------------------------------
# 2: identity must agree across the layout, run.json and config.yaml


def _edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("edit,needle", [
    ({"seed": 3}, "seed: run.json says 3, the directory says 0"),
    ({"protocol": "coco/R101-FPN-1x"}, "protocol: run.json says coco/R101-FPN-1x, the directory says coco/R50-FPN-1x"),
    ({"weights_name": "moco"}, "weights: run.json says moco, the directory says infomin"),
])
def test_run_json_disagreeing_with_the_layout_is_refused(tmp_path, edit, needle):
    d = run_(tmp_path, "infomin", 0)
    _edit_json(d / "run.json", **edit)
    run = load_run(d)
    assert run.status == "failed" and "the run's records disagree" in run.reason and needle in run.reason
    assert run.metrics == {}


@pytest.mark.parametrize("cfg_kw,info,needle", [
    ({"seed": 5, "weights": "/w/infomin.pkl"}, {}, "seed: run.json says 0, the directory says 0, config.yaml SEED says 5"),
    ({"seed": 0, "weights": "/w/other.pkl"}, {"weights_path": "/w/infomin.pkl"},
     "weights file: run.json says /w/infomin.pkl, config.yaml MODEL.WEIGHTS=/w/other.pkl"),
    ({"seed": 0, "weights": "/w/infomin.pkl"}, {"family": "random"}, "the run is random init (random) but config.yaml loads"),
    ({"seed": 0, "weights": ""}, {"family": "ssl"}, "family ssl, but config.yaml loads no weights"),
    ({"seed": 0, "weights": "/w/infomin.pkl", "train": ("toy_train",), "test": ("toy_val",)}, {},
     "dataset: run.json trains on coco_2017_train -> coco_2017_val, config.yaml on toy_train -> toy_val"),
    ({"seed": 0, "weights": "/w/infomin.pkl", "train": ("toy_train",), "test": ("toy_val",)},
     {"dataset": {"id": "coco", "paper": True}}, "dataset: run.json says the paper's dataset, but the run trains on toy_train -> toy_val"),
    ({"seed": 0, "weights": "/w/infomin.pkl", "train": ("a",), "test": ("b",)}, {"dataset": TOY},
     "dataset: run.json trains on toy_train -> toy_val, config.yaml on a -> b"),
    ({"seed": 0, "weights": "/w/infomin.pkl"}, {"provenance": {"config_sha256": "ab" * 32}},
     "config: run.json records config sha256 abababababab"),
])
def test_config_yaml_disagreeing_with_run_json_is_refused(tmp_path, cfg_kw, info, needle):
    d = run_(tmp_path, "infomin", 0, config=config_yaml(PROTO, **cfg_kw))
    if info:
        _edit_json(d / "run.json", **info)
    run = load_run(d)
    assert run.status == "failed" and needle in run.reason, run.reason


def test_a_run_modified_from_its_protocol_gets_its_own_labelled_table(tmp_path, report):
    for s in range(2):
        run_(tmp_path, "infomin", s, 0.1 * s, config=config_yaml(PROTO, seed=s, weights="/w/i.pkl"))
        run_(tmp_path, "deep", s, 0.1 * s, exp="exp2", config=config_yaml(PROTO, seed=s, weights="/w/d.pkl", depth=101))
    runs = find_runs([tmp_path])
    assert {r.status for r in runs} == {"done"}
    plain, deep = build_tables(runs)
    assert plain.modified == () and [r.label for r in plain.rows] == ["infomin"]
    assert deep.modified == ("RESNETS.DEPTH=101 (protocol: 50)",) and [r.label for r in deep.rows] == ["deep"]
    rc, out, _ = report(tmp_path, "--format", "markdown")
    assert "### coco/R50-FPN-1x (modified: RESNETS.DEPTH=101 (protocol: 50)) | dataset: COCO" in out
    refused(report(tmp_path, "--baseline", "paper:supervised"), "deviate from the protocol (RESNETS.DEPTH=101")
    rc, _, err = report(tmp_path / "exp", "--baseline", "paper:supervised")
    assert rc == 0, err


def test_without_run_json_layout_and_config_decide(tmp_path):
    d = run_(tmp_path, "infomin", 0, config=config_yaml(PROTO, seed=0, weights="/w/infomin.pkl"))
    (d / "run.json").unlink()
    run = load_run(d)
    assert run.status == "done" and run.identity_from == "directory + config.yaml" and run.dataset.paper
    (d / "config.yaml").write_text(config_yaml(PROTO, seed=2, weights="/w/infomin.pkl"))
    assert "seed: the directory says 0, config.yaml SEED says 2" in load_run(d).reason
    loose = tmp_path / "loose"
    write_run(loose, PROTO, "x", 0, FINAL, max_iter=90000, period=30000,
              config=config_yaml("coco/R101-FPN-2x", seed=4, weights="/w/moco.pkl"))
    (loose / "run.json").unlink()
    run = load_run(loose)  # config.yaml alone: the protocol its fields match exactly
    assert (run.status, run.protocol, run.weights, run.seed) == ("in-progress", "coco/R101-FPN-2x", "moco", 4)
    assert "at iteration 90000" in run.reason or "not final" in run.reason or "evaluation" in run.reason


@pytest.mark.parametrize("raw,needle", [
    ('{"protocol": "coco/R50-FPN-1x", "weights_name": "infomin", "seed": "0"}', "seed is '0', not a non-negative integer"),
    ('{"protocol": "coco/R50-FPN-1x", "weights_name": "infomin", "seed": true}', "seed is True"),
    ('{"protocol": "coco/R50-FPN-1x", "weights_name": "infomin", "seed": -1}', "not a non-negative integer"),
    ('{"protocol": "coco/R50-FPN-1x", "weights_name": "infomin", "seed": 0.5}', "not a non-negative integer"),
    ('{"protocol": "coco/R50-FPN-1x", "weights_name": "infomin", "seed": NaN}', "not a non-negative integer"),
    ('{"protocol": "coco/R50-FPN-9x", "weights_name": "infomin", "seed": 0}', "is not one of the toolkit's"),
    ('{"protocol": 5, "weights_name": "infomin", "seed": 0}', "protocol is 5, not a string"),
    ('{"protocol": "coco/R50-FPN-1x", "weights_name": "../x", "seed": 0}', "is not a plain name"),
    ('{"protocol": "coco/R50-FPN-1x", "weights_name": "infomin", "seed": 0, "variant": "a b"}', "is not a plain name"),
    ('{"protocol": "coco/R50-FPN-1x", "weights_name": "infomin", "seed": 0, "family": "magic"}', "family is 'magic'"),
    ('{"protocol": "coco/R50-FPN-1x", "weights_name": "infomin", "seed": 0, "dataset": "coco"}', "dataset is 'coco'"),
    ('{"protocol": "coco/R50-FPN-1x", "weights_name": "infomin", "seed": 0, "dataset": {"id": 5, "paper": true}}', "dataset.id is 5"),
    ('{"protocol": "coco/R50-FPN-1x", "weights_name": "infomin", "seed": 0, "dataset": {"id": "c", "paper": "yes"}}', "dataset.paper is 'yes'"),
    ('{"protocol": "coco/R50-FPN-1x", "seed": 0}', "not a run record"),
    ('[1, 2]', "not a run record (a JSON object)"),
    ('{"protocol": ', "is unreadable (JSONDecodeError"),
    (b'\xff\xfe{}', "is unreadable (UnicodeDecodeError"),
    ('{"a": [' * 100000 + "]" * 100000 + "}", "is unreadable (RecursionError"),
    ("x" * (1 << 21), "too large for a run record"),
])
def test_damaged_run_json_fails_the_run(tmp_path, raw, needle):
    d = run_(tmp_path, "infomin", 0)
    (d / "run.json").write_bytes(raw if isinstance(raw, bytes) else raw.encode())
    run = load_run(d)
    assert run.status == "failed" and needle in run.reason, run.reason


@pytest.mark.parametrize("text,needle", [
    ("MODEL: [\n", "not a readable YAML file"),
    ("just a string\n", "not a Detectron2 config (MODEL.RESNETS.DEPTH is missing)"),
    (config_yaml(PROTO, seed=0, weights="/w/i.pkl").replace("DEPTH: 50", "DEPTH: fifty"), "MODEL.RESNETS.DEPTH is 'fifty', not a int"),
    (config_yaml(PROTO, seed=0, weights="/w/i.pkl").replace("MASK_ON: true", "MASK_ON: 1"), "MODEL.MASK_ON is 1, not a bool"),
    (config_yaml(PROTO, seed=0, weights="/w/i.pkl").replace("SEED: 0", "SEED: true"), "SEED is True, not a int"),
    (config_yaml(PROTO, seed=0, weights="/w/i.pkl").replace("  TEST:\n  - coco_2017_val", "  TEST: 5"), "DATASETS.TEST is 5"),
    ("a: &a [1,1,1,1,1,1,1,1]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b]\n"
     "d: &d [*c,*c,*c,*c,*c,*c,*c,*c]\nMODEL: {RESNETS: {DEPTH: *d}}\n", "MODEL.RESNETS.DEPTH is a list of 8 items"),
    ("\x00\x01binary", "not a readable YAML file"),
])
def test_damaged_config_yaml_fails_the_run(tmp_path, text, needle):
    d = run_(tmp_path, "infomin", 0)
    (d / "config.yaml").write_text(text)
    run = load_run(d)
    assert run.status == "failed" and needle in run.reason, run.reason


def test_flow_style_config_yaml_reads_like_the_dump(tmp_path):
    import yaml

    d = run_(tmp_path, "infomin", 0, config=config_yaml(PROTO, seed=0, weights="/w/i.pkl"))
    block = yaml.safe_load((d / "config.yaml").read_text())
    (d / "config.yaml").write_text(yaml.safe_dump(block, default_flow_style=True))
    run = load_run(d)
    assert run.status == "done" and run.modified == () and run.dataset.paper


# ---------------------------------------------------------------------------------------------
# 3: values that are not finite numbers; NaN


@pytest.mark.parametrize("value,needle", [
    ('"40.0"', "bbox/AP is '40.0', not a number"),
    ("null", "bbox/AP is None, not a number"),
    ("true", "bbox/AP is True, not a number"),
    ("Infinity", "bbox/AP is inf, not a percentage"),
    ("-Infinity", "bbox/AP is -inf, not a percentage"),
    ("[40.0]", "bbox/AP is a list of 1 items"),
    ('{"v": 40.0}', "bbox/AP is a dict of 1 items"),
    ("140.0", "bbox/AP is 140.0, not a percentage in [0, 100]"),
    ("-1.0", "bbox/AP is -1.0, not a percentage in [0, 100]"),
    ("1e400", "bbox/AP is inf"),
])
def test_non_numbers_in_metrics_json_fail_the_run(tmp_path, value, needle):
    d = run_(tmp_path, "infomin", 0)
    lines = (d / "metrics.json").read_text().splitlines()
    last = lines[-1].replace('"bbox/AP": 40.0', f'"bbox/AP": {value}')
    assert last != lines[-1]
    (d / "metrics.json").write_text("\n".join(lines[:-1] + [last]) + "\n")
    run = load_run(d)
    assert run.status == "failed" and needle in run.reason and "metrics.json" in run.reason, run.reason


@pytest.mark.parametrize("line,needle", [
    ('{"iteration": true, "total_loss": 1.0}', "no non-negative integer 'iteration'"),
    ('{"iteration": "99", "total_loss": 1.0}', "no non-negative integer 'iteration'"),
    ('{"iteration": -5, "total_loss": 1.0}', "no non-negative integer 'iteration'"),
    ('[1, 2, 3]', "not a JSON record"),
    ('{"iteration": 101, "total_loss": NaN, "x": {"y": [' + "[" * 50000 + "]" * 50000 + "]}}", "not a JSON record"),
])
def test_damaged_records_fail_the_run(tmp_path, line, needle):
    d = run_(tmp_path, "infomin", 0)
    with open(d / "metrics.json", "a") as f:
        f.write(line + "\n")
    run = load_run(d)
    assert run.status == "failed" and needle in run.reason, run.reason


def _eval_only(d: Path, values: str, header: str = "AP,AP50,AP75,APs,APm,APl") -> Path:
    d.mkdir(parents=True)
    (d / "config.yaml").write_text(config_yaml(PROTO, seed=0, weights="/w/i.pkl"))
    lines = ["[12/01 10:00:00] d2.engine.defaults INFO: Evaluation results for coco_2017_val in csv format:"]
    for task in ("bbox", "segm"):
        lines += [f"[12/01 10:00:00] d2.evaluation.testing INFO: copypaste: {x}" for x in (f"Task: {task}", header, values)]
    (d / "log.txt").write_text("\n".join(lines) + "\n")
    return d


@pytest.mark.parametrize("values,needle", [
    ("40.0000,60.0000,44.0000,20.0000,44.0000,inf", "'inf' for task 'bbox' is not a number"),
    ("40.0000,60.0000,44.0000,20.0000,44.0000,1e3", "'1e3'"),
    ("40.0000,60.0000,44.0000,20.0000,44.0000,1_0", "'1_0'"),
    ("40.0000,60.0000,44.0000,20.0000,44.0000,-0.5", "'-0.5'"),
    ("40.0000,60.0000,44.0000,20.0000,44.0000,", "''"),
    ("40.0000,60.0000,44.0000,20.0000,44.0000,abc", "'abc'"),
    ("40.0000,60.0000,44.0000,20.0000,44.0000", "have 5 fields, the header 6"),
    ("40.0000,60.0000,44.0000,20.0000,44.0000,101.0000", "bbox/APl is 101.0, not a percentage"),
])
def test_damaged_copypaste_fails_the_run(tmp_path, values, needle):
    run = load_run(_eval_only(tmp_path / "exp" / PROTO / "w" / "seed0", values))
    assert run.status == "failed" and needle in run.reason, run.reason


def test_copypaste_header_junk_and_nan(tmp_path):
    run = load_run(_eval_only(tmp_path / "a" / PROTO / "w" / "seed0", "1,2,3", header="AP,AP,AP50"))
    assert run.status == "failed" and "not a list of metric names" in run.reason
    run = load_run(_eval_only(tmp_path / "b" / PROTO / "w" / "seed0", "nan,nan,nan,nan,nan,nan"))
    assert run.status == "done" and math.isnan(run.metrics[""]["bbox/AP"])


def test_nan_main_ap_in_one_seed_is_shown_and_never_yields_a_gap(tmp_path, report):
    nan_final = {k: math.nan for k in FINAL}  # Detectron2: no predictions -> every metric NaN
    for s in range(3):
        run_(tmp_path, "infomin", s, 1.0 + 0.1 * s, final=nan_final if s == 1 else None)
        run_(tmp_path, "supervised", s, 0.1 * s)
        run_(tmp_path, "moco", s, 0.5 + 0.1 * s)
    (t,) = build_tables(find_runs([tmp_path]), baseline="supervised")
    info = next(r for r in t.rows if r.weights == "infomin")
    moco = next(r for r in t.rows if r.weights == "moco")
    assert info.stats["bbox/AP"].mean is None and info.stats["bbox/AP"].n == 3
    assert info.no_gap == "bbox/AP NaN in seed 1 (the model made no predictions)"
    assert all(g is None for g in info.gaps.values())  # was: mean nan, gap nan printed as ''
    assert moco.gaps["bbox/AP"] == pytest.approx(0.5)
    assert any(n.startswith("infomin: n/a, no gaps -- bbox/AP NaN in seed 1") for n in t.notes)
    rc, out, _ = report(tmp_path, "--baseline", "supervised", "--format", "markdown")
    assert rc == 0 and "| infomin | ours | 3 | n/a | n/a | n/a |" in out and "no predictions" in out
    rc, out, _ = report(tmp_path, "--baseline", "supervised", "--format", "csv")
    assert "bbox/AP,,,,NaN in seed 1 (the model made no predictions)" in out
    rc, out, _ = report(tmp_path, "--baseline", "supervised", "--format", "json")
    row = next(r for r in json.loads(out)["tables"][0]["rows"] if r["weights"] == "infomin")
    assert row["stats"]["bbox/AP"]["mean"] is None and row["gaps"]["bbox/AP"] is None and row["no_gap"]
    # the baseline itself without predictions: no gaps at all in the table
    (t,) = build_tables(find_runs([tmp_path]), baseline="infomin")
    assert all(g is None for r in t.rows for g in r.gaps.values())
    assert any("the baseline infomin has no bbox/AP" in n for n in t.notes)


def test_nan_size_ap_in_every_seed_only_blanks_that_metric(tmp_path):
    no_large = dict(FINAL, **{"bbox/APl": math.nan, "segm/APl": math.nan})
    for s in range(2):
        run_(tmp_path, "infomin", s, 1.0 + 0.1 * s, final=no_large)
        run_(tmp_path, "supervised", s, 0.1 * s, final=no_large)
    (t,) = build_tables(find_runs([tmp_path]), baseline="supervised", sizes=True)
    info = next(r for r in t.rows if r.weights == "infomin")
    assert info.no_gap == "" and info.gaps["bbox/AP"] == pytest.approx(1.0) and info.gaps["bbox/APl"] is None
    assert any("bbox/APl, segm/APl n/a -- NaN in seeds 0, 1 (no predictions, or no ground truth of that size"
               in n for n in t.notes)


def test_a_metric_missing_in_one_seed_is_not_averaged_over_the_others(tmp_path):
    run_(tmp_path, "infomin", 0)
    run_(tmp_path, "infomin", 1, final={k: v for k, v in FINAL.items() if not k.startswith("segm/")})
    (t,) = build_tables(find_runs([tmp_path]))
    (row,) = t.rows
    assert row.stats["segm/AP"].mean is None and row.stats["segm/AP"].why == "missing in seed 1"
    assert row.stats["bbox/AP"].mean == 40.0


# ---------------------------------------------------------------------------------------------
# 4: crashed runs are failed, with the cause


_LOG = ("[12/01 10:00:00] d2.engine.train_loop INFO: Starting training from iteration 0\n"
        "[12/01 10:00:01] d2.utils.events INFO:  eta: 0:00:01  iter: 19  total_loss: 3.1  lr: 0.02\n"
        "[12/01 10:00:02] d2.utils.events INFO:  eta: 0:00:01  iter: 39  total_loss: 3.0  lr: 0.02\n")
_CRASH = ("[12/01 10:00:03] d2.engine.train_loop ERROR: Exception during training:\n"
          "Traceback (most recent call last):\n  File \"train_loop.py\", line 156, in train\n    self.run_step()\n"
          "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB\n"
          "[12/01 10:00:03] d2.engine.hooks INFO: Total training time: 0:00:03\n"
          "[12/01 10:00:03] d2.utils.events INFO:  eta: 0:00:01  iter: 41  total_loss: 3.0  lr: 0.02\n")


def _training(tmp_path: Path, log: str) -> Path:
    d = tmp_path / "exp" / PROTO / "infomin" / "seed0"
    write_run(d, PROTO, "infomin", 0, FINAL, max_iter=100, period=20)
    lines = (d / "metrics.json").read_text().splitlines()
    (d / "metrics.json").write_text("\n".join(lines[:2]) + "\n")  # at iteration 39
    (d / "last_checkpoint").write_text("model_0000039.pth")
    (d / "log.txt").write_text(log)
    return d


def test_crash_marker_in_the_last_attempt_fails_the_run(tmp_path, report):
    d = _training(tmp_path, _LOG + _CRASH)
    run = load_run(d)
    assert run.status == "failed"  # was: in-progress
    assert "crashed at iteration 41: RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB (log.txt)" in run.reason
    refused(report(tmp_path), "crashed at iteration 41", "resumes from the last checkpoint", want=1)
    # resumed afterwards: the crash belongs to an earlier attempt
    (d / "log.txt").write_text(_LOG + _CRASH + _LOG.replace("iteration 0", "iteration 39"))
    assert load_run(d).status == "in-progress"
    # a traceback (not Detectron2's marker) after the last iteration line
    (d / "log.txt").write_text(_LOG + "Traceback (most recent call last):\n  File \"x\"\nKeyError: 'bbox'\n")
    run = load_run(d)
    assert run.status == "failed" and "crashed at iteration 39: KeyError: 'bbox'" in run.reason
    # a huge log: the marker is found from the end
    (d / "log.txt").write_text(_LOG * 20000 + _CRASH)
    assert "CUDA out of memory" in load_run(d).reason


def test_launch_state_failed_fails_the_run(tmp_path):
    d = _training(tmp_path, _LOG)
    (d / "launch_state.json").write_text(json.dumps({"state": "failed", "job_id": "42", "attempt": 1,
                                                     "error": "ValueError: bad dataset"}))
    run = load_run(d)
    assert run.status == "failed" and "the job failed (launch_state.json, job 42, attempt 1): ValueError: bad dataset" in run.reason
    # a job that failed before writing anything but its launch state is found and reported
    early = tmp_path / "exp" / PROTO / "infomin" / "seed1"
    early.mkdir()
    (early / "launch_state.json").write_text(json.dumps({"state": "failed", "error": "UserError: no dataset"}))
    runs = {r.path.name: r for r in find_runs([tmp_path])}
    assert runs["seed1"].status == "failed" and "UserError: no dataset" in runs["seed1"].reason


@pytest.mark.parametrize("content,needle", [
    ("{not json", "launch_state.json is unreadable"),
    ('{"state": "exploded"}', "holds no launch state"),
    ("[1]", "holds no launch state"),
    (None, "is not a launch record"),
])
def test_damaged_launch_state_fails_the_run(tmp_path, content, needle):
    d = _training(tmp_path, _LOG)
    if content is None:
        (d / "launch_state.json").mkdir()
    else:
        (d / "launch_state.json").write_text(content)
    run = load_run(d)
    assert run.status == "failed" and needle in run.reason, run.reason


def test_launch_state_done_without_results_fails_and_running_is_in_progress(tmp_path):
    d = _training(tmp_path, _LOG)
    (d / "launch_state.json").write_text('{"state": "done"}')
    run = load_run(d)
    assert run.status == "failed" and "launch_state.json: done" in run.reason
    (d / "launch_state.json").write_text('{"state": "requeued", "job_id": "7"}')
    run = load_run(d)
    assert run.status == "in-progress" and "requeued" in run.reason


# ---------------------------------------------------------------------------------------------
# 6: the paper's numbers only for the paper's dataset; the dataset in every table


def test_paper_baseline_refused_for_a_toy_dataset(tmp_path, report):
    for s in range(2):
        run_(tmp_path, "infomin", s, 0.1 * s, dataset=TOY)
    refused(report(tmp_path, "--baseline", "paper:supervised"),
            "--baseline paper:supervised compares with the paper's numbers",
            "the coco/R50-FPN-1x runs are on toy-shapes, not the paper's COCO train2017/val2017 (paper)")
    rc, out, err = report(tmp_path, "--baseline", "infomin", "--format", "markdown")
    assert rc == 0 and out.startswith("### coco/R50-FPN-1x | dataset: toy-shapes -- gaps to infomin")


def test_dataset_decided_from_config_without_run_json_field(tmp_path, report):
    paper_cfg = config_yaml(PROTO, seed=0, weights="/w/i.pkl")
    toy_cfg = config_yaml(PROTO, seed=0, weights="/w/i.pkl", train=("mine_train",), test=("mine_val",))
    a = run_(tmp_path / "a", "infomin", 0, dataset={}, config=paper_cfg)
    b = run_(tmp_path / "b", "infomin", 0, dataset={}, config=toy_cfg)
    c = run_(tmp_path / "c", "infomin", 0, dataset={})
    assert (load_run(a).dataset.paper, load_run(b).dataset.paper, load_run(c).dataset.paper) == (True, False, None)
    assert report(tmp_path / "a", "--baseline", "paper:supervised")[0] == 0
    refused(report(tmp_path / "b", "--baseline", "paper:supervised"), "mine_train -> mine_val")
    refused(report(tmp_path / "c", "--baseline", "paper:supervised"), "are on an unknown dataset")
    voc = run_(tmp_path / "v", "infomin", 0, protocol="voc/R50-C4-24k", dataset={},
               config=config_yaml("voc/R50-C4-24k", seed=0, weights="/w/i.pkl"))
    assert load_run(voc).dataset.label == "VOC07+12/VOC07 test (paper)"


def test_runs_on_two_datasets_are_never_averaged_and_every_format_names_the_dataset(tmp_path, report):
    for s in range(2):
        run_(tmp_path, "infomin", s, 1.0 + 0.2 * s)
        run_(tmp_path, "supervised", s, 0.2 * s)
        run_(tmp_path, "infomin", s, 9.0 + 0.2 * s, exp="toy", dataset=TOY)
        run_(tmp_path, "supervised", s, 5.0 + 0.2 * s, exp="toy", dataset=TOY)
    tables = build_tables(find_runs([tmp_path]), baseline="supervised")
    assert [(t.dataset, t.rows[1].stats["bbox/AP"].mean) for t in tables] == [
        ("COCO train2017/val2017 (paper)", 41.1), ("toy-shapes", 49.1)]
    for fmt in ("markdown", "latex", "csv", "json"):
        rc, out, _ = report(tmp_path, "--baseline", "supervised", "--format", fmt)
        assert rc == 0 and "toy-shapes" in out and "COCO train2017/val2017 (paper)" in out, fmt
    rc, out, _ = report(tmp_path, "--baseline", "supervised")
    assert "dataset: toy-shapes" in out and "dataset: COCO train2017/val2017 (paper)" in out
    from infomin_det.report.plot import draw

    fig = draw(tables)
    assert [ax.get_title() for ax in fig.axes][1].endswith("dataset: toy-shapes -- gaps to supervised")


# ---------------------------------------------------------------------------------------------
# 7: variants and families are rows of their own


def test_variants_and_families_are_never_merged(tmp_path, report):
    for s in range(2):
        run_(tmp_path, "random", s, 0.0 + 0.2 * s, family="random")
        run_(tmp_path, "random", s, 2.0 + 0.2 * s, exp="rgb", family="random", variant="rgb")
        run_(tmp_path, "r50", s, 3.0 + 0.2 * s, exp="a", family="ssl")
        run_(tmp_path, "r50", s, 4.0 + 0.2 * s, exp="b", family="supervised")
    (t,) = build_tables(find_runs([tmp_path]), baseline="random")
    assert [(r.label, r.n, r.stats["bbox/AP"].mean) for r in t.rows] == [
        ("random", 2, 40.1), ("r50 {ssl}", 2, 43.1), ("r50 {supervised}", 2, 44.1), ("random [rgb]", 2, 42.1)]
    assert t.rows[3].gaps["bbox/AP"] == pytest.approx(2.0)
    (t,) = build_tables(find_runs([tmp_path]), baseline="random [rgb]")
    assert t.baseline == "random [rgb]"
    refused(report(tmp_path, "--baseline", "r50"), "names 2 rows", "'r50 {ssl}', 'r50 {supervised}'")
    rc, out, _ = report(tmp_path, "--baseline", "r50 {supervised}", "--format", "markdown")
    assert rc == 0 and "| random [rgb] | ours | 2 |" in out


def test_a_variant_run_must_sit_in_its_variant_directory(tmp_path, report):
    d = run_(tmp_path, "random", 0, family="random", variant="rgb")
    assert d.parent.name == "random+rgb" and find_runs([tmp_path])[0].status == "done"
    moved = d.parent.parent / "random" / "seed0"
    moved.parent.mkdir()
    d.rename(moved)                        # a variant run in the plain row's directory
    (r,) = find_runs([tmp_path])
    assert r.status == "failed" and "variant: run.json says rgb, the directory says (none)" in r.reason


# ---------------------------------------------------------------------------------------------
# 8: everything else report accepts


def test_paths(tmp_path, report, exp):
    refused(report(tmp_path / "nope"), "does not exist")
    (tmp_path / "notes.txt").write_text("hi")
    refused(report(tmp_path / "notes.txt"), "is a file, not a run or experiment directory")
    rc, out, _ = report(exp / "exp" / PROTO / "infomin" / "seed0" / "metrics.json", "--format", "json")
    assert rc == 0 and json.loads(out)["tables"][0]["rows"][0]["seeds"] == [0]
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    refused(report(tmp_path / "loop"), "broken symlink or a symlink loop")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    refused(report(tmp_path / "dangling"), "broken symlink")
    refused(report(""), "an empty path")
    refused(report("/dev/null"), "neither a directory nor a file")
    (tmp_path / "empty").mkdir()
    refused(report(tmp_path / "empty"), "no runs under")
    refused(report(), "no runs given")


def test_tree_walk_follows_links_once_skips_temporaries_and_finds_nested_runs(tmp_path, monkeypatch):
    from infomin_det.report import runs as runs_mod

    root = tmp_path / "exp"
    run_(tmp_path, "infomin", 0)
    elsewhere = run_(tmp_path / "shared", "infomin", 1)
    (root / PROTO / "infomin" / "seed1").symlink_to(elsewhere)        # was skipped silently
    (root / PROTO / "loop").symlink_to(root)                          # a loop
    tmp = root / PROTO / "infomin" / ".seed2.abc.tmp"                  # an atomic write in flight
    write_run(tmp, PROTO, "infomin", 2, FINAL, max_iter=100)
    nested = run_(root / PROTO / "infomin" / "seed0", "moco", 0)     # a run inside a run
    found = sorted(str(r.path.relative_to(tmp_path)) for r in find_runs([root]))
    assert found == [f"exp/{PROTO}/infomin/seed0", f"exp/{PROTO}/infomin/seed0/exp/{PROTO}/moco/seed0",
                     f"shared/exp/{PROTO}/infomin/seed1"] and nested.exists()
    monkeypatch.setattr(runs_mod, "MAX_DIRS", 5)
    with pytest.raises(Exception, match="more than 5 directories"):
        find_runs([tmp_path])


def test_flags(exp, report):
    refused(report(exp, "--protocol", "coco/R50-FPN-9x"), "unknown protocol 'coco/R50-FPN-9x'")
    refused(report(exp, "--protocol", "voc/R50-C4-24k"), "no runs of protocol voc/R50-C4-24k")
    refused(report(exp, "--baseline", "nobody"), "baseline 'nobody' is not a row", "infomin, supervised")
    refused(report(exp, "--baseline", ""), "--baseline is empty")
    refused(report(exp, "--baseline", "paper:"), "--baseline is empty")
    refused(report(exp, "--baseline", "paper:nobody"), "the paper has no row 'nobody'")
    refused(report("--paper", "T99"), "no detection table 'T99'")
    refused(report("--paper", ""), "no detection table ''")
    refused(report("--paper", "T3", exp), "run paths")
    refused(report("--paper", "T3", "--protocol", PROTO), "--protocol")
    refused(report("--paper", "T3", "--sizes"), "--sizes")
    rc, out, _ = report("--paper", "T3a", "--format", "json")
    assert rc == 0 and json.loads(out)["tables"][0]["dataset"] == "COCO train2017/val2017 (paper)"


def test_metrics_json_sizes(tmp_path):
    import time

    d = run_(tmp_path, "infomin", 0)
    (d / "metrics.json").write_text("")
    (d / "last_checkpoint").write_text("model_0000019.pth")
    (d / "log.txt").write_text(_LOG)
    assert load_run(d).status == "in-progress"
    line = b'{"iteration": 5, "total_loss": 1.0, "lr": 0.02}\n'
    with open(d / "metrics.json", "wb") as f:  # a million training lines, no evaluation
        f.write(line * 1_000_000)
    t0 = time.perf_counter()
    run = load_run(d)
    assert run.status == "in-progress" and "no evaluation yet" in run.reason
    with open(d / "metrics.json", "ab") as f:
        f.write(json.dumps({"iteration": 100, **FINAL}).encode() + b"\n")
    (d / "last_checkpoint").write_text("model_final.pth")
    run = load_run(d)
    assert run.status == "done" and run.metrics[""]["bbox/AP"] == 40.0
    assert time.perf_counter() - t0 < 10


def test_duplicates_are_refused_not_averaged(tmp_path, report):
    run_(tmp_path, "infomin", 0, 1.0)
    run_(tmp_path, "infomin", 1, 2.0)
    copy = run_(tmp_path, "infomin", 0, 3.0, exp="exp2")
    runs = find_runs([tmp_path])
    bad = [r for r in runs if r.status == "failed"]
    assert len(bad) == 2 and all("seed 0 of infomin under coco/R50-FPN-1x is given by 2 directories" in r.reason
                                 for r in bad)
    refused(report(tmp_path), "is given by 2 directories", want=1)
    # the same results under another name (a copied run directory)
    import shutil

    shutil.rmtree(copy.parent.parent.parent.parent)
    clone = tmp_path / "exp" / PROTO / "infomin-copy" / "seed5"
    shutil.copytree(tmp_path / "exp" / PROTO / "infomin" / "seed1", clone)
    _edit_json(clone / "run.json", weights_name="infomin-copy", seed=5)
    runs = {r.path.name: r for r in find_runs([tmp_path])}
    assert runs["seed5"].status == "failed" and "identical, to every digit" in runs["seed5"].reason
    assert runs["seed0"].status == "done"


def test_run_files_that_point_out_of_the_run_or_are_not_files(tmp_path):
    a = run_(tmp_path, "infomin", 0)
    b = run_(tmp_path, "infomin", 1, 1.0)
    (b / "metrics.json").unlink()
    (b / "metrics.json").symlink_to(a / "metrics.json")  # seed 1 would show seed 0's numbers
    run = load_run(b)
    assert run.status == "failed" and "outside the run directory" in run.reason
    (b / "metrics.json").unlink()
    (b / "metrics.json").mkdir()
    assert load_run(b).status == "failed" and "not a regular file" in load_run(b).reason
    (b / "metrics.json").rmdir()
    (b / "metrics.json").symlink_to(b / "metrics.json")
    assert "symlink loop" in load_run(b).reason


def test_binary_logs_and_checkpoint_names(tmp_path):
    d = run_(tmp_path, "infomin", 0)
    (d / "log.txt").write_bytes(os.urandom(200_000).replace(b"\n", b" ") + b"\n")
    (d / "last_checkpoint").write_bytes(b"\xff" * 10_000_000)
    run = load_run(d)
    assert run.status == "in-progress" and "periodic" in run.reason  # model_final.pth no longer stated
    (d / "last_checkpoint").write_text("model_final.pth")
    assert load_run(d).status == "done"


@pytest.mark.parametrize("content,needle", [
    ("{broken", "registry.json is unreadable"),
    ("[1, 2]", "is corrupted"),
    ('{"version": 1, "runs": {"k": 5}}', "is corrupted"),
    ('{"version": 1, "runs": {"k": {"key": "k", "output_dir": 3, "worker": "w", "spec": {}}}}', "is corrupted"),
    ('{"version": 1, "runs": {"k": {"key": "k", "output_dir": "/x", "worker": "w", "spec": {"seed": "1"}}}}',
     "fields of the wrong type"),
    (None, "registry"),
])
def test_corrupt_registry_is_a_clean_error(exp, report, content, needle):
    reg = exp / "exp" / "launch" / "registry.json"
    reg.parent.mkdir(parents=True)
    if content is None:
        reg.mkdir()
    else:
        reg.write_text(content)
    refused(report(exp / "exp"), needle)


def test_report_stays_torch_free_with_new_modules(exp, tmp_path):
    import subprocess
    import sys

    code = ("import sys; sys.modules['detectron2'] = None; sys.modules['torch'] = None\n"
            "from infomin_det.cli import main\n"
            f"raise SystemExit(main(['report', {str(exp)!r}, '--baseline', 'supervised', '--format', 'json', "
            f"'--out', {str(tmp_path / 't.json')!r}, '--plot', {str(tmp_path / 'g.png')!r}]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "t.json").read_text())["tables"][0]["baseline"] == "supervised"


@pytest.mark.parametrize("text", ["yes", "No", "on", "OFF", "y", "~", "null", "Null", "true", "True", "false",
                                  "1e3", "0x10", "010", "1_000", "1:20", "-5", "+5", "0", "3.5", ".inf", ".NaN",
                                  "''", "'a b'", '"x"', '"a\\"b"', "[]", "[a]", "{}", "&a x", "*a", "!!str 5",
                                  "detectron2://ImageNetPretrained/MSRA/R-50.pkl", "a:", "a: b", "coco_2017_val",
                                  "2001-12-14", "/abs/path.pkl", "-"])
def test_fast_config_scalars_read_as_pyyaml_or_defer_to_it(text):
    """The fast config.yaml reader either reads a value exactly as PyYAML does or hands it to PyYAML."""
    import yaml

    from infomin_det.report import identity

    try:
        got = identity._scalar(text)
    except identity._NotBlockYaml:
        return
    assert got == yaml.safe_load(f"k: {text}")["k"] and type(got) is type(yaml.safe_load(f"k: {text}")["k"])
