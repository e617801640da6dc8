"""The InfoMin augmentation on batches of tensors on any torch device (``pretrain --augment-on device``).

Split in two halves: the DataLoader workers decode and draw (:meth:`BatchedAugment.draw`: the CPU
pipeline's own :meth:`pretrain.augment.InfoMinAugment.draw`, every drawn op packed into fixed-size
tensors); :meth:`BatchedAugment.collate` pads a batch's decoded images into one uint8 tensor;
:meth:`BatchedAugment.apply` runs every pixel op of the recipe on the training device, on the whole
batch at once. The draws are the CPU pipeline's, so the parameter distributions are identical; each
op is the CPU pipeline's op within rounding (``tests/test_augment_batched.py``):

* crop + resize: Pillow's antialiased bilinear filter as two batched matrix products per view
  (each crop box's filter weights);
* a view is a fixed sequence of slots -- 4 colour-jitter slots, blur, the RandAugment ops,
  grayscale -- each of one kind: ``MATRIX`` (jitter, Color / Contrast / Brightness, grayscale: a
  3x3 matrix plus the contrast offset), ``LUT`` (Invert, Posterize, Solarize, SolarizeAdd: the CPU
  pipeline's tables, by gather), ``AFFINE`` (Rotate, Shear, Translate: ``grid_sample`` with the
  fill), ``SHARPNESS``, ``AUTOCONTRAST``, ``EQUALIZE`` (per-channel histograms), ``BLUR`` (per-view
  separable Gaussian by grouped convolution, reflected border); the views that drew a kind at a
  slot run it together;
* every op rounds and clips to 0..255, as uint8 images do; flips and JigSaw patches are indexing.
"""

from __future__ import annotations

import math
import random
from typing import Any, BinaryIO

import numpy as np
import torch
import torch.nn.functional as F

from pretrain.augment import (_LUMA, AFFINE_OPS, ENHANCE_JITTER_OP, FILL, LUT_OPS, SMOOTH, AugmentConfig,
                              InfoMinAugment, ViewParams, enhance_factor, jitter_matrix,
                              saturation_matrix)

#: where ``pretrain --augment-on`` runs the pixel ops: in the loader workers (InfoMinAugment) or here
AUGMENT_ON = ("workers", "device")

NONE, MATRIX, LUT, AFFINE, SHARPNESS, AUTOCONTRAST, EQUALIZE, BLUR = range(8)
_GRAY = saturation_matrix(0.0)  # grayscale: every channel the luma
_IDENTITY_LUT = np.arange(256, dtype=np.uint8)


def _slots(cfg: AugmentConfig) -> int:
    return 4 + 1 + cfg.randaug_ops + 1  # jitter, blur, RandAugment, grayscale


def _template(n: int, slots: int) -> dict[str, np.ndarray]:
    return {"kind": np.zeros((n, slots), np.int64), "m": np.tile(np.eye(3, dtype=np.float32), (n, slots, 1, 1)),
            "c": np.zeros((n, slots), np.float64), "lut": np.tile(_IDENTITY_LUT, (n, slots, 1)),
            "affine": np.tile(np.array([1, 0, 0, 0, 1, 0], np.float64), (n, slots, 1))}


_TEMPLATES: dict[tuple[int, int], dict[str, np.ndarray]] = {}


def pack_views(views: list[ViewParams] | tuple[ViewParams, ...], cfg: AugmentConfig) -> dict[str, np.ndarray]:
    """The views' drawn ops as slot arrays (V views, L slots): ``kind`` (V, L), ``m`` (V, L, 3, 3),
    ``c`` (V, L) (contrast offset weight, sharpness factor or blur sigma), ``lut`` (V, L, 256),
    ``affine`` (V, L, 6); an unused slot is ``NONE`` with identity parameters."""
    key = (len(views), _slots(cfg))
    if key not in _TEMPLATES:
        _TEMPLATES[key] = _template(*key)
    out = {k: a.copy() for k, a in _TEMPLATES[key].items()}
    kind, m, c, lut, affine = (out[k] for k in ("kind", "m", "c", "lut", "affine"))
    for i, v in enumerate(views):
        def matrix(slot: int, op: int, f: float) -> None:
            kind[i, slot], m[i, slot], c[i, slot] = MATRIX, jitter_matrix(op, f), (1 - f) if op == 1 else 0.0

        for slot, (op, f) in enumerate(v.jitter_ops or ()):
            matrix(slot, op, f)
        if v.sigma > 0:
            kind[i, 4], c[i, 4] = BLUR, v.sigma
        for k, (name, mag) in enumerate(v.randaug):
            slot = 5 + k
            if name in ENHANCE_JITTER_OP:
                matrix(slot, ENHANCE_JITTER_OP[name], enhance_factor(mag))
            elif name == "Sharpness":
                kind[i, slot], c[i, slot] = SHARPNESS, enhance_factor(mag)
            elif name in LUT_OPS:
                kind[i, slot], lut[i, slot] = LUT, LUT_OPS[name](mag)
            elif name in AFFINE_OPS:
                kind[i, slot], affine[i, slot] = AFFINE, AFFINE_OPS[name](mag, cfg.size, cfg.size)
            else:
                kind[i, slot] = AUTOCONTRAST if name == "AutoContrast" else EQUALIZE
        if v.gray:
            kind[i, -1], m[i, -1] = MATRIX, _GRAY
    return out


# ----------------------------------------------------------------------------------------------
# batched ops on float (n, 3, H, W) tensors holding whole values 0..255

_CONSTANTS: dict[tuple[torch.device, torch.dtype], dict[str, torch.Tensor]] = {}


def _constants(x: torch.Tensor) -> dict[str, torch.Tensor]:
    """luma weights, fill colour and SMOOTH kernel on ``x``'s device, copied there once (a copy from
    host memory per op would wait for the device's queue)."""
    key = (x.device, x.dtype)
    if key not in _CONSTANTS:
        _CONSTANTS[key] = {"luma": torch.tensor(_LUMA, dtype=x.dtype).to(x.device),
                           "fill": torch.tensor(FILL, dtype=x.dtype).view(1, 3, 1, 1).to(x.device),
                           "smooth": torch.from_numpy(SMOOTH).to(x.dtype).view(1, 1, 3, 3).expand(3, 1, 3, 3).to(x.device)}
    return _CONSTANTS[key]


def _q(x: torch.Tensor) -> torch.Tensor:
    return x.round_().clamp_(0, 255)


def resize_weights(lo: torch.Tensor, hi: torch.Tensor, out: int, length: int) -> torch.Tensor:
    """(K, out, length) weights of Pillow's antialiased bilinear resize of the pixels [lo, hi) of a
    line of ``length`` pixels to ``out`` pixels (crop, then resize; lo / hi whole pixels, (K,))."""
    scale = (hi - lo) / out
    support = scale.clamp(min=1.0)
    centre = lo[:, None] + (torch.arange(out, device=lo.device, dtype=lo.dtype) + 0.5) * scale[:, None]
    j = torch.arange(length, device=lo.device, dtype=lo.dtype)
    w = (1 - ((j + 0.5) - centre[..., None]).abs() / support[:, None, None]).clamp_(min=0)
    w = w * ((j >= lo[:, None, None]) & (j < hi[:, None, None]))
    return w / w.sum(-1, keepdim=True)


def resized_crops(img: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """(B, 3, H, W) images, (B, V, 4) whole-pixel boxes -> (B, V, 3, size, size), Pillow's filter."""
    b, _, h, w = img.shape
    boxes = boxes.to(img.dtype)
    wy = resize_weights(boxes[..., 1].flatten(), boxes[..., 3].flatten(), size, h).view(b, -1, size, h)
    wx = resize_weights(boxes[..., 0].flatten(), boxes[..., 2].flatten(), size, w).view(b, -1, size, w)
    rows = torch.einsum("bvsh,bchw->bvcsw", wy, img)
    return _q(torch.einsum("bvcsw,bvtw->bvcst", rows, wx))


def _matrix(x: torch.Tensor, m: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    gray_mean = torch.floor((x.mean((2, 3)) * _constants(x)["luma"]).sum(1) + 0.5)  # Pillow's rounded grayscale mean
    y = torch.einsum("nij,njhw->nihw", m, x) + (c * gray_mean)[:, None, None, None]
    return _q(y)


def _lut(x: torch.Tensor, lut: torch.Tensor) -> torch.Tensor:
    n = x.shape[0]
    return lut.to(x.dtype).gather(1, x.reshape(n, -1).long()).view_as(x)


def _affine(x: torch.Tensor, coeffs: torch.Tensor) -> torch.Tensor:
    """Pillow's ``transform(AFFINE, coeffs, BILINEAR, fillcolor=FILL)``: output -> input pixel-edge
    coordinates, mapped to ``affine_grid``'s [-1, 1] (align_corners=False)."""
    n, _, h, w = x.shape
    a, b, c, d, e, f = coeffs.to(torch.float64).unbind(1)
    # N A N^-1 with N: pixel edges -> [-1, 1] (x_n = 2 x / w - 1), written out
    theta = torch.stack([torch.stack([a, b * h / w, a + b * h / w + 2 * c / w - 1], 1),
                         torch.stack([d * w / h, e, d * w / h + e + 2 * f / h - 1], 1)], 1).to(x.dtype)
    grid = F.affine_grid(theta, [n, 3, h, w], align_corners=False)
    fill = _constants(x)["fill"]
    return _q(F.grid_sample(x - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + fill)


def _sharpness(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    smooth = x.clone()
    smooth[:, :, 1:-1, 1:-1] = _q(F.conv2d(x, _constants(x)["smooth"], groups=3))
    f = f.to(x.dtype)[:, None, None, None]
    return _q(f * x + (1 - f) * smooth)


def _autocontrast(x: torch.Tensor) -> torch.Tensor:
    """Pillow's ``ImageOps.autocontrast`` (cutoff 0): each channel's [min, max] stretched to 0..255."""
    xd = x.double()
    lo, hi = xd.amin((2, 3), keepdim=True), xd.amax((2, 3), keepdim=True)
    scale = 255.0 / (hi - lo).clamp(min=1)
    y = torch.floor(xd * scale - lo * scale).clamp_(0, 255)
    return torch.where(hi > lo, y, xd).to(x.dtype)


def _equalize(x: torch.Tensor) -> torch.Tensor:
    """Pillow's ``ImageOps.equalize``: per channel, lut[i] = (step // 2 + #pixels below i) // step,
    step = (#pixels - #pixels at the top level) // 255; identity where step is 0."""
    n = x.shape[0]
    v = x.reshape(n * 3, -1).long()
    hist = torch.zeros(n * 3, 256, dtype=torch.long, device=x.device).scatter_add_(1, v, torch.ones_like(v))
    top = hist.gather(1, v.amax(1, keepdim=True))
    step = (v.shape[1] - top) // 255
    below = hist.cumsum(1) - hist
    lut = ((step // 2 + below) // step.clamp(min=1)).clamp_(max=255)
    lut = torch.where(step > 0, lut, torch.arange(256, device=x.device))
    return lut.gather(1, v).to(x.dtype).view_as(x)


def _blur(x: torch.Tensor, sigma: torch.Tensor, radius: int) -> torch.Tensor:
    """Per-view Gaussian of ``sigma`` px, kernel to ceil(3 sigma) <= ``radius``, reflected border (cv2's)."""
    n, ch, h, w = x.shape
    sigma = sigma.to(torch.float64)
    i = torch.arange(-radius, radius + 1, device=x.device, dtype=torch.float64)
    g = torch.exp(-i ** 2 / (2 * sigma[:, None] ** 2)) * (i.abs() <= torch.ceil(3 * sigma)[:, None])
    g = (g / g.sum(1, keepdim=True)).to(x.dtype).repeat_interleave(ch, 0)  # (n * 3, 2 radius + 1)
    y = F.pad(x.reshape(1, n * ch, h, w), (radius,) * 4, mode="reflect")
    y = F.conv2d(y, g.view(n * ch, 1, 1, -1), groups=n * ch)
    y = F.conv2d(y, g.view(n * ch, 1, -1, 1), groups=n * ch)
    return _q(y.view(n, ch, h, w))


_SLOT_KEYS = ("kind", "m", "c", "lut", "affine")


def run_slot(x: torch.Tensor, kind: int, p: dict[str, torch.Tensor], radius: int = 0) -> torch.Tensor:
    """The op ``kind`` on views ``x`` with their slot parameters ``p`` (m, c, lut, affine); ``radius``:
    the blur kernel's half-width (``BLUR`` only)."""
    if kind == MATRIX:
        return _matrix(x, p["m"].to(x.dtype), p["c"].to(x.dtype))
    if kind == LUT:
        return _lut(x, p["lut"])
    if kind == AFFINE:
        return _affine(x, p["affine"])
    if kind == SHARPNESS:
        return _sharpness(x, p["c"])
    if kind == AUTOCONTRAST:
        return _autocontrast(x)
    if kind == EQUALIZE:
        return _equalize(x)
    if kind == BLUR:
        return _blur(x, p["c"], radius)
    raise ValueError(f"unknown op kind {kind}")


def run_slots(x: torch.Tensor, slots: dict[str, torch.Tensor], kind: np.ndarray, c: np.ndarray) -> torch.Tensor:
    """Every slot in order on views ``x`` (n, 3, S, S); ``slots`` holds (n, L, ...) arrays of
    :func:`pack_views` on ``x``'s device, ``kind`` and ``c`` the host copies of two of them (the
    plan is made on the host: no device reads). The views that drew a kind at a slot run together."""
    plan = [(s, int(k), np.flatnonzero(kind[:, s] == k)) for s in range(kind.shape[1])
            for k in np.unique(kind[:, s]) if k != NONE]
    if not plan:
        return x
    # every slot's view indices in one host -> device copy
    all_rows = torch.from_numpy(np.concatenate([rows for _, _, rows in plan])).to(x.device)
    start = 0
    for s, k, rows in plan:
        idx = all_rows[start:start + len(rows)]
        start += len(rows)
        radius = int(math.ceil(3 * c[rows, s].max())) if k == BLUR else 0
        x[idx] = run_slot(x[idx], k, {n: slots[n][idx, s] for n in _SLOT_KEYS[1:]}, radius)
    return x


# ----------------------------------------------------------------------------------------------
# the two halves

class BatchedAugment:
    """``draw`` (in the loader workers) -> ``collate`` -> ``apply`` (on the device): the output of
    :class:`pretrain.augment.InfoMinAugment` for whole batches (``views`` uint8 (B, 2, 3, S, S),
    with ``cfg.jigsaw`` also ``jigsaw`` uint8 (B, 9, 3, P, P) and ``perm`` (B, 9))."""

    def __init__(self, cfg: AugmentConfig = AugmentConfig()) -> None:
        self.cfg = cfg
        self.drawer = InfoMinAugment(cfg)

    def draw(self, fp: str | BinaryIO, rng: random.Random) -> dict[str, torch.Tensor]:
        """Decode and draw one sample: ``image`` uint8 (H, W, 3) -- the region of the decoded image
        that the crops cover --, ``boxes`` (V, 4) in it, ``flip`` (V,) (V = 2 views, + 1 JigSaw
        crop), the views' slot arrays (2, L, ...), ``corners`` / ``perm``."""
        img, p = self.drawer.draw(fp, rng)
        crops = list(p.views) + ([p.jigsaw] if p.jigsaw is not None else [])
        boxes = np.array([c.box for c in crops], np.float64)
        # only the pixels some crop uses travel (the batch is padded to its largest such region)
        left, top = (int(v) for v in boxes[:, :2].min(0))
        right, bottom = (int(v) for v in boxes[:, 2:].max(0))
        boxes -= (left, top, left, top)
        out = {"image": torch.from_numpy(img[top:bottom, left:right]),
               "boxes": torch.from_numpy(boxes),
               "flip": torch.from_numpy(np.array([c.flip for c in crops])),
               **{k: torch.from_numpy(a) for k, a in pack_views(p.views, self.cfg).items()}}
        if p.jigsaw is not None:
            out["corners"] = torch.from_numpy(np.array(p.jigsaw.corners, np.int64))
            out["perm"] = torch.from_numpy(np.array(p.jigsaw.perm, np.int64))
        return out

    @staticmethod
    def collate(samples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Stack a batch; the decoded images are padded (bottom / right) to the largest one."""
        h = max(s["image"].shape[0] for s in samples)
        w = max(s["image"].shape[1] for s in samples)
        images = torch.zeros(len(samples), h, w, 3, dtype=torch.uint8)
        for i, s in enumerate(samples):
            images[i, :s["image"].shape[0], :s["image"].shape[1]] = s["image"]
        rest = torch.utils.data.default_collate([{k: v for k, v in s.items() if k != "image"} for s in samples])
        return {"image": images, **rest}

    def apply(self, batch: dict[str, Any], device: torch.device) -> dict[str, torch.Tensor]:
        """The views (and JigSaw patches) of a batch from :meth:`collate` (on the host), computed on
        ``device``; nothing is read back from the device."""
        cfg = self.cfg
        b = {k: v.to(device, non_blocking=True) for k, v in batch.items() if isinstance(v, torch.Tensor) and k != "kind"}
        img = b["image"].permute(0, 3, 1, 2).float()
        views = resized_crops(img, b["boxes"][:, :2], cfg.size)
        views = torch.where(b["flip"][:, :2, None, None, None], views.flip(-1), views)
        n = views.shape[0] * 2
        x = views.reshape(n, 3, cfg.size, cfg.size)
        x = run_slots(x, {k: b[k].flatten(0, 1) for k in _SLOT_KEYS[1:]},
                      batch["kind"].flatten(0, 1).numpy(), batch["c"].flatten(0, 1).numpy())
        out = {"views": x.view_as(views).to(torch.uint8)}
        if cfg.jigsaw:
            crop = resized_crops(img, b["boxes"][:, 2:], cfg.jigsaw_size)[:, 0]
            crop = torch.where(b["flip"][:, 2, None, None, None], crop.flip(-1), crop)
            p = cfg.jigsaw_patch
            ar = torch.arange(p, device=device)
            rows = b["corners"][..., 0, None] + ar  # (B, 9, P)
            cols = b["corners"][..., 1, None] + ar
            bi = torch.arange(crop.shape[0], device=device)[:, None, None, None]
            patches = crop.permute(0, 2, 3, 1)[bi, rows[..., :, None], cols[..., None, :]]  # (B, 9, P, P, 3)
            out["jigsaw"] = patches.permute(0, 1, 4, 2, 3).to(torch.uint8)
            out["perm"] = b["perm"]
        return out
