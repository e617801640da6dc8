"""The metadata record a converted Detectron2 ``.pkl`` carries, and the config values it implies.

The converter writes it under ``META_KEY``, the first entry of the pickled dict, before ``"model"`` /
``"__author__"`` (Detectron2 ignores extra top-level keys), so that it can be read without the tensors;
the trainer reads it back and refuses a config that disagrees with it
(depth, groups, width, stem width, STRIDE_IN_1X1, INPUT.FORMAT, PIXEL_MEAN/STD). Nothing here imports
torch or detectron2.

Units: pixel mean/std are in 0..255 pixel units, in the channel order of ``input_format``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

META_KEY = "__infomin_det__"
META_VERSION = 1


@dataclass(frozen=True)
class ResNetArch:
    """A ResNet/ResNeXt trunk in Detectron2's terms.

    depth: 18/34 (basic blocks) or 50/101/152 (bottlenecks); num_groups x width_per_group is the 3x3
    conv of res2 (1x64 plain, 32x4 / 32x8 / 64x4 ResNeXt, 1x128 wide-x2); stem_out_channels is the
    7x7 stem width; res2_out_channels the output width of res2 (256 for R-50, 64 for R-18).
    """

    depth: int
    num_groups: int = 1
    width_per_group: int = 64
    stem_out_channels: int = 64
    res2_out_channels: int = 256

    @property
    def name(self) -> str:
        if self.num_groups > 1:
            return f"X-{self.depth}-{self.num_groups}x{self.width_per_group}d"
        if self.width_per_group != 64:
            return f"R-{self.depth}-w{self.width_per_group // 64}x"
        return f"R-{self.depth}"

    def config_values(self) -> dict[str, Any]:
        return {
            "MODEL.RESNETS.DEPTH": self.depth,
            "MODEL.RESNETS.NUM_GROUPS": self.num_groups,
            "MODEL.RESNETS.WIDTH_PER_GROUP": self.width_per_group,
            "MODEL.RESNETS.STEM_OUT_CHANNELS": self.stem_out_channels,
            "MODEL.RESNETS.RES2_OUT_CHANNELS": self.res2_out_channels,
        }


@dataclass(frozen=True)
class InputConvention:
    """How the weights expect their input: channel order, normalisation, where the stride sits."""

    input_format: str  # "RGB" or "BGR"
    pixel_mean: tuple[float, float, float]
    pixel_std: tuple[float, float, float]
    stride_in_1x1: bool

    def config_values(self) -> dict[str, Any]:
        return {
            "INPUT.FORMAT": self.input_format,
            "MODEL.PIXEL_MEAN": list(self.pixel_mean),
            "MODEL.PIXEL_STD": list(self.pixel_std),
            "MODEL.RESNETS.STRIDE_IN_1X1": self.stride_in_1x1,
        }


# torchvision / every self-supervised release we know: RGB, ImageNet mean/std, stride in the 3x3.
TORCHVISION = InputConvention("RGB", (123.675, 116.280, 103.530), (58.395, 57.120, 57.375), False)
# MSRA caffe2 R-50/R-101 ("ImageNetPretrained/MSRA/*.pkl"): BGR, unit std, stride in the 1x1.
MSRA_CAFFE2 = InputConvention("BGR", (103.530, 116.280, 123.675), (1.0, 1.0, 1.0), True)
# FAIR X-101-32x8d ("ImageNetPretrained/FAIR/X-101-32x8d.pkl"): BGR, BGR std, stride in the 3x3.
FAIR_CAFFE2 = InputConvention("BGR", (103.530, 116.280, 123.675), (57.375, 57.120, 58.395), False)
# FAIR caffe2 weights in Detectron (1) format ("catalog://ImageNetPretrained/FAIR/*", e.g. the IN-5k
# BGR, unit std (Detectron subtracted the mean only), stride in the 3x3.
FAIR_DETECTRON = InputConvention("BGR", (103.530, 116.280, 123.675), (1.0, 1.0, 1.0), False)


@dataclass(frozen=True)
class WeightsMeta:
    """Everything the trainer needs to know about a weights file without loading its tensors.

    ``norm_fused`` marks caffe2 weights whose BN was folded into an affine layer (the IN-5k X-152):
    they need a BN-family norm (FrozenBN keeps them as they are; the authors fine-tune them with
    SyncBN, which re-estimates the statistics), never GN or no norm.
    """

    arch: ResNetArch
    convention: InputConvention
    source_format: str
    source_sha256: str = ""
    source_path: str = ""
    encoder: str = ""
    norm_fused: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def config_values(self) -> dict[str, Any]:
        """Detectron2 config keys (dotted) and the values these weights require."""
        return {**self.arch.config_values(), **self.convention.config_values()}

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["version"] = META_VERSION
        d["arch"]["name"] = self.arch.name
        d["config_values"] = self.config_values()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "WeightsMeta":
        arch = {k: v for k, v in d["arch"].items() if k != "name"}
        conv = dict(d["convention"])
        conv["pixel_mean"] = tuple(conv["pixel_mean"])
        conv["pixel_std"] = tuple(conv["pixel_std"])
        return cls(
            arch=ResNetArch(**arch),
            convention=InputConvention(**conv),
            source_format=d["source_format"],
            source_sha256=d.get("source_sha256", ""),
            source_path=d.get("source_path", ""),
            encoder=d.get("encoder", ""),
            norm_fused=d.get("norm_fused", False),
            extra=dict(d.get("extra", {})),
        )


# Detectron2 model-zoo ImageNet weights that carry no metadata of their own (caffe2 pickles), by the
# address a config names. ``detectron2://`` files keep their BN statistics (Detectron2's MODEL_ZOO.md:
# "we do not fuse BatchNorm into an affine layer"); ``catalog://`` names resolve (Detectron2's
# ModelCatalog) to Detectron-format files whose BN is fused into an affine layer, with PIXEL_STD 1.
# The IN-5k X-152 exists only in that format (detectron/ImageNetPretrained/25093814/X-152-32x8d-IN5k.pkl).
CATALOG: dict[str, WeightsMeta] = {
    "detectron2://ImageNetPretrained/MSRA/R-50.pkl": WeightsMeta(
        ResNetArch(50), MSRA_CAFFE2, "d2-catalog"),
    "detectron2://ImageNetPretrained/MSRA/R-101.pkl": WeightsMeta(
        ResNetArch(101), MSRA_CAFFE2, "d2-catalog"),
    "detectron2://ImageNetPretrained/FAIR/X-101-32x8d.pkl": WeightsMeta(
        ResNetArch(101, 32, 8), FAIR_CAFFE2, "d2-catalog"),
    "catalog://ImageNetPretrained/FAIR/X-152-32x8d-IN5k": WeightsMeta(
        ResNetArch(152, 32, 8), FAIR_DETECTRON, "d2-catalog", norm_fused=True),
}
