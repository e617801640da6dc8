"""``DistributedTask``: the one picklable job the launcher submits, for fine-tuning and pretraining.

A task is ``worker`` (``"module:function"``, imported inside the job), a ``spec`` (a frozen
dataclass of plain values with an ``output_dir``) and a few launch flags. In each SLURM/local task it

1. sets up ``torch.distributed`` from ``submitit.JobEnvironment`` when the job has several tasks:
   ``tcp://<first host of the node list>:<port>``, port seeded by job id and requeue attempt,
   gloo on CPU / NCCL on GPU, then (for Detectron2 workers) ``comm.create_local_process_group``;
2. calls ``worker(spec)``; the worker decides resume from ``spec.output_dir`` (``last_checkpoint``)
   itself -- the task never carries resume state, so a requeue replaying the original pickle resumes;
3. writes the run's launch state (``launch_state.json``: running / requeued / failed / done, with
   job id and attempt) and, on success, ``launch_result.json`` (the worker's returned dict) from rank 0.

``checkpoint()`` (called by submitit on USR2 / timeout, rank 0 only) returns a resubmission of the
same task. No torch or detectron2 at import time.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import importlib
import json
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from infomin_det.atomic import write_text_atomic
from infomin_det.errors import UserError

STATE_FILE = "launch_state.json"
RESULT_FILE = "launch_result.json"
PORT_BASE, PORT_SPAN = 20000, 20000


def rendezvous_port(job_id: str, attempt: int) -> int:
    """A TCP port in [20000, 40000) from job id and attempt: jobs sharing a node, and a requeued
    job whose previous attempt may still hold its port in TIME_WAIT, get different ports."""
    digest = hashlib.sha256(f"{job_id}:{attempt}".encode()).digest()
    return PORT_BASE + int.from_bytes(digest[:4], "big") % PORT_SPAN


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


def init_distributed(place: JobPlace, detectron2_comm: bool) -> str | None:
    """Create the default process group for a multi-task job; returns the backend (None: 1 task)."""
    if place.world_size == 1:
        return None
    import torch
    import torch.distributed as dist

    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(place.local_rank)
    port = rendezvous_port(place.job_id, place.attempt)
    os.environ.update(MASTER_ADDR=place.master, MASTER_PORT=str(port), RANK=str(place.global_rank),
                      WORLD_SIZE=str(place.world_size), LOCAL_RANK=str(place.local_rank))
    dist.init_process_group(backend, init_method=f"tcp://{place.master}:{port}",
                            rank=place.global_rank, world_size=place.world_size,
                            timeout=_dt.timedelta(minutes=10))
    if detectron2_comm:
        from detectron2.utils import comm

        comm.create_local_process_group(place.tasks_per_node)
    return backend


@dataclass(frozen=True)
class DistributedTask:
    """``worker(spec)`` in every task of a job; picklable, checkpointable (see module docstring).

    worker: ``"module:function"``; the function takes the spec and returns a JSON-able dict.
    spec: frozen dataclass with an ``output_dir``; its ``num_processes``/``nodes`` fields (if any)
        are set from the job's shape before the call.
    detectron2_comm: create Detectron2's local process group (fine-tuning); pretraining leaves it off.
    threads: ``torch.set_num_threads`` in each process (CPU jobs otherwise oversubscribe cores).
    label: a human-readable name recorded in the run's launch state.
    """

    worker: str
    spec: Any
    detectron2_comm: bool = False
    threads: int = 1
    label: str = field(default="", compare=False)

    @property
    def output_dir(self) -> Path:
        return Path(self.spec.output_dir)

    def __call__(self) -> dict:
        place = JobPlace.current()
        rank0 = place.global_rank == 0
        info = {"job_id": place.job_id, "attempt": place.attempt, "host": socket.gethostname(),
                "world_size": place.world_size, "label": self.label}
        if rank0:
            write_state(self.output_dir, "running", **info)
        try:
            import torch

            os.environ["OMP_NUM_THREADS"] = str(self.threads)  # the budget workers read (train_worker)
            torch.set_num_threads(self.threads)
            backend = init_distributed(place, self.detectron2_comm)
            spec = self.spec
            shape = {"num_processes": place.tasks_per_node, "nodes": place.num_nodes}
            present = {f.name for f in dataclasses.fields(spec)} if dataclasses.is_dataclass(spec) else set()
            if present >= set(shape):
                spec = dataclasses.replace(spec, **shape)
            result = resolve_worker(self.worker)(spec)
            if backend is not None:
                import torch.distributed as dist

                dist.barrier()
                dist.destroy_process_group()
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
