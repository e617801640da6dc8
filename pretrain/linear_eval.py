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
from typing import Any

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


def _train_view(size: int):
    def run(fp: Any, rng: random.Random) -> dict[str, torch.Tensor]:
        with Image.open(fp) as src:
            box = sample_crop(*src.size, (0.08, 1.0), rng)
            img = src.convert("RGB").resize((size, size), Image.Resampling.BILINEAR, box=box)
        if rng.random() < 0.5:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return {"image": torch.from_numpy(np.array(img)).permute(2, 0, 1)}
    return run


def _val_view(size: int):
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


def _labelled(path: str) -> ImageList:
    images = scan_folder(path)
    if not images.classes:
        raise UserError(f"{path} has no class layout (root/<class>/<image>)", "linear evaluation needs labelled folders")
    return images


def linear_eval(spec: LinearEvalSpec) -> dict[str, Any]:
    """Train the linear classifier on ``spec.train``, evaluate on ``spec.val``; returns top1/top5 (%)."""
    ck = ckpt_io.load(spec.checkpoint)
    arch = ResNetArch(**{k: v for k, v in ck["arch"].items() if k != "name"})
    train, val = _labelled(spec.train), _labelled(spec.val)
    if train.classes != val.classes:
        raise UserError(f"train has {len(train.classes)} classes, val {len(val.classes)} (or other names)",
                        "use train/val folders with the same class subfolders")
    if len(train.files) < spec.batch_size:
        raise UserError(f"{len(train.files)} training images are fewer than one batch ({spec.batch_size})",
                        "use a smaller --batch-size")
    torch.manual_seed(spec.seed)
    backbone = build_backbone(arch)
    backbone.load_state_dict(ck["backbone"])
    backbone.eval().requires_grad_(False)
    head = nn.Linear(feature_dim(arch), len(train.classes))
    head.weight.data.normal_(0, 0.01)
    head.bias.data.zero_()
    opt = torch.optim.SGD(head.parameters(), lr=spec.lr, momentum=0.9, weight_decay=0.0)
    ds = SkipUnreadable(train, _train_view(spec.image_size), spec.seed)
    sampler = EpochSampler(len(train.files), spec.batch_size, 0, 1, spec.seed)
    total = spec.epochs * sampler.batches_per_epoch
    bar = None
    if spec.progress:
        from tqdm import tqdm
        bar = tqdm(total=total, desc="linear eval", unit="step", dynamic_ncols=True)
    step, skipped = 0, 0
    for epoch in range(spec.epochs):
        sampler.epoch = ds.epoch = epoch
        for batch in torch.utils.data.DataLoader(ds, batch_size=spec.batch_size, sampler=sampler,
                                                 num_workers=spec.workers, drop_last=True):
            for g in opt.param_groups:
                g["lr"] = spec.lr * 0.5 * (1 + math.cos(math.pi * step / total))
            with torch.no_grad():
                feats = backbone(normalize(batch["image"]))
            loss = nn.functional.cross_entropy(head(feats), batch["label"])
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
    vds = SkipUnreadable(val, _val_view(spec.image_size), spec.seed)
    k = min(5, len(val.classes))
    correct1 = correct5 = n = 0
    with torch.no_grad():
        for batch in torch.utils.data.DataLoader(vds, batch_size=spec.batch_size, num_workers=spec.workers):
            logits = head(backbone(normalize(batch["image"])))
            top = logits.topk(k, dim=1).indices
            hit = top == batch["label"][:, None]
            correct1 += int(hit[:, 0].sum())
            correct5 += int(hit.any(1).sum())
            n += len(batch["label"])
            skipped += int(batch["skipped"].sum())
    return {"checkpoint": spec.checkpoint, "arch": arch.name, "top1": 100.0 * correct1 / n,
            "top5": 100.0 * correct5 / n, "topk": k, "val_images": n, "classes": len(train.classes),
            "steps": step, "skipped_images": skipped}
