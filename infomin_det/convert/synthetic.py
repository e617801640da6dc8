"""Random ResNet checkpoints in every foreign layout, for the converter's tests and benchmark.

:func:`random_trunk` is a torchvision-named trunk with random weights *and* randomised BN statistics
(so an output check cannot pass trivially); :func:`wrap` packs it the way each tool of the layout
table in docs/convert.md saves it, with decoys (momentum/EMA copies holding *different* values, heads, queues,
optimizer state, an argparse Namespace) so that taking the wrong encoder is visible in the tensors.
"""

from __future__ import annotations

import argparse
from typing import Any, Callable

import torch

from infomin_det.convert.reference import TVTrunk
from infomin_det.pretrain_format import PRETRAIN_FORMAT, PRETRAIN_FORMAT_VERSION
from infomin_det.weights_meta import ResNetArch

Trunk = dict[str, torch.Tensor]


def random_trunk(arch: ResNetArch, seed: int = 0) -> Trunk:
    """torchvision-named state dict of ``arch`` (no fc), BN weight/bias/mean/var all randomised."""
    torch.manual_seed(seed)
    model = randomise_bn(TVTrunk(arch), seed)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def randomise_bn(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every BatchNorm2d random affine parameters and running statistics (in place)."""
    g = torch.Generator().manual_seed(seed + 1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.weight.data = torch.rand(n, generator=g) + 0.5
            m.bias.data = torch.randn(n, generator=g) * 0.1
            m.running_mean = torch.randn(n, generator=g) * 0.1
            m.running_var = torch.rand(n, generator=g) + 0.5
            m.num_batches_tracked.fill_(7)
    return model


def _decoy(trunk: Trunk) -> Trunk:
    """Same keys and shapes, different values: a momentum/EMA copy."""
    return {k: (v * 0.5 + 0.01 if v.is_floating_point() else v.clone()) for k, v in trunk.items()}


def _pre(prefix: str, sd: Trunk) -> Trunk:
    return {prefix + k: v for k, v in sd.items()}


def _head(prefix: str, dim: int = 8) -> Trunk:
    return {f"{prefix}0.weight": torch.randn(dim, dim), f"{prefix}0.bias": torch.randn(dim),
            f"{prefix}2.weight": torch.randn(dim, dim)}


_ARGS = argparse.Namespace(lr=0.03, arch="resnet", moco_t=0.2)


def _layouts(t: Trunk, arch: ResNetArch) -> dict[str, Callable[[], Any]]:
    d = _decoy(t)
    return {
        "torchvision/timm": lambda: {**t, "fc.weight": torch.randn(10, 4), "fc.bias": torch.randn(10)},
        "moco-v1/v2": lambda: {"epoch": 200, "arch": "resnet50", "args": _ARGS, "optimizer": {"state": {}},
                               "state_dict": {**_pre("module.encoder_q.", t), **_head("module.encoder_q.fc."),
                                              **_pre("module.encoder_k.", d), **_head("module.encoder_k.fc."),
                                              "module.queue": torch.randn(8, 16), "module.queue_ptr": torch.zeros(1)}},
        "moco-v3": lambda: {"epoch": 100, "arch": "resnet50", "optimizer": {}, "scaler": {},
                            "state_dict": {**_pre("module.base_encoder.", t), **_head("module.base_encoder.fc."),
                                           **_pre("module.momentum_encoder.", d), **_head("module.predictor.")}},
        "pycontrast": lambda: {"opt": _ARGS, "epoch": 800, "optimizer": {},
                               "model": {**_pre("module.encoder.", t), **_head("module.head."), **_head("module.head_jig.")},
                               "model_ema": {**_pre("encoder.", d), **_head("head."), **_head("head_jig.")}},
        "lightning/solo-learn": lambda: {"epoch": 99, "global_step": 1000, "state_dict": {
            **_pre("backbone.", t), **_pre("momentum_backbone.", d), **_head("projector."),
            **_head("momentum_projector."), "classifier.weight": torch.randn(10, 8), "classifier.bias": torch.randn(10)}},
        "mmselfsup/densecl": lambda: {"meta": {"epoch": 200}, "state_dict": {
            **_pre("backbone.", t), **_head("neck.mlp."), "head.weight": torch.randn(3), **_pre("encoder_q.0.", t),
            **_head("encoder_q.1.mlp."), **_pre("encoder_k.0.", d),
            "queue": torch.randn(8, 16), "queue_ptr": torch.zeros(1), "queue2": torch.randn(8, 16)}},
        "dino": lambda: {"epoch": 100, "args": _ARGS, "optimizer": {},
                         "student": {**_pre("module.backbone.", d), **_head("module.head.")},
                         "teacher": {**_pre("backbone.", t), **_head("head.")}},
        "swav": lambda: {**_pre("module.", t), **_head("module.projection_head."),
                         "module.prototypes.weight": torch.randn(30, 8)},
        "vissl": lambda: {"phase_idx": 3, "classy_state_dict": {"base_model": {"model": {
            "trunk": _pre("_feature_blocks.", t), "heads": _head("0.clf.")}}}},
        PRETRAIN_FORMAT: lambda: {"format": PRETRAIN_FORMAT, "format_version": PRETRAIN_FORMAT_VERSION,
                                  "arch": {"depth": arch.depth, "num_groups": arch.num_groups,
                                           "width_per_group": arch.width_per_group,
                                           "stem_out_channels": arch.stem_out_channels,
                                           "res2_out_channels": arch.res2_out_channels},
                                  "backbone": dict(t), "heads": _head("mlp."), "state": {"epoch": 3, "queue": torch.randn(8, 4)}},
    }


LAYOUT_NAMES = tuple(_layouts({}, ResNetArch(18)).keys())


def wrap(layout: str, trunk: Trunk, arch: ResNetArch) -> Any:
    """``trunk`` saved the way ``layout`` (a name in LAYOUT_NAMES) saves its query/online encoder."""
    return _layouts(trunk, arch)[layout]()
