"""The torchvision reference trunk for any ``ResNetArch`` (verify's ground truth; synthetic nets).

torchvision's own ``BasicBlock``/``Bottleneck`` and ``ResNet._make_layer`` build the stages; only
the stem width and stage widths come from the arch, because torchvision hard-codes a 64-wide stem
(SimCLR/SwAV-style wide nets widen it). No detectron2 here.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from infomin_det.convert.resnet_keys import BN_COUNTER, DEPTH_TO_BLOCKS
from infomin_det.weights_meta import ResNetArch

STAGES = ("res2", "res3", "res4", "res5")


class TVTrunk(nn.Module):
    """torchvision's ResNet trunk for any ``ResNetArch``, widened stem included.

    Built from torchvision's own ``Bottleneck``/``BasicBlock`` and ``ResNet._make_layer``; only the
    stem width and the stage widths are set from ``arch`` (torchvision hard-codes a 64-wide stem).
    forward(x: N x 3 x H x W) -> {"res2": N x C2 x H/4 x W/4, ..., "res5": N x C5 x H/32 x W/32}.
    """

    def __init__(self, arch: ResNetArch) -> None:
        super().__init__()
        block = Bottleneck if arch.depth >= 50 else BasicBlock
        planes = arch.res2_out_channels // block.expansion
        # torchvision: width = planes * base_width / 64 * groups; Detectron2: width = groups * width_per_group.
        base_width = arch.width_per_group * 64 // planes
        maker = ResNet.__new__(ResNet)  # only to borrow _make_layer's bookkeeping
        nn.Module.__init__(maker)
        maker.inplanes, maker.dilation, maker.groups, maker.base_width = arch.stem_out_channels, 1, arch.num_groups, base_width
        maker._norm_layer = nn.BatchNorm2d
        self.conv1 = nn.Conv2d(3, arch.stem_out_channels, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(arch.stem_out_channels)
        self.relu, self.maxpool = nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)
        for i, n in enumerate(DEPTH_TO_BLOCKS[arch.depth]):
            setattr(self, f"layer{i + 1}", maker._make_layer(block, planes * 2 ** i, n, stride=1 if i == 0 else 2))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        out = {}
        for i, name in enumerate(STAGES):
            x = getattr(self, f"layer{i + 1}")(x)
            out[name] = x
        return out


def build_reference(arch: ResNetArch, trunk: dict[str, torch.Tensor]) -> TVTrunk:
    """The torchvision trunk with ``trunk`` (torchvision names) loaded strictly; eval mode."""
    with torch.device("meta"):
        ref = TVTrunk(arch)
    sd = dict(trunk)
    for k, v in ref.state_dict().items():
        if k.endswith(BN_COUNTER) and k not in sd:
            sd[k] = torch.zeros((), dtype=torch.long)
    sd = {k: (v.float() if v.is_floating_point() else v) for k, v in sd.items()}
    ref.load_state_dict(sd, strict=True, assign=True)
    return ref.eval()
