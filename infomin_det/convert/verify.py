"""Proof that a converted ``.pkl`` reproduces its source: Detectron2 vs torchvision, stage by stage.

``verify(pkl, source)`` builds Detectron2's ResNet from the arch recorded in the file, loads the file
through ``DetectionCheckpointer`` (zero missing/unexpected backbone keys, the expected "Total num"
of matched groups, every tensor equal), builds a torchvision ``ResNet`` reference from the *source*
checkpoint's tensors in torchvision names (or, without a source, from the .pkl renamed back), and
compares res2..res5 with layer1..4 on one seeded input in eval mode. The only module of
:mod:`infomin_det.convert` that imports detectron2, and only inside functions.
"""

from __future__ import annotations

import logging
import re
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from infomin_det.convert.d2pkl import read_d2_pkl
from infomin_det.convert.reference import STAGES, build_reference
from infomin_det.convert.resnet_keys import BN_COUNTER, d2_to_tv, expected_groups
from infomin_det.errors import UserError
from infomin_det.weights_meta import ResNetArch

REL_TOL = 1e-4


@dataclass
class StageDiff:
    """max |d2 - ref| and that divided by max |ref| over one stage's output (N, C, H, W)."""

    max_abs: float
    max_rel: float


@dataclass
class VerifyResult:
    arch: str
    reference: str  # "source <path>" or "the .pkl itself (renamed back)"
    expected_groups: int
    matched_groups: int
    missing_keys: list[str]
    unexpected_keys: list[str]
    unequal_tensors: list[str]
    stages: dict[str, StageDiff] = field(default_factory=dict)
    input_shape: tuple[int, ...] = ()
    tolerance: float = REL_TOL
    reference_error: str = ""  # why the reference could not be built (then there are no stages)

    @property
    def passed(self) -> bool:
        return (self.matched_groups == self.expected_groups and not self.missing_keys and not self.unexpected_keys
                and not self.unequal_tensors and not self.reference_error and len(self.stages) == len(STAGES)
                and all(s.max_rel <= self.tolerance for s in self.stages.values()))

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}

    def render(self) -> str:
        lines = [f"arch       {self.arch}",
                 f"loading    Total num {self.matched_groups} (expected {self.expected_groups}), "
                 f"missing {len(self.missing_keys)}, unexpected {len(self.unexpected_keys)}, "
                 f"unequal {len(self.unequal_tensors)}",
                 f"reference  torchvision ResNet from {self.reference}, input {list(self.input_shape)}, eval mode"]
        if self.reference_error:
            lines.append(f"reference  FAILED: {self.reference_error}")
        for name, s in self.stages.items():
            ok = "ok" if s.max_rel <= self.tolerance else "FAIL"
            lines.append(f"{name:<10} max abs {s.max_abs:.3e}  max rel {s.max_rel:.3e}  {ok}")
        lines.append(f"verdict    {'PASS' if self.passed else 'FAIL'} (relative tolerance {self.tolerance:g})")
        return "\n".join(lines)


class _Holder(nn.Module):
    """Puts the ResNet at ``backbone.bottom_up`` as in a real FPN model, so suffix matching is exercised."""

    def __init__(self, resnet: nn.Module) -> None:
        super().__init__()
        self.backbone = nn.Module()
        self.backbone.bottom_up = resnet


def build_d2_resnet(arch: ResNetArch, stride_in_1x1: bool = False) -> nn.Module:
    """Detectron2's ResNet for ``arch``: plain BN (eval uses running stats), res2..res5 out, nothing frozen."""
    with warnings.catch_warnings():  # detectron2's import-time torch.jit.script FutureWarnings are noise here
        warnings.simplefilter("ignore", FutureWarning)
        from detectron2.config import get_cfg
        from detectron2.layers import ShapeSpec
        from detectron2.modeling.backbone.resnet import build_resnet_backbone

    cfg = get_cfg()
    for k, v in arch.config_values().items():
        cfg.merge_from_list([k, v])
    cfg.MODEL.RESNETS.NORM = "BN"
    cfg.MODEL.RESNETS.STRIDE_IN_1X1 = stride_in_1x1
    cfg.MODEL.RESNETS.OUT_FEATURES = list(STAGES)
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    return build_resnet_backbone(cfg, ShapeSpec(channels=3))


class _CountingHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.total: int | None = None

    def emit(self, record: logging.LogRecord) -> None:
        m = re.search(r"Total num: (\d+)", record.getMessage())
        if m:
            self.total = int(m.group(1))


def load_through_checkpointer(model: nn.Module, pkl: Path) -> tuple[int, list[str], list[str]]:
    """Load ``pkl`` with DetectionCheckpointer; (matched groups, missing keys, unexpected keys)."""
    from detectron2.checkpoint import DetectionCheckpointer

    captured: dict[str, Any] = {}

    class _Checkpointer(DetectionCheckpointer):
        def _load_model(self, checkpoint: Any) -> Any:
            captured["incompatible"] = r = super()._load_model(checkpoint)
            return r

    handler = _CountingHandler()
    logger = logging.getLogger("detectron2.checkpoint.c2_model_loading")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        _Checkpointer(model).load(str(pkl))
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    inc = captured["incompatible"]
    missing = [k for k in inc.missing_keys if not k.endswith(BN_COUNTER)]
    unexpected = list(inc.unexpected_keys) + [k for k, *_ in inc.incorrect_shapes]
    return handler.total or 0, missing, unexpected


def verify(pkl: str | Path, source: str | Path | None = None, *, trust_pickle: bool = False,
           size: int = 64, seed: int = 0) -> VerifyResult:
    """Check ``pkl`` (see module docstring); input is N=1, 3 x ``size`` x ``size``, N(0,1), seeded."""
    pkl = Path(pkl)
    weights = read_d2_pkl(pkl)
    if weights.meta is None:
        raise UserError(f"{pkl} carries no infomin-det metadata, so its arch is unknown",
                        "produce it with infomin-det convert")
    if not weights.matching_heuristics:
        raise UserError(f"{pkl} lacks matching_heuristics: True; Detectron2 would match no backbone key",
                        "re-create it with infomin-det convert")
    arch = weights.meta.arch
    if source is not None:
        from infomin_det.convert.converter import extract
        from infomin_det.convert.load import load_checkpoint, sha256_file

        sha = sha256_file(source)
        if weights.meta.source_sha256 and sha != weights.meta.source_sha256:
            raise UserError(f"{source} is not the file {pkl} was converted from (sha256 {sha[:12]} vs "
                            f"recorded {weights.meta.source_sha256[:12]})", "pass the original source checkpoint")
        extra = weights.meta.extra
        ckpt = load_checkpoint(source, trust_pickle=trust_pickle)
        if weights.meta.source_format == "custom":
            ex = extract(ckpt, extra.get("key", ""), extra.get("prefix", ""))
        else:
            ex = extract(ckpt, ema=weights.meta.source_format == "pycontrast-ema")
        trunk, reference = ex.trunk, f"source {source}"
    else:
        trunk, reference = {d2_to_tv(k): v for k, v in weights.model.items()}, "the .pkl itself (renamed back)"

    torch.manual_seed(seed)
    model = _Holder(build_d2_resnet(arch, weights.meta.convention.stride_in_1x1))
    matched, missing, unexpected = load_through_checkpointer(model, pkl)
    d2 = model.backbone.bottom_up.eval()
    d2_sd = d2.state_dict()
    unequal = [k for k, v in weights.model.items() if k not in d2_sd or not torch.equal(d2_sd[k], v.to(d2_sd[k].dtype))]
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(seed))
    result = VerifyResult(arch.name, reference, expected_groups(arch), matched, missing, unexpected, unequal,
                          input_shape=tuple(x.shape))
    try:
        ref = build_reference(arch, trunk)
    except RuntimeError as e:  # strict loading refused the tensors: report, don't crash
        result.reference_error = str(e).strip().splitlines()[-1].strip()
        return result
    with torch.no_grad():
        got, want = d2(x), ref(x)
    for name in STAGES:
        diff = (got[name] - want[name]).abs().max().item()
        result.stages[name] = StageDiff(diff, diff / max(want[name].abs().max().item(), 1e-12))
    return result
