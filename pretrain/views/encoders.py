"""The view encoder of the paper's §B.1-B.3 experiments: CMC's tiny AlexNet for any channel count.

Owns :class:`TinyAlexNet` / :func:`tiny_alexnet`. The paper trains "a tiny AlexNet, following CMC,
with the first layer adapted to input of 1 or 2 channels" (appendix §B.2); each view of a pair gets
its own encoder built for that view's channel count.

Layout (CMC's half-width AlexNet, halved once more so that a CPU step stays cheap; every conv is
followed by BatchNorm + ReLU)::

    conv 5x5 /2  in -> 24    H/2      maxpool 3x3 /2  -> H/4
    conv 3x3     24 -> 48    H/4      maxpool 3x3 /2  -> H/8
    conv 3x3     48 -> 96    H/8
    conv 3x3     96 -> 96    H/8
    conv 3x3     96 -> 128   H/8      global average pool -> (B, 128) = features
    head: Linear(128, 128) -> ReLU -> Linear(128, feat_dim)       -> (B, feat_dim) = embedding

Inputs are float (B, in_channels, H, W), H and W in 32..96 px (64 is the paper's size); any fixed
per-channel normalisation (e.g. :mod:`pretrain.views.colorspaces`'s ~[-1, 1] channels) is done by the
caller. A forward+backward of 64 images at 64x64 costs roughly 0.1 s on one CPU core.
"""

from __future__ import annotations

import torch
from torch import nn

from infomin_det.errors import UserError

_WIDTHS = (24, 48, 96, 96, 128)


def _conv_bn_relu(c_in: int, c_out: int, kernel: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class TinyAlexNet(nn.Module):
    """CMC's small AlexNet (half widths) for 64x64 (also 32..96) inputs with any number of input channels.

    ``features(x)``: float (B, in_channels, H, W) -> (B, feature_dim) globally pooled, non-negative
    (post-ReLU) representation, the one linear evaluation reads. ``forward(x)``: (B, feat_dim)
    embedding from a 2-layer MLP head on the features, NOT L2-normalised (``info_nce`` normalises).
    """

    feature_dim: int

    def __init__(self, in_channels: int, feat_dim: int = 128) -> None:
        super().__init__()
        if in_channels < 1 or feat_dim < 1:
            raise UserError(f"TinyAlexNet needs in_channels >= 1 and feat_dim >= 1, got {in_channels}, {feat_dim}",
                            "pass the view's channel count (1, 2 or 3) and a positive embedding size")
        w1, w2, w3, w4, w5 = _WIDTHS
        self.in_channels = in_channels
        self.feature_dim = w5
        self.trunk = nn.Sequential(
            _conv_bn_relu(in_channels, w1, 5, stride=2),
            nn.MaxPool2d(3, stride=2, padding=1),
            _conv_bn_relu(w1, w2, 3),
            nn.MaxPool2d(3, stride=2, padding=1),
            _conv_bn_relu(w2, w3, 3),
            _conv_bn_relu(w3, w4, 3),
            _conv_bn_relu(w4, w5, 3),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Sequential(nn.Linear(w5, w5), nn.ReLU(inplace=True), nn.Linear(w5, feat_dim))

    def _check(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise UserError(
                f"TinyAlexNet built for {self.in_channels}-channel input got a tensor of shape {tuple(x.shape)}",
                f"feed (B, {self.in_channels}, H, W) views, or build the encoder with "
                f"tiny_alexnet(in_channels={x.shape[1] if x.dim() == 4 else '<C>'})",
            )
        if not x.is_floating_point():
            raise UserError(f"TinyAlexNet needs a float tensor, got {x.dtype}",
                            "convert the view to float (e.g. x.float() / 255 or a colour-space split) first")

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_channels, H, W) float -> (B, feature_dim) pooled features (>= 0)."""
        self._check(x)
        return self.trunk(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_channels, H, W) float -> (B, feat_dim) embedding (not normalised)."""
        return self.head(self.features(x))


def tiny_alexnet(in_channels: int, feat_dim: int = 128) -> TinyAlexNet:
    """A :class:`TinyAlexNet` for ``in_channels``-channel views with a ``feat_dim`` embedding."""
    return TinyAlexNet(in_channels, feat_dim)
