"""Conversion of one checkpoint to Detectron2 weights: select, account for every key, infer, check, write.

``convert(src, out)`` is the whole pipeline behind ``infomin-det convert`` and
``tools/convert_to_d2.py``: the output path and the source file are checked first, then the
checkpoint is loaded and :func:`extract` picks the trunk, accounts for every key, infers the arch
and checks every tensor's dtype and values (:mod:`~infomin_det.convert.values`); only then is
anything written (atomically, after a free-space check). :func:`extract` is reused by ``verify``
to build the torchvision reference. No detectron2 import here.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from infomin_det.convert.coverage import Coverage
from infomin_det.convert.d2pkl import write_d2_pkl
from infomin_det.convert.files import check_output, check_space, show
from infomin_det.convert.layouts import Candidate, from_override, resolve, select
from infomin_det.convert.load import check_source, load_checkpoint
from infomin_det.filehash import sha256_file
from infomin_det.convert.resnet_keys import BN_COUNTER, expected_groups, infer_arch, tv_to_d2
from infomin_det.convert.values import COUNTER, check_tensors, role_of
from infomin_det.errors import UserError
from infomin_det.weights_meta import TORCHVISION, ResNetArch, WeightsMeta

HEAD_IN_TRUNK = "fc."  # torchvision/timm classifier, MoCo MLP projector


@dataclass
class Extracted:
    """The chosen trunk: tensors in torchvision names, its arch, where it came from, the coverage."""

    candidate: Candidate
    trunk: dict[str, torch.Tensor]
    arch: ResNetArch
    coverage: Coverage


def extract(ckpt: Any, key: str | None = None, prefix: str | None = None, ema: bool = False) -> Extracted:
    """Pick the backbone, account for every key of its state dict, infer the arch, check every tensor."""
    if ema and (key is not None or prefix is not None):
        raise UserError("--ema together with --key/--prefix: --key/--prefix already name the weights to take",
                        "drop --ema and point --key/--prefix at the EMA weights (e.g. --key model_ema)")
    cand = from_override(ckpt, key, prefix) if key is not None or prefix is not None else select(ckpt, ema)
    sd: Mapping[str, torch.Tensor] = resolve(ckpt, cand.container)
    cov = Coverage(cand.source_format, cand.where, cand.encoder)
    if cand.container and isinstance(ckpt, Mapping):
        cov.ignored_entries = [show(k) for k in ckpt if k != cand.container[0]]
    trunk: dict[str, torch.Tensor] = {}
    aliased: dict[str, torch.Tensor] = {}
    counters: list[tuple[str, object, str]] = []
    for k, v in sd.items():
        if cand.drop_outside and not (isinstance(k, str) and isinstance(v, torch.Tensor)):
            cov.drop("non-tensor entries")  # only reachable with --key/--prefix (layouts need a clean state dict)
            continue
        if cand.alias and k.startswith(cand.alias):
            aliased[k[len(cand.alias):]] = v
            cov.drop(f"{cand.alias} (same tensors as {cand.prefix})")
            continue
        group = next((g for p, g in cand.drops if k.startswith(p)), None)  # known heads first (SwAV nests them)
        if group is None and k.startswith(cand.prefix):
            name = k[len(cand.prefix):]
            if name.startswith(HEAD_IN_TRUNK):
                cov.drop("fc head")
            elif name.endswith("." + BN_COUNTER):
                counters.append((k, v, COUNTER))
                cov.drop("BN batch counters")
            else:
                trunk[name] = v
            continue
        if group is None and cand.drop_outside:
            group = f"outside --prefix: {k.split('.')[0]}"
        if group is None:
            cov.unmatched.append(k)
        else:
            cov.drop(group)
    if cov.unmatched:
        shown = ", ".join(map(show, cov.unmatched[:3])) + (f" (+{len(cov.unmatched) - 3} more)" if len(cov.unmatched) > 3 else "")
        raise UserError(f"{len(cov.unmatched)} keys of {cand.where} fit no rule of layout {cand.source_format}: {shown}",
                        "name the trunk explicitly with --key/--prefix (keys outside --prefix are then dropped)")
    differ = [k for k, v in aliased.items() if k in trunk and not torch.equal(v, trunk[k])]
    if differ or (aliased and not set(trunk) <= set(aliased)):
        raise UserError(f"{cand.where} and prefix {cand.alias!r} hold two different encoders "
                        f"({differ[0] if differ else 'different keys'}); nothing decides between them",
                        "choose one with --key and --prefix")
    arch = infer_arch({k: tuple(v.shape) for k, v in trunk.items()}, where=cand.where)
    check_tensors([(cand.prefix + k, v, role_of(k)) for k, v in trunk.items()] + counters, cand.where)
    if cand.arch_hint is not None:
        hint = {k: v for k, v in cand.arch_hint.items() if k != "name"}
        odd = [f"{show(k)}={show(repr(v))}" for k, v in hint.items() if not isinstance(v, int) or isinstance(v, bool)]
        recorded = None
        try:
            recorded = None if odd else ResNetArch(**hint)
        except TypeError as e:
            odd = [str(e)]
        if recorded is None:
            raise UserError(f"pretrain checkpoint 'arch' record is malformed ({odd[0]})", "re-export the checkpoint")
        if recorded != arch:
            raise UserError(f"pretrain checkpoint records arch {recorded} but its tensors are {arch}",
                            "the file is inconsistent; re-export it with infomin-det pretrain")
    cov.mapped = len(trunk)
    cov.mapped_values_m = sum(v.numel() for v in trunk.values()) / 1e6
    return Extracted(cand, trunk, arch, cov)


def to_numpy(t: torch.Tensor) -> np.ndarray:
    """float16/bfloat16 are widened to float32 (exact); everything else keeps its dtype."""
    t = t.detach()
    if t.dtype in (torch.float16, torch.bfloat16):
        t = t.float()
    return np.ascontiguousarray(t.numpy())


@dataclass
class ConversionResult:
    out: Path
    meta: WeightsMeta
    coverage: Coverage
    groups: int
    size_bytes: int
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {"output": str(self.out), "size_bytes": self.size_bytes, "seconds": round(self.seconds, 3),
                "expected_groups": self.groups, "coverage": asdict(self.coverage), "meta": self.meta.to_dict()}


def convert(src: str | os.PathLike, out: str | os.PathLike, *, key: str | None = None, prefix: str | None = None,
            ema: bool = False, force: bool = False, trust_pickle: bool = False) -> ConversionResult:
    """Convert ``src`` (any layout in docs/convert.md) to Detectron2 weights at ``out`` (.pkl)."""
    t0 = time.perf_counter()
    out = check_output(out, force, src)
    src = check_source(src)
    ckpt = load_checkpoint(src, trust_pickle=trust_pickle)
    ex = extract(ckpt, key, prefix, ema)
    model = {tv_to_d2(k): to_numpy(v) for k, v in ex.trunk.items()}
    check_space(out, sum(a.nbytes for a in model.values()) + (1 << 20))
    c = ex.candidate
    meta = WeightsMeta(ex.arch, TORCHVISION, c.source_format, sha256_file(src), str(src.resolve()), encoder=c.where,
                       extra={"key": ".".join(c.container), "prefix": c.prefix, "encoder": c.encoder})
    size = write_d2_pkl(out, model, meta)
    return ConversionResult(out, meta, ex.coverage, expected_groups(ex.arch), size, time.perf_counter() - t0)
