"""Report: bad input gives a one-line cause + fix (never a traceback, never a wrong number);
seeds average to mean ± std (n); every output format renders; --plot writes a PNG."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from infomin_det.errors import UserError
from infomin_det.report import build_tables, find_runs, load_run
from infomin_det.report.render import RENDERERS
from infomin_det.report.synthetic import write_run

FINAL = {"bbox/AP": 40.0, "bbox/AP50": 60.0, "bbox/AP75": 44.0, "bbox/APs": 20.0, "bbox/APm": 44.0,
         "bbox/APl": 52.0, "segm/AP": 36.0, "segm/AP50": 57.0, "segm/AP75": 39.0, "segm/APs": 16.0,
         "segm/APm": 39.0, "segm/APl": 53.0}
PROTO = "coco/R50-FPN-1x"


def _run(root: Path, weights: str, seed: int, shift: float = 0.0, protocol: str = PROTO) -> Path:
    return write_run(root / "exp" / protocol / weights / f"seed{seed}", protocol, weights, seed,
                     {k: v + shift for k, v in FINAL.items()}, max_iter=400, period=20, eval_period=200)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "infomin_det", "report", *map(str, args)],
                          capture_output=True, text=True)


def _assert_clean_error(proc: subprocess.CompletedProcess, *needles: str, rc: int = 2) -> None:
    """``error:`` / ``fix:`` and no traceback; exit 2 (bad input) or, ``rc=1``, 1 (some runs failed)."""
    assert proc.returncode == rc, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and "error: " in proc.stderr and "  fix: " in proc.stderr
    for n in needles:
        assert n in proc.stderr, proc.stderr


@pytest.fixture
def exp(tmp_path):
    for s, shift in enumerate((0.0, 0.4, 0.8)):
        _run(tmp_path, "infomin", s, 1.0 + shift)
    for s in range(2):
        _run(tmp_path, "supervised", s, 0.2 * s)
    return tmp_path


def test_seeds_mean_std_n_and_gaps(exp):
    (t,) = build_tables(find_runs([exp]), baseline="supervised")
    info = next(r for r in t.rows if r.weights == "infomin")
    s = info.stats["bbox/AP"]
    assert (s.n, info.seeds) == (3, [0, 1, 2])
    assert s.mean == pytest.approx(41.4) and s.std == pytest.approx(0.4)
    assert info.gaps["bbox/AP"] == pytest.approx(1.3)
    assert t.metrics == ["bbox/AP", "bbox/AP50", "bbox/AP75", "segm/AP", "segm/AP50", "segm/AP75"]
    (t2,) = build_tables(find_runs([exp]), sizes=True)
    assert "segm/APl" in t2.metrics and t2.baseline is None and t2.notes == []
    _run(exp / "again", "infomin", 2, 7.0)  # the same seed once more, from another experiment
    runs = find_runs([exp])
    (t3,) = build_tables(runs)
    # never averaged as 4 seeds (it was n=4, mean 41.95, with a note): both copies of seed 2 fail
    assert next(r for r in t3.rows if r.weights == "infomin").seeds == [0, 1]
    dup = [r for r in runs if r.status == "failed"]
    assert len(dup) == 2 and all("seed 2 of infomin" in r.reason and "2 directories" in r.reason for r in dup)
    assert t3.not_averaged == dup


def test_resumed_duplicates_last_wins_and_periodic_eval_is_not_final(tmp_path):
    d = _run(tmp_path, "w", 0)
    lines = (d / "metrics.json").read_text().splitlines()
    old_final = json.loads(lines[-1])
    stale = dict(old_final, **{"bbox/AP": 1.0})
    # an earlier attempt's final line, then a re-evaluation of the same iteration: the last one wins
    (d / "metrics.json").write_text("\n".join(lines[:-1] + [json.dumps(stale), json.dumps(old_final)]) + "\n")
    assert load_run(d).metrics[""]["bbox/AP"] == 40.0
    # training restarted after the final evaluation: in progress, the stale final is not reported
    (d / "metrics.json").write_text("\n".join(lines + lines[:3]) + "\n")
    run = load_run(d)
    assert run.status == "in-progress" and "restarted" in run.reason and run.metrics == {}


def test_dataset_prefixed_keys_make_one_table_per_dataset(tmp_path):
    d = _run(tmp_path, "w", 0)
    rec = {"iteration": 400}
    for ds, shift in (("coco_2017_val", 0.0), ("coco_minival", 5.0)):
        rec.update({f"{ds}/{k}": v + shift for k, v in FINAL.items()})
    (d / "metrics.json").write_text(json.dumps(rec) + "\n")
    tables = build_tables([load_run(d)])
    assert [(t.eval_set, t.rows[0].stats["bbox/AP"].mean) for t in tables] == [
        ("coco_2017_val", 40.0), ("coco_minival", 45.0)]


def test_truncated_last_line_is_ignored_loudly(tmp_path):
    d = _run(tmp_path, "w", 0)
    text = (d / "metrics.json").read_text()
    (d / "metrics.json").write_text(text[: len(text) - 40])  # the final eval record cut mid-way
    run = load_run(d)  # training finished (model_final.pth), so the final record is damaged
    assert run.status == "failed" and "truncated" in run.reason and run.metrics == {}
    _assert_clean_error(_cli(tmp_path), "truncated", "--eval-only", rc=1)
    (d / "last_checkpoint").write_text("model_0000299.pth")  # still training: stopped mid-write
    run = load_run(d)
    assert run.status == "in-progress" and run.metrics == {} and "iteration 399" in run.reason
    assert any("truncated" in w for w in run.warnings)
    proc = _cli(tmp_path)
    assert proc.returncode == 0 and "warning: " in proc.stderr and "truncated" in proc.stderr
    assert "in-progress" in proc.stdout


def test_empty_metrics_json(tmp_path):
    d = _run(tmp_path, "w", 0)
    (d / "metrics.json").write_text("")
    run = load_run(d)
    assert run.status == "failed" and "metrics.json is empty" in run.reason
    _assert_clean_error(_cli(tmp_path), "metrics.json is empty", "--eval-only", rc=1)


def test_non_json_garbage(tmp_path):
    d = _run(tmp_path, "w", 0)
    with open(d / "metrics.json", "ab") as f:
        f.write(b"\x00\x17garbage from a crashed writer\n")
    run = load_run(d)
    assert run.status == "failed" and "not a JSON record" in run.reason and "byte" in run.reason
    d2 = _run(tmp_path, "v", 0)
    (d2 / "metrics.json").write_text('{"iteration": 3, "bbox/AP": }\n')
    assert load_run(d2).status == "failed"
    _assert_clean_error(_cli(tmp_path), "not a JSON record", rc=1)


def test_run_dir_with_no_metrics(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    _assert_clean_error(_cli(empty), "no runs under")
    _assert_clean_error(_cli(tmp_path / "nonexistent"), "does not exist")
    d = tmp_path / "exp" / PROTO / "w" / "seed0"
    d.mkdir(parents=True)
    (d / "log.txt").write_text("[11/24 10:00:00] d2.engine INFO: Starting training\n")
    (d / "last_checkpoint").write_text("model_final.pth")
    run = load_run(d)
    assert run.status == "failed" and "there is no metrics.json" in run.reason
    (d / "last_checkpoint").unlink()
    assert load_run(d).status == "in-progress"


def test_mixed_protocols_asked_into_one_table(exp):
    _run(exp, "supervised", 0, protocol="voc/R50-C4-24k")
    runs = find_runs([exp])
    assert len(build_tables(runs)) == 2
    with pytest.raises(UserError, match="2 tables"):
        build_tables(runs, single=True)
    proc = subprocess.run([sys.executable, "tools/ap_table.py", str(exp)], capture_output=True, text=True,
                          cwd=Path(__file__).parents[1])
    _assert_clean_error(proc, "asked into one table", "coco/R50-FPN-1x", "voc/R50-C4-24k")
    proc = subprocess.run([sys.executable, "tools/ap_table.py", str(exp), "--protocol", PROTO, "--format", "csv"],
                          capture_output=True, text=True, cwd=Path(__file__).parents[1])
    assert proc.returncode == 0 and "voc" not in proc.stdout


def test_unknown_baseline_lists_the_rows(exp):
    _assert_clean_error(_cli(exp, "--baseline", "supervisd"), "'supervisd'", "infomin", "supervised")
    _assert_clean_error(_cli(exp, "--baseline", "paper:simclr"), "no row 'simclr'", "paper:supervised")


def test_config_without_run_json_and_layout_names_the_missing_file(tmp_path):
    d = tmp_path / "somewhere"
    write_run(d, PROTO, "w", 0, FINAL, max_iter=100)
    (d / "run.json").unlink()
    run = load_run(d)
    assert run.status == "failed" and "cannot tell the protocol" in run.reason and "config.yaml is missing" in run.reason


def test_registry_adds_pending_runs(exp):
    from infomin_det.launch.registry import Registry, RunRecord

    reg = Registry(exp / "exp")  # the launcher's own registry class writes the file
    key = "coco/R50-FPN-1x/infomin/seed9"
    reg.runs[key] = RunRecord(key, str(exp / "exp" / key), "infomin_det.engine.trainer:train_worker",
                              {"protocol": PROTO, "weights_name": "infomin", "seed": 9},
                              jobs=[{"job_id": "17", "cluster": "local"}])
    reg.save()
    runs = find_runs([exp / "exp"])
    pending = [r for r in runs if r.status == "pending"]
    assert len(pending) == 1 and "job 17" in pending[0].reason
    (t,) = build_tables(runs)
    assert next(r for r in t.rows if r.weights == "infomin").n == 3 and t.not_averaged == pending


@pytest.mark.parametrize("fmt", sorted(RENDERERS))
def test_formats_render_the_same_numbers(exp, fmt, tmp_path):
    out = tmp_path / f"table.{fmt}"
    proc = _cli(exp, "--baseline", "supervised", "--format", fmt, "--out", out)
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    if fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(text)))
        r = next(r for r in rows if r["weights"] == "infomin" and r["metric"] == "bbox/AP")
        assert float(r["mean"]) == pytest.approx(41.4) and r["n"] == "3" and float(r["gap"]) == pytest.approx(1.3)
    elif fmt == "json":
        (t,) = json.loads(text)["tables"]
        base, info = t["rows"]  # the baseline row first, as in the paper
        assert base["weights"] == "supervised" and base["is_baseline"] and base["gaps"] == {}
        assert info["stats"]["bbox/AP"] == {"mean": pytest.approx(41.4), "std": pytest.approx(0.4), "n": 3, "why": ""}
        assert t["dataset"] == "COCO train2017/val2017 (paper)" and t["paper_dataset"] is True
        assert info["gaps"]["bbox/AP"] == pytest.approx(1.3)
    elif fmt == "markdown":
        assert "| infomin | ours | 3 | **41.4±0.4 (↑1.3)** |" in text
    else:
        assert r"41.4{\scriptsize$\pm$0.4} \textcolor{green!50!black}{($\uparrow$1.3)}" in text


def test_terminal_and_plot(exp, tmp_path):
    png = tmp_path / "gaps.png"
    proc = _cli(exp, "--baseline", "supervised", "--plot", png)
    assert proc.returncode == 0, proc.stderr
    assert "41.4±0.4 (↑1.3)" in proc.stdout and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    assert [round(d) for d in Image.open(png).info["dpi"]] == [300, 300]     # paper resolution
    _assert_clean_error(_cli(exp, "--plot", png), "--plot")


def test_final_record_longer_than_the_first_tail_read(tmp_path):
    d = write_run(tmp_path / "lvis", PROTO, "w", 0, FINAL, max_iter=2000, period=20, eval_period=1000,
                  classes=1500)  # an LVIS-sized final line (~100 KB) and a periodic one before it
    assert len((d / "metrics.json").read_text().splitlines()[-1]) > 4 * 16384
    run = load_run(d)
    assert run.status == "done" and run.metrics[""]["segm/APl"] == FINAL["segm/APl"]


def test_paper_linear_tables_and_unknown_table():
    proc = _cli("--paper", "T2", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    info = [r for r in rows if r["method"] == "InfoMin Aug."]
    assert proc.returncode == 0 and [r["top1"] for r in info] == ["67.4", "70.1", "73.0", "73.4", "73.4", "74.5", "75.2"]
    _assert_clean_error(_cli("--paper", "T12"), "no detection table 'T12'", "T11")
    _assert_clean_error(_cli("--paper", "T3", "--baseline", "x"), "no row 'x'", "random, supervised")
    _assert_clean_error(_cli("--paper", "T3", "runs/x"), "--paper")


def test_report_runs_without_detectron2_or_torch(exp):
    code = ("import sys; sys.modules['detectron2'] = None; sys.modules['torch'] = None\n"
            "from infomin_det.cli import main\n"
            f"raise SystemExit(main(['report', {str(exp)!r}, '--baseline', 'supervised', '--format', 'json']))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["tables"][0]["baseline"] == "supervised"


def test_baseline_missing_in_one_protocol_is_noted_and_unknown_protocol_refused(exp):
    _run(exp, "supervised", 0, protocol="voc/R50-C4-24k")
    coco, voc = build_tables(find_runs([exp]), baseline="infomin")
    assert coco.baseline == "infomin" and voc.baseline is None
    assert voc.notes == ["no row 'infomin' in this table: no gaps"] and voc.rows[0].gaps == {}
    _assert_clean_error(_cli(exp, "--protocol", "coco/R50-FPN-2x"), "no runs of protocol coco/R50-FPN-2x",
                        "coco/R50-FPN-1x, voc/R50-C4-24k")
    _assert_clean_error(_cli(exp, "--protocol", "coco/R50-FPN-9x"), "unknown protocol 'coco/R50-FPN-9x'")


def test_eval_only_line_of_an_earlier_iteration_is_not_final(tmp_path):
    # EVAL_PERIOD 30 with writer period 20: the iteration-29 evaluation is written as its own line
    # after the iteration-39 training record; the run is still training.
    d = _run(tmp_path, "w", 0)
    (d / "last_checkpoint").write_text("model_0000039.pth")
    train = json.dumps({"iteration": 39, "total_loss": 1.0, "lr": 0.02})
    periodic = json.dumps({"iteration": 29, **FINAL})
    (d / "metrics.json").write_text(train + "\n" + periodic + "\n")
    run = load_run(d)
    assert run.status == "in-progress" and "latest evaluation at 29" in run.reason
