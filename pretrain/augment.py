"""The InfoMin augmentation (the paper, §C.1): a fast uint8 pipeline and a plain torchvision reference.

Recipe, per view (same order as PyContrast): RandomResizedCrop(size, scale=(c, 1), ratio 3/4..4/3)
-> horizontal flip p .5 -> colour jitter ``factors * x`` p .8 (brightness, contrast, saturation, hue
in random order) -> Gaussian blur sigma ~ U(0.1, 2.0) p .5 -> RandAugment (2 ops, magnitude
N(10, 0.5) clipped to [0, 10], each op applied with p .5, timm's "rand-m10-n2-mstd0.5" op table)
-> grayscale p .2. Optional JigSaw branch: RandomResizedCrop(255, scale=(0.6, 1)) + flip, a 3x3
grid of 85-px cells, a 64-px patch at a random offset in each cell, patches in a uniformly random
order (the permutation is returned).

Fast pipeline (:class:`InfoMinAugment`), the same ops and parameter distributions, on uint8 (H, W, 3)
arrays with OpenCV's SIMD kernels (each op checked against the Pillow / torchvision op it replaces in
``tests/test_augment_stats.py``):

* one decode per sample (:class:`pretrain.decode.EncodedImage`: libjpeg-turbo for plain JPEGs, Pillow
  for the rest, every mode as 8-bit RGB, EXIF orientation applied), reduced-size (DCT scaling, 1/2,
  1/4, 1/8) when every crop of the sample still has >= ``size`` source pixels on both sides after the
  reduction; the crop box is then rounded to whole pixels of the reduced image (the view's trace
  records the box used);
* crop, then resize: torchvision's ``resized_crop`` (Pillow's antialiased bilinear, by torch's uint8
  channels-last kernel: within 1 level of Pillow);
* brightness / contrast / saturation as RGB affine matrices (``cv2.transform``), each op clipped
  before the next as torchvision's; **hue as a rotation of the chroma plane in YIQ** (a 3x3 matrix,
  10x cheaper than torchvision's HSV round trip; the hue angle is 360*h degrees, luma is kept, the
  parameter h has torchvision's distribution U(-hue, hue)) -- the one approximation (of the HSV shift);
* blur: the true Gaussian of sigma (kernel to 3 sigma, separable float filter), which Pillow's ``GaussianBlur`` in MoCo v2 /
  PyContrast approximates by box passes;
* RandAugment: LUTs, ``cv2.warpAffine`` in Pillow's pixel-edge convention, the two histogram ops
  as Pillow's ImageOps computes their tables (per-channel LUTs, the same values);
* JigSaw patches sliced from the 255-px crop (resized once);
* output ``uint8`` tensors (3, H, W) with channels-last strides; normalisation happens on the device
  (:func:`normalize`).

Randomness comes from one ``random.Random`` per call, so a (seed, epoch, index) triple gives the same
views on every run (resume reproduces batches exactly).
"""

from __future__ import annotations

import dataclasses
import math
import random
from dataclasses import dataclass
from typing import BinaryIO, Callable

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from infomin_det.errors import UserError
from pretrain.decode import EncodedImage

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FILL = (124, 116, 104)  # ImageNet mean in 0..255, the fill of RandAugment's geometric ops

Box = tuple[float, float, float, float]  # left, top, right, bottom in source pixels


@dataclass(frozen=True)
class AugmentConfig:
    """The recipe's parameters. Defaults are the paper's (the paper, §C.1, Figure 4(b)).

    ``crop_min`` is the lower area bound c of RandomResizedCrop; ``jitter_strength`` the x of
    CJ(x); colour-jitter factors default to the paper's ``[0.8, 0.8, 0.8, 0.4]`` (PyContrast's code
    uses hue 0.2): the hue factor ``0.4 * x`` is capped at 0.5, torchvision's largest valid value.
    """

    size: int = 224
    crop_min: float = 0.2
    jitter_strength: float = 1.0
    jitter_factors: tuple[float, float, float, float] = (0.8, 0.8, 0.8, 0.4)
    jitter_p: float = 0.8
    flip_p: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    blur_p: float = 0.5
    randaug_ops: int = 2
    randaug_magnitude: float = 10.0
    randaug_std: float = 0.5
    randaug_p: float = 0.5
    gray_p: float = 0.2
    jigsaw: bool = False
    jigsaw_size: int = 255
    jigsaw_crop_min: float = 0.6
    jigsaw_grid: int = 3
    jigsaw_patch: int = 64

    def __post_init__(self) -> None:
        if not 0.0 < self.crop_min <= 1.0:
            raise UserError(f"crop lower bound c={self.crop_min} is outside (0, 1]",
                            "use e.g. --crop-min 0.2 (the paper's sweet spot)")
        if self.jitter_strength < 0:
            raise UserError(f"colour-jitter strength x={self.jitter_strength} is negative",
                            "use x >= 0 (the paper sweeps 0.125 .. 2.5)")
        cell = self.jigsaw_size // self.jigsaw_grid
        if self.jigsaw and self.jigsaw_patch > cell:
            raise UserError(f"jigsaw patch {self.jigsaw_patch}px is larger than a grid cell ({cell}px)",
                            "use a smaller --jigsaw-patch or a larger jigsaw crop")

    @property
    def jitter(self) -> tuple[float, float, float, float]:
        """(brightness, contrast, saturation, hue) magnitudes after scaling by x (hue capped at .5)."""
        b, c, s, h = (f * self.jitter_strength for f in self.jitter_factors)
        return b, c, s, min(h, 0.5)


#: named recipes: AugmentConfig overrides. ``mocov2`` is MoCo v2's augmentation (the paper's baseline
#: row "MoCo v2" against "InfoMin Aug."): crop (0.2, 1), flip, colour jitter (0.4, 0.4, 0.4, 0.1) p .8,
#: grayscale p .2, blur sigma U(0.1, 2) p .5, no RandAugment (grayscale and blur are both linear, so
#: their order -- MoCo v2 applies gray first -- does not change the result).
RECIPES: dict[str, dict[str, object]] = {
    "infomin": {},
    "mocov2": {"jitter_factors": (0.4, 0.4, 0.4, 0.1), "randaug_ops": 0},
}


def recipe(name: str, **overrides: object) -> AugmentConfig:
    """The :data:`RECIPES` entry ``name`` with ``overrides`` (size, crop_min, ...) applied."""
    if not isinstance(name, str) or name not in RECIPES:
        raise UserError(f"unknown augmentation recipe {name!r}", f"use one of {', '.join(RECIPES)}")
    return AugmentConfig(**{**RECIPES[name], **overrides})


# ----------------------------------------------------------------------------------------------
# parameter sampling (shared by the fast pipeline and the statistical tests)

def sample_crop(width: int, height: int, scale: tuple[float, float], rng: random.Random,
                ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> Box:
    """torchvision ``RandomResizedCrop.get_params``: area fraction ~ U(scale), log-ratio uniform,
    10 tries, then the central crop clamped to ``ratio``. Returns (left, top, right, bottom)."""
    area = width * height
    log_r = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        r = math.exp(rng.uniform(*log_r))
        w = int(round(math.sqrt(target * r)))
        h = int(round(math.sqrt(target / r)))
        if 0 < w <= width and 0 < h <= height:
            top = rng.randint(0, height - h)
            left = rng.randint(0, width - w)
            return (left, top, left + w, top + h)
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        w, h = width, height
    top, left = (height - h) // 2, (width - w) // 2
    return (left, top, left + w, top + h)


def draft_factor(boxes: list[tuple[Box, int]]) -> int:
    """Largest JPEG reduction (1, 2, 4 or 8) that keeps >= out pixels on each side of every crop.

    ``boxes`` pairs each crop box (source pixels) with its output side length."""
    factor = 8
    for (l, t, r, b), out in boxes:
        side = min(r - l, b - t)
        while factor > 1 and side / factor < out:
            factor //= 2
    return factor


# ----------------------------------------------------------------------------------------------
# colour ops on uint8 RGB arrays (H, W, 3): OpenCV's SIMD kernels, each clipping as Pillow does

Array = np.ndarray  # uint8 (H, W, 3), C-contiguous

_LUMA = (0.299, 0.587, 0.114)
_EYE = np.eye(3)


def _affine_rgb(m: np.ndarray, offset: float) -> np.ndarray:
    """The float32 (3, 4) matrix ``[m | offset]`` that ``cv2.transform`` takes."""
    m34 = np.empty((3, 4), np.float32)
    m34[:, :3] = m
    m34[:, 3] = offset
    return m34


def _transform(v: Array, m: np.ndarray, offset: float = 0.0) -> Array:
    """``m @ rgb + offset`` per pixel, rounded and clipped to 0..255 (one pass)."""
    return cv2.transform(v, _affine_rgb(m, offset))


def gray_mean(v: Array) -> int:
    """Mean of the ITU-R 601 luma, rounded (Pillow's ``ImageEnhance.Contrast`` degenerate level)."""
    r, g, b = cv2.mean(v)[:3]
    return int(_LUMA[0] * r + _LUMA[1] * g + _LUMA[2] * b + 0.5)


def adjust_brightness(v: Array, f: float) -> Array:
    """torchvision/PIL brightness: ``f * x``."""
    return _transform(v, f * _EYE)


def adjust_contrast(v: Array, f: float) -> Array:
    """torchvision/PIL contrast: ``mean + f * (x - mean)``, mean of the grayscale image, rounded."""
    return _transform(v, f * _EYE, (1.0 - f) * gray_mean(v))


def saturation_matrix(f: float) -> np.ndarray:
    """3x3 RGB matrix of ``f * rgb + (1 - f) * luma`` (torchvision's saturation blend)."""
    return f * _EYE + (1 - f) * _LUMA_ROWS


_LUMA_ROWS = np.array([_LUMA] * 3)
_RGB2YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_YIQ2RGB = np.linalg.inv(_RGB2YIQ)


def hue_matrix(h: float) -> np.ndarray:
    """3x3 RGB matrix rotating the chroma (I, Q) plane of YIQ by ``360 * h`` degrees."""
    a = -2 * math.pi * h  # sign chosen so that h > 0 moves HSV hue forward, as torchvision
    rot = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    return _YIQ2RGB @ rot @ _RGB2YIQ


def apply_matrix(v: Array, m: np.ndarray) -> Array:
    return _transform(v, m)


#: a drawn colour jitter: (op, factor) in the order applied; op 0 brightness, 1 contrast, 2 saturation, 3 hue
JitterOps = tuple[tuple[int, float], ...]


def draw_jitter(mags: tuple[float, float, float, float], rng: random.Random) -> JitterOps:
    """torchvision ColorJitter's draw: factors ~ U(max(0, 1-m), 1+m), hue ~ U(-h, h), random order;
    ops of magnitude 0 are left out."""
    order = [0, 1, 2, 3]
    rng.shuffle(order)
    b, c, s, h = mags
    f = (rng.uniform(max(0.0, 1 - b), 1 + b), rng.uniform(max(0.0, 1 - c), 1 + c),
         rng.uniform(max(0.0, 1 - s), 1 + s), rng.uniform(-h, h))
    return tuple((op, f[op]) for op in order if mags[op] > 0)


def jitter_matrix(op: int, f: float) -> np.ndarray:
    """The 3x3 RGB matrix of jitter op ``op`` at factor ``f`` (contrast adds ``(1 - f) * gray_mean``)."""
    if op == 2:
        return saturation_matrix(f)
    if op == 3:
        return hue_matrix(f)
    return f * _EYE


def apply_jitter(v: Array, ops: JitterOps) -> Array:
    """The drawn ops in order, each clipped to 0..255 before the next (as torchvision's)."""
    for op, f in ops:
        v = adjust_contrast(v, f) if op == 1 else apply_matrix(v, jitter_matrix(op, f))
    return v


def color_jitter(v: Array, mags: tuple[float, float, float, float], rng: random.Random) -> Array:
    """torchvision ColorJitter semantics (:func:`draw_jitter`, then :func:`apply_jitter`)."""
    return apply_jitter(v, draw_jitter(mags, rng))


def gaussian_blur(v: Array, sigma: float) -> Array:
    """The Gaussian blur of standard deviation ``sigma`` px (kernel to 3 sigma, reflected border),
    which MoCo v2's / PyContrast's ``ImageFilter.GaussianBlur(sigma)`` approximates by box passes."""
    g = cv2.getGaussianKernel(2 * math.ceil(3 * sigma) + 1, sigma, cv2.CV_32F)
    # separable float filter: GaussianBlur's bit-exact 8-bit path is 1.6-2.6x slower, same result within 1 level
    return cv2.sepFilter2D(v, -1, g, g, borderType=cv2.BORDER_REFLECT_101)


def grayscale(v: Array) -> Array:
    """ITU-R 601 luma in all three channels (torchvision's ``RandomGrayscale``)."""
    return cv2.cvtColor(cv2.cvtColor(v, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)


def whole_pixels(box: Box, width: int, height: int) -> tuple[int, int, int, int]:
    """``box`` rounded to whole pixels inside a ``width`` x ``height`` image, at least 1 px a side."""
    left, top = int(round(box[0])), int(round(box[1]))
    return (left, top, min(width, max(left + 1, int(round(box[2])))), min(height, max(top + 1, int(round(box[3])))))


def resized_crop(v: Array, box: Box, size: tuple[int, int]) -> tuple[Array, Box]:
    """``box`` (rounded to whole pixels) of ``v`` resized to ``size`` (w, h): bilinear with
    antialiasing, Pillow's filter (torch's uint8 kernel). Returns the output and the box used."""
    left, top, right, bottom = used = whole_pixels(box, v.shape[1], v.shape[0])
    t = torch.from_numpy(v[None]).permute(0, 3, 1, 2)[:, :, top:bottom, left:right]
    # a channels-last input (one copy of the box) makes the kernel write channels-last, i.e. (H, W, 3)
    out = F.interpolate(t.contiguous(memory_format=torch.channels_last), size=(size[1], size[0]),
                        mode="bilinear", antialias=True, align_corners=False)
    return np.ascontiguousarray(out[0].permute(1, 2, 0).numpy()), used


# ----------------------------------------------------------------------------------------------
# RandAugment, timm's "rand" op table (as PyContrast uses it), magnitude on a 0..10 scale

def pil_affine(v: Array, coeffs: tuple[float, ...]) -> Array:
    """Pillow's ``Image.transform(AFFINE, coeffs, BILINEAR, fillcolor=FILL)`` by ``cv2.warpAffine``:
    ``coeffs`` map output to input points in Pillow's pixel-edge coordinates."""
    a, b, c, d, e, f = coeffs
    m = np.array([[a, b, a * 0.5 + b * 0.5 + c - 0.5], [d, e, d * 0.5 + e * 0.5 + f - 0.5]], np.float64)
    return cv2.warpAffine(v, m, (v.shape[1], v.shape[0]), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=FILL)


def rotation_coeffs(degrees: float, width: int, height: int) -> tuple[float, ...]:
    """Pillow's ``Image.rotate(degrees)`` as affine coefficients (counter-clockwise about the centre)."""
    a = -math.radians(degrees)
    cx, cy = width / 2, height / 2
    cos, sin = math.cos(a), math.sin(a)
    return (cos, sin, cx - cos * cx - sin * cy, -sin, cos, cy + sin * cx - cos * cy)


def rotate(v: Array, degrees: float) -> Array:
    """Pillow's ``Image.rotate(degrees)`` (counter-clockwise about the centre, same size)."""
    return pil_affine(v, rotation_coeffs(degrees, v.shape[1], v.shape[0]))


def _signed(v: float, rng: random.Random) -> float:
    return -v if rng.random() < 0.5 else v


_LEVELS = np.arange(256)
_POSTERIZE = [(_LEVELS & (0xFF << (8 - bits)) & 0xFF).astype(np.uint8) for bits in range(9)]
_SOLARIZE = [np.where(_LEVELS < t, _LEVELS, 255 - _LEVELS).astype(np.uint8) for t in range(257)]
_SOLARIZE_ADD = [np.where(_LEVELS < 128, np.minimum(255, _LEVELS + add), _LEVELS).astype(np.uint8)
                 for add in range(111)]
_INVERT = (255 - _LEVELS).astype(np.uint8)
SMOOTH = np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]], np.float32) / 13  # Pillow's ImageFilter.SMOOTH

# timm's op table by kind; m is the magnitude on the 0..10 scale, signed for the geometric ops
#: per-level lookup tables (uint8, 256 entries)
LUT_OPS: dict[str, Callable[[float], np.ndarray]] = {
    "Invert": lambda m: _INVERT,
    "Posterize": lambda m: _POSTERIZE[int(m / 10 * 4)],
    "Solarize": lambda m: _SOLARIZE[int(m / 10 * 256)],
    "SolarizeAdd": lambda m: _SOLARIZE_ADD[int(m / 10 * 110)],
}
#: Pillow affine coefficients (output -> input, pixel edges) of a ``width`` x ``height`` image
AFFINE_OPS: dict[str, Callable[[float, int, int], tuple[float, ...]]] = {
    "Rotate": lambda m, w, h: rotation_coeffs(m / 10 * 30, w, h),
    "ShearX": lambda m, w, h: (1, m / 10 * 0.3, 0, 0, 1, 0),
    "ShearY": lambda m, w, h: (1, 0, 0, m / 10 * 0.3, 1, 0),
    "TranslateXRel": lambda m, w, h: (1, 0, m / 10 * 0.45 * w, 0, 1, 0),
    "TranslateYRel": lambda m, w, h: (1, 0, 0, 0, 1, m / 10 * 0.45 * h),
}
#: ImageEnhance ops, factor ``m / 10 * 1.8 + 0.1``
ENHANCE_OPS = ("Color", "Contrast", "Brightness", "Sharpness")
#: Pillow ImageOps histogram ops
HISTOGRAM_OPS = ("AutoContrast", "Equalize")


def enhance_factor(m: float) -> float:
    return m / 10 * 1.8 + 0.1


def sharpness(v: Array, f: float) -> Array:
    """Pillow's ``ImageEnhance.Sharpness``: a blend of the image and its SMOOTH filter (outer pixel
    ring left as is, as Pillow's 3x3 filters do), factor ``f``."""
    smooth = v.copy()
    smooth[1:-1, 1:-1] = cv2.filter2D(v, -1, SMOOTH)[1:-1, 1:-1]
    return cv2.addWeighted(v, f, smooth, 1.0 - f, 0.0)


def _histograms(v: Array) -> list[np.ndarray]:
    """Each channel's 256-bin histogram (int64)."""
    return [cv2.calcHist([v], [c], None, [256], [0, 256]).reshape(256).astype(np.int64) for c in range(3)]


def _channel_luts(v: Array, luts: list[np.ndarray]) -> Array:
    return cv2.LUT(v, np.stack(luts, axis=1)[None].astype(np.uint8))  # (1, 256, 3): one table per channel


def autocontrast(v: Array, _m: float = 0.0) -> Array:
    """Pillow's ``ImageOps.autocontrast`` (cutoff 0): per channel, ``int(x * scale - lo * scale)``
    clipped, ``scale = 255 / (hi - lo)``; a flat channel is left as is."""
    luts = []
    for h in _histograms(v):
        present = np.flatnonzero(h)
        lo, hi = int(present[0]), int(present[-1])
        if hi <= lo:
            luts.append(_LEVELS)
            continue
        scale = 255.0 / (hi - lo)
        luts.append(np.clip(np.trunc(_LEVELS * scale + -lo * scale), 0, 255))
    return _channel_luts(v, luts)


def equalize(v: Array, _m: float = 0.0) -> Array:
    """Pillow's ``ImageOps.equalize``: per channel, ``lut[i] = (step // 2 + #pixels below i) // step``,
    ``step = (#pixels - #pixels at the top level) // 255``; identity where step is 0."""
    luts = []
    for h in _histograms(v):
        step = (int(h.sum()) - int(h[np.flatnonzero(h)[-1]])) // 255
        if step == 0:
            luts.append(_LEVELS)
            continue
        below = np.cumsum(h) - h
        luts.append(np.minimum((step // 2 + below) // step, 255))
    return _channel_luts(v, luts)


#: the ImageEnhance ops that are colour-jitter ops (:func:`jitter_matrix`); Sharpness is the other
ENHANCE_JITTER_OP = {"Brightness": 0, "Contrast": 1, "Color": 2}


def _enhance(name: str) -> Callable[[Array, float], Array]:
    if name in ENHANCE_JITTER_OP:
        return lambda v, m: apply_jitter(v, ((ENHANCE_JITTER_OP[name], enhance_factor(m)),))
    return lambda v, m: sharpness(v, enhance_factor(m))


#: the fifteen ops on uint8 arrays: ``op(v, m)``
RANDAUG_OPS: dict[str, Callable[[Array, float], Array]] = {
    "AutoContrast": autocontrast,
    "Equalize": equalize,
    **{n: (lambda lut: lambda v, m: cv2.LUT(v, lut(m)))(f) for n, f in LUT_OPS.items()},
    **{n: _enhance(n) for n in ENHANCE_OPS},
    **{n: (lambda co: lambda v, m: pil_affine(v, co(m, v.shape[1], v.shape[0])))(f) for n, f in AFFINE_OPS.items()},
}
_RANDAUG_NAMES = ("AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "SolarizeAdd", "Color",
                  "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel")
assert set(_RANDAUG_NAMES) == set(RANDAUG_OPS)

#: a drawn RandAugment: (op name, magnitude) per op applied, in order
RandAugOps = tuple[tuple[str, float], ...]


def draw_rand_augment(cfg: AugmentConfig, rng: random.Random) -> RandAugOps:
    """``cfg.randaug_ops`` ops drawn with replacement; each applied with p ``cfg.randaug_p`` at
    magnitude ~ N(m, std) clipped to [0, 10], negated with p .5 for the geometric ops (timm
    ``RandAugment`` semantics, timm's draw order)."""
    ops = []
    for _ in range(cfg.randaug_ops):
        name = rng.choice(_RANDAUG_NAMES)
        if rng.random() >= cfg.randaug_p:
            continue
        mag = min(10.0, max(0.0, rng.gauss(cfg.randaug_magnitude, cfg.randaug_std)))
        ops.append((name, _signed(mag, rng) if name in AFFINE_OPS else mag))
    return tuple(ops)


def apply_rand_augment(v: Array, ops: RandAugOps) -> Array:
    for name, mag in ops:
        v = RANDAUG_OPS[name](v, mag)
    return v


# ----------------------------------------------------------------------------------------------
# the pipeline

def to_uint8_tensor(v: Array) -> torch.Tensor:
    """uint8 array (H, W, 3) -> uint8 tensor (3, H, W), a view (channels-last strides, no copy)."""
    return torch.from_numpy(v).permute(2, 0, 1)


_MEAN_STD_255 = (torch.tensor(IMAGENET_MEAN).view(3, 1, 1) * 255, torch.tensor(IMAGENET_STD).view(3, 1, 1) * 255)
_MEAN_STD_ON: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}


def mean_std_on(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The (3, 1, 1) mean and std in 0..255 on ``device``, copied there once per device."""
    found = _MEAN_STD_ON.get(device)
    if found is None:
        found = _MEAN_STD_ON[device] = (_MEAN_STD_255[0].to(device), _MEAN_STD_255[1].to(device))
    return found


def normalize(x: torch.Tensor) -> torch.Tensor:
    """uint8 (..., 3, H, W) on any device -> float32 ImageNet-normalised. Run it on the accelerator."""
    mean, std = mean_std_on(x.device)
    return (x.float() - mean) / std


@dataclass
class ViewParams:
    """What was drawn for one view: the crop box (whole pixels of the decoded image; in
    :attr:`InfoMinAugment.last_trace`, of the upright picture), flip, colour jitter (``None``: not
    applied), blur sigma (0: no blur), RandAugment ops and grayscale."""

    box: Box
    flip: bool
    jitter_ops: JitterOps | None
    sigma: float
    randaug: RandAugOps
    gray: bool

    @property
    def jitter(self) -> bool:
        return self.jitter_ops is not None

    @property
    def blur(self) -> bool:
        return self.sigma > 0


@dataclass
class JigsawParams:
    """What was drawn for the JigSaw branch: crop box (whole pixels of the decoded image), flip,
    each patch's top-left corner (y, x) in the resized crop in patch order, and ``perm[k]``: the grid
    cell (row-major) of the k-th patch."""

    box: Box
    flip: bool
    corners: tuple[tuple[int, int], ...]
    perm: tuple[int, ...]


@dataclass
class SampleParams:
    """Everything drawn for one sample: its two views and, with ``cfg.jigsaw``, the JigSaw branch."""

    views: tuple[ViewParams, ViewParams]
    jigsaw: JigsawParams | None


def draw_view(cfg: AugmentConfig, box: Box, rng: random.Random) -> ViewParams:
    """One view's parameters, in the recipe's order (flip, jitter, blur, RandAugment, grayscale)."""
    flip = rng.random() < cfg.flip_p
    jitter = draw_jitter(cfg.jitter, rng) if rng.random() < cfg.jitter_p else None
    sigma = rng.uniform(*cfg.blur_sigma) if rng.random() < cfg.blur_p else 0.0
    randaug = draw_rand_augment(cfg, rng)
    return ViewParams(box, flip, jitter, sigma, randaug, rng.random() < cfg.gray_p)


def draw_jigsaw(cfg: AugmentConfig, box: Box, rng: random.Random) -> JigsawParams:
    """The JigSaw branch's flip, a random patch offset in each grid cell, a uniformly random order."""
    cell, p, g = cfg.jigsaw_size // cfg.jigsaw_grid, cfg.jigsaw_patch, cfg.jigsaw_grid
    flip = rng.random() < cfg.flip_p
    corners = []
    for k in range(g * g):
        r, c = divmod(k, g)
        corners.append((r * cell + rng.randint(0, cell - p), c * cell + rng.randint(0, cell - p)))
    perm = list(range(g * g))
    rng.shuffle(perm)
    return JigsawParams(box, flip, tuple(corners[i] for i in perm), tuple(perm))


def apply_view(img: Array, p: ViewParams, cfg: AugmentConfig) -> Array:
    """The view ``p`` of the decoded image ``img`` (uint8 (S, S, 3))."""
    v, _ = resized_crop(img, p.box, (cfg.size, cfg.size))
    if p.flip:
        v = cv2.flip(v, 1)
    if p.jitter_ops is not None:
        v = apply_jitter(v, p.jitter_ops)
    if p.sigma > 0:
        v = gaussian_blur(v, p.sigma)
    v = apply_rand_augment(v, p.randaug)
    return grayscale(v) if p.gray else v


def apply_jigsaw(img: Array, p: JigsawParams, cfg: AugmentConfig) -> dict[str, torch.Tensor]:
    """The ``jigsaw_size`` crop (resized once, flipped or not), its patches sliced at ``p.corners``."""
    size, ps = cfg.jigsaw_size, cfg.jigsaw_patch
    crop, _ = resized_crop(img, p.box, (size, size))
    if p.flip:
        crop = cv2.flip(crop, 1)  # (a negative-stride view would make the slicing below 9x slower)
    stacked = np.stack([crop[y:y + ps, x:x + ps] for y, x in p.corners])  # (9, P, P, 3)
    return {"jigsaw": torch.from_numpy(stacked).permute(0, 3, 1, 2),
            "perm": torch.tensor(p.perm, dtype=torch.int64)}


class InfoMinAugment:
    """Callable: image file -> ``{"views": uint8 (2, 3, S, S), ["jigsaw": uint8 (9, 3, P, P),
    "perm": int64 (9,)]}``; ``perm[k]`` is the grid cell (row-major) of the k-th patch. The tensors
    have channels-last strides (the batch's collation is their one copy).

    :meth:`draw` (decode + every random draw) and the ``apply_*`` functions are the two halves;
    :mod:`pretrain.augment_batched` runs the second half on batches on the training device."""

    def __init__(self, cfg: AugmentConfig = AugmentConfig()) -> None:
        self.cfg = cfg
        self.last_trace: list[ViewParams] = []
        self.last_decode_size: tuple[int, int] = (0, 0)  # (width, height) actually decoded

    def draw(self, fp: str | BinaryIO, rng: random.Random) -> tuple[Array, SampleParams]:
        """Decode (reduced-size where every crop allows) and draw the sample's parameters; boxes in
        whole pixels of the decoded image. Sets :attr:`last_trace` (boxes in upright pixels)."""
        cfg = self.cfg
        with EncodedImage(fp) as src:
            width, height = src.size  # crops are drawn on the upright picture
            boxes = [sample_crop(width, height, (cfg.crop_min, 1.0), rng) for _ in range(2)]
            wanted = [(b, cfg.size) for b in boxes]
            jig_box = None
            if cfg.jigsaw:
                jig_box = sample_crop(width, height, (cfg.jigsaw_crop_min, 1.0), rng)
                wanted.append((jig_box, cfg.jigsaw_size))
            img = src.decode(draft_factor(wanted))
        h, w = img.shape[:2]
        self.last_decode_size = (w, h)
        sx, sy = w / width, h / height

        def decoded(box: Box) -> Box:
            return whole_pixels((box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy), w, h)

        v1, v2 = (draw_view(cfg, decoded(b), rng) for b in boxes)
        jig = draw_jigsaw(cfg, decoded(jig_box), rng) if jig_box is not None else None
        self.last_trace = [dataclasses.replace(v, box=(v.box[0] / sx, v.box[1] / sy, v.box[2] / sx, v.box[3] / sy))
                           for v in (v1, v2)]
        return img, SampleParams((v1, v2), jig)

    def __call__(self, fp: str | BinaryIO, rng: random.Random) -> dict[str, torch.Tensor]:
        img, p = self.draw(fp, rng)
        out = {"views": torch.from_numpy(np.stack([apply_view(img, v, self.cfg) for v in p.views])).permute(0, 3, 1, 2)}
        if p.jigsaw is not None:
            out.update(apply_jigsaw(img, p.jigsaw, self.cfg))
        return out


# ----------------------------------------------------------------------------------------------
# the baseline: a plain torchvision-transforms composition of the same recipe (PIL, like PyContrast)

def torchvision_reference(cfg: AugmentConfig = AugmentConfig()) -> Callable[[Image.Image], torch.Tensor]:
    """One view as PyContrast builds it, from torchvision parts only: float output, normalised.

    torchvision has no RandAugment magnitude std / per-op probability; ``RandAugment(2, 30, 31
    bins)`` is the closest (same maxima: 30 deg, shear .3, translate .45, enhance .9). Blur is
    ``GaussianBlur(23)`` (PyContrast: a 23x23 separable kernel at 224 px).
    """
    import torchvision.transforms as T
    b, c, s, h = cfg.jitter
    return T.Compose([
        T.RandomResizedCrop(cfg.size, scale=(cfg.crop_min, 1.0)),
        T.RandomHorizontalFlip(cfg.flip_p),
        T.RandomApply([T.ColorJitter(b, c, s, h)], p=cfg.jitter_p),
        T.RandomApply([T.GaussianBlur(23, cfg.blur_sigma)], p=cfg.blur_p),
        T.RandAugment(cfg.randaug_ops, 30, 31),
        T.RandomGrayscale(cfg.gray_p),
        T.ToTensor(),
        T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def torchvision_jigsaw(cfg: AugmentConfig = AugmentConfig()) -> Callable[[Image.Image], torch.Tensor]:
    """JigSaw branch from torchvision parts (RRC 255 + flip + ToTensor/Normalize + 9 random crops)."""
    import torchvision.transforms as T
    crop = T.Compose([T.RandomResizedCrop(cfg.jigsaw_size, scale=(cfg.jigsaw_crop_min, 1.0)),
                      T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    cell, p, g = cfg.jigsaw_size // cfg.jigsaw_grid, cfg.jigsaw_patch, cfg.jigsaw_grid

    def run(img: Image.Image) -> torch.Tensor:
        x = crop(img)
        patches = []
        for k in torch.randperm(g * g).tolist():
            r, c = divmod(k, g)
            y = r * cell + int(torch.randint(0, cell - p + 1, ()))
            xx = c * cell + int(torch.randint(0, cell - p + 1, ()))
            patches.append(x[:, y:y + p, xx:xx + p])
        return torch.stack(patches)
    return run
