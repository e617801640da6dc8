"""A tiny real DDP job for proving the launcher without Detectron2 (tests, benchmark, cluster smoke test).

``toy_worker(ToySpec)`` trains a 2-layer MLP with ``DistributedDataParallel`` (each rank sees
different data, so ranks stay identical only if gradients really are all-reduced), follows the
trainer's conventions and so exercises everything the launcher promises:

* resume from ``output_dir/last_checkpoint`` (never from the pickled spec);
* a checkpoint after every iteration, written atomically (``toy_<iter>.pt`` then ``last_checkpoint``);
* ``metrics.json`` JSON lines: one ``{"iteration": i, "attempt": a}`` per trained iteration and
  exactly one final ``{"iteration": max_iter, "final_loss": ...}`` even across requeues;
* ``device`` like ``TrainSpec.device``: ``cpu`` (the default here), ``auto`` / ``cuda`` train on the
  process's GPU; the result says which GPU (``gpu_uuid``) and what ``CUDA_VISIBLE_DEVICES`` the
  process was given, so tests can see that concurrent local jobs got different GPUs.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from infomin_det.atomic import atomic_write, write_text_atomic
from infomin_det.progress import ProgressWriter

FINAL = "toy_final.pt"


@dataclass(frozen=True)
class ToySpec:
    """output_dir: run directory; max_iter: iterations; step_s: sleep per iteration (seconds),
    to leave room for a preemption signal; fail: raise this message instead of training;
    device: auto | cuda | cpu."""

    output_dir: str
    max_iter: int = 4
    step_s: float = 0.0
    fail: str = ""
    device: str = "cpu"           # cpu: gloo even on a GPU node; auto / cuda: the process's GPU, NCCL


def _append(path: Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def toy_worker(spec: ToySpec) -> dict:
    import torch
    import torch.distributed as dist
    from torch import nn

    if spec.fail:
        raise FileNotFoundError(spec.fail)
    out = Path(spec.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    distributed = dist.is_available() and dist.is_initialized()
    rank = dist.get_rank() if distributed else 0
    world = dist.get_world_size() if distributed else 1
    attempt = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
    if spec.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device cuda but no GPU is visible to this process")
    on_gpu = spec.device != "cpu" and torch.cuda.is_available()
    device = torch.device("cuda", torch.cuda.current_device()) if on_gpu else torch.device("cpu")

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1)).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    start, final_loss = 0, None
    last = out / "last_checkpoint"
    if last.exists():
        ckpt = torch.load(out / last.read_text().strip(), weights_only=True, map_location=device)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        start, final_loss = ckpt["iteration"], ckpt.get("final_loss")
    ddp = (nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if on_gpu else None)
           if distributed else model)

    loss = torch.zeros((), device=device)
    progress = ProgressWriter(out, spec.max_iter, start, every_s=0.0) if rank == 0 else None
    for it in range(start, spec.max_iter):
        g = torch.Generator().manual_seed(1000 * it + rank)     # different data on every rank
        x = torch.randn(16, 4, generator=g).to(device)
        loss = ((ddp(x) - x.sum(1, keepdim=True)) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        time.sleep(spec.step_s)
        if rank == 0:
            state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "iteration": it + 1}
            name = f"toy_{it + 1:04d}.pt"
            with atomic_write(out / name) as tmp:
                torch.save(state, tmp)
            # the log line before the pointer: a kill in between repeats a line, never loses one
            _append(out / "metrics.json", {"iteration": it, "attempt": attempt, "loss": loss.item()})
            write_text_atomic(last, name + "\n")
            progress.update(it + 1)
            stale = out / f"toy_{it:04d}.pt"
            if it > 0:
                stale.unlink(missing_ok=True)
    if final_loss is None and rank == 0:          # the one final evaluation, never repeated
        final_loss = loss.item()
        state = {"model": model.state_dict(), "optimizer": opt.state_dict(),
                 "iteration": spec.max_iter, "final_loss": final_loss}
        with atomic_write(out / FINAL) as tmp:
            torch.save(state, tmp)
        write_text_atomic(last, FINAL + "\n")
        _append(out / "metrics.json", {"iteration": spec.max_iter, "final_loss": final_loss})
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    if distributed:                               # ranks agree iff gradients were all-reduced
        gathered = [torch.empty_like(flat) for _ in range(world)]
        dist.all_gather(gathered, flat)
        max_diff = max(float((g - flat).abs().max()) for g in gathered)
    else:
        max_diff = 0.0
    comm = sys.modules.get("detectron2.utils.comm")        # loaded iff the task set up its local group
    return {"iterations": spec.max_iter, "resumed_from": start, "world_size": world,
            "rank_param_max_diff": max_diff, "final_loss": final_loss,
            "d2_local_size": comm.get_local_size() if comm else None, "device": str(device),
            "gpu_uuid": str(torch.cuda.get_device_properties(device).uuid) if on_gpu else "",
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}


def toy_worker_d2(spec: ToySpec) -> dict:
    """``toy_worker`` declaring that it needs Detectron2's local process group (as the trainer does)."""
    return toy_worker(spec)


toy_worker_d2.detectron2_comm = True  # type: ignore[attr-defined]
