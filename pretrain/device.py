"""Where a pretraining / evaluation process runs: its device, the local process count, autocast.

Device, backend and GPU-per-rank rules are the project's (:mod:`infomin_det.dist`: ``auto`` is CUDA
iff a GPU is visible, NCCL only for CUDA runs, rank -> GPU ``local_rank % visible``, local process
counts: ``check_local_processes``, ``cores``); this module
adds what pretraining decides on top, as pure functions of their arguments (so the CUDA branches
are tested on machines without a GPU):

* :func:`cuda_setup` -- the GPU of this process and whether ``cudnn.benchmark`` is turned on
  (CUDA: yes -- input sizes are fixed, the fastest convolution algorithms are picked once);
* :func:`select` -- applies both to this process and returns its ``torch.device``.
"""

from __future__ import annotations

import os

import torch

from infomin_det import dist as project_dist
from infomin_det.errors import UserError

DEVICES = project_dist.DEVICES
AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def cuda_setup(device: str, local_rank: int, n_cuda: int) -> tuple[int | None, bool]:
    """(GPU index or None, cudnn.benchmark) for a process on ``device`` (resolved: cuda | cpu)."""
    if device != "cuda":
        return None, False
    return project_dist.cuda_index(local_rank, n_cuda), True


def select(setting: str) -> torch.device:
    """This process's device for ``--device setting``; on CUDA its GPU is made current and
    ``cudnn.benchmark`` is enabled (:func:`cuda_setup`)."""
    device = project_dist.resolve_device(setting)
    n_cuda = torch.cuda.device_count() if device == "cuda" else 0
    index, benchmark = cuda_setup(device, int(os.environ.get("LOCAL_RANK", "0") or 0), n_cuda)
    if index is None:
        return torch.device("cpu")
    torch.cuda.set_device(index)
    torch.backends.cudnn.benchmark = benchmark
    return torch.device("cuda", index)


def amp_dtype(amp: str) -> torch.dtype | None:
    """The autocast dtype of ``--amp`` (None: full precision)."""
    if amp not in AMP_DTYPES:
        raise UserError(f"--amp {amp!r} is not one of {', '.join(AMP_DTYPES)}", "use none, bf16 or fp16")
    return AMP_DTYPES[amp]
