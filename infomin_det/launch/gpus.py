"""Which GPUs a job may use: the device a run asked for against the GPUs requested and visible.

* :func:`visible_gpus` -- the GPUs this machine offers to a new process, *without initialising CUDA*
  in the submitting process: ``CUDA_VISIBLE_DEVICES`` when it is set (the user's or the
  allocation's choice, kept as written), else the UUIDs ``nvidia-smi -L`` lists (MIG instances
  instead of their parent GPU), else none.
* :func:`check_device_request` -- a run's ``device`` (``auto`` | ``cuda`` | ``cpu``) against
  ``gpus_per_node``: a run is never silently moved to the CPU; only ``device == "cpu"`` trains
  there on a machine or job that has GPUs.
* :func:`plan_local_gpus` -- each concurrent local job its own GPUs (submitit's ``LocalExecutor``
  would give every job GPUs ``0..k-1``), as the ``CUDA_VISIBLE_DEVICES`` string of each job.

The last two are pure functions of their arguments (tested with made-up GPU lists).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from typing import Collection, Sequence

from infomin_det.dist import DEVICES
from infomin_det.errors import UserError

_GPU_LINE = re.compile(r"^GPU \d+: .*\(UUID: (GPU-[^)]+)\)")
_MIG_LINE = re.compile(r"^\s+MIG .*\(UUID: (MIG-[^)]+)\)")


def parse_nvidia_smi(text: str) -> list[str]:
    """Device ids in ``nvidia-smi -L`` output: a GPU's UUID, or its MIG instances' UUIDs instead."""
    devices: list[str] = []
    parent: str | None = None
    migs: list[str] = []

    def flush() -> None:
        if parent is not None:
            devices.extend(migs or [parent])

    for line in text.splitlines():
        if m := _GPU_LINE.match(line):
            flush()
            parent, migs = m.group(1), []
        elif (m := _MIG_LINE.match(line)) and parent is not None:
            migs.append(m.group(1))
    flush()
    return devices


def visible_gpus(environ: dict[str, str] | None = None) -> list[str]:
    """GPUs a process started from here would see (see module docstring); [] when there are none."""
    env = os.environ if environ is None else environ
    if "CUDA_VISIBLE_DEVICES" in env:
        out = []
        for item in env["CUDA_VISIBLE_DEVICES"].split(","):
            item = item.strip()
            if not item or item.startswith("-"):     # CUDA stops at the first invalid entry ("-1": none)
                break
            out.append(item)
        return out
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        proc = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return parse_nvidia_smi(proc.stdout) if proc.returncode == 0 else []


def check_device_request(devices: Collection[str], gpus_per_node: int, cluster: str,
                         visible: Sequence[str] = ()) -> None:
    """Refuse a request that would train on the CPU although the user did not ask for it, or that
    asks for the CPU and GPUs at once. ``devices``: the runs' ``spec.device`` values; ``visible``:
    this machine's GPUs (local jobs only)."""
    bad = sorted(set(devices) - set(DEVICES))
    if bad:
        raise UserError(f"device {bad[0]!r} is not one of {', '.join(DEVICES)}", "pass --device auto, cuda or cpu")
    wants_gpu = set(devices) - {"cpu"}
    if "cpu" in devices and gpus_per_node:
        raise UserError(f"--device cpu with --gpus-per-node {gpus_per_node}: the GPUs would sit idle",
                        "drop --gpus-per-node (CPU runs) or drop --device cpu")
    if not wants_gpu or cluster == "debug":
        return
    if cluster == "slurm" and gpus_per_node == 0:
        raise UserError("a SLURM job without GPUs (--gpus-per-node 0) would train on the CPU, but --device "
                        f"is {sorted(wants_gpu)[0]!r}",
                        "pass --gpus-per-node N (one process per GPU; the paper used 8), or --device cpu "
                        "to train on CPUs on purpose")
    if cluster == "local":
        if gpus_per_node == 0 and visible:
            raise UserError(f"this machine has {len(visible)} GPU(s), but --gpus-per-node 0 hides them from "
                            "local jobs: the runs would train on the CPU",
                            "pass --gpus-per-node 1 (one GPU per run), or --device cpu to train on the CPU on purpose")
        if not visible and (gpus_per_node or "cuda" in wants_gpu):
            raise UserError(f"no GPU is visible on this machine (CUDA_VISIBLE_DEVICES / nvidia-smi -L), but the runs "
                            f"ask for {'--device cuda' if 'cuda' in wants_gpu else f'--gpus-per-node {gpus_per_node}'}",
                            "run on a GPU machine or SLURM, or pass --device cpu --gpus-per-node 0")


def plan_local_gpus(devices: Sequence[str], gpus_per_node: int, visible: Sequence[str],
                    busy: Collection[str] = ()) -> list[str]:
    """``CUDA_VISIBLE_DEVICES`` for each local job (one per entry of ``devices``), disjoint between
    the jobs and from ``busy`` (GPUs of this experiment's local jobs still running). CPU runs get
    ``""`` (no GPU). Refuses when the GPU runs do not all fit at once: submitit's local executor
    starts every job immediately, so jobs sharing a GPU would contend for it (or run out of memory)."""
    check_device_request(devices, gpus_per_node, "local", visible)
    free = [g for g in visible if g not in set(busy)]
    n_gpu_runs = sum(d != "cpu" for d in devices)
    if gpus_per_node and n_gpu_runs * gpus_per_node > len(free):
        fits = len(free) // gpus_per_node
        busy_note = f", {len(visible) - len(free)} busy with this experiment's running jobs" if busy else ""
        raise UserError(f"{n_gpu_runs} local runs need {gpus_per_node} GPU(s) each, but {len(free)} of the "
                        f"{len(visible)} GPUs are free{busy_note}: at most {fits} can start now",
                        f"submit at most {fits} runs now (e.g. fewer --seeds) and the rest when they finish -- "
                        "the same command then skips finished and running runs -- or use SLURM")
    plan, at = [], 0
    for device in devices:
        if device == "cpu" or not gpus_per_node:
            plan.append("")
        else:
            plan.append(",".join(free[at:at + gpus_per_node]))
            at += gpus_per_node
    return plan
