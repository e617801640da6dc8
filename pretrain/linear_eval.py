"""Linear evaluation of a pretrain checkpoint (the paper, §C.2 recipe): frozen backbone, one linear layer.

Recipe: SGD lr 30, momentum 0.9, no weight decay, cosine to 0 over ``epochs`` (paper: 60);
train views RandomResizedCrop(size, scale 0.08..1) + flip; val: resize to size/0.875 + centre
crop. The backbone stays in eval mode (BN statistics frozen). Reports top-1 / top-5 in percent on
the validation folder (ImageNet layout; the class lists of the two folders must agree). An
undecodable image is replaced by the next readable one and counted in ``skipped_images``; folders
where more than 10 % cannot be decoded are refused. Runs on ``device`` (auto: the GPU when one is
visible) with pinned-memory, non-blocking copies and optional autocast; no per-step host sync.

Why this is not :func:`pretrain.probe.linear_probe` (the toolkit's probe on frozen features, used by
the view sweep and the Moving-MNIST probes): that probe fits a classifier to one fixed feature matrix
(full-batch L-BFGS, no augmentation), which needs every image's features in memory and gives numbers
comparable between points of a sweep. This module is the paper's ImageNet protocol, whose numbers
are compared with published ones: every step draws new augmented views (RandomResizedCrop + flip)
and passes them through the frozen backbone, so there is no fixed feature matrix to fit, and the
optimiser, schedule and epochs are part of the recipe. What is the same procedure is shared where
it lives: :func:`fit` / :func:`evaluate` (SGD on train views, top-1 / top-k on centre crops) also
train and score the supervised baseline (:mod:`pretrain.supervised`).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image
from torch import nn

from infomin_det.errors import UserError
from pretrain import checkpoint as ckpt_io
from pretrain import device as devices
from pretrain import limits
from pretrain.augment import normalize, sample_crop
from pretrain.data import EpochSampler, ImageList, SkipUnreadable, check_decodable, scan_folder
from pretrain.decode import open_rgb, oriented_size, to_rgb
from pretrain.model import build_backbone, feature_dim

LOG_EVERY = 20  # steps between host reads of the loss (progress bar)


@dataclass(frozen=True)
class LinearEvalSpec:
    checkpoint: str
    train: str
    val: str
    epochs: int = 60
    batch_size: int = 256
    lr: float = 30.0
    image_size: int = 224
    workers: int = 4
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    amp: str = "none"     # none | bf16 | fp16 (autocast of the frozen backbone and the head)
    progress: bool = True

    def check(self) -> None:
        check_fit_numbers(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, weight_decay=0.0,
                          image_size=self.image_size, workers=self.workers, seed=self.seed, device=self.device,
                          amp=self.amp, epochs_flag="linear_epochs", lr_flag="linear_lr")


def check_fit_numbers(*, epochs: int, batch_size: int, lr: float, weight_decay: float, image_size: int,
                      workers: int, seed: int, device: str, amp: str, epochs_flag: str = "epochs",
                      lr_flag: str = "lr") -> None:
    """The range checks :func:`fit` needs (UserError naming the flag)."""
    limits.integer(epochs_flag, epochs, 1)
    limits.integer("batch_size", batch_size, 1)
    limits.number(lr_flag, lr, 0, lo_open=True)
    limits.number("weight_decay", weight_decay, 0)
    limits.image_size(image_size)
    limits.workers(workers)
    limits.seed(seed)
    devices.amp_dtype(amp)
    if device not in devices.DEVICES:
        raise UserError(f"--device {device!r} is not one of {', '.join(devices.DEVICES)}", "use auto, cpu or cuda")


def train_view(size: int):
    """RandomResizedCrop(size, scale 0.08..1) + horizontal flip -> uint8 (3, size, size)."""
    def run(fp: Any, rng: random.Random) -> dict[str, torch.Tensor]:
        with Image.open(fp) as src:
            box = sample_crop(*oriented_size(src), (0.08, 1.0), rng)
            img = to_rgb(src).resize((size, size), Image.Resampling.BILINEAR, box=box)
        if rng.random() < 0.5:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return {"image": torch.from_numpy(np.array(img)).permute(2, 0, 1)}
    return run


def val_view(size: int):
    """Resize the short side to size / 0.875, centre crop -> uint8 (3, size, size)."""
    def run(fp: Any, rng: random.Random) -> dict[str, torch.Tensor]:
        img = open_rgb(fp)
        short = round(size / 0.875)
        w, h = img.size
        s = short / min(w, h)
        img = img.resize((max(size, round(w * s)), max(size, round(h * s))), Image.Resampling.BILINEAR)
        l, t = (img.width - size) // 2, (img.height - size) // 2
        return {"image": torch.from_numpy(np.array(img.crop((l, t, l + size, t + size)))).permute(2, 0, 1)}
    return run


def labelled_pair(train_dir: str, val_dir: str, batch_size: int) -> tuple[ImageList, ImageList]:
    """The train / val folders (ImageNet layout, same classes, decodable), refused if unusable."""
    pair = []
    for path in (train_dir, val_dir):
        images = scan_folder(path)
        if not images.classes:
            raise UserError(f"{path} has no class layout (root/<class>/<image>)",
                            "classification needs labelled folders")
        pair.append(images)
    train, val = pair
    if train.classes != val.classes:
        raise UserError(f"train has {len(train.classes)} classes, val {len(val.classes)} (or other names)",
                        "use train/val folders with the same class subfolders")
    if len(train.files) < batch_size:
        raise UserError(f"{len(train.files)} training images are fewer than one batch ({batch_size})",
                        "use a smaller --batch-size")
    check_decodable(train)
    check_decodable(val)
    return train, val


def _autocast(device: torch.device, amp: torch.dtype | None):
    return torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None)


def fit(forward: Callable[[torch.Tensor], torch.Tensor], params: list[nn.Parameter], train: ImageList, *,
        epochs: int, batch_size: int, lr: float, weight_decay: float, image_size: int, workers: int,
        seed: int, progress: bool, desc: str, device: torch.device = torch.device("cpu"),
        amp: torch.dtype | None = None) -> tuple[int, int]:
    """SGD (momentum 0.9, cosine to 0) of ``params`` on cross-entropy of ``forward(uint8 (B,3,S,S))``
    logits over the train-view batches, on ``device`` (batches copied from pinned memory without
    blocking; autocast ``amp``, GradScaler for fp16). Returns (steps, skipped images)."""
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    scaler = torch.amp.GradScaler(device.type, enabled=amp is torch.float16)
    ds = SkipUnreadable(train, train_view(image_size), seed)
    sampler = EpochSampler(len(train.files), batch_size, 0, 1, seed)
    total = epochs * sampler.batches_per_epoch
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=total, desc=desc, unit="step", dynamic_ncols=True)
    step = 0
    skipped = torch.zeros((), dtype=torch.long)  # CPU: summed from the loader's CPU tensors, no device sync
    for epoch in range(epochs):
        sampler.epoch = ds.epoch = epoch
        for batch in torch.utils.data.DataLoader(ds, batch_size=batch_size, sampler=sampler, num_workers=workers,
                                                 drop_last=True, pin_memory=device.type == "cuda"):
            for g in opt.param_groups:
                g["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / total))
            images = batch["image"].to(device, non_blocking=True)
            labels = batch["label"].to(device, non_blocking=True)
            with _autocast(device, amp):
                loss = nn.functional.cross_entropy(forward(images), labels)
            opt.zero_grad()
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            step += 1
            skipped += batch["skipped"].sum()
            if bar is not None:
                bar.update(1)
                if step % LOG_EVERY == 0 or step == total:
                    bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
    if bar is not None:
        bar.close()
    return step, int(skipped)


@torch.no_grad()
def evaluate(forward: Callable[[torch.Tensor], torch.Tensor], val: ImageList, *, image_size: int,
             batch_size: int, workers: int, seed: int, device: torch.device = torch.device("cpu"),
             amp: torch.dtype | None = None) -> dict[str, Any]:
    """Top-1 / top-k (k = min(5, classes)) accuracy in percent of ``forward`` on the centre-crop view
    (counts summed on ``device``, read once at the end)."""
    vds = SkipUnreadable(val, val_view(image_size), seed)
    k = min(5, len(val.classes))
    correct1 = torch.zeros((), dtype=torch.long, device=device)
    correct5 = torch.zeros((), dtype=torch.long, device=device)
    n = 0
    skipped = torch.zeros((), dtype=torch.long)
    for batch in torch.utils.data.DataLoader(vds, batch_size=batch_size, num_workers=workers,
                                             pin_memory=device.type == "cuda"):
        images = batch["image"].to(device, non_blocking=True)
        labels = batch["label"].to(device, non_blocking=True)
        with _autocast(device, amp):
            logits = forward(images)
        hit = logits.float().topk(k, dim=1).indices == labels[:, None]
        correct1 += hit[:, 0].sum()
        correct5 += hit.any(1).sum()
        n += len(batch["label"])
        skipped += batch["skipped"].sum()
    return {"top1": 100.0 * int(correct1) / n, "top5": 100.0 * int(correct5) / n, "topk": k, "val_images": n,
            "skipped_images": int(skipped)}


def linear_eval(spec: LinearEvalSpec) -> dict[str, Any]:
    """Train the linear classifier on ``spec.train``, evaluate on ``spec.val``; returns top1/top5 (%)."""
    spec.check()
    ck = ckpt_io.load(spec.checkpoint)
    arch = ckpt_io.arch_of_checkpoint(ck)
    train, val = labelled_pair(spec.train, spec.val, spec.batch_size)
    device = devices.select(spec.device)
    amp = devices.amp_dtype(spec.amp)
    torch.manual_seed(spec.seed)
    backbone = build_backbone(arch)
    try:
        backbone.load_state_dict(ck["backbone"])
    except (RuntimeError, TypeError) as e:
        raise UserError(f"checkpoint {spec.checkpoint}: its backbone does not fit {arch.name}: "
                        f"{str(e).splitlines()[0]}", "use a checkpoint that `infomin-det pretrain` wrote") from None
    backbone.eval().requires_grad_(False)
    head = nn.Linear(feature_dim(arch), len(train.classes))
    head.weight.data.normal_(0, 0.01)
    head.bias.data.zero_()
    backbone.to(device)
    head.to(device)

    def forward(images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            feats = backbone(normalize(images))
        return head(feats)

    steps, skipped = fit(forward, list(head.parameters()), train, epochs=spec.epochs, batch_size=spec.batch_size,
                         lr=spec.lr, weight_decay=0.0, image_size=spec.image_size, workers=spec.workers,
                         seed=spec.seed, progress=spec.progress, desc="linear eval", device=device, amp=amp)
    result = evaluate(forward, val, image_size=spec.image_size, batch_size=spec.batch_size, workers=spec.workers,
                      seed=spec.seed, device=device, amp=amp)
    return {"checkpoint": spec.checkpoint, "arch": arch.name, **result, "classes": len(train.classes),
            "steps": steps, "skipped_images": skipped + result["skipped_images"], "device": str(device)}
