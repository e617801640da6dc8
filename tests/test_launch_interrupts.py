"""Ctrl-C / SIGTERM while jobs are being started: no job runs unrecorded or uncancelled.

The signal is sent by the process to itself at a fixed point of a real local submission (between
the two jobs' starts, or just after the last), so the race that a user's Ctrl-C or a scheduler's
SIGTERM hits only sometimes is hit every time."""

import os
import signal
import time

import pytest

import infomin_det.launch
import infomin_det.launch.submit as submit_module
from infomin_det.launch import DistributedTask, ExecutorOptions, Registry, submit_tasks
from infomin_det.launch.interrupts import deferred_interrupts
from infomin_det.launch.selftest import ToySpec
from infomin_det.launch.task import RESULT_FILE

TOY = "infomin_det.launch.selftest:toy_worker"


def _raise(signum, _frame):
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.fixture
def sigterm_raises():
    old = signal.signal(signal.SIGTERM, _raise)     # as the demo's CLI installs it
    yield
    signal.signal(signal.SIGTERM, old)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _reap(pids, timeout=60.0):
    end = time.time() + timeout
    for pid in pids:
        while _alive(pid):
            try:                                   # a child of this process: reap it
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    break
            except ChildProcessError:
                pass
            assert time.time() < end, f"job {pid} still running"
            time.sleep(0.1)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_inside_the_block_acts_once_when_it_ends(sig, sigterm_raises):
    reached = []
    with pytest.raises(KeyboardInterrupt):
        with deferred_interrupts():
            os.kill(os.getpid(), sig)
            os.kill(os.getpid(), sig)       # twice: acts once
            time.sleep(0.2)                 # delivered by now, and held
            reached.append("end of block")
    assert reached == ["end of block"]
    assert signal.getsignal(signal.SIGTERM) is _raise and signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_nested_blocks_hold_the_signal_until_the_outermost_ends(sigterm_raises):
    reached = []
    with pytest.raises(KeyboardInterrupt):
        with deferred_interrupts():
            with deferred_interrupts():
                os.kill(os.getpid(), signal.SIGTERM)
            reached.append("after the inner block")
    assert reached == ["after the inner block"]


def test_without_a_signal_the_block_is_transparent(sigterm_raises):
    with deferred_interrupts():
        value = 1
    assert value == 1 and signal.getsignal(signal.SIGTERM) is _raise


def test_ctrl_c_between_two_local_starts_leaves_both_job_ids_in_the_registry(tmp_path, monkeypatch):
    """Before: the KeyboardInterrupt unwound submit_tasks with the first job running and its id
    never written (the registry said 'submitted, job None'; a resubmission started it twice)."""
    real = submit_module.make_executor
    calls = []

    def make_executor_then_ctrl_c(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:                 # the first job is running now
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.2)
        return real(*args, **kwargs)

    monkeypatch.setattr(submit_module, "make_executor", make_executor_then_ctrl_c)
    exp = tmp_path / "exp"
    tasks = [DistributedTask(TOY, ToySpec(str(exp / f"toy/seed{i}"), max_iter=2)) for i in range(2)]
    with pytest.raises(KeyboardInterrupt):
        submit_tasks(tasks, exp, ExecutorOptions(timeout_min=5), cluster="local")
    ids = {k: r.last_job["job_id"] for k, r in Registry(exp).runs.items()}
    assert set(ids) == {"toy/seed0", "toy/seed1"} and all(ids.values()), ids
    _reap([int(j) for j in ids.values()])
    for i in range(2):                      # both really ran: the ids are the jobs that started
        assert (exp / f"toy/seed{i}" / RESULT_FILE).exists()


def test_sigterm_as_the_demo_starts_its_jobs_cancels_them(tmp_path, monkeypatch, sigterm_raises):
    """The CI failure this fixes: a SIGTERM that landed while the demo was still in submit_tasks
    left its already started pretraining job running to completion after the demo had exited."""
    from rich.console import Console

    from infomin_det.demo.pipeline import _run

    real = infomin_det.launch.submit_tasks

    def submit_then_sigterm(*args, **kwargs):
        submitted = real(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)   # both jobs started, no handle returned yet
        time.sleep(0.2)
        return submitted

    monkeypatch.setattr(infomin_det.launch, "submit_tasks", submit_then_sigterm)
    root = tmp_path / "exp"
    tasks = [DistributedTask(TOY, ToySpec(str(root / f"toy/seed{i}"), max_iter=40, step_s=0.5)) for i in range(2)]
    with pytest.raises(KeyboardInterrupt):
        _run(tasks, root, ExecutorOptions(cpus_per_task=1, timeout_min=5, array_parallelism=2), "local",
             Console(file=open(os.devnull, "w")), "toy")
    pids = [int(r.last_job["job_id"]) for r in Registry(root).runs.values()]
    assert pids                                # one wave per core: 1 or 2 jobs started
    _reap(pids, timeout=30)                    # uncancelled, they would run 20 s and write a result
    for i in range(len(pids)):
        assert not (root / f"toy/seed{i}" / RESULT_FILE).exists()
