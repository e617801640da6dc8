"""One process of an InfoMin/MoCo v2 pretraining run: ``PretrainSpec`` and ``pretrain_worker``.

``pretrain_worker(spec)`` assumes ``torch.distributed`` is initialised when the run has several
processes (the launcher or :func:`run_local` does that), resumes from the newest checkpoint in
``spec.output_dir`` (never from its arguments), trains, checkpoints atomically (rank 0) and returns
a JSON-able summary. SGD lr = base_lr x global batch / 256, momentum 0.9, wd 1e-4, linear warm-up
(default: 0 epochs up to a global batch of 256, 5 above) then cosine to 0, stepped per iteration.
The steps of a process (``_Run``): data and schedule, model and optimiser (seeded), resume, the
loop (``_Monitor``: bar, TensorBoard, progress file, ``metrics.jsonl``; ``--probe``: :mod:`pretrain.run_probe`), save.

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
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from infomin_det import wandb_log
from infomin_det.errors import UserError
from infomin_det.preempt import PreemptionSignal
from infomin_det.progress import ProgressWriter
from pretrain import checkpoint as ckpt_io
from pretrain import device as devices
from pretrain import limits, steplog
from pretrain.augment import AugmentConfig, InfoMinAugment, recipe
from pretrain.augment_batched import AUGMENT_ON, BatchedAugment
from pretrain.data import EpochSampler, ImageList, SkipUnreadable, check_decodable, scan_folder, worker_init
from pretrain.model import MoCo, arch_of, check_negatives
from pretrain.outdir import check_writable, created

AMP_DTYPES = devices.AMP_DTYPES
LOG_EVERY = 20  # steps between host reads of the losses (metrics.jsonl, progress bar, TensorBoard)
METRICS_FILE = "metrics.jsonl"  # rank 0: the pretext task every LOG_EVERY steps (pretrain.steplog)


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
    negatives: str = "queue"             # queue (MoCo's, the paper's) | batch: the other keys of the batch (pretrain.model.NEGATIVES)
    moco_momentum: float = 0.999
    temperature: float = 0.15
    image_size: int = 224
    augment: str = "infomin"             # a recipe of pretrain.augment.RECIPES: infomin | mocov2
    crop_min: float = 0.2
    jitter_strength: float = 1.0
    jigsaw: bool = False
    augment_on: str = "workers"          # workers: loader workers augment | device: workers decode, the device augments
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
    probe: str = ""                      # labelled folder DIR/{train,val}/<class>/*: linear probe (pretrain.run_probe)
    probe_every: int = 200               # steps between probes (also at step 0 and the last step)
    wandb: str = ""                      # W&B project to log the same scalars to (infomin_det.wandb_log); "": off

    def augment_config(self) -> AugmentConfig:
        return recipe(self.augment, size=self.image_size, crop_min=self.crop_min,
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
        limits.integer("probe_every", self.probe_every, 1, why="steps between linear probes")
        wandb_log.check(self.wandb)
        if not isinstance(self.probe, str):
            raise UserError(f"--probe {self.probe!r} is not a folder path", "pass --probe DIR (or leave it out)")
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
        check_negatives(self.negatives)
        self.augment_config()
        if self.augment_on not in AUGMENT_ON:
            raise UserError(f"--augment-on {self.augment_on!r} is not one of {', '.join(AUGMENT_ON)}",
                            "use workers (the loader workers augment) or device (they decode; the training device augments)")


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
                temperature=spec.temperature, jigsaw=spec.jigsaw, negatives=spec.negatives)


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
    if spec.probe:
        from pretrain.run_probe import probe_set
        probe_set(spec.probe)
    latest = ckpt_io.latest(spec.output_dir) if check_checkpoint else None
    if latest is not None:
        ckpt_io.check_resumable(ckpt_io.load(latest), arch_of(spec.arch), latest, world, dataclasses.asdict(spec))
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
    """The steps of one process's run, in the order the RNG streams depend on: data (no RNG drawn),
    model (seeded from ``spec.seed``), resume (restores this rank's RNG state), loop, final save."""
    run = _Run(spec, images, rank, world, device)
    run.resume()
    run.loop()
    return run.finish()


class _Monitor:
    """Rank 0's view of the run: tqdm bar, TensorBoard (and W&B with ``--wandb``) scalars and
    ``progress.json``. Losses are summed on the device and read once per :data:`LOG_EVERY` steps (the one host sync an interval)."""

    def __init__(self, spec: PretrainSpec, run: "_Run") -> None:
        self.writer = self.bar = self.progress = None
        if run.rank == 0 and (spec.tensorboard or spec.wandb):
            tb = wb = None
            if spec.tensorboard:
                from torch.utils.tensorboard import SummaryWriter
                tb = SummaryWriter(str(run.out_dir / "tb"), purge_step=run.step)
            if spec.wandb:
                wb = wandb_log.WandbScalars(spec.wandb, run.out_dir, name=run.out_dir.name, step_key="step",
                                            config={"pretrain": dataclasses.asdict(spec), "world": run.world})
            self.writer = wandb_log.Scalars(tb, wb)
        if run.rank == 0 and spec.progress:
            from tqdm import tqdm
            self.bar = tqdm(total=run.stop_at, initial=run.step, desc=f"pretrain {run.arch.name}", unit="step",
                            dynamic_ncols=True)
        self.metrics: Path | None = None
        if run.rank == 0:
            self.progress = ProgressWriter(run.out_dir, run.stop_at, run.step)
            self.metrics = run.out_dir / METRICS_FILE
            steplog.truncate_after(self.metrics, run.step)  # a resumed run redoes the later steps
        self.world = run.world
        self.sums: dict[str, torch.Tensor] = {}   # losses summed on the device since the last log
        self.n_summed = 0
        self.final: dict[str, torch.Tensor] = {}  # the last step's outputs
        self.t_start, self.n_seen = time.perf_counter(), 0

    def stepped(self, step: int, out: dict[str, torch.Tensor], batch_size: int) -> None:
        """Record one finished step's outputs (no host sync)."""
        self.n_seen += batch_size * self.world
        self.final = {k: v.detach() for k, v in out.items()}
        for k, v in self.final.items():
            self.sums[k] = self.sums[k] + v if k in self.sums else v.clone()
        self.n_summed += 1
        if self.bar is not None:
            self.bar.update(1)
        if self.progress is not None:
            self.progress.update(step)

    def log(self, step: int, lr: float) -> None:
        if self.n_summed and self.metrics is not None:
            means = {k: float(v) / self.n_summed for k, v in self.sums.items()}  # the one host sync per interval
            samples_per_s = self.n_seen / (time.perf_counter() - self.t_start)
            steplog.append_step(self.metrics, {"step": step, **{k: round(v, 6) for k, v in means.items()},
                                               "lr": round(lr, 8), "steps_averaged": self.n_summed,
                                               "samples_per_s": round(samples_per_s, 2)})
            if self.writer is not None:
                self.writer.log({**{f"pretrain/{k}": v for k, v in means.items()}, "pretrain/lr": lr,
                                 "pretrain/samples_per_s": samples_per_s}, step)
            if self.bar is not None:
                self.bar.set_postfix(loss=f"{means['loss']:.3f}", acc_batch=f"{means['acc_batch']:.3f}", lr=f"{lr:.4f}")
        self.sums, self.n_summed = {}, 0

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()


class _Run:
    """One process's training state. Built in this order: data, schedule, model and optimiser;
    then :meth:`resume`, :meth:`loop`, :meth:`finish`. :meth:`save` writes the checkpoint."""

    def __init__(self, spec: PretrainSpec, images: ImageList, rank: int, world: int, device: torch.device) -> None:
        self.spec, self.images, self.rank, self.world, self.device = spec, images, rank, world, device
        self.arch = arch_of(spec.arch)
        self.out_dir = Path(spec.output_dir)
        # data: augmented views of the images, this rank's share of each epoch
        # (--augment-on device: the workers decode and draw, self.batched augments on the device)
        self.batched = BatchedAugment(spec.augment_config()) if spec.augment_on == "device" else None
        if self.batched is not None and device.type == "cpu" and rank == 0:
            print("warning: --augment-on device on the CPU: correct, but several times slower than the loader "
                  "workers' pipeline (it is meant for a GPU; leave --augment-on at workers here)", file=sys.stderr)
        transform = self.batched.draw if self.batched is not None else InfoMinAugment(spec.augment_config())
        self.dataset = SkipUnreadable(images, transform, spec.seed)
        self.sampler = EpochSampler(len(images.files), spec.batch_size, rank, world, spec.seed)
        # schedule: lr scaled by the global batch, warm-up (see the module docstring), cosine to 0
        global_batch = spec.batch_size * world
        self.steps_per_epoch = self.sampler.batches_per_epoch
        self.total = spec.epochs * self.steps_per_epoch
        self.stop_at = min(self.total, spec.max_steps) if spec.max_steps else self.total
        warmup_epochs = spec.warmup_epochs if spec.warmup_epochs >= 0 else (0.0 if global_batch <= 256 else 5.0)
        self.warmup = int(round(warmup_epochs * self.steps_per_epoch))
        self.peak_lr = spec.base_lr * global_batch / 256
        # model (random init from spec.seed) and optimiser
        self.model = build(spec).to(device)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = torch.optim.SGD(params, lr=self.peak_lr, momentum=0.9, weight_decay=spec.weight_decay)
        self.amp_dtype = devices.amp_dtype(spec.amp)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp_dtype is torch.float16)
        self.step, self.skipped_before, self.resumed_from = 0, 0, None
        self.local_skipped = torch.zeros((), dtype=torch.long)  # this rank's, since this process started (CPU)
        self.saved_at = -1

    def resume(self) -> None:
        """Continue from the newest checkpoint in the output directory, if any: weights, optimiser,
        scaler, step, skipped count and this rank's RNG state (refused if it does not fit)."""
        latest = ckpt_io.latest(self.out_dir)
        if latest is None:
            return
        ck = ckpt_io.load(latest)
        ckpt_io.check_resumable(ck, self.arch, latest, self.world, dataclasses.asdict(self.spec))
        st = ck["state"]
        try:
            self.model.load_state_dict(st["model"])
            self.opt.load_state_dict(st["optimizer"])
            self.scaler.load_state_dict(st["scaler"])
            self.step, self.skipped_before, self.resumed_from = int(st["step"]), int(st["skipped_images"]), str(latest)
            rng = rank_rng_state(st["rng"], self.rank)
        except (RuntimeError, ValueError, KeyError, TypeError) as e:
            raise UserError(f"checkpoint {latest} does not fit this run's settings: {str(e).splitlines()[0]}",
                            "resume with the settings it was written with (see its state.config), or a fresh --output-dir") from e
        _set_rng_state(rng, self.device)
        self.saved_at = self.step

    def skipped_total(self) -> int:
        """The run's skipped images over all ranks (collective: every rank calls it at the same step)."""
        t = self.local_skipped.to(self.device)
        if self.world > 1:
            dist.all_reduce(t)
        return self.skipped_before + int(t)

    def save(self) -> Path | None:
        """Checkpoint this step (collective: gathers every rank's RNG state; rank 0 writes, then
        prunes to ``keep_checkpoints``)."""
        rng_states = _gather_rng(self.device, self.rank, self.world)
        skipped = self.skipped_total()
        self.saved_at = self.step
        if self.rank != 0:
            return None
        model, step = self.model, self.step
        state = {"model": model.state_dict(), "optimizer": self.opt.state_dict(), "scaler": self.scaler.state_dict(),
                 "step": step, "epoch": step // self.steps_per_epoch, "steps_per_epoch": self.steps_per_epoch,
                 "skipped_images": skipped, "rng": rng_states, "config": dataclasses.asdict(self.spec),
                 "world_size": self.world}
        path = ckpt_io.save(ckpt_io.checkpoint_path(self.out_dir, step), self.arch, model.encoder_q.state_dict(),
                            {n: h.state_dict() for n, h in model.heads().items()}, state)
        ckpt_io.prune(self.out_dir, self.spec.keep_checkpoints)
        return path

    def loop(self) -> None:
        """Train from ``self.step`` to ``stop_at``: an epoch's loader at a time (skipping the batches
        a resumed epoch already saw), checkpoints as configured, SIGUSR2 = save now and hand over."""
        spec, device, world = self.spec, self.device, self.world
        net: torch.nn.Module = self.model
        if world > 1:
            net = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False)
        self.monitor = monitor = _Monitor(spec, self)
        self.probe = None
        if spec.probe and self.rank == 0:
            from pretrain.run_probe import RunProbe
            self.probe = RunProbe(spec.probe, spec.probe_every, self.out_dir, spec.image_size, device,
                                  self.amp_dtype, spec.workers)
        self.model.train()
        self.maybe_probe()                 # step 0 (or the resumed step) when the schedule says so
        preempt = PreemptionSignal()       # SIGUSR2: save this step, requeue (submitit) or exit 75
        preempt.install()
        while self.step < self.stop_at:
            epoch = self.step // self.steps_per_epoch
            self.sampler.skip_batches = self.step - epoch * self.steps_per_epoch
            for batch in self.loader(epoch):
                lr = lr_at(self.step, self.total, self.warmup, self.peak_lr)
                for g in self.opt.param_groups:
                    g["lr"] = lr
                views, jig = self.inputs(batch)
                with torch.autocast(device.type, dtype=self.amp_dtype or torch.float32,
                                    enabled=self.amp_dtype is not None):
                    out = net(views, jig)
                self.opt.zero_grad(set_to_none=True)
                self.scaler.scale(out["loss"]).backward()
                self.scaler.step(self.opt)
                self.scaler.update()
                self.step += 1
                step = self.step
                self.local_skipped += batch["skipped"].sum()  # a CPU tensor from the loader: no device sync
                monitor.stepped(step, out, views.shape[0])
                end_of_epoch = step % self.steps_per_epoch == 0
                checkpoint_now = (spec.checkpoint_every and step % spec.checkpoint_every == 0) or \
                    (not spec.checkpoint_every and end_of_epoch) or step >= self.stop_at
                if step % LOG_EVERY == 0 or checkpoint_now:
                    monitor.log(step, lr)
                if checkpoint_now:
                    self.save()
                if preempt.requested():
                    if self.saved_at != step:
                        self.save()
                    preempt.hand_over(f"preempted at step {step}: checkpoint saved in {self.out_dir}; "
                                      "the same command (or the requeued job) resumes from it")
                self.maybe_probe()
                if step >= self.stop_at:
                    break
        preempt.restore()

    def loader(self, epoch: int) -> torch.utils.data.DataLoader:
        """This rank's batches of ``epoch`` from ``self.sampler.skip_batches`` on."""
        spec = self.spec
        self.sampler.epoch = self.dataset.epoch = epoch
        # the loader draws its workers' base seed from its own generator, not the global RNG that
        # shuffle-BN uses: a resumed run continues that RNG exactly where the checkpoint left it
        return torch.utils.data.DataLoader(self.dataset, batch_size=spec.batch_size, sampler=self.sampler,
                                           num_workers=spec.workers, drop_last=True,
                                           pin_memory=self.device.type == "cuda", worker_init_fn=worker_init,
                                           collate_fn=self.batched.collate if self.batched is not None else None,
                                           generator=torch.Generator().manual_seed(spec.seed * 7919 + epoch))

    def inputs(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """A loader batch -> (views uint8 (B, 2, 3, S, S), JigSaw patches or None) on the device."""
        if self.batched is not None:
            batch = self.batched.apply(batch, self.device)
        views = batch["views"].to(self.device, non_blocking=True)
        jig = batch["jigsaw"].to(self.device, non_blocking=True) if self.spec.jigsaw else None
        return views, jig

    def maybe_probe(self) -> None:
        """``--probe``: rank 0 probes the query encoder when the schedule says (and the step is not
        recorded yet); then every rank meets in a barrier (all ranks compute the same schedule)."""
        from pretrain.run_probe import due
        if not self.spec.probe or not due(self.step, self.spec.probe_every, self.stop_at):
            return
        if self.probe is not None:
            self.probe.run(self.step, self.model.encoder_q, self.monitor.writer, self.monitor.bar)
        if self.world > 1:
            dist.barrier()

    def finish(self) -> dict[str, Any]:
        """Save the last step unless it is saved; the process's summary (rank 0's is the run's)."""
        if self.saved_at != self.step:
            self.save()
        skipped = self.skipped_total()
        self.monitor.close()
        final = self.monitor.final
        return {"output_dir": str(self.out_dir), "checkpoint": str(ckpt_io.checkpoint_path(self.out_dir, self.step)),
                "arch": self.arch.name, "step": self.step, "total_steps": self.total,
                "epoch": self.step / self.steps_per_epoch, "loss": float(final["loss"]) if final else None,
                "skipped_images": skipped, "world_size": self.world, "resumed_from": self.resumed_from,
                "images": len(self.images.files)}


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
