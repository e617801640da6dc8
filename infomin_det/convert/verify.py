"""Proof that a converted ``.pkl`` reproduces its source: Detectron2 vs torchvision, stage by stage.

``verify(pkl, source)`` builds Detectron2's ResNet from the arch recorded in the file, loads the file
through ``DetectionCheckpointer`` (zero missing/unexpected backbone keys, the expected "Total num"
of matched groups, every tensor equal), builds a torchvision ``ResNet`` reference from the *source*
checkpoint's tensors in torchvision names (or, without a source, from the .pkl renamed back), and
compares res2..res5 with layer1..4 on one seeded input in eval mode. With a source, the file's
metadata must also equal what a fresh conversion of that source records. A stage passes only if
both outputs are finite, the reference is not identically zero (that would compare nothing) and
the relative difference is within tolerance. The only module of :mod:`infomin_det.convert` that
imports detectron2, and only inside functions.
"""

from __future__ import annotations

import logging
import math
import re
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from infomin_det.convert.d2pkl import D2Weights, read_d2_pkl
from infomin_det.convert.files import show
from infomin_det.convert.reference import STAGES, build_reference
from infomin_det.convert.resnet_keys import BN_COUNTER, arch_values, d2_to_tv, expected_groups
from infomin_det.convert.values import check_tensors, role_of
from infomin_det.errors import UserError
from infomin_det.weights_meta import TORCHVISION, ResNetArch

REL_TOL = 1e-4
# The input side: the trunk's total stride is 32, so below 32 px res5 is less than one stride-32 cell
# (its single output pixel is mostly padding); above 1024 px the check costs minutes and GBs on a CPU
# and proves nothing more (every weight is already used at 32 px, the default 64 gives res5 2 x 2).
SIZE_RANGE = (32, 1024)


@dataclass
class StageDiff:
    """max |d2 - ref|, that divided by max |ref|, and max |ref| over one stage's output (N, C, H, W).

    finite: both outputs hold finite values only. A stage is ok only if finite, ``ref_max_abs > 0``
    (an all-zero reference compares nothing) and ``max_rel <= tolerance``.
    """

    max_abs: float
    max_rel: float
    ref_max_abs: float = 1.0
    finite: bool = True

    def problem(self, tolerance: float) -> str:
        if not self.finite:
            return "non-finite output"
        if self.ref_max_abs == 0:
            return "reference output is all zeros: nothing compared"
        return "" if self.max_rel <= tolerance else "differs"


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
    meta_mismatches: list[str] = field(default_factory=list)  # recorded vs a fresh conversion of the source

    @property
    def passed(self) -> bool:
        return (self.matched_groups == self.expected_groups and not self.missing_keys and not self.unexpected_keys
                and not self.unequal_tensors and not self.reference_error and not self.meta_mismatches
                and len(self.stages) == len(STAGES)
                and not any(s.problem(self.tolerance) for s in self.stages.values()))

    def to_json(self) -> dict[str, Any]:
        """As a dict; non-finite floats become None (JSON has no NaN/Inf)."""
        def clean(x: Any) -> Any:
            if isinstance(x, float) and not math.isfinite(x):
                return None
            if isinstance(x, dict):
                return {k: clean(v) for k, v in x.items()}
            if isinstance(x, (list, tuple)):
                return [clean(v) for v in x]
            return x
        return clean({**asdict(self), "passed": self.passed})

    def render(self) -> str:
        lines = [f"arch       {self.arch}",
                 f"loading    Total num {self.matched_groups} (expected {self.expected_groups}), "
                 f"missing {len(self.missing_keys)}, unexpected {len(self.unexpected_keys)}, "
                 f"unequal {len(self.unequal_tensors)}",
                 f"reference  torchvision ResNet from {self.reference}, input {list(self.input_shape)}, eval mode"]
        if self.reference_error:
            lines.append(f"reference  FAILED: {self.reference_error}")
        for m in self.meta_mismatches:
            lines.append(f"metadata   FAIL: {m}")
        for name, s in self.stages.items():
            bad = s.problem(self.tolerance)
            lines.append(f"{name:<10} max abs {s.max_abs:.3e}  max rel {s.max_rel:.3e}  "
                         + (f"FAIL ({bad})" if bad and bad != "differs" else "FAIL" if bad else "ok"))
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


def _check_size(size: int) -> None:
    lo, hi = SIZE_RANGE
    if not isinstance(size, int) or isinstance(size, bool) or not lo <= size <= hi:
        raise UserError(f"--size {size!r} is outside {lo}..{hi} pixels (the trunk's total stride is 32: below 32 res5 "
                        f"sees less than one stride cell; above {hi} the check only gets slower)",
                        f"pass --size between {lo} and {hi} (default 64)")


def _trunk_names(weights: D2Weights) -> list[tuple[str, str]]:
    """(Detectron2 name, torchvision name) of the file's trunk keys; others are reported as unexpected."""
    out = []
    for k in weights.model:
        try:
            out.append((k, d2_to_tv(k)))
        except KeyError:
            pass
    return out


def _check_backbone_tensors(pkl: Path, weights: D2Weights) -> None:
    """Backbone keys must be floating point (integer counters); read_d2_pkl already checked finiteness."""
    check_tensors([(k, weights.model[k], role_of(k)) for k, _ in _trunk_names(weights)], show(pkl))


def _check_arch_size(pkl: Path, weights: D2Weights, arch: ResNetArch) -> None:
    """Refuse metadata whose arch is far larger than the file's tensors: building it would be the only work."""
    held = sum(t.numel() for t in weights.model.values())
    need = arch_values(arch)
    if need > 2 * held:
        raise UserError(f"{show(pkl)}: its metadata records {arch.name} ({need / 1e6:.1f} M values) but the file holds "
                        f"{held / 1e6:.1f} M values; the metadata does not describe these tensors",
                        "re-create it with infomin-det convert")


def _meta_mismatches(weights: D2Weights, ex: Any) -> list[str]:
    """What the file's metadata records that a fresh conversion of the source would not."""
    meta, c = weights.meta, ex.candidate
    fresh = {"arch": ex.arch, "convention": TORCHVISION, "source_format": c.source_format, "encoder": c.where}
    return [f"{name} recorded {getattr(meta, name)} but the source gives {want}"
            for name, want in fresh.items() if getattr(meta, name) != want]


def verify(pkl: str | Path, source: str | Path | None = None, *, trust_pickle: bool = False,
           size: int = 64, seed: int = 0) -> VerifyResult:
    """Check ``pkl`` (see module docstring); input is N=1, 3 x ``size`` x ``size``, N(0,1), seeded."""
    _check_size(size)
    pkl = Path(pkl)
    weights = read_d2_pkl(pkl)
    if weights.meta is None:
        raise UserError(f"{show(pkl)} carries no infomin-det metadata, so its arch is unknown",
                        "produce it with infomin-det convert")
    if not weights.matching_heuristics:
        raise UserError(f"{show(pkl)} lacks matching_heuristics: True; Detectron2 would match no backbone key",
                        "re-create it with infomin-det convert")
    arch = weights.meta.arch
    _check_backbone_tensors(pkl, weights)
    _check_arch_size(pkl, weights, arch)
    meta_mismatches: list[str] = []
    if source is not None:
        from infomin_det.convert.converter import extract
        from infomin_det.convert.load import check_source, load_checkpoint
        from infomin_det.filehash import sha256_file

        source = check_source(source)
        sha = sha256_file(source)
        if weights.meta.source_sha256 and sha != weights.meta.source_sha256:
            raise UserError(f"{show(source)} is not the file {show(pkl)} was converted from (sha256 {sha[:12]} vs "
                            f"recorded {weights.meta.source_sha256[:12]})", "pass the original source checkpoint")
        extra = weights.meta.extra
        ckpt = load_checkpoint(source, trust_pickle=trust_pickle)
        if weights.meta.source_format == "custom":
            ex = extract(ckpt, extra.get("key", ""), extra.get("prefix", ""))
        else:
            ex = extract(ckpt, ema=weights.meta.source_format == "pycontrast-ema")
        trunk, reference = ex.trunk, f"source {show(source)}"
        meta_mismatches = _meta_mismatches(weights, ex)
    else:
        trunk, reference = {tv: weights.model[k] for k, tv in _trunk_names(weights)}, "the .pkl itself (renamed back)"

    torch.manual_seed(seed)
    model = _Holder(build_d2_resnet(arch, weights.meta.convention.stride_in_1x1))
    matched, missing, unexpected = load_through_checkpointer(model, pkl)
    d2 = model.backbone.bottom_up.eval()
    d2_sd = d2.state_dict()
    unequal = [k for k, v in weights.model.items() if k not in d2_sd or not torch.equal(d2_sd[k], v.to(d2_sd[k].dtype))]
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(seed))
    result = VerifyResult(arch.name, reference, expected_groups(arch), matched, missing, unexpected, unequal,
                          input_shape=tuple(x.shape), meta_mismatches=meta_mismatches)
    try:
        ref = build_reference(arch, trunk)
    except RuntimeError as e:  # strict loading refused the tensors: report, don't crash
        result.reference_error = str(e).strip().splitlines()[-1].strip()
        return result
    with torch.no_grad():
        got, want = d2(x), ref(x)
    for name in STAGES:
        g, w = got[name], want[name]
        finite = bool(torch.isfinite(g).all()) and bool(torch.isfinite(w).all())
        diff = (g - w).abs().max().item() if finite else math.inf
        peak = w.abs().max().item() if finite else math.inf
        result.stages[name] = StageDiff(diff, diff / max(peak, 1e-12) if finite else math.inf, peak, finite)
    return result
