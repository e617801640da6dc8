"""Run states of an experiment: pending / running / requeued / done / failed / unknown (+ unsubmitted).

Sources, most authoritative first: the run directory (a readable ``launch_result.json`` = done;
``launch_state.json`` written by the task), then the scheduler (``sacct``, or ``squeue`` without
accounting; for local jobs the controller process, checked by its command line so that a reused
PID is never taken for the job), then submitit's log files for a failure's last lines. A job is
called running only when the scheduler (or the live controller) says so: a state file left at
"running" by a job that was killed is not believed. ``unknown``: the scheduler could not be asked.
Returns data (:class:`RunStatus`); ``status_cli`` renders it.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infomin_det.launch.registry import Registry, RunRecord
from infomin_det.launch.task import RESULT_FILE, STATE_FILE
from infomin_det.progress import Progress, read_progress

STATES = ("unsubmitted", "pending", "running", "requeued", "done", "failed", "unknown")
ACTIVE = ("pending", "running", "requeued")      # the scheduler still has the run
_PENDING = {"PENDING", "CONFIGURING", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD"}
_RUNNING = {"RUNNING", "COMPLETING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT", "RESIZING"}
_REQUEUED = {"REQUEUED", "PREEMPTED"}
_FAILED = {"FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE",
           "SPECIAL_EXIT", "REVOKED"}
LOCAL_CONTROLLER = "submitit.local._local"
_TAIL_BYTES = 1 << 16


@dataclass
class RunStatus:
    key: str
    state: str
    job_id: str = ""
    attempt: int = 0
    scheduler_state: str = ""
    cause: str = ""
    log_tail: list[str] = field(default_factory=list)
    spec: dict = field(default_factory=dict)
    progress: Progress | None = None     # running / requeued: the run's progress.json


@dataclass
class SchedulerStates:
    """SLURM state per job id; ``error`` is set when neither sacct nor squeue answered."""

    states: dict[str, str] = field(default_factory=dict)
    error: str = ""

    def get(self, job_id: str, default: str = "") -> str:
        return self.states.get(job_id, default)


def _query(cmd: list[str]) -> tuple[list[tuple[str, str]] | None, str]:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, f"{cmd[0]}: {e}"
    if proc.returncode != 0:
        if "Invalid job id specified" in proc.stderr:     # squeue: none of them is in the queue (an answer)
            return [], ""
        return None, f"{cmd[0]}: {(proc.stderr.strip().splitlines() or [f'exit {proc.returncode}'])[-1]}"
    rows = []
    for line in proc.stdout.splitlines():
        jid, _, st = line.partition("|")
        rows.append((jid.strip(), (st.split() or [""])[0]))
    return rows, ""


def scheduler_states(job_ids: list[str]) -> SchedulerStates:
    """SLURM state per job id (``123`` or ``123_4``); sacct first, squeue when accounting is off."""
    if not job_ids:
        return SchedulerStates()
    mains = ",".join(sorted({j.split("_")[0] for j in job_ids}))
    out = SchedulerStates()
    acct, acct_err = _query(["sacct", "-X", "-n", "-P", "-o", "JobID,State", "-j", mains])
    for jid, st in acct or []:
        out.states[jid] = st
    # squeue knows pending array elements sacct shows as 123_[0-4]; it wins while queued
    queue, queue_err = _query(["squeue", "-h", "-r", "-o", "%i|%T", "-j", mains])
    for jid, st in queue or []:
        out.states[jid] = st
    if acct is None and queue is None:
        out.error = f"{acct_err}; {queue_err}"
    return out


def controller_alive(pid: str, submitit_folder: str) -> bool | None:
    """Whether ``pid`` is the live submitit controller of a local job in ``submitit_folder``.
    A PID reused by another process is not the job. None: cannot tell (no /proc)."""
    if not pid.isdigit():
        return False
    proc = Path("/proc")
    if not (proc / "self").exists():
        return None
    try:
        words = (proc / pid / "cmdline").read_bytes().split(b"\0")
        stat = (proc / pid / "stat").read_text()
    except OSError:                     # gone (or not ours to read)
        return False
    if stat.rpartition(")")[2].split()[:1] == ["Z"]:
        return False
    text = [w.decode(errors="replace") for w in words]
    return any(LOCAL_CONTROLLER in w for w in text) and any(submitit_folder and submitit_folder in w for w in text)


def _tail(path: Path, lines: int) -> list[str]:
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - _TAIL_BYTES))
        text = f.read().decode(errors="replace").splitlines()
    return [l for l in text if l.strip()][-lines:] if lines else []


def log_tail(record: RunRecord, job_id: str, lines: int = 10) -> list[str]:
    """Last non-empty lines of the job's rank-0 stderr (submitit's ``<job>_0_log.err``)."""
    from submitit.core.utils import JobPaths

    if lines <= 0 or not record.submitit_folder:
        return []
    paths = JobPaths(record.submitit_folder, job_id=job_id, task_id=0)
    for path in (paths.stderr, paths.stdout):
        try:
            tail = _tail(path, lines)
        except OSError:
            continue
        if tail:
            return tail
    return []


def _read_dict(path: Path) -> tuple[dict[str, Any] | None, str]:
    """(the JSON object in ``path`` or None, why not: "" when the file is simply absent)."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None, ""
    except (OSError, UnicodeDecodeError, ValueError) as e:
        return None, f"{path.name} is unreadable ({type(e).__name__})"
    if not isinstance(data, dict):
        return None, f"{path.name} is not a JSON object"
    return data, ""


def run_status(record: RunRecord, sched: SchedulerStates | dict[str, str], tail_lines: int = 10) -> RunStatus:
    if isinstance(sched, dict):
        sched = SchedulerStates(sched)
    out = Path(record.output_dir)
    job = record.last_job or {}
    job_id = job.get("job_id") or ""
    st = RunStatus(record.key, "unsubmitted", job_id=job_id, spec=record.spec)
    local, local_err = _read_dict(out / STATE_FILE)
    local = local or {}
    attempt = local.get("attempt", 0)
    st.attempt = attempt if isinstance(attempt, int) and not isinstance(attempt, bool) and attempt >= 0 else 0
    written = local.get("state") if isinstance(local.get("state"), str) else None
    result, result_err = _read_dict(out / RESULT_FILE)
    if result is not None:
        st.state = "done"
        return st
    if not job_id:
        return st
    cluster = job.get("cluster", "slurm")
    if cluster == "slurm":
        sst = sched.get(job_id, "")
        st.scheduler_state = sst
        if sched.error and not sst:
            st.state, st.cause = "unknown", f"cannot ask SLURM about job {job_id} ({sched.error})"
        elif sst in _PENDING:
            st.state = "requeued" if written == "requeued" or st.attempt > 0 else "pending"
        elif sst in _RUNNING:
            st.state = "requeued" if written == "requeued" else "running"
        elif sst in _REQUEUED:
            st.state = "requeued"
        elif sst in _FAILED:
            st.state = "failed"
        elif sst == "COMPLETED":
            st.state, st.cause = "failed", "job completed without writing a result"
        elif sst:
            st.state, st.cause = "unknown", f"SLURM reports state {sst}"
        else:   # not in the queue and not in accounting: purged, or accounting off and the job left the queue
            st.state = "failed"
            st.cause = f"scheduler has no record of job {job_id}" + (f" (its last state file says {written!r})"
                                                                       if written else "")
    elif cluster == "local":   # the controller process id is the job id
        alive = controller_alive(job_id, record.submitit_folder)
        if alive is None:
            st.state, st.cause = "unknown", "cannot check local processes (no /proc)"
        elif alive:
            st.state = "requeued" if written == "requeued" else "running"
        else:
            st.state, st.scheduler_state = "failed", "EXITED"
    else:   # debug ran in the submitting process: it is over
        st.state, st.scheduler_state = "failed", "EXITED"
    if st.state in ("running", "requeued"):
        st.progress = read_progress(out)
    if st.state == "failed":
        err = local.get("error") if written == "failed" and isinstance(local.get("error"), str) else ""
        st.cause = err or result_err or st.cause or local_err or (
            f"scheduler state {st.scheduler_state}" if st.scheduler_state else "")
        st.log_tail = log_tail(record, job_id, tail_lines)
        if not st.cause and st.log_tail:
            st.cause = st.log_tail[-1]
    return st


def experiment_status(experiment_dir: str | Path, tail_lines: int = 10) -> list[RunStatus]:
    """Status of every run in the experiment's registry (sorted by key)."""
    reg = Registry(experiment_dir)
    slurm_ids = [r.last_job["job_id"] for r in reg.runs.values()
                 if r.last_job and r.last_job.get("job_id") and r.last_job.get("cluster") == "slurm"]
    sched = scheduler_states(slurm_ids)
    return [run_status(reg.runs[k], sched, tail_lines) for k in sorted(reg.runs)]
