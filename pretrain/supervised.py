"""Supervised baseline backbone: a torchvision ResNet classifier trained from scratch on labelled folders.

    train_supervised(SupervisedSpec(train=..., val=..., output_dir=...)) -> {"checkpoint", "top1", ...}

The detection-transfer counterpart of the paper's "supervised ImageNet" rows at demo scale. Recipe:
SGD momentum 0.9, lr ``lr`` cosine to 0, weight decay 1e-4, RandomResizedCrop(0.08..1) + flip
(``pretrain.linear_eval.train_view``), inputs RGB normalised with the ImageNet statistics like every
other backbone here. The output is a plain torchvision state dict (``conv1.weight`` ... ``fc.bias``)
written atomically -- the layout torchvision's own supervised weights have, so ``infomin-det convert``
reads it with no flags and records the torchvision input convention. Runs on ``device`` (auto: the
GPU when one is visible) like the linear evaluation; it has no resume (a rerun starts over).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from infomin_det.atomic import atomic_write
from pretrain import device as devices
from pretrain.augment import normalize
from pretrain.linear_eval import check_fit_numbers, evaluate, fit, labelled_pair
from pretrain.model import arch_of, build_backbone, feature_dim
from pretrain.outdir import check_writable, created


@dataclass(frozen=True)
class SupervisedSpec:
    train: str  # ImageNet layout: train/<class>/<image>
    val: str
    output_dir: str  # receives supervised_<arch>.pth, a torchvision state dict
    arch: str = "R-18"
    epochs: int = 30
    batch_size: int = 64
    lr: float = 0.1
    weight_decay: float = 1e-4
    image_size: int = 64  # px, square
    workers: int = 0
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    amp: str = "none"     # none | bf16 | fp16
    progress: bool = True

    def check(self) -> None:
        check_fit_numbers(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
                          weight_decay=self.weight_decay, image_size=self.image_size, workers=self.workers,
                          seed=self.seed, device=self.device, amp=self.amp)
        arch_of(self.arch)
        check_writable(self.output_dir)


def train_supervised(spec: SupervisedSpec) -> dict[str, Any]:
    """Train, evaluate top-1/top-5 (%) on ``spec.val``, save; returns the result dict."""
    spec.check()
    arch = arch_of(spec.arch)
    train, val = labelled_pair(spec.train, spec.val, spec.batch_size)
    device = devices.select(spec.device)
    amp = devices.amp_dtype(spec.amp)
    torch.manual_seed(spec.seed)
    backbone = build_backbone(arch)
    head = nn.Linear(feature_dim(arch), len(train.classes))
    backbone.to(device)
    head.to(device)

    def forward(images: torch.Tensor) -> torch.Tensor:
        return head(backbone(normalize(images)))

    backbone.train()
    steps, skipped = fit(forward, [*backbone.parameters(), *head.parameters()], train, epochs=spec.epochs,
                         batch_size=spec.batch_size, lr=spec.lr, weight_decay=spec.weight_decay,
                         image_size=spec.image_size, workers=spec.workers, seed=spec.seed,
                         progress=spec.progress, desc=f"supervised {arch.name}", device=device, amp=amp)
    backbone.eval()
    result = evaluate(forward, val, image_size=spec.image_size, batch_size=spec.batch_size,
                      workers=spec.workers, seed=spec.seed, device=device, amp=amp)
    state = {**{k: v.detach().cpu() for k, v in backbone.state_dict().items()},
             "fc.weight": head.weight.detach().cpu(), "fc.bias": head.bias.detach().cpu()}
    out = Path(spec.output_dir) / f"supervised_{arch.name}.pth"
    with created(out.parent), atomic_write(out) as tmp:
        torch.save(state, tmp)
    return {"checkpoint": str(out), "arch": arch.name, **result, "classes": train.classes, "steps": steps,
            "skipped_images": skipped + result["skipped_images"]}
