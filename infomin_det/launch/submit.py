"""Submit many :class:`DistributedTask` s as one job array, recording them in the job registry.

``submit_tasks`` is the launcher's single entry point (fine-tuning sweeps and pretraining alike):

1. resolve the cluster (``auto``: SLURM when ``sbatch`` exists), validate the executor options and
   the runs' devices against the GPUs requested (and, for local jobs, visible: ``gpus.py``);
2. skip runs that are done (``launch_result.json``) or still queued/running; refuse runs recorded
   with other settings; the rest (new, failed, interrupted) are (re)submitted and resume from their
   run directory;
3. on SLURM have the scheduler check the request (``sbatch --test-only``, with the array size);
   locally give each job its own GPUs -- nothing is written or queued before all checks pass;
4. record intent in the registry, submit everything in one ``executor.batch()`` (one SLURM array,
   ``%array_parallelism``; SLURM_* variables of an enclosing allocation hidden), record the job ids.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from infomin_det.errors import UserError
from infomin_det.launch.gpus import check_device_request, plan_local_gpus, visible_gpus
from infomin_det.launch.interrupts import deferred_interrupts
from infomin_det.launch.options import ExecutorOptions, check_against_slurm, resolve_cluster
from infomin_det.launch.registry import LAUNCH_DIR, Registry, RunRecord, spec_fields
from infomin_det.launch.status import ACTIVE, run_status, scheduler_states
from infomin_det.launch.task import RESULT_FILE, DistributedTask, check_worker



@dataclass
class Submitted:
    """What happened to one run: ``action`` is submitted | skipped-done | skipped-active | done | failed | would-submit.
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


def make_executor(cluster: str, folder: Path, options: ExecutorOptions, job_name: str, gpus: str = ""):
    """The submitit executor for ``cluster`` with ``options`` applied (native parameter names).

    ``gpus``: the ``CUDA_VISIBLE_DEVICES`` of a local job (``""``: none). submitit's local executor
    would give every job GPUs ``0..k-1``; here each job's processes get exactly ``gpus``, set by
    ``env`` in front of the interpreter the controller starts (works for indices and UUIDs alike).
    """
    import submitit

    if cluster == "slurm":
        ex = submitit.SlurmExecutor(folder, max_num_timeout=options.max_requeues)
        ex.update_parameters(job_name=options.job_name or job_name, **options.submitit_parameters("slurm"))
    elif cluster == "local":
        python = f"env CUDA_VISIBLE_DEVICES={shlex.quote(gpus)} {shlex.quote(sys.executable)}" if gpus else None
        ex = submitit.LocalExecutor(folder, max_num_timeout=options.max_requeues, python=python)
        ex.update_parameters(**options.submitit_parameters("local"))
    else:
        ex = submitit.DebugExecutor(folder)
    return ex


def task_device(task: DistributedTask) -> str:
    """The device a task's spec asks for (``auto`` for specs without a ``device`` field)."""
    return getattr(task.spec, "device", "auto")


def _check_experiment_dir(exp: Path) -> None:
    """Refuse an experiment directory that is a file, or that could not be created or written."""
    if exp.exists() and not exp.is_dir():
        raise UserError(f"experiment directory {exp} is a file", "pass another --experiment or --root")
    base = exp
    while not base.exists():
        if base.parent == base:
            break
        base = base.parent
    if not base.is_dir():
        raise UserError(f"{base} is a file, so the experiment directory {exp} cannot be created",
                        "pass a --root that is a directory (or does not exist yet)")
    if not os.access(base, os.W_OK | os.X_OK):
        raise UserError(f"{base} is not writable, so nothing can be recorded for {exp}",
                        "pass a --root you can write to")


def _refuse_changed(changed: list[tuple[str, Path, list[str]]]) -> None:
    key, out, diffs = changed[0]
    more = f" (and {len(changed) - 1} more runs)" if len(changed) > 1 else ""
    shown = "; ".join(diffs[:4]) + (f"; +{len(diffs) - 4} more" if len(diffs) > 4 else "")
    raise UserError(f"run {key} was submitted before with other settings{more}: {shown}",
                    "a run directory holds one setting: use a new --experiment (or --weights NAME=...) for the "
                    f"new settings, or delete {out} to redo that run with them")


def submit_tasks(tasks: Sequence[DistributedTask], experiment_dir: str | Path,
                 options: ExecutorOptions | None = None, cluster: str = "auto",
                 command: Sequence[str] | None = None, job_name: str = "infomin-det",
                 inputs: Sequence[Mapping[str, str]] | None = None, dry_run: bool = False) -> list[Submitted]:
    """Submit ``tasks`` (one array) unless done or active; returns one :class:`Submitted` per task.

    ``dry_run``: every check below runs (the scheduler's ``--test-only`` included), nothing is
    written or queued; the runs that would be submitted come back as ``would-submit``.

    ``inputs``: per task, facts about files it reads beyond its spec (e.g. ``{"weights_sha256": ...}``);
    recorded, and compared on re-submission like the spec. A run already in the registry whose spec,
    worker or inputs differ is refused (naming the fields) unless its run directory does not exist.
    Everything is checked before the registry is written or anything is queued.
    """
    options = options or ExecutorOptions()
    cluster = resolve_cluster(cluster)
    options.validate(cluster)
    if not tasks:
        raise UserError("nothing to submit", "give at least one protocol, weights and seed")
    if inputs is not None and len(inputs) != len(tasks):
        raise ValueError("inputs must have one entry per task")
    devices = [task_device(t) for t in tasks]
    visible = visible_gpus() if cluster == "local" else []
    check_device_request(devices, options.gpus_per_node, cluster, visible)
    for worker in sorted({t.worker for t in tasks}):
        check_worker(worker)
    command = list(command if command is not None else sys.argv)
    exp = Path(experiment_dir)
    _check_experiment_dir(exp)
    reg = Registry(exp)
    folder = (exp / LAUNCH_DIR / "submitit").resolve() / "%j"

    keys = [reg.key_for(t.output_dir) for t in tasks]
    if len(set(keys)) != len(keys):
        dup = next(k for k in keys if keys.count(k) > 1)
        raise UserError(f"two runs share the output directory {dup}", "give each run its own seed / weights name")
    # this submission's runs, and every local job of the experiment (their GPUs are taken)
    known = {k: r for k, r in reg.runs.items() if k in set(keys) or (r.last_job or {}).get("cluster") == "local"}
    sched = scheduler_states([r.last_job["job_id"] for r in known.values() if r.last_job
                              and r.last_job.get("job_id") and r.last_job.get("cluster") == "slurm"])
    states = {k: run_status(r, sched, tail_lines=0) for k, r in known.items()}
    busy = {g for k, st in states.items() if st.state in ACTIVE
            for g in str(reg.runs[k].last_job.get("gpus") or "").split(",") if g}

    report: list[Submitted] = []
    todo: list[tuple[str, DistributedTask, dict[str, str]]] = []
    changed: list[tuple[str, Path, list[str]]] = []
    for i, (key, task) in enumerate(zip(keys, tasks)):
        rec = reg.runs.get(key)
        facts = dict(inputs[i]) if inputs is not None else {}
        state = states[key].state if rec else "unsubmitted"
        if rec is None and (task.output_dir / RESULT_FILE).exists():
            state = "done"
        if rec is not None:
            diffs = rec.differences(task.worker, spec_fields(task.spec), facts)
            if diffs and (state in (*ACTIVE, "done", "unknown") or task.output_dir.exists()):
                changed.append((key, task.output_dir, diffs))
                continue
        if state == "unknown":
            raise UserError(f"cannot tell whether run {key} is still queued or running: {states[key].cause}",
                            "submit again once the scheduler answers (infomin-det status shows it)")
        if state == "done":
            report.append(Submitted(key, "skipped-done", output_dir=str(task.output_dir)))
        elif state in ACTIVE:
            report.append(Submitted(key, "skipped-active", rec.last_job["job_id"], str(task.output_dir)))
        else:
            todo.append((key, task, facts))
    if changed:
        _refuse_changed(changed)
    if not todo:
        return report
    plan = [""] * len(todo)
    if cluster == "slurm":
        with submission_env():
            check_against_slurm(options, array_size=len(todo))
    elif cluster == "local":
        if len(todo) > options.array_parallelism:
            raise UserError(f"{len(todo)} local runs would all start at once (submitit's local executor has no "
                            f"arrays) but array_parallelism is {options.array_parallelism}",
                            "submit fewer runs per call, raise --array-parallelism, or use SLURM")
        plan = plan_local_gpus([task_device(t) for _, t, _ in todo], options.gpus_per_node, visible, busy)
    if dry_run:
        return report + [Submitted(key, "would-submit", output_dir=str(task.output_dir)) for key, task, _ in todo]

    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    for (key, task, facts), gpus in zip(todo, plan):
        old = reg.runs.get(key)
        rec = RunRecord(key=key, output_dir=str(task.output_dir.resolve()), worker=task.worker,
                        spec=spec_fields(task.spec), command=command, submitit_folder=str(folder),
                        jobs=(old.jobs if old else []), inputs=facts)
        job: dict[str, Any] = {"job_id": None, "cluster": cluster, "submitted": now}   # intent first
        if cluster == "local":
            job["gpus"] = gpus
        rec.jobs.append(job)
        reg.runs[key] = rec
    reg.save()

    # a Ctrl-C / SIGTERM between two submits acts once every started job's id is on disk
    with deferred_interrupts():
        jobs = []
        try:
            with submission_env():
                if cluster == "local":      # no arrays; one executor per job for its own GPUs
                    for (_, task, _), gpus in zip(todo, plan):
                        jobs.append(make_executor(cluster, folder, options, job_name, gpus).submit(task))
                else:
                    executor = make_executor(cluster, folder, options, job_name)
                    with executor.batch():
                        for _, task, _ in todo:
                            jobs.append(executor.submit(task))
        except (OSError, subprocess.SubprocessError, RuntimeError) as e:   # sbatch refused / unreachable
            started = jobs if cluster == "local" else []      # local jobs started before the failure
            for (key, _, _), job in zip(todo, started):
                reg.runs[key].jobs[-1]["job_id"] = str(job.job_id)
            reg.save()
            reason = (str(e).strip().splitlines() or [repr(e)])[-1]
            raise UserError(f"submission of {len(todo) - len(started)} of {len(todo)} runs failed: {reason}",
                            f"they stay 'unsubmitted' in {reg.path}; fix the cause and run the same command again") from e
        for (key, _, _), job in zip(todo, jobs):
            reg.runs[key].jobs[-1]["job_id"] = str(job.job_id)
        reg.save()

    for (key, task, _), job in zip(todo, jobs):
        item = Submitted(key, "submitted", str(job.job_id), str(task.output_dir), job=job)
        if cluster == "debug":      # runs here, now; exception() does not drop into pdb
            err = job.exception()
            item.action, item.error = ("failed", f"{type(err).__name__}: {err}") if err else ("done", "")
        report.append(item)
    return report
