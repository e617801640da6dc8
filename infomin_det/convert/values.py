"""Every tensor's kind, dtype and values, checked before anything is written or trusted.

A conv weight or BN parameter must be a dense floating-point tensor whose values are finite --
also once Detectron2 casts them to its float32 parameters -- and a BN running variance is >= 0; a
BN batch counter is an integer. :func:`check_tensors` raises one :class:`UserError` naming the first
offending key (in the order given) and what is wrong with it. One ``isfinite`` pass per tensor.
"""

from __future__ import annotations

from typing import Iterable

import torch

from infomin_det.convert.files import show
from infomin_det.errors import UserError

COUNTER, VARIANCE, WEIGHT, ANY = "counter", "variance", "weight", "any"
_F32_MAX = torch.finfo(torch.float32).max
_FIX_VALUES = "the checkpoint holds broken weights (diverged training or a damaged file); convert a healthy one"
_FIX_KIND = "this is not a ResNet weight tensor; check the checkpoint (or --key/--prefix)"


def role_of(name: str) -> str:
    """COUNTER, VARIANCE or WEIGHT for a torchvision- or Detectron2-named trunk key."""
    if name.endswith("num_batches_tracked"):
        return COUNTER
    return VARIANCE if name.endswith("running_var") else WEIGHT


def problem(t: object, role: str) -> tuple[str, str] | None:
    """(what is wrong, fix) for tensor ``t`` in ``role``, or None. ANY: numeric, finite if floating."""
    if not isinstance(t, torch.Tensor):
        return f"is a {type(t).__name__}, not a tensor", _FIX_KIND
    if t.layout != torch.strided:
        return f"is a {str(t.layout).removeprefix('torch.')} tensor, not a dense one", "save the weights as dense tensors"
    if t.device.type != "cpu":
        return f"holds no data (device {t.device.type})", "save the checkpoint with its tensors' data"
    if t.is_quantized:
        return f"is a quantized tensor ({t.dtype})", "convert the float checkpoint, not a quantized one"
    dtype = str(t.dtype).removeprefix("torch.")
    if t.is_complex():
        return f"is {dtype}; weights are real numbers", _FIX_KIND
    if role == COUNTER:
        if t.is_floating_point() or t.dtype == torch.bool or t.numel() != 1:
            return f"is {dtype} of shape {tuple(t.shape)}; a BN batch counter is one integer", _FIX_KIND
        return None
    if role != ANY and not t.is_floating_point():
        return f"is {dtype}; ResNet weights are floating point", _FIX_KIND
    if not t.is_floating_point() or t.numel() == 0:
        return None
    finite = torch.isfinite(t)
    if not bool(finite.all()):
        n_bad = int((~finite).sum())
        n_nan = int(torch.isnan(t).sum())
        what = " and ".join(f"{n} {name}" for n, name in ((n_nan, "NaN"), (n_bad - n_nan, "Inf")) if n)
        return f"holds {what} of {t.numel()} values", _FIX_VALUES
    if t.dtype == torch.float64:
        peak = float(t.abs().max())
        if peak > _F32_MAX:
            return (f"holds {peak:.3g}, beyond float32's range: Detectron2's float32 parameters would hold Inf",
                    _FIX_VALUES)
    if role == VARIANCE and t.numel() and bool((t < 0).any()):
        return f"holds negative values (min {float(t.min()):.3g}); a BN running variance is >= 0", _FIX_VALUES
    return None


def check_tensors(items: Iterable[tuple[str, object, str]], where: str) -> None:
    """``items`` are (key as shown, tensor, role); UserError for the first with a :func:`problem`."""
    for key, t, role in items:
        bad = problem(t, role)
        if bad is not None:
            raise UserError(f"{where}: tensor {show(key)} {bad[0]}", bad[1])
