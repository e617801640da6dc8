"""Linear evaluation of a pretrain checkpoint (seed §C.2 recipe): frozen backbone, one linear layer.

Recipe: SGD lr 30, momentum 0.9, no weight decay, cosine to 0 over ``epochs`` (paper: 60);
train views RandomResizedCrop(size, scale 0.08..1) + flip; val: resize to size/0.875 + centre
crop. The backbone stays in eval mode (BN statistics frozen). Reports top-1 / top-5 in percent on
the validation folder (ImageNet layout; the class lists of the two folders must agree). An
undecodable image is replaced by the next readable one and counted in ``skipped_images``.
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
from pretrain.augment import normalize, sample_crop
from pretrain.data import EpochSampler, ImageList, SkipUnreadable, scan_folder
from pretrain.model import build_backbone, feature_dim
from infomin_det.weights_meta import ResNetArch


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
    progress: bool = True


def train_view(size: int):
    """RandomResizedCrop(size, scale 0.08..1) + horizontal flip -> uint8 (3, size, size)."""
    def run(fp: Any, rng: random.Random) -> dict[str, torch.Tensor]:
        with Image.open(fp) as src:
            box = sample_crop(*src.size, (0.08, 1.0), rng)
            img = src.convert("RGB").resize((size, size), Image.Resampling.BILINEAR, box=box)
        if rng.random() < 0.5:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return {"image": torch.from_numpy(np.array(img)).permute(2, 0, 1)}
    return run


def val_view(size: int):
    """Resize the short side to size / 0.875, centre crop -> uint8 (3, size, size)."""
    def run(fp: Any, rng: random.Random) -> dict[str, torch.Tensor]:
        with Image.open(fp) as src:
            img = src.convert("RGB")
        short = round(size / 0.875)
        w, h = img.size
        s = short / min(w, h)
        img = img.resize((max(size, round(w * s)), max(size, round(h * s))), Image.Resampling.BILINEAR)
        l, t = (img.width - size) // 2, (img.height - size) // 2
        return {"image": torch.from_numpy(np.array(img.crop((l, t, l + size, t + size)))).permute(2, 0, 1)}
    return run


def labelled_pair(train_dir: str, val_dir: str, batch_size: int) -> tuple[ImageList, ImageList]:
    """The train / val folders (ImageNet layout, same classes), refused if unusable."""
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
    return train, val


def fit(forward: Callable[[torch.Tensor], torch.Tensor], params: list[nn.Parameter], train: ImageList, *,
        epochs: int, batch_size: int, lr: float, weight_decay: float, image_size: int, workers: int,
        seed: int, progress: bool, desc: str) -> tuple[int, int]:
    """SGD (momentum 0.9, cosine to 0) of ``params`` on cross-entropy of ``forward(uint8 (B,3,S,S))``
    logits over the train-view batches. Returns (steps, skipped images)."""
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    ds = SkipUnreadable(train, train_view(image_size), seed)
    sampler = EpochSampler(len(train.files), batch_size, 0, 1, seed)
    total = epochs * sampler.batches_per_epoch
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=total, desc=desc, unit="step", dynamic_ncols=True)
    step, skipped = 0, 0
    for epoch in range(epochs):
        sampler.epoch = ds.epoch = epoch
        for batch in torch.utils.data.DataLoader(ds, batch_size=batch_size, sampler=sampler,
                                                 num_workers=workers, drop_last=True):
            for g in opt.param_groups:
                g["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / total))
            loss = nn.functional.cross_entropy(forward(batch["image"]), batch["label"])
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            skipped += int(batch["skipped"].sum())
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{float(loss):.3f}")
    if bar is not None:
        bar.close()
    return step, skipped


@torch.no_grad()
def evaluate(forward: Callable[[torch.Tensor], torch.Tensor], val: ImageList, *, image_size: int,
             batch_size: int, workers: int, seed: int) -> dict[str, Any]:
    """Top-1 / top-k (k = min(5, classes)) accuracy in percent of ``forward`` on the centre-crop view."""
    vds = SkipUnreadable(val, val_view(image_size), seed)
    k = min(5, len(val.classes))
    correct1 = correct5 = n = skipped = 0
    for batch in torch.utils.data.DataLoader(vds, batch_size=batch_size, num_workers=workers):
        top = forward(batch["image"]).topk(k, dim=1).indices
        hit = top == batch["label"][:, None]
        correct1 += int(hit[:, 0].sum())
        correct5 += int(hit.any(1).sum())
        n += len(batch["label"])
        skipped += int(batch["skipped"].sum())
    return {"top1": 100.0 * correct1 / n, "top5": 100.0 * correct5 / n, "topk": k, "val_images": n,
            "skipped_images": skipped}


def linear_eval(spec: LinearEvalSpec) -> dict[str, Any]:
    """Train the linear classifier on ``spec.train``, evaluate on ``spec.val``; returns top1/top5 (%)."""
    ck = ckpt_io.load(spec.checkpoint)
    arch = ResNetArch(**{k: v for k, v in ck["arch"].items() if k != "name"})
    train, val = labelled_pair(spec.train, spec.val, spec.batch_size)
    torch.manual_seed(spec.seed)
    backbone = build_backbone(arch)
    backbone.load_state_dict(ck["backbone"])
    backbone.eval().requires_grad_(False)
    head = nn.Linear(feature_dim(arch), len(train.classes))
    head.weight.data.normal_(0, 0.01)
    head.bias.data.zero_()

    def forward(images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            feats = backbone(normalize(images))
        return head(feats)

    steps, skipped = fit(forward, list(head.parameters()), train, epochs=spec.epochs, batch_size=spec.batch_size,
                         lr=spec.lr, weight_decay=0.0, image_size=spec.image_size, workers=spec.workers,
                         seed=spec.seed, progress=spec.progress, desc="linear eval")
    result = evaluate(forward, val, image_size=spec.image_size, batch_size=spec.batch_size, workers=spec.workers,
                      seed=spec.seed)
    return {"checkpoint": spec.checkpoint, "arch": arch.name, **result, "classes": len(train.classes),
            "steps": steps, "skipped_images": skipped + result["skipped_images"]}
