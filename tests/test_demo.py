"""The README's main job in its CI size: the whole toolkit end to end on the embedded data."""

import json

from infomin_det.demo.pipeline import QUICK, claim_check, run_demo
from infomin_det.launch.task import RESULT_FILE


def test_quick_demo_runs_every_step(tmp_path):
    summary = run_demo(tmp_path / "demo", QUICK, cluster="local")
    assert summary["verify_passed"]
    assert summary["converted_from"] == {"infomin-r18": "infomin-det/pretrain", "supervised-r18": "torchvision/timm"}
    assert 0 <= summary["supervised_top1"] <= 100
    (table,) = summary["report"]["tables"]
    rows = {r["weights"]: r for r in table["rows"]}
    assert set(rows) == {"random", "infomin-r18", "supervised-r18"}
    for row in rows.values():
        assert row["n"] == QUICK.seeds
        ap = row["stats"]["bbox/AP"]          # every run was evaluated, and detected something
        assert ap["mean"] is not None and 0.0 <= ap["mean"] <= 100.0 and ap["std"] is not None, row
    # the claim is the checker's verdict on the very report the demo wrote (the checker's own
    # arithmetic is pinned case by case in test_demo_claim.py)
    assert summary["claim"] == claim_check(summary["report"]) and summary["claim"].keys() == {"bbox/AP", "segm/AP"}
    saved = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert saved["timings_s"].keys() == {"data", "pretrain", "convert+verify", "fine-tune", "report"}
    assert (tmp_path / "demo" / "gaps.png").stat().st_size > 0
    assert "infomin-r18" in (tmp_path / "demo" / "report.md").read_text()


def test_sigterm_stops_the_demo_and_cancels_its_running_jobs(tmp_path):
    """``kill`` (a scheduler's SIGTERM) of the demo must not leave its local jobs running."""
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "demo"
    proc = subprocess.Popen([sys.executable, "-m", "infomin_det", "demo", "--quick", "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)

    def jobs() -> list[int]:   # processes working for this demo: their command line names its folder
        pids = []
        for p in os.listdir("/proc"):
            try:
                cmd = open(f"/proc/{p}/cmdline", "rb").read().decode(errors="replace")
            except OSError:
                continue
            if p.isdigit() and int(p) != proc.pid and str(out) in cmd:
                pids.append(int(p))
        return pids

    deadline = time.time() + 300
    while not jobs() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.5)
    assert jobs(), "the demo started no job"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) != 0
    # a job that outlived the demo would end its few quick steps within seconds and write its result
    time.sleep(30)
    assert jobs() == [], proc.stderr.read().decode()[-2000:]
    assert not (out / "pretrain" / RESULT_FILE).exists() and not (out / "supervised" / RESULT_FILE).exists()
