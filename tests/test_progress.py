"""Progress of running runs: ``progress.json`` (writer throttling, this attempt's ETA, garbage reads
as no progress), ``status`` showing it for a real local job, and ``status --watch`` /
``submit``-side watching that ends when the runs do."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time

import pytest

from infomin_det.launch import DistributedTask, ExecutorOptions, experiment_status, submit_tasks
from infomin_det.launch.selftest import ToySpec
from infomin_det.progress import PROGRESS_FILE, Progress, ProgressWriter, fmt_duration, read_progress

TOY = "infomin_det.launch.selftest:toy_worker"


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_eta_is_this_attempts_pace_not_the_inherited_steps(tmp_path):
    clock = Clock()
    w = ProgressWriter(tmp_path, total=1000, first_step=600, every_s=0.0, clock=clock)   # resumed at 600
    assert read_progress(tmp_path) == Progress(600, 1000, None, 1000.0)                  # no pace yet
    clock.t += 50.0
    w.update(700)                        # 100 steps in 50 s: 300 left take 150 s
    p = read_progress(tmp_path)
    assert (p.step, p.total, p.eta_s) == (700, 1000, pytest.approx(150.0))
    assert p.text() == "step 700/1000 (70%), ETA 2m30s"


def test_writes_are_throttled_but_the_last_step_always_lands(tmp_path):
    clock = Clock()
    w = ProgressWriter(tmp_path, total=10, every_s=5.0, clock=clock)
    for step in range(1, 10):
        clock.t += 1.0
        w.update(step)
    assert read_progress(tmp_path).step == 5             # written at t+5 only (steps 1-4, 6-9 dropped)
    clock.t += 0.1
    w.update(10)
    p = read_progress(tmp_path)
    assert (p.step, p.text()) == (10, "step 10/10 (100%)")      # done: no ETA


def test_a_failing_write_never_stops_the_run(tmp_path):
    w = ProgressWriter(tmp_path / "run", total=5, every_s=0.0)   # the directory does not exist
    w.update(3)
    assert read_progress(tmp_path / "run") is None


@pytest.mark.parametrize("content", [
    None, "", "[]", "{}", "\x00garbage", '{"step": 1}',
    '{"step": 11, "total": 10, "attempt_start": 1, "attempt_first_step": 0, "updated": 2}',      # past the end
    '{"step": -1, "total": 10, "attempt_start": 1, "attempt_first_step": 0, "updated": 2}',
    '{"step": 5, "total": 10, "attempt_start": 1, "attempt_first_step": 6, "updated": 2}',       # before its start
    '{"step": 5, "total": 0, "attempt_start": 1, "attempt_first_step": 0, "updated": 2}',
    '{"step": true, "total": 10, "attempt_start": 1, "attempt_first_step": 0, "updated": 2}',
    '{"step": 5, "total": 10, "attempt_start": 1, "attempt_first_step": 0, "updated": NaN}',
    '{"step": 5, "total": 10, "attempt_start": 9, "attempt_first_step": 0, "updated": 2}',      # clock went back
    '{"step": 5.5, "total": 10, "attempt_start": 1, "attempt_first_step": 0, "updated": 2}',
])
def test_garbage_reads_as_no_progress(tmp_path, content):
    if content is not None:
        (tmp_path / PROGRESS_FILE).write_text(content)
    assert read_progress(tmp_path) is None


@pytest.mark.parametrize("make", ["dev-zero", "fifo", "huge", "directory"])
def test_what_is_no_progress_record_is_never_read_in_full(tmp_path, make):
    import os

    path = tmp_path / PROGRESS_FILE
    if make == "dev-zero":
        path.symlink_to("/dev/zero")
    elif make == "fifo":
        os.mkfifo(path)                  # opening it for reading would block forever
    elif make == "huge":
        path.write_text('{"step": 1, "pad": "' + "x" * 10_000_000 + '"}')
    else:
        path.mkdir()
    assert read_progress(tmp_path) is None


@pytest.mark.parametrize("seconds, text", [(0, "0s"), (42.4, "42s"), (185, "3m05s"), (7620, "2h07m"),
                                           (3 * 86400 + 4 * 3600, "3d04h"), (-5, "0s")])
def test_durations(seconds, text):
    assert fmt_duration(seconds) == text


def test_status_shows_the_progress_of_a_running_local_job_and_watch_ends_with_it(tmp_path):
    exp = tmp_path / "exp"
    [r] = submit_tasks([DistributedTask(TOY, ToySpec(str(exp / "toy/seed0"), max_iter=40, step_s=0.25))], exp,
                       ExecutorOptions(timeout_min=5, signal_delay_s=10), cluster="local")
    end = time.time() + 120
    while True:
        [st] = experiment_status(exp)
        if st.state == "running" and st.progress is not None and 0 < st.progress.step < 40:
            break
        assert time.time() < end and st.state in ("pending", "running"), st
        time.sleep(0.2)
    assert st.progress.total == 40 and st.progress.eta_s is not None and 0 < st.progress.eta_s < 60
    shown = subprocess.run([sys.executable, "-m", "infomin_det", "status", str(exp)], capture_output=True, text=True)
    assert shown.returncode == 0 and "running" in shown.stdout and "/40 (" in shown.stdout and "ETA " in shown.stdout
    as_json = json.loads(subprocess.run([sys.executable, "-m", "infomin_det", "status", str(exp), "--json"],
                                        capture_output=True, text=True).stdout)
    [row] = as_json[str(exp)]
    assert row["progress"]["total"] == 40 or row["state"] == "done"
    # piped: a block per change, ending when the run does, with the run's exit status
    watched = subprocess.run([sys.executable, "-m", "infomin_det", "status", str(exp), "--watch", "--every", "0.3"],
                             capture_output=True, text=True, timeout=120)
    assert watched.returncode == 0, watched.stderr
    blocks = watched.stdout.split("-- ")[1:]
    assert len(blocks) >= 2 and "step " in blocks[0] and "1 done" in blocks[-1]
    r.job.wait()
    [st] = experiment_status(exp)
    assert st.state == "done" and st.progress is None                 # finished runs show their result instead


def test_watch_of_a_failed_run_exits_1_at_once(tmp_path):
    exp = tmp_path / "exp"
    submit_tasks([DistributedTask(TOY, ToySpec(str(exp / "bad/seed0"), fail="no weights at /x.pkl"))], exp,
                 cluster="debug")
    t0 = time.time()
    watched = subprocess.run([sys.executable, "-m", "infomin_det", "status", str(exp), "--watch"],
                             capture_output=True, text=True, timeout=60)
    assert watched.returncode == 1 and "1 failed" in watched.stdout and "no weights at /x.pkl" in watched.stdout
    assert time.time() - t0 < 30                       # no 5 s poll once nothing is active


@pytest.mark.parametrize("every", ["0", "-1", "nan", "inf", "1e9"])
def test_bad_poll_intervals_are_refused(tmp_path, every):
    proc = subprocess.run([sys.executable, "-m", "infomin_det", "status", str(tmp_path), "--watch", "--every", every],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "error: --every" in proc.stderr and "Traceback" not in proc.stderr


def test_watch_and_json_together_are_refused(tmp_path):
    submit_tasks([DistributedTask(TOY, ToySpec(str(tmp_path / "exp/ok/seed0"), max_iter=1))], tmp_path / "exp",
                 cluster="debug")
    proc = subprocess.run([sys.executable, "-m", "infomin_det", "status", str(tmp_path / "exp"), "--watch", "--json"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "--watch redraws text" in proc.stderr


def test_the_progress_record_has_no_float_surprises(tmp_path):
    ProgressWriter(tmp_path, total=3, every_s=0.0).update(3)
    d = json.loads((tmp_path / PROGRESS_FILE).read_text())
    assert set(d) == {"step", "total", "attempt_start", "attempt_first_step", "updated"}
    assert all(math.isfinite(v) for v in d.values())
