"""One process of an InfoMin/MoCo v2 pretraining run: ``PretrainSpec`` and ``pretrain_worker``.

``pretrain_worker(spec)`` assumes ``torch.distributed`` is initialised when the run has several
processes (the launcher or :func:`run_local` does that), resumes from the newest checkpoint in
``spec.output_dir`` (never from its arguments), trains, checkpoints atomically (rank 0) and returns
a JSON-able summary. SGD lr = base_lr x global batch / 256, momentum 0.9, wd 1e-4, linear warm-up
(default: 0 epochs up to a global batch of 256, 5 above) then cosine to 0, stepped per iteration.
"""

from __future__ import annotations

import dataclasses
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from infomin_det.errors import UserError
from pretrain import checkpoint as ckpt_io
from pretrain.augment import AugmentConfig, InfoMinAugment
from pretrain.data import EpochSampler, ImageList, SkipUnreadable, scan_folder
from pretrain.model import MoCo, arch_of

AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class PretrainSpec:
    """Everything a pretraining process needs, as plain values. Batch size is per process."""

    data: str
    output_dir: str
    arch: str = "R-50"
    epochs: int = 200
    batch_size: int = 32
    base_lr: float = 0.03
    weight_decay: float = 1e-4
    warmup_epochs: float = -1.0          # -1: 0 for global batch <= 256, else 5
    queue_size: int = 65536
    moco_momentum: float = 0.999
    temperature: float = 0.15
    image_size: int = 224
    crop_min: float = 0.2
    jitter_strength: float = 1.0
    jigsaw: bool = False
    amp: str = "none"                    # none | bf16 | fp16
    workers: int = 4                     # data-loading processes per training process
    seed: int = 0
    checkpoint_every: int = 0            # steps; 0: at the end of each epoch
    keep_checkpoints: int = 2
    max_steps: int = 0                   # stop after this many steps in total (0: no limit)
    device: str = "auto"                 # auto | cpu | cuda
    num_processes: int = 1               # per node (set by the launcher)
    nodes: int = 1
    progress: bool = True
    tensorboard: bool = True

    def augment_config(self) -> AugmentConfig:
        return AugmentConfig(size=self.image_size, crop_min=self.crop_min,
                             jitter_strength=self.jitter_strength, jigsaw=self.jigsaw)

    def check(self) -> None:
        if self.amp not in AMP_DTYPES:
            raise UserError(f"--amp {self.amp!r} is not one of {', '.join(AMP_DTYPES)}", "use none, bf16 or fp16")
        for name in ("epochs", "batch_size", "queue_size", "image_size"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be >= 1 (got {getattr(self, name)})", f"pass a positive --{name.replace('_', '-')}")
        if self.temperature <= 0 or not 0 <= self.moco_momentum <= 1:
            raise UserError(f"temperature {self.temperature} / key momentum {self.moco_momentum} out of range",
                            "use --temperature > 0 (paper: 0.15) and --moco-momentum in [0, 1] (paper: 0.999)")
        arch_of(self.arch)
        self.augment_config()


def _place() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _device(spec: PretrainSpec) -> torch.device:
    if spec.device == "cpu" or (spec.device == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise UserError("--device cuda but no CUDA device is visible", "use --device cpu or auto")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())


def lr_at(step: int, total: int, warmup: int, lr: float) -> float:
    """Linear warm-up over ``warmup`` steps, then half-cosine from ``lr`` to 0 at ``total``."""
    if step < warmup:
        return lr * (step + 1) / warmup
    return lr * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def _rng_state() -> dict[str, Any]:
    s = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1])}
    if torch.cuda.is_available():
        s["cuda"] = torch.cuda.get_rng_state_all()
    return s


def _set_rng_state(s: dict[str, Any]) -> None:
    torch.set_rng_state(s["torch"])
    random.setstate((3, tuple(s["python"]), None))
    if "cuda" in s and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


def build(spec: PretrainSpec) -> MoCo:
    """The model a spec describes (random init, seeded)."""
    torch.manual_seed(spec.seed)
    return MoCo(arch_of(spec.arch), queue_size=spec.queue_size, momentum=spec.moco_momentum,
                temperature=spec.temperature, jigsaw=spec.jigsaw)


def preflight(spec: PretrainSpec, world: int, check_checkpoint: bool = True) -> ImageList:
    """Every check that can fail on user input, before any process is started or file written
    (``check_checkpoint``: also load the newest checkpoint and refuse another arch)."""
    spec.check()
    images = scan_folder(spec.data)
    global_batch = spec.batch_size * world
    if len(images.files) < global_batch:
        raise UserError(f"{len(images.files)} images under {spec.data} are fewer than one global batch "
                        f"({spec.batch_size} x {world} processes)", "use a smaller --batch-size or more images")
    if spec.queue_size % global_batch:
        raise UserError(f"queue size {spec.queue_size} is not a multiple of the global batch {global_batch}",
                        "choose --queue-size as a multiple of batch size x processes")
    latest = ckpt_io.latest(spec.output_dir) if check_checkpoint else None
    if latest is not None:
        ckpt_io.check_resumable(ckpt_io.load(latest), arch_of(spec.arch), latest)
    return images


def pretrain_worker(spec: PretrainSpec) -> dict[str, Any]:
    """Train (or resume and continue) one process of the run; returns a summary dict (rank 0's is
    the run's: steps, final loss, checkpoint path, skipped images)."""
    rank, world = _place()
    images = preflight(spec, world, check_checkpoint=False)  # the checkpoint is checked when loaded below
    device = _device(spec)
    global_batch = spec.batch_size * world
    arch = arch_of(spec.arch)
    out_dir = Path(spec.output_dir)
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)

    dataset = SkipUnreadable(images, InfoMinAugment(spec.augment_config()), spec.seed)
    sampler = EpochSampler(len(images.files), spec.batch_size, rank, world, spec.seed)
    steps_per_epoch = sampler.batches_per_epoch
    total = spec.epochs * steps_per_epoch
    warmup_epochs = spec.warmup_epochs if spec.warmup_epochs >= 0 else (0.0 if global_batch <= 256 else 5.0)
    warmup = int(round(warmup_epochs * steps_per_epoch))
    peak_lr = spec.base_lr * global_batch / 256

    model = build(spec).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=peak_lr, momentum=0.9, weight_decay=spec.weight_decay)
    amp_dtype = AMP_DTYPES[spec.amp]
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype is torch.float16)

    step, skipped, resumed_from = 0, 0, None
    latest = ckpt_io.latest(out_dir)
    if latest is not None:
        ck = ckpt_io.load(latest)
        ckpt_io.check_resumable(ck, arch, latest)
        st = ck["state"]
        try:
            model.load_state_dict(st["model"])
            opt.load_state_dict(st["optimizer"])
        except (RuntimeError, ValueError, KeyError) as e:
            raise UserError(f"checkpoint {latest} does not fit this run's settings: {str(e).splitlines()[0]}",
                            "resume with the settings it was written with (see its state.config), or a fresh --output-dir") from e
        scaler.load_state_dict(st["scaler"])
        step, skipped, resumed_from = int(st["step"]), int(st["skipped_images"]), str(latest)
        _set_rng_state(st["rng"])

    net: torch.nn.Module = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False)

    writer = None
    if rank == 0 and spec.tensorboard:
        from torch.utils.tensorboard import SummaryWriter
        writer = SummaryWriter(str(out_dir / "tb"), purge_step=step)
    bar = None
    if rank == 0 and spec.progress:
        from tqdm import tqdm
        bar = tqdm(total=total if not spec.max_steps else min(total, spec.max_steps), initial=step,
                   desc=f"pretrain {arch.name}", unit="step", dynamic_ncols=True)

    def save() -> Path | None:
        if rank != 0:
            return None
        state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "scaler": scaler.state_dict(),
                 "step": step, "epoch": step // steps_per_epoch, "steps_per_epoch": steps_per_epoch,
                 "skipped_images": skipped, "rng": _rng_state(), "config": dataclasses.asdict(spec),
                 "world_size": world}
        path = ckpt_io.save(ckpt_io.checkpoint_path(out_dir, step), arch, model.encoder_q.state_dict(),
                            {n: h.state_dict() for n, h in model.heads().items()}, state)
        ckpt_io.prune(out_dir, spec.keep_checkpoints)
        return path

    stop_at = min(total, spec.max_steps) if spec.max_steps else total
    last: dict[str, float] = {}
    saved_at = step if latest is not None else -1
    t_start, n_seen = time.perf_counter(), 0
    model.train()
    while step < stop_at:
        epoch = step // steps_per_epoch
        sampler.epoch = dataset.epoch = epoch
        sampler.skip_batches = step - epoch * steps_per_epoch
        loader = torch.utils.data.DataLoader(dataset, batch_size=spec.batch_size, sampler=sampler,
                                             num_workers=spec.workers, drop_last=True,
                                             pin_memory=device.type == "cuda")
        for batch in loader:
            lr = lr_at(step, total, warmup, peak_lr)
            for g in opt.param_groups:
                g["lr"] = lr
            views = batch["views"].to(device, non_blocking=True)
            jig = batch["jigsaw"].to(device, non_blocking=True) if spec.jigsaw else None
            with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                out = net(views, jig)
            opt.zero_grad(set_to_none=True)
            scaler.scale(out["loss"]).backward()
            scaler.step(opt)
            scaler.update()
            step += 1
            n_skipped = batch["skipped"].sum().to(device)
            if world > 1:
                dist.all_reduce(n_skipped)  # the count is global, so every rank checkpoints/resumes the same
            skipped += int(n_skipped)
            n_seen += views.shape[0] * world
            last = {k: float(v.detach()) for k, v in out.items()}
            last["lr"] = lr
            if writer is not None:
                for k, v in last.items():
                    writer.add_scalar(f"pretrain/{k}", v, step)
                writer.add_scalar("pretrain/samples_per_s", n_seen / (time.perf_counter() - t_start), step)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{last['loss']:.3f}", lr=f"{lr:.4f}", skipped=skipped)
            end_of_epoch = step % steps_per_epoch == 0
            if (spec.checkpoint_every and step % spec.checkpoint_every == 0) or \
                    (not spec.checkpoint_every and end_of_epoch) or step >= stop_at:
                save()
                saved_at = step
            if step >= stop_at:
                break
    if saved_at != step:
        save()
    if bar is not None:
        bar.close()
    if writer is not None:
        writer.close()
    return {"output_dir": str(out_dir), "checkpoint": str(ckpt_io.checkpoint_path(out_dir, step)),
            "arch": arch.name, "step": step, "total_steps": total, "epoch": step / steps_per_epoch,
            "loss": last.get("loss"), "skipped_images": skipped, "world_size": world,
            "resumed_from": resumed_from, "images": len(images.files)}


# ----------------------------------------------------------------------------------------------
# N local processes (gloo on CPU, NCCL on GPU) without a scheduler

def _local_entry(rank: int, spec: PretrainSpec, world: int, port: int, threads: int) -> None:
    torch.set_num_threads(threads)
    backend = "nccl" if spec.device != "cpu" and torch.cuda.is_available() else "gloo"
    os.environ.update(LOCAL_RANK=str(rank), RANK=str(rank), WORLD_SIZE=str(world))
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        result = pretrain_worker(dataclasses.replace(spec, progress=spec.progress and rank == 0))
        if rank == 0:
            import json
            from infomin_det.atomic import write_text_atomic
            write_text_atomic(Path(spec.output_dir) / "pretrain_result.json", json.dumps(result) + "\n")
        dist.barrier()
    finally:
        dist.destroy_process_group()


def run_local(spec: PretrainSpec, processes: int, threads: int = 1) -> dict[str, Any]:
    """Run ``processes`` local processes (spawned) and return rank 0's summary."""
    if processes == 1:
        return pretrain_worker(spec)
    import json
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    spec = dataclasses.replace(spec, num_processes=processes, nodes=1)
    preflight(spec, processes)
    Path(spec.output_dir).mkdir(parents=True, exist_ok=True)
    mp.start_processes(_local_entry, args=(spec, processes, port, threads), nprocs=processes,
                       start_method="spawn")
    return json.loads((Path(spec.output_dir) / "pretrain_result.json").read_text())
