"""Process groups for multi-process runs (fine-tuning and pretraining, SLURM and local alike).

One place decides what every multi-process path needs, so that no path decides it differently:

* :func:`resolve_device` -- ``auto | cuda | cpu`` -> the device a run uses; the backend follows the
  run's device (:func:`backend_for`: NCCL only for CUDA runs), never mere CUDA availability.
* :func:`cuda_index` -- the GPU of a local rank (``local_rank % visible GPUs``: right both where every
  task sees all GPUs and where the cluster binds one GPU per task).
* :func:`init_process_group` -- rendezvous through a ``TCPStore`` that rank 0 opens on a port derived
  from the job id, below Linux's ephemeral range (32768+), trying the next port when one is in use and
  publishing the one it got in a file on the run's (shared) directory for the other ranks.
* Two timeouts: collectives of the training loop use ``DIST_TIMEOUT`` (Detectron2's 30 min);
  :func:`wait_for_main` -- where the other ranks wait while rank 0 alone works (pure-Python COCOeval,
  writing a checkpoint) -- uses a gloo group with ``MAIN_WAIT`` (6 h), so a slow final evaluation never
  trips the watchdog of a finished run. Both can be set with ``INFOMIN_DET_DIST_TIMEOUT_S`` /
  ``INFOMIN_DET_MAIN_WAIT_S`` (seconds).

torch is imported inside the functions (the launcher imports this module without it).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import sys
import time
from pathlib import Path

from infomin_det.atomic import write_text_atomic
from infomin_det.errors import UserError

DEVICES = ("auto", "cuda", "cpu")
PORT_BASE, PORT_SPAN = 20000, 12000          # [20000, 32000): below the ephemeral range
PORT_TRIES = 16
_wait_group = None                           # gloo group with the long timeout (see wait_for_main)


def _seconds(env: str, default: float) -> _dt.timedelta:
    try:
        value = float(os.environ.get(env, default))
    except ValueError:
        raise UserError(f"{env}={os.environ[env]!r} is not a number of seconds", f"unset {env} or give seconds") from None
    if not value > 0:
        raise UserError(f"{env}={value} must be positive", f"unset {env} or give seconds > 0")
    return _dt.timedelta(seconds=value)


def dist_timeout() -> _dt.timedelta:
    return _seconds("INFOMIN_DET_DIST_TIMEOUT_S", 30 * 60)


def main_wait_timeout() -> _dt.timedelta:
    return _seconds("INFOMIN_DET_MAIN_WAIT_S", 6 * 3600)


def resolve_device(device: str) -> str:
    """``cuda`` or ``cpu`` for a run asking for ``device`` (``auto``: CUDA iff this process sees a GPU)."""
    import torch

    if device not in DEVICES:
        raise UserError(f"device {device!r} is not one of {', '.join(DEVICES)}", "use --device auto, cuda or cpu")
    if device == "cpu":
        return "cpu"
    if torch.cuda.is_available():
        return "cuda"
    if device == "cuda":
        hidden = os.environ.get("CUDA_VISIBLE_DEVICES")
        why = f" (CUDA_VISIBLE_DEVICES={hidden!r})" if hidden is not None else ""
        raise UserError(f"--device cuda but this process sees no CUDA device{why}",
                        "run on a GPU node / request GPUs (--gpus-per-node), or pass --device cpu")
    return "cpu"


def cores() -> int:
    """CPU cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


CPU_OVERSUBSCRIPTION = 4


def check_local_processes(processes: object, device: str, n_cuda: int, n_cpu: int, flag: str = "--processes") -> None:
    """Refuse ``processes`` processes on this machine for a run on ``device`` (resolved: cuda | cpu):
    at least 1, at most one per visible GPU on CUDA (two ranks would share a GPU). On CPU, gloo ranks
    stand in for GPUs (8 ranks reproduce an 8-GPU run's batch split on a laptop): more than the cores
    run, slowly, with a warning on stderr; more than ``CPU_OVERSUBSCRIPTION`` x the cores (at least 8)
    are refused."""
    if isinstance(processes, bool) or not isinstance(processes, int) or processes < 1:
        raise UserError(f"{flag} {processes!r} must be an integer >= 1", f"pass {flag} N with N >= 1")
    if device == "cuda" and processes > n_cuda:
        raise UserError(f"{flag} {processes} but {n_cuda} CUDA device(s) are visible: "
                        "two processes would share one GPU",
                        f"use {flag} {n_cuda} (one per GPU), or --device cpu for gloo processes on the CPU")
    limit = max(8, CPU_OVERSUBSCRIPTION * n_cpu)
    if device == "cpu" and processes > limit:
        raise UserError(f"{flag} {processes} on the CPU of a machine with {n_cpu} cores (at most {limit} here)",
                        f"use {flag} {n_cpu} or fewer (up to {limit} to mimic a multi-GPU run, slowly)")
    if device == "cpu" and processes > n_cpu:
        print(f"warning: {flag} {processes} on {n_cpu} cores: the processes share them (1 thread each); "
              "the run is correct but slow", file=sys.stderr)


def backend_for(device: str) -> str:
    """The process-group backend of a run on ``device`` (``cuda`` | ``cpu``)."""
    return "nccl" if device == "cuda" else "gloo"


def cuda_index(local_rank: int, visible: int) -> int:
    """The CUDA device of ``local_rank`` among ``visible`` GPUs."""
    if visible < 1:
        raise UserError(f"local rank {local_rank} wants a GPU but none is visible",
                        "request GPUs for the job, or run with --device cpu")
    return local_rank % visible


def rendezvous_port(job_id: str, attempt: int, k: int = 0) -> int:
    """The ``k``-th candidate port of a job attempt, in [20000, 32000): jobs sharing a node and a
    requeued attempt (whose predecessor may hold its port in TIME_WAIT) get different ports."""
    digest = hashlib.sha256(f"{job_id}:{attempt}".encode()).digest()
    return PORT_BASE + (int.from_bytes(digest[:4], "big") + 997 * k) % PORT_SPAN


def _open_store(master: str, rank: int, world: int, job_id: str, attempt: int, port_dir: Path):
    """Rank 0 opens the TCPStore (next candidate port while one is in use) and publishes the port."""
    import torch.distributed as dist

    port_file = port_dir / f".rendezvous-{job_id}-{attempt}.port"
    timeout = dist_timeout()
    if rank == 0:
        errors = []
        for k in range(PORT_TRIES):
            port = rendezvous_port(job_id, attempt, k)
            try:
                store = dist.TCPStore(master, port, world, is_master=True, timeout=timeout, wait_for_workers=False)
            except RuntimeError as e:          # DistNetworkError: address already in use
                if "in use" not in str(e).lower() and "eaddrinuse" not in str(e).lower():
                    raise
                errors.append(port)
                continue
            port_dir.mkdir(parents=True, exist_ok=True)
            write_text_atomic(port_file, f"{port}\n")
            return store, port_file
        raise UserError(f"no free rendezvous port for job {job_id}: tried {errors}",
                        "free ports in 20000-32000 on the first node, or resubmit (another job id, other ports)")
    deadline = time.monotonic() + timeout.total_seconds()
    while not port_file.is_file():
        if time.monotonic() > deadline:
            raise UserError(f"rank {rank} waited {timeout} for rank 0 to publish {port_file}",
                            "the run directory must be on storage every node shares; check rank 0's log")
        time.sleep(0.2)
    port = int(port_file.read_text().strip())
    return dist.TCPStore(master, port, world, is_master=False, timeout=timeout), port_file


def init_process_group(*, rank: int, world: int, local_rank: int, master: str, job_id: str, attempt: int,
                       device: str, port_dir: str | os.PathLike) -> str:
    """Create the default process group of one rank (``device``: ``cuda`` | ``cpu``); returns the backend.

    On CUDA the rank's GPU is made current first, so that NCCL and every later ``.cuda()`` use it.
    """
    import torch
    import torch.distributed as dist

    global _wait_group
    backend = backend_for(device)
    if device == "cuda":
        torch.cuda.set_device(cuda_index(local_rank, torch.cuda.device_count()))
    store, port_file = _open_store(master, rank, world, job_id, attempt, Path(port_dir))
    os.environ.update(MASTER_ADDR=master, RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(local_rank))
    dist.init_process_group(backend, store=store, rank=rank, world_size=world, timeout=dist_timeout())
    _wait_group = dist.new_group(backend="gloo", timeout=main_wait_timeout())
    dist.barrier(group=_wait_group)            # every rank has connected: the port file can go
    if rank == 0:
        port_file.unlink(missing_ok=True)
    return backend


def is_distributed() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def wait_for_main() -> None:
    """Barrier for ranks that wait while rank 0 alone works; times out only after ``MAIN_WAIT``."""
    if not is_distributed():
        return
    import torch.distributed as dist

    dist.barrier(group=_wait_group if _wait_group is not None else None)


def any_rank(flag: bool) -> bool:
    """True on every rank iff ``flag`` is true on some rank (gloo, CPU tensor: no device sync)."""
    if not is_distributed():
        return flag
    import torch
    import torch.distributed as dist

    t = torch.tensor([1 if flag else 0], dtype=torch.int32)
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=_wait_group)
    return bool(t.item())


def destroy() -> None:
    global _wait_group
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _wait_group = None
