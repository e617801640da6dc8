"""Submit many :class:`DistributedTask` s as one job array, recording them in the job registry.

``submit_tasks`` is the launcher's single entry point (fine-tuning sweeps and pretraining alike):

1. resolve the cluster (``auto``: SLURM when ``sbatch`` exists), validate the executor options and,
   on SLURM, have the scheduler check them (``sbatch --test-only``) -- nothing queued on error;
2. skip runs that are done (``launch_result.json``) or still queued/running; the rest (new, failed,
   interrupted) are (re)submitted and resume from their run directory;
3. record intent in the registry, submit everything in one ``executor.batch()`` (one SLURM array,
   ``%array_parallelism``; SLURM_* variables of an enclosing allocation hidden), record the job ids.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

from infomin_det.errors import UserError
from infomin_det.launch.options import ExecutorOptions, check_against_slurm, resolve_cluster
from infomin_det.launch.registry import Registry, RunRecord, spec_fields
from infomin_det.launch.status import run_status, scheduler_states
from infomin_det.launch.task import DistributedTask, check_worker

ACTIVE = ("pending", "running", "requeued")


@dataclass
class Submitted:
    """What happened to one run: ``action`` is submitted | skipped-done | skipped-active | done | failed.
    ``job`` is the submitit job object (``job.wait()``, ``job.result()``) for runs submitted now."""

    key: str
    action: str
    job_id: str = ""
    output_dir: str = ""
    error: str = ""
    job: Any = field(default=None, repr=False, compare=False)


@contextlib.contextmanager
def submission_env() -> Iterator[None]:
    """submitit's ``clean_env`` (no SLURM_*/rank variables of an enclosing job leak into the new
    one), keeping ``SLURM_CONF``: it names the cluster, not the job."""
    from submitit.helpers import clean_env

    conf = os.environ.get("SLURM_CONF")
    with clean_env():
        if conf is not None:
            os.environ["SLURM_CONF"] = conf
        yield


def make_executor(cluster: str, folder: Path, options: ExecutorOptions, job_name: str):
    """The submitit executor for ``cluster`` with ``options`` applied (native parameter names)."""
    import submitit

    if cluster == "slurm":
        ex = submitit.SlurmExecutor(folder, max_num_timeout=options.max_requeues)
        ex.update_parameters(job_name=job_name, **options.submitit_parameters("slurm"))
    elif cluster == "local":
        ex = submitit.LocalExecutor(folder, max_num_timeout=options.max_requeues)
        ex.update_parameters(**options.submitit_parameters("local"))
    else:
        ex = submitit.DebugExecutor(folder)
    return ex


def submit_tasks(tasks: Sequence[DistributedTask], experiment_dir: str | Path,
                 options: ExecutorOptions | None = None, cluster: str = "auto",
                 command: Sequence[str] | None = None, job_name: str = "infomin-det") -> list[Submitted]:
    """Submit ``tasks`` (one array) unless done or active; returns one :class:`Submitted` per task."""
    options = options or ExecutorOptions()
    cluster = resolve_cluster(cluster)
    options.validate(cluster)
    if not tasks:
        raise UserError("nothing to submit", "give at least one protocol, weights and seed")
    if cluster == "slurm":
        with submission_env():
            check_against_slurm(options)
    for worker in sorted({t.worker for t in tasks}):
        check_worker(worker)
    command = list(command if command is not None else sys.argv)
    exp = Path(experiment_dir)
    reg = Registry(exp)
    folder = exp / "launch" / "submitit" / "%j"

    keys = [reg.key_for(t.output_dir) for t in tasks]
    if len(set(keys)) != len(keys):
        dup = next(k for k in keys if keys.count(k) > 1)
        raise UserError(f"two runs share the output directory {dup}", "give each run its own seed / weights name")
    known = [reg.runs[k] for k in keys if k in reg.runs]
    sched = scheduler_states([r.last_job["job_id"] for r in known if r.last_job and r.last_job.get("job_id")
                              and r.last_job.get("cluster") == "slurm"])

    report: list[Submitted] = []
    todo: list[tuple[str, DistributedTask]] = []
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    for key, task in zip(keys, tasks):
        rec = reg.runs.get(key)
        state = run_status(rec, sched, tail_lines=0).state if rec else "unsubmitted"
        if rec is None and (task.output_dir / "launch_result.json").exists():
            state = "done"
        if state == "done":
            report.append(Submitted(key, "skipped-done", output_dir=str(task.output_dir)))
            continue
        if state in ACTIVE:
            report.append(Submitted(key, "skipped-active", rec.last_job["job_id"], str(task.output_dir)))
            continue
        rec = RunRecord(key=key, output_dir=str(task.output_dir.resolve()), worker=task.worker,
                        spec=spec_fields(task.spec), command=command,
                        submitit_folder=str(folder.resolve()), jobs=(rec.jobs if rec else []))
        rec.jobs.append({"job_id": None, "cluster": cluster, "submitted": now})   # intent first
        reg.runs[key] = rec
        todo.append((key, task))
    if not todo:
        return report
    if cluster == "local" and len(todo) > options.array_parallelism:
        raise UserError(f"{len(todo)} local runs would all start at once (submitit's local executor has no "
                        f"arrays) but array_parallelism is {options.array_parallelism}",
                        "submit fewer runs per call, raise --array-parallelism, or use SLURM")
    reg.save()

    executor = make_executor(cluster, folder, options, job_name)
    jobs = []
    try:
        with submission_env(), executor.batch():
            for _, task in todo:
                jobs.append(executor.submit(task))
    except (OSError, subprocess.SubprocessError, RuntimeError) as e:   # sbatch refused / unreachable
        reason = (str(e).strip().splitlines() or [repr(e)])[-1]
        raise UserError(f"submission of {len(todo)} runs failed: {reason}",
                        f"they stay 'unsubmitted' in {reg.path}; fix the cause and run the same command again") from e
    for (key, task), job in zip(todo, jobs):
        reg.runs[key].jobs[-1]["job_id"] = str(job.job_id)
    reg.save()

    for (key, task), job in zip(todo, jobs):
        item = Submitted(key, "submitted", str(job.job_id), str(task.output_dir), job=job)
        if cluster == "debug":      # runs here, now; exception() does not drop into pdb
            err = job.exception()
            item.action, item.error = ("failed", f"{type(err).__name__}: {err}") if err else ("done", "")
        report.append(item)
    return report
