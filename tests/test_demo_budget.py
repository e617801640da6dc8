"""The demo's time budget: the calibration of the real workers, the sizes it fits, bad budgets."""

from __future__ import annotations

import json
import math

import pytest

from infomin_det.cli import main as cli_main
from infomin_det.demo import budget
from infomin_det.demo.budget import BUDGET_FILE, Calibration, check_minutes, fit, load_or_save, needed_minutes
from infomin_det.errors import UserError

# seconds of the default demo measured on a 2-core machine of this kind (the numbers are only a
# plausible input here: what is tested is what fit() does with them)
CAL = Calibration(parallel=2, pretrain_step_s=0.33, pretrain_fixed_s=4.0, supervised_epoch_s=3.5,
                  supervised_fixed_s=5.0, finetune_iter_s=1.2, finetune_fixed_s=45.0, seconds=80.0)


def test_fit_spends_the_budget_without_exceeding_it():
    plan = fit(25, 100, CAL, seeds=3, supervised_epochs=30)
    left = 25 * 60 - 100
    assert plan.pretrain_stage_s + plan.finetune_stage_s <= left * budget.MARGIN + 1e-6
    assert plan.pretrain_stage_s + plan.finetune_stage_s >= left * budget.MARGIN - 5 * CAL.finetune_iter_s - CAL.pretrain_step_s
    assert plan.pretrain_stage_s <= left * budget.MARGIN * budget.PRETRAIN_SHARE + 1e-6
    # one more step or iteration would not fit its stage
    assert CAL.pretrain_fixed_s + (plan.pretrain_steps + 1) * CAL.pretrain_step_s > left * budget.MARGIN * budget.PRETRAIN_SHARE
    waves = 5   # 9 runs, 2 at a time
    assert waves * (CAL.finetune_fixed_s + (plan.finetune_iters + 1) * CAL.finetune_iter_s) > \
        left * budget.MARGIN * (1 - budget.PRETRAIN_SHARE)
    assert plan.supervised_epochs == 30       # the baseline's own size fits beside the pretraining


def test_a_machine_twice_as_fast_gets_about_twice_the_work():
    fast = Calibration(**{**CAL.__dict__, "pretrain_step_s": CAL.pretrain_step_s / 2, "finetune_iter_s": CAL.finetune_iter_s / 2,
                          "finetune_fixed_s": CAL.finetune_fixed_s / 2, "pretrain_fixed_s": CAL.pretrain_fixed_s / 2})
    slow, quick = fit(25, 100, CAL, 3, 30), fit(25, 100, fast, 3, 30)
    assert 1.9 < quick.pretrain_steps / slow.pretrain_steps < 2.1
    assert quick.finetune_iters >= 2 * slow.finetune_iters    # more than twice: the halved fixed cost frees time too


def test_one_core_runs_the_baseline_after_the_pretraining():
    one = Calibration(**{**CAL.__dict__, "parallel": 1})
    plan, two = fit(40, 100, one, 3, 30), fit(40, 100, CAL, 3, 30)
    assert plan.pretrain_steps < two.pretrain_steps and plan.finetune_iters < two.finetune_iters
    assert plan.supervised_epochs <= 30


def test_too_small_a_budget_is_refused_with_the_minutes_that_fit():
    with pytest.raises(UserError) as e:
        fit(5, 100, CAL, 3, 30)
    need = needed_minutes(100, CAL, 3)
    assert f"--minutes {need}" in e.value.fix and "on this machine" in e.value.cause
    plan = fit(need, 100, CAL, 3, 30)          # the minutes the message names are enough
    assert plan.pretrain_steps >= budget.MIN_PRETRAIN_STEPS and plan.finetune_iters >= budget.MIN_FINETUNE_ITERS
    with pytest.raises(UserError):
        fit(need - 2, 100, CAL, 3, 30)        # and not much more than needed


@pytest.mark.parametrize("bad", [0, -5, float("nan"), float("inf"), 1e9, True, "25"])
def test_bad_minutes_are_refused(bad):
    with pytest.raises(UserError, match="--minutes"):
        check_minutes(bad)


def test_minutes_must_be_positive_finite_on_the_command_line(capsys):
    for argv, said in ((["demo", "--minutes", "nan"], "--minutes nan"), (["demo", "--minutes", "-1"], "--minutes -1"),
                       (["demo", "--quick", "--minutes", "5"], "--quick"),
                       (["demo", "--cluster", "slurm", "--minutes", "5"], "--cluster slurm")):
        assert cli_main(argv) == 2
        err = capsys.readouterr().err
        assert said in err and "error:" in err and "fix:" in err and "Traceback" not in err


def test_the_stored_budget_is_reused_and_other_minutes_refused(tmp_path):
    plan = fit(25, 100, CAL, 3, 30)
    made = []

    def make():
        made.append(1)
        return CAL, plan

    assert load_or_save(tmp_path, 25.0, make) == (CAL, plan)
    assert load_or_save(tmp_path, 25.0, make) == (CAL, plan) and made == [1]     # read back, not recalibrated
    with pytest.raises(UserError, match="sized for --minutes 25"):
        load_or_save(tmp_path, 30.0, make)
    (tmp_path / BUDGET_FILE).write_text('{"minutes": 25, "calibration": {"parallel": "x"}}')
    with pytest.raises(UserError, match="not a demo budget"):
        load_or_save(tmp_path, 25.0, make)
    (tmp_path / BUDGET_FILE).write_text("\0\0garbage")
    with pytest.raises(UserError, match="not a demo budget"):
        load_or_save(tmp_path, 25.0, make)
    good = json.loads(json.dumps({"minutes": 25, "calibration": CAL.__dict__, "plan": plan.__dict__}))
    for part, key, bad in (("plan", "pretrain_steps", -5), ("plan", "finetune_iters", 1.5), ("plan", "supervised_epochs", 0),
                           ("calibration", "finetune_iter_s", float("nan")), ("calibration", "pretrain_step_s", -1.0),
                           ("calibration", "parallel", 0)):
        rec = json.loads(json.dumps(good))
        rec[part][key] = bad
        (tmp_path / BUDGET_FILE).write_text(json.dumps(rec))   # hand-edited: NaN is written as NaN
        with pytest.raises(UserError, match="not a demo budget"):
            load_or_save(tmp_path, 25.0, make)
    (tmp_path / BUDGET_FILE).unlink()
    (tmp_path / BUDGET_FILE).mkdir()
    with pytest.raises(UserError, match="not a regular file"):
        load_or_save(tmp_path, 25.0, make)


def test_calibration_times_the_real_workers(tmp_path):
    """The QUICK demo's jobs, timed side by side: per-unit costs positive and finite, the fine-tuning
    iteration dearer than a pretraining step (Mask R-CNN vs a ResNet-18 step), nothing left behind."""
    from infomin_det.data.composites import build_composites
    from infomin_det.data.labelled_set import build_labelled_set
    from infomin_det.data.pretrain_set import build_pretrain_set
    from infomin_det.demo.pipeline import QUICK, _calibration_jobs

    size = QUICK
    pre = build_pretrain_set(size.pretrain_images, 96, seed=0)
    det = build_composites(size.det_train, size.det_val, size.det_size, seed=0)
    lab = build_labelled_set(size.labelled_per_class, max(1, size.labelled_per_class // 3), 64, seed=0)
    tr, va = det.splits["train"], det.splits["val"]
    scratch = tmp_path / "demo" / budget.SCRATCH
    (scratch / "killed-run").mkdir(parents=True)             # what a kill -9 of an earlier calibration left
    cal = budget.calibrate(_calibration_jobs(size, pre, lab, f"coco-json:{tr[0]}:{tr[1]}:{va[0]}:{va[1]}"), 2,
                           scratch)
    for name, v in cal.__dict__.items():
        assert math.isfinite(v) and v >= 0, (name, v)
    assert cal.pretrain_step_s > 0.01 and cal.finetune_iter_s > cal.pretrain_step_s and cal.finetune_fixed_s > 1
    assert not scratch.exists() and list((tmp_path / "demo").iterdir()) == []   # the scratch runs are removed


def test_a_failed_calibration_leaves_no_scratch_and_a_planted_link_is_only_unlinked(tmp_path):
    outside = tmp_path / "outside"
    (outside / "keep").mkdir(parents=True)
    scratch = tmp_path / "demo" / budget.SCRATCH
    scratch.parent.mkdir()
    scratch.symlink_to(outside, target_is_directory=True)

    def failing(kind, units, where):
        assert where == scratch and where.is_dir() and not where.is_symlink()
        raise UserError("a job could not be built", "fix it")

    with pytest.raises(UserError, match="could not be built"):
        budget.calibrate(failing, 1, scratch)
    assert not scratch.exists() and not scratch.is_symlink() and (outside / "keep").is_dir()


def test_calibration_jobs_print_to_their_log_and_a_failure_is_a_user_error(tmp_path, capfd):
    (seconds,) = budget._side_by_side([("builtins:print", "detectron2 would log here")], 1, tmp_path)
    assert seconds >= 0 and "detectron2 would log here" not in capfd.readouterr().out
    assert "detectron2 would log here" in (tmp_path / "calibration-0-print.log").read_text()
    with pytest.raises(UserError, match=r"a calibration job failed \(JSONDecodeError"):
        budget._side_by_side([("json:loads", "{")], 1, tmp_path)
