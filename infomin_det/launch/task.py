"""``DistributedTask``: the one picklable job the launcher submits, for fine-tuning and pretraining.

A task is ``worker`` (``"module:function"``, imported inside the job), a ``spec`` (a frozen
dataclass of plain values with an ``output_dir`` and a ``device``) and a few launch flags. In each
process of a job (SLURM, submitit-local, or :func:`run_local`'s spawned processes) it

1. sets up ``torch.distributed`` when the job has several processes (:mod:`infomin_det.dist`: the
   backend follows ``spec.device``, each rank's GPU is made current first, rendezvous on the first
   host) and, for workers that declare ``detectron2_comm = True`` (the fine-tuning worker does),
   Detectron2's local process group;
2. calls ``worker(spec)``; the worker decides resume from ``spec.output_dir`` (``last_checkpoint``)
   itself -- the task never carries resume state, so a requeue replaying the original pickle resumes;
3. writes the run's launch state (``launch_state.json``: running / requeued / failed / done, with
   job id and attempt) and, on success, ``launch_result.json`` (the worker's returned dict) from rank 0.

``checkpoint()`` (called by submitit on USR2 / timeout, rank 0 only) returns a resubmission of the
same task; a worker that wants to save its state first installs its own USR2 handler and calls
submitit's afterwards (the trainer does: see ``engine/hooks.py``). No torch or detectron2 at import time.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import importlib
import json
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from infomin_det import dist as _dist
from infomin_det.atomic import write_text_atomic
from infomin_det.errors import UserError
from infomin_det.preempt import Preempted  # noqa: F401  (re-exported: workers raise it)

STATE_FILE = "launch_state.json"
RESULT_FILE = "launch_result.json"


def resolve_worker(worker: str) -> Callable[[Any], dict]:
    """``"package.module:function"`` -> the function (imported now)."""
    module_name, sep, attr = worker.partition(":")
    if not sep or not module_name or not attr:
        raise UserError(f"worker {worker!r} is not 'module:function'", "e.g. infomin_det.engine.trainer:train_worker")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise UserError(f"cannot import worker {worker!r}: {e}", "check the module path and function name") from e
    if not callable(fn):
        raise UserError(f"worker {worker!r} is not callable", "point at a function taking the spec")
    return fn


def check_worker(worker: str) -> None:
    """Refuse a worker whose module cannot be found -- without importing it (no torch/detectron2 here)."""
    from importlib.util import find_spec

    module_name, sep, attr = worker.partition(":")
    try:
        found = bool(sep and attr and module_name and find_spec(module_name))
    except (ImportError, ValueError):
        found = False
    if not found:
        raise UserError(f"worker {worker!r} cannot be found",
                        "give 'module:function' of an installed module (is the package up to date?)")


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def write_state(output_dir: str | Path, state: str, **info: Any) -> None:
    """Atomically record the run's launch state (read by ``infomin-det status``)."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / STATE_FILE, json.dumps({"state": state, "time": _now(), **info}) + "\n")


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


@dataclass(frozen=True)
class JobPlace:
    """Where this process sits in the job (from ``submitit.JobEnvironment``)."""

    job_id: str
    attempt: int
    global_rank: int
    local_rank: int
    world_size: int
    num_nodes: int
    master: str

    @property
    def tasks_per_node(self) -> int:
        return self.world_size // self.num_nodes

    @classmethod
    def current(cls) -> "JobPlace":
        import submitit

        try:
            env = submitit.JobEnvironment()
        except RuntimeError:          # not inside a submitit job (a direct call): one process
            return cls("direct", 0, 0, 0, 1, 1, "127.0.0.1")
        attempt = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
        return cls(env.job_id, attempt, env.global_rank, env.local_rank, env.num_tasks,
                   env.num_nodes, env.hostnames[0])

    @classmethod
    def local(cls, rank: int, world: int, job_id: str) -> "JobPlace":
        """Rank ``rank`` of ``world`` processes on this machine (:func:`run_local`)."""
        return cls(job_id, 0, rank, rank, world, 1, "127.0.0.1")


def needs_detectron2_comm(worker: Callable[[Any], dict]) -> bool:
    """Whether ``worker`` declared (``worker.detectron2_comm = True``) that it needs Detectron2's
    local process group (``comm.get_local_rank()`` etc.)."""
    return bool(getattr(worker, "detectron2_comm", False))


@dataclass(frozen=True)
class DistributedTask:
    """``worker(spec)`` in every process of a job; picklable, checkpointable (see module docstring).

    worker: ``"module:function"``; the function takes the spec and returns a JSON-able dict.
    spec: frozen dataclass with an ``output_dir`` (and a ``device``: auto | cuda | cpu); its
        ``num_processes``/``nodes`` fields (if any) are set from the job's shape before the call.
    threads: ``torch.set_num_threads`` in each process (CPU jobs otherwise oversubscribe cores).
    label: a human-readable name recorded in the run's launch state.
    """

    worker: str
    spec: Any
    threads: int = 1
    label: str = field(default="", compare=False)

    @property
    def output_dir(self) -> Path:
        return Path(self.spec.output_dir)

    def __call__(self) -> dict:
        return self.run(JobPlace.current())

    def run(self, place: JobPlace) -> dict:
        """This process's share of the job at ``place``."""
        rank0 = place.global_rank == 0
        info = {"job_id": place.job_id, "attempt": place.attempt, "host": socket.gethostname(),
                "world_size": place.world_size, "label": self.label}
        if rank0:
            write_state(self.output_dir, "running", **info)
        try:
            import torch

            os.environ["OMP_NUM_THREADS"] = str(self.threads)  # the budget workers read (train_worker)
            torch.set_num_threads(self.threads)
            worker = resolve_worker(self.worker)
            distributed = place.world_size > 1
            if distributed:
                _dist.init_process_group(rank=place.global_rank, world=place.world_size,
                                         local_rank=place.local_rank, master=place.master, job_id=place.job_id,
                                         attempt=place.attempt, port_dir=self.output_dir,
                                         device=_dist.resolve_device(getattr(self.spec, "device", "auto")))
                if needs_detectron2_comm(worker):
                    from detectron2.utils import comm

                    comm.create_local_process_group(place.tasks_per_node)
            spec = self.spec
            shape = {"num_processes": place.tasks_per_node, "nodes": place.num_nodes}
            present = {f.name for f in dataclasses.fields(spec)} if dataclasses.is_dataclass(spec) else set()
            if present >= set(shape):
                spec = dataclasses.replace(spec, **shape)
            result = worker(spec)
            if distributed:
                _dist.wait_for_main()
                _dist.destroy()
        except BaseException as e:
            if rank0 and not isinstance(e, SystemExit):
                write_state(self.output_dir, "failed", error=f"{type(e).__name__}: {e}", **info)
            raise
        if rank0:
            payload = {"result": result, "finished": _now(), **info}
            write_text_atomic(self.output_dir / RESULT_FILE, json.dumps(payload, default=str) + "\n")
            write_state(self.output_dir, "done", **info)
        return result

    def checkpoint(self) -> Any:
        """Preempted or timed out: resubmit the same task (state comes from the run directory)."""
        from submitit.helpers import DelayedSubmission

        place = JobPlace.current()
        write_state(self.output_dir, "requeued", job_id=place.job_id, attempt=place.attempt + 1)
        return DelayedSubmission(self)


def _local_rank(rank: int, task: DistributedTask, world: int, job_id: str, outcome: Any) -> None:
    import sys

    sys.stdout = sys.stderr          # the parent prints the result; the ranks' prints are log
    try:
        task.run(JobPlace.local(rank, world, job_id))
    except Preempted as e:
        outcome.put(("preempted", str(e), ""))
    except UserError as e:
        outcome.put(("error", e.cause, e.fix))
        raise SystemExit(2) from None


def run_local(task: DistributedTask, processes: int) -> dict:
    """Run ``task`` in ``processes`` processes on this machine (spawned; ranks 0..N-1, one node) and
    return rank 0's result -- the same path as a SLURM job, without a scheduler. A UserError or a
    preemption in any rank is raised here as such."""
    if processes == 1:
        return task.run(JobPlace.local(0, 1, f"local-{os.getpid()}"))
    import torch.multiprocessing as mp
    from torch.multiprocessing.spawn import ProcessExitedException

    task.output_dir.mkdir(parents=True, exist_ok=True)
    (task.output_dir / RESULT_FILE).unlink(missing_ok=True)
    job_id = f"local-{os.getpid()}-{time.time_ns()}"
    outcome = mp.get_context("spawn").SimpleQueue()
    try:
        mp.start_processes(_local_rank, args=(task, processes, job_id, outcome), nprocs=processes,
                           start_method="spawn")
    except ProcessExitedException as e:
        if outcome.empty():
            how = f"was killed by signal {e.signal_name}" if e.signal_name else f"exited with status {e.exit_code}"
            raise UserError(f"rank {e.error_index} of {processes} {how}; the run stopped",
                            f"see {task.output_dir}/log.txt; the same command resumes from the last checkpoint") from None
    if not outcome.empty():
        kind, cause, fix = outcome.get()
        if kind == "preempted":
            raise Preempted(cause)
        raise UserError(cause, fix)
    payload = read_json(task.output_dir / RESULT_FILE)
    if payload is None:
        raise UserError(f"{processes} local processes ended without a result in {task.output_dir / RESULT_FILE}",
                        f"see {task.output_dir}/log.txt")
    return payload["result"]
