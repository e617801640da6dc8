"""Run states of an experiment: pending / running / requeued / done / failed (+ unsubmitted).

Sources, most authoritative first: the run directory (``launch_result.json`` = done,
``launch_state.json`` written by the task), then the scheduler (``sacct``, or ``squeue`` without
accounting; the controller PID for local jobs), then submitit's log files for a failure's last
lines. Returns data (:class:`RunStatus`); ``status_cli`` renders it.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from infomin_det.launch.registry import Registry, RunRecord
from infomin_det.launch.task import RESULT_FILE, STATE_FILE, read_json

STATES = ("unsubmitted", "pending", "running", "requeued", "done", "failed")
_FAILED = {"FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE"}
_REQUEUED = {"REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "PREEMPTED", "RESIZING"}


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


def scheduler_states(job_ids: list[str]) -> dict[str, str]:
    """SLURM state per job id (``123`` or ``123_4``); sacct first, squeue when accounting is off."""
    if not job_ids:
        return {}
    mains = sorted({j.split("_")[0] for j in job_ids})
    states: dict[str, str] = {}
    try:
        proc = subprocess.run(["sacct", "-X", "-n", "-P", "-o", "JobID,State", "-j", ",".join(mains)],
                              capture_output=True, text=True, timeout=60)
        if proc.returncode == 0:
            for line in proc.stdout.splitlines():
                jid, _, st = line.partition("|")
                states[jid.strip()] = st.split()[0] if st.split() else ""
    except (OSError, subprocess.TimeoutExpired):
        pass
    try:   # squeue knows pending array elements sacct shows as 123_[0-4]; it wins while queued
        proc = subprocess.run(["squeue", "-h", "-r", "-o", "%i|%T", "-j", ",".join(mains)],
                              capture_output=True, text=True, timeout=60)
        if proc.returncode == 0:
            for line in proc.stdout.splitlines():
                jid, _, st = line.partition("|")
                states[jid.strip()] = st.strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    return states


def _pid_alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(")")[-1].split()[0] == "Z")


def log_tail(record: RunRecord, job_id: str, lines: int = 10) -> list[str]:
    """Last non-empty lines of the job's rank-0 stderr (submitit's ``<job>_0_log.err``)."""
    from submitit.core.utils import JobPaths

    paths = JobPaths(record.submitit_folder, job_id=job_id, task_id=0)
    for path in (paths.stderr, paths.stdout):
        try:
            text = path.read_text(errors="replace").splitlines()
        except OSError:
            continue
        tail = [l for l in text if l.strip()][-lines:]
        if tail:
            return tail
    return []


def run_status(record: RunRecord, sched: dict[str, str], tail_lines: int = 10) -> RunStatus:
    out = Path(record.output_dir)
    job = record.last_job or {}
    job_id = job.get("job_id") or ""
    st = RunStatus(record.key, "unsubmitted", job_id=job_id, spec=record.spec)
    local = read_json(out / STATE_FILE) or {}
    st.attempt = int(local.get("attempt", 0) or 0)
    if (out / RESULT_FILE).exists():
        st.state = "done"
        return st
    if not job_id:
        return st
    cluster = job.get("cluster", "slurm")
    if cluster == "slurm":
        sst = sched.get(job_id, "")
        st.scheduler_state = sst
        if sst in ("PENDING", "CONFIGURING"):
            st.state = "requeued" if local.get("state") == "requeued" or st.attempt > 0 else "pending"
        elif sst in ("RUNNING", "COMPLETING", "SUSPENDED"):
            st.state = "requeued" if local.get("state") == "requeued" else "running"
        elif sst in _REQUEUED:
            st.state = "requeued"
        elif sst in _FAILED or local.get("state") == "failed":
            st.state = "failed"
        elif sst == "COMPLETED":
            st.state = "failed"
            st.cause = "job completed without writing a result"
        else:   # unknown to the scheduler (purged, or accounting off and job left the queue)
            st.state = "failed" if local.get("state") in (None, "failed", "running") else local["state"]
            st.cause = f"scheduler has no record of job {job_id}" if not local else ""
    else:   # local: the controller process id is the job id; debug ran in the submitting process
        if cluster == "local" and _pid_alive(job_id):
            st.state = "requeued" if local.get("state") == "requeued" else "running"
        else:
            st.state = "failed"
            st.scheduler_state = "EXITED"
    if st.state == "failed":
        err = local.get("error") if local.get("state") == "failed" else ""
        st.cause = err or st.cause or (f"scheduler state {st.scheduler_state}" if st.scheduler_state else "")
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
