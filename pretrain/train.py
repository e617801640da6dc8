"""One process of an InfoMin/MoCo v2 pretraining run: ``PretrainSpec`` and ``pretrain_worker``.

``pretrain_worker(spec)`` assumes ``torch.distributed`` is initialised when the run has several
processes (the launcher or :func:`run_local` does that), resumes from the newest checkpoint in
``spec.output_dir`` (never from its arguments), trains, checkpoints atomically (rank 0) and returns
a JSON-able summary. SGD lr = base_lr x global batch / 256, momentum 0.9, wd 1e-4, linear warm-up
(default: 0 epochs up to a global batch of 256, 5 above) then cosine to 0, stepped per iteration.

Every value is checked (:meth:`PretrainSpec.check`, :func:`preflight`) before a process starts or a
file is written. The training step never waits for the device: losses are summed on the device and
read (with the global skipped-image count) every :data:`LOG_EVERY` steps, at checkpoints and at the
end. A checkpoint holds every rank's own RNG state; a resume restores each rank's own and refuses
another world size or per-process batch.
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from infomin_det.errors import UserError
from infomin_det.preempt import PreemptionSignal
from infomin_det.progress import ProgressWriter
from pretrain import checkpoint as ckpt_io
from pretrain import device as devices
from pretrain import limits
from pretrain.augment import AugmentConfig, InfoMinAugment
from pretrain.data import EpochSampler, ImageList, SkipUnreadable, check_decodable, scan_folder
from pretrain.model import MoCo, arch_of
from pretrain.outdir import check_writable, created

AMP_DTYPES = devices.AMP_DTYPES
LOG_EVERY = 20  # steps between host reads of the losses (progress bar, TensorBoard)


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
        """Refuse every out-of-range value (UserError naming the flag); no device is probed."""
        devices.amp_dtype(self.amp)
        if self.device not in devices.DEVICES:
            raise UserError(f"--device {self.device!r} is not one of {', '.join(devices.DEVICES)}",
                            "use auto, cpu or cuda")
        for name in ("epochs", "batch_size", "num_processes", "nodes"):
            limits.integer(name, getattr(self, name), 1)
        for name in ("checkpoint_every", "max_steps", "keep_checkpoints"):
            limits.integer(name, getattr(self, name), 0)
        limits.integer("queue_size", self.queue_size, 1, limits.MAX_QUEUE, "keys kept as negatives; the paper: 65536")
        limits.image_size(self.image_size)
        limits.workers(self.workers)
        limits.seed(self.seed)
        limits.number("lr", self.base_lr, 0, lo_open=True, hint="paper: 0.03 at a global batch of 256")
        limits.number("weight_decay", self.weight_decay, 0, hint="paper: 1e-4")
        limits.number("temperature", self.temperature, 0, lo_open=True, hint="paper: 0.15")
        limits.number("moco_momentum", self.moco_momentum, 0, 1, hint="paper: 0.999")
        limits.number("crop_min", self.crop_min, 0, 1, lo_open=True, hint="paper: 0.2")
        limits.number("jitter_strength", self.jitter_strength, 0, hint="paper sweeps 0.125 .. 2.5")
        if self.warmup_epochs != -1:
            limits.number("warmup_epochs", self.warmup_epochs, 0, self.epochs,
                          hint="-1 picks 0 or 5 by the global batch; warm-up cannot outlast the run")
        arch_of(self.arch)
        self.augment_config()


def _place() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def lr_at(step: int, total: int, warmup: int, lr: float) -> float:
    """Linear warm-up over ``warmup`` steps, then half-cosine from ``lr`` to 0 at ``total``."""
    if step < warmup:
        return lr * (step + 1) / warmup
    return lr * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def _rng_state(device: torch.device) -> dict[str, Any]:
    """This process's generators: torch CPU, Python ``random``, and its own CUDA device's."""
    s: dict[str, Any] = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1])}
    if device.type == "cuda":
        s["cuda"] = torch.cuda.get_rng_state(device)
    return s


def rank_rng_state(saved: Any, rank: int) -> dict[str, Any]:
    """This rank's entry of a checkpoint's ``rng`` record: a list with one state per rank (a dict is
    the older single record of rank 0, which every rank restored then)."""
    if isinstance(saved, dict):
        return saved
    if not isinstance(saved, list) or not 0 <= rank < len(saved) or not isinstance(saved[rank], dict):
        raise UserError(f"the checkpoint's RNG record has no entry for rank {rank}",
                        "resume with the world size the checkpoint was written with, or a fresh --output-dir")
    return saved[rank]


def _set_rng_state(s: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(s["torch"])
    random.setstate((3, tuple(s["python"]), None))
    cuda = s.get("cuda")
    if isinstance(cuda, list):  # older record: every visible device's state; take this device's own
        cuda = cuda[device.index] if device.type == "cuda" and device.index < len(cuda) else None
    if cuda is not None and device.type == "cuda":
        torch.cuda.set_rng_state(cuda, device)


def _gather_rng(device: torch.device, rank: int, world: int) -> list[dict[str, Any]] | None:
    """Every rank's RNG state, on rank 0 (None elsewhere). Collective: all ranks call it."""
    mine = _rng_state(device)
    if world == 1:
        return [mine]
    out: list[Any] | None = [None] * world if rank == 0 else None
    dist.gather_object(mine, out, dst=0)
    return out


def build(spec: PretrainSpec) -> MoCo:
    """The model a spec describes (random init, seeded)."""
    torch.manual_seed(spec.seed)
    return MoCo(arch_of(spec.arch), queue_size=spec.queue_size, momentum=spec.moco_momentum,
                temperature=spec.temperature, jigsaw=spec.jigsaw)


def preflight(spec: PretrainSpec, world: int, check_checkpoint: bool = True) -> ImageList:
    """Every check that can fail on user input, before any process is started or file written
    (``check_checkpoint``: also load the newest checkpoint and refuse another arch / world size)."""
    spec.check()
    check_writable(spec.output_dir)
    images = scan_folder(spec.data)
    global_batch = spec.batch_size * world
    if len(images.files) < global_batch:
        raise UserError(f"{len(images.files)} images under {spec.data} are fewer than one global batch "
                        f"({spec.batch_size} x {world} processes)", "use a smaller --batch-size or more images")
    if spec.queue_size % global_batch:
        raise UserError(f"queue size {spec.queue_size} is not a multiple of the global batch {global_batch}",
                        "choose --queue-size as a multiple of batch size x processes")
    check_decodable(images)
    latest = ckpt_io.latest(spec.output_dir) if check_checkpoint else None
    if latest is not None:
        ckpt_io.check_resumable(ckpt_io.load(latest), arch_of(spec.arch), latest, world, spec.batch_size)
    return images


def pretrain_worker(spec: PretrainSpec) -> dict[str, Any]:
    """Train (or resume and continue) one process of the run; returns a summary dict (rank 0's is
    the run's: steps, final loss, checkpoint path, skipped images). Rank 0 creates the output
    directory; if the run fails before writing anything there, the directory is removed again."""
    rank, world = _place()
    images = preflight(spec, world, check_checkpoint=False)  # the checkpoint is checked when loaded below
    device = devices.select(spec.device)
    if rank != 0:
        return _train(spec, images, rank, world, device)
    with created(spec.output_dir):
        return _train(spec, images, rank, world, device)


def _train(spec: PretrainSpec, images: ImageList, rank: int, world: int, device: torch.device) -> dict[str, Any]:
    global_batch = spec.batch_size * world
    arch = arch_of(spec.arch)
    out_dir = Path(spec.output_dir)

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
    amp_dtype = devices.amp_dtype(spec.amp)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype is torch.float16)

    step, skipped_before, resumed_from = 0, 0, None
    latest = ckpt_io.latest(out_dir)
    if latest is not None:
        ck = ckpt_io.load(latest)
        ckpt_io.check_resumable(ck, arch, latest, world, spec.batch_size)
        st = ck["state"]
        try:
            model.load_state_dict(st["model"])
            opt.load_state_dict(st["optimizer"])
            scaler.load_state_dict(st["scaler"])
            step, skipped_before, resumed_from = int(st["step"]), int(st["skipped_images"]), str(latest)
            rng = rank_rng_state(st["rng"], rank)
        except (RuntimeError, ValueError, KeyError, TypeError) as e:
            raise UserError(f"checkpoint {latest} does not fit this run's settings: {str(e).splitlines()[0]}",
                            "resume with the settings it was written with (see its state.config), or a fresh --output-dir") from e
        _set_rng_state(rng, device)

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

    local_skipped = torch.zeros((), dtype=torch.long)  # this rank's, since this process started (CPU)

    def skipped_total() -> int:
        """The run's skipped images over all ranks (collective: every rank calls it at the same step)."""
        t = local_skipped.to(device)
        if world > 1:
            dist.all_reduce(t)
        return skipped_before + int(t)

    def save() -> Path | None:
        rng_states = _gather_rng(device, rank, world)
        skipped = skipped_total()
        if rank != 0:
            return None
        state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "scaler": scaler.state_dict(),
                 "step": step, "epoch": step // steps_per_epoch, "steps_per_epoch": steps_per_epoch,
                 "skipped_images": skipped, "rng": rng_states, "config": dataclasses.asdict(spec),
                 "world_size": world}
        path = ckpt_io.save(ckpt_io.checkpoint_path(out_dir, step), arch, model.encoder_q.state_dict(),
                            {n: h.state_dict() for n, h in model.heads().items()}, state)
        ckpt_io.prune(out_dir, spec.keep_checkpoints)
        return path

    stop_at = min(total, spec.max_steps) if spec.max_steps else total
    progress = ProgressWriter(out_dir, stop_at, step) if rank == 0 else None
    sums: dict[str, torch.Tensor] = {}   # losses summed on the device since the last log
    n_summed = 0
    final: dict[str, torch.Tensor] = {}  # the last step's outputs
    saved_at = step if latest is not None else -1
    t_start, n_seen = time.perf_counter(), 0

    def log(lr: float) -> None:
        nonlocal sums, n_summed
        if n_summed and (writer is not None or bar is not None):
            means = {k: float(v) / n_summed for k, v in sums.items()}  # the one host sync per interval
            if writer is not None:
                for k, v in means.items():
                    writer.add_scalar(f"pretrain/{k}", v, step)
                writer.add_scalar("pretrain/lr", lr, step)
                writer.add_scalar("pretrain/samples_per_s", n_seen / (time.perf_counter() - t_start), step)
            if bar is not None:
                bar.set_postfix(loss=f"{means['loss']:.3f}", lr=f"{lr:.4f}")
        sums, n_summed = {}, 0

    preempt = PreemptionSignal()       # SIGUSR2: save this step, requeue (submitit) or exit 75
    preempt.install()
    model.train()
    while step < stop_at:
        epoch = step // steps_per_epoch
        sampler.epoch = dataset.epoch = epoch
        sampler.skip_batches = step - epoch * steps_per_epoch
        # the loader draws its workers' base seed from its own generator, not the global RNG that
        # shuffle-BN uses: a resumed run continues that RNG exactly where the checkpoint left it
        loader = torch.utils.data.DataLoader(dataset, batch_size=spec.batch_size, sampler=sampler,
                                             num_workers=spec.workers, drop_last=True,
                                             pin_memory=device.type == "cuda",
                                             generator=torch.Generator().manual_seed(spec.seed * 7919 + epoch))
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
            local_skipped += batch["skipped"].sum()  # a CPU tensor from the loader: no device sync
            n_seen += views.shape[0] * world
            final = {k: v.detach() for k, v in out.items()}
            for k, v in final.items():
                sums[k] = sums[k] + v if k in sums else v.clone()
            n_summed += 1
            if bar is not None:
                bar.update(1)
            if progress is not None:
                progress.update(step)
            end_of_epoch = step % steps_per_epoch == 0
            checkpoint_now = (spec.checkpoint_every and step % spec.checkpoint_every == 0) or \
                (not spec.checkpoint_every and end_of_epoch) or step >= stop_at
            if step % LOG_EVERY == 0 or checkpoint_now:
                log(lr)
            if checkpoint_now:
                save()
                saved_at = step
            if preempt.requested():
                if saved_at != step:
                    save()
                preempt.hand_over(f"preempted at step {step}: checkpoint saved in {out_dir}; "
                                  "the same command (or the requeued job) resumes from it")
            if step >= stop_at:
                break
    preempt.restore()
    if saved_at != step:
        save()
    skipped = skipped_total()
    if bar is not None:
        bar.close()
    if writer is not None:
        writer.close()
    return {"output_dir": str(out_dir), "checkpoint": str(ckpt_io.checkpoint_path(out_dir, step)),
            "arch": arch.name, "step": step, "total_steps": total, "epoch": step / steps_per_epoch,
            "loss": float(final["loss"]) if final else None, "skipped_images": skipped, "world_size": world,
            "resumed_from": resumed_from, "images": len(images.files)}


# ----------------------------------------------------------------------------------------------
# N local processes (gloo on CPU, NCCL on GPU) without a scheduler

def run_local(spec: PretrainSpec, processes: int, threads: int = 1) -> dict[str, Any]:
    """Run ``processes`` processes on this machine and return rank 0's summary: one process here,
    several through the launcher's own local path (:func:`infomin_det.launch.task.run_local`: the
    same rendezvous, device-before-NCCL and backend rules as a SLURM job; one process per GPU on
    CUDA). Everything is checked first; a UserError in any process is raised here."""
    from infomin_det.dist import check_local_processes, cores, resolve_device

    device = resolve_device(spec.device)
    check_local_processes(processes, device, torch.cuda.device_count() if device == "cuda" else 0, cores())
    limits.threads(threads, local=True)
    if processes == 1:
        return pretrain_worker(spec)
    from infomin_det.launch.task import DistributedTask
    from infomin_det.launch.task import run_local as run_task_locally

    spec = dataclasses.replace(spec, num_processes=processes, nodes=1)
    preflight(spec, processes)
    with created(spec.output_dir):
        return run_task_locally(DistributedTask("pretrain.train:pretrain_worker", spec, threads=threads,
                                                label="pretrain"), processes)
