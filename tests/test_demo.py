"""The README's main job in its CI size: the whole toolkit end to end on the embedded data."""

import json

from infomin_det.demo.pipeline import QUICK, claim_check, run_demo


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
