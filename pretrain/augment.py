"""The InfoMin augmentation (the paper, §C.1): a fast uint8 pipeline and a plain torchvision reference.

Recipe, per view (same order as PyContrast): RandomResizedCrop(size, scale=(c, 1), ratio 3/4..4/3)
-> horizontal flip p .5 -> colour jitter ``factors * x`` p .8 (brightness, contrast, saturation, hue
in random order) -> Gaussian blur sigma ~ U(0.1, 2.0) p .5 -> RandAugment (2 ops, magnitude
N(10, 0.5) clipped to [0, 10], each op applied with p .5, timm's "rand-m10-n2-mstd0.5" op table)
-> grayscale p .2. Optional JigSaw branch: RandomResizedCrop(255, scale=(0.6, 1)) + flip, a 3x3
grid of 85-px cells, a 64-px patch at a random offset in each cell, patches in a uniformly random
order (the permutation is returned).

Fast pipeline (:class:`InfoMinAugment`), same family and parameter distributions:

* one decode per sample (:func:`pretrain.decode.to_rgb`: every Pillow mode as 8-bit RGB, EXIF
  orientation applied), for JPEG reduced-size (``PIL.Image.draft``, 1/2, 1/4, 1/8) when every crop of
  the sample still has >= ``size`` source pixels on both sides after the reduction;
* crop + resize in one PIL call (``resize(box=...)``: bilinear with antialiasing, as torchvision);
* brightness / contrast / saturation as one-pass RGB affine matrices in C (exact: brightness
  ``f*x``, contrast ``m + f*(x - m)``, saturation a blend with the ITU-R 601 luma);
  **hue as a rotation of the chroma plane in YIQ** (a 3x3 matrix, 10x cheaper than torchvision's
  HSV round trip; the hue angle is 360*h degrees, luma is kept, the parameter h
  has torchvision's distribution U(-hue, hue)) -- an approximation of the HSV hue shift;
* blur with Pillow's ``GaussianBlur`` (three box passes, the "extended box blur" approximation of a
  true Gaussian of the same sigma) for sigma >= 1, an exact 3x3 / 5x5 Gaussian below, where the
  box approximation over-blurs (see :func:`gaussian_blur`; ``tests/test_augment_stats.py`` bounds both);
* JigSaw patches resized straight from the source (no intermediate 255-px image);
* output ``uint8`` tensors (3, H, W); normalisation happens on the device (:func:`normalize`).

Randomness comes from one ``random.Random`` per call, so a (seed, epoch, index) triple gives the same
views on every run (resume reproduces batches exactly).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import BinaryIO, Callable

import numpy as np
import torch
from PIL import Image, ImageFilter, ImageOps

from infomin_det.errors import UserError
from pretrain.decode import oriented_size, to_rgb

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
# colour ops on PIL RGB images (uint8)

_LUMA = (0.299, 0.587, 0.114)


def _affine_matrix(scale: float, offset: float) -> tuple[float, ...]:
    """PIL 12-tuple for ``scale * rgb + offset`` per channel (clipped to 0..255 by PIL)."""
    return (scale, 0.0, 0.0, offset, 0.0, scale, 0.0, offset, 0.0, 0.0, scale, offset)


def adjust_brightness(img: Image.Image, f: float) -> Image.Image:
    """torchvision/PIL brightness: ``f * x`` (one C pass, no Python-side LUT)."""
    return img.convert("RGB", _affine_matrix(f, 0.0))


def adjust_contrast(img: Image.Image, f: float) -> Image.Image:
    """torchvision/PIL contrast: ``mean + f * (x - mean)``, mean of the grayscale image, rounded."""
    hist = img.convert("L").histogram()
    mean = int(sum(i * n for i, n in enumerate(hist)) / max(1, sum(hist)) + 0.5)
    return img.convert("RGB", _affine_matrix(f, (1.0 - f) * mean))


def _matrix(m: np.ndarray) -> tuple[float, ...]:
    return tuple(float(v) for row in m for v in (*row, 0.0))


def saturation_matrix(f: float) -> np.ndarray:
    """3x3 RGB matrix of ``f * rgb + (1 - f) * luma`` (torchvision's saturation blend)."""
    return f * np.eye(3) + (1 - f) * np.tile(np.array(_LUMA), (3, 1))


_RGB2YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_YIQ2RGB = np.linalg.inv(_RGB2YIQ)


def hue_matrix(h: float) -> np.ndarray:
    """3x3 RGB matrix rotating the chroma (I, Q) plane of YIQ by ``360 * h`` degrees."""
    a = -2 * math.pi * h  # sign chosen so that h > 0 moves HSV hue forward, as torchvision
    rot = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    return _YIQ2RGB @ rot @ _RGB2YIQ


def apply_matrix(img: Image.Image, m: np.ndarray) -> Image.Image:
    return img.convert("RGB", _matrix(m))


def color_jitter(img: Image.Image, mags: tuple[float, float, float, float],
                 rng: random.Random) -> Image.Image:
    """torchvision ColorJitter semantics: factors ~ U(max(0, 1-m), 1+m), hue ~ U(-h, h), random order."""
    b, c, s, h = mags
    order = [0, 1, 2, 3]
    rng.shuffle(order)
    fb = rng.uniform(max(0.0, 1 - b), 1 + b)
    fc = rng.uniform(max(0.0, 1 - c), 1 + c)
    fs = rng.uniform(max(0.0, 1 - s), 1 + s)
    fh = rng.uniform(-h, h)
    for op in order:
        if op == 0 and b > 0:
            img = adjust_brightness(img, fb)
        elif op == 1 and c > 0:
            img = adjust_contrast(img, fc)
        elif op == 2 and s > 0:
            img = apply_matrix(img, saturation_matrix(fs))
        elif op == 3 and h > 0:
            img = apply_matrix(img, hue_matrix(fh))
    return img


def _gaussian_kernel(sigma: float, radius: int) -> ImageFilter.Kernel:
    g = [math.exp(-x * x / (2 * sigma * sigma)) for x in range(-radius, radius + 1)]
    total = sum(g) ** 2
    return ImageFilter.Kernel((2 * radius + 1,) * 2, [a * b / total for a in g for b in g], scale=1)


def gaussian_blur(img: Image.Image, sigma: float) -> Image.Image:
    """Gaussian blur with standard deviation ``sigma`` px, cheaply, within ~4 % of the exact blur.

    sigma >= 1: Pillow's ``GaussianBlur`` (three box passes of the same variance; linear time in
    any sigma). Below 1, where that approximation over-blurs (14 % off at sigma 0.6), the exact
    Gaussian truncated to 3x3 (sigma < 0.6) or 5x5 (< 1.0); there Pillow leaves the outer 1 / 2 px
    of the image unfiltered. Mean error relative to the blur's own effect (tests): <= 4 %.
    """
    if sigma >= 1.0:
        return img.filter(ImageFilter.GaussianBlur(sigma))
    return img.filter(_gaussian_kernel(sigma, 1 if sigma < 0.6 else 2))


# ----------------------------------------------------------------------------------------------
# RandAugment, timm's "rand" op table (as PyContrast uses it), magnitude on a 0..10 scale

def _affine(img: Image.Image, coeffs: tuple[float, ...]) -> Image.Image:
    return img.transform(img.size, Image.Transform.AFFINE, coeffs, resample=Image.Resampling.BILINEAR,
                         fillcolor=FILL)


def _signed(v: float, rng: random.Random) -> float:
    return -v if rng.random() < 0.5 else v


def _blend_gray(img: Image.Image, f: float) -> Image.Image:
    return apply_matrix(img, saturation_matrix(f))


def _sharpness(img: Image.Image, f: float) -> Image.Image:
    return Image.blend(img.filter(ImageFilter.SMOOTH), img, f)


RANDAUG_OPS: dict[str, Callable[[Image.Image, float, random.Random], Image.Image]] = {
    "AutoContrast": lambda im, m, r: ImageOps.autocontrast(im),
    "Equalize": lambda im, m, r: ImageOps.equalize(im),
    "Invert": lambda im, m, r: ImageOps.invert(im),
    "Rotate": lambda im, m, r: im.rotate(_signed(m / 10 * 30, r), resample=Image.Resampling.BILINEAR,
                                         fillcolor=FILL),
    "Posterize": lambda im, m, r: ImageOps.posterize(im, int(m / 10 * 4)) if int(m / 10 * 4) < 8 else im,
    "Solarize": lambda im, m, r: ImageOps.solarize(im, int(m / 10 * 256)),
    "SolarizeAdd": lambda im, m, r: im.point(_SOLARIZE_ADD[int(m / 10 * 110)]),
    "Color": lambda im, m, r: _blend_gray(im, m / 10 * 1.8 + 0.1),
    "Contrast": lambda im, m, r: adjust_contrast(im, m / 10 * 1.8 + 0.1),
    "Brightness": lambda im, m, r: adjust_brightness(im, m / 10 * 1.8 + 0.1),
    "Sharpness": lambda im, m, r: _sharpness(im, m / 10 * 1.8 + 0.1),
    "ShearX": lambda im, m, r: _affine(im, (1, _signed(m / 10 * 0.3, r), 0, 0, 1, 0)),
    "ShearY": lambda im, m, r: _affine(im, (1, 0, 0, _signed(m / 10 * 0.3, r), 1, 0)),
    "TranslateXRel": lambda im, m, r: _affine(im, (1, 0, _signed(m / 10 * 0.45, r) * im.width, 0, 1, 0)),
    "TranslateYRel": lambda im, m, r: _affine(im, (1, 0, 0, 0, 1, _signed(m / 10 * 0.45, r) * im.height)),
}
_RANDAUG_NAMES = tuple(RANDAUG_OPS)
_SOLARIZE_ADD = [[min(255, i + add) if i < 128 else i for i in range(256)] * 3 for add in range(111)]


def rand_augment(img: Image.Image, cfg: AugmentConfig, rng: random.Random) -> Image.Image:
    """``cfg.randaug_ops`` ops drawn with replacement; each applied with p ``cfg.randaug_p`` at
    magnitude ~ N(m, std) clipped to [0, 10] (timm ``RandAugment`` semantics)."""
    for _ in range(cfg.randaug_ops):
        name = rng.choice(_RANDAUG_NAMES)
        if rng.random() >= cfg.randaug_p:
            continue
        mag = min(10.0, max(0.0, rng.gauss(cfg.randaug_magnitude, cfg.randaug_std)))
        img = RANDAUG_OPS[name](img, mag, rng)
    return img


# ----------------------------------------------------------------------------------------------
# the pipeline

def to_uint8_tensor(img: Image.Image) -> torch.Tensor:
    """PIL RGB -> uint8 tensor (3, H, W), no copy beyond numpy's."""
    return torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1)


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
class ViewTrace:
    """What was drawn for one view (for statistical tests): crop box in source pixels and flags."""

    box: Box
    flip: bool
    jitter: bool
    blur: bool
    sigma: float
    gray: bool


class InfoMinAugment:
    """Callable: image file -> ``{"views": uint8 (2, 3, S, S), ["jigsaw": uint8 (9, 3, P, P),
    "perm": int64 (9,)]}``; ``perm[k]`` is the grid cell (row-major) of the k-th patch."""

    def __init__(self, cfg: AugmentConfig = AugmentConfig()) -> None:
        self.cfg = cfg
        self.last_trace: list[ViewTrace] = []
        self.last_decode_size: tuple[int, int] = (0, 0)  # (width, height) actually decoded

    def __call__(self, fp: str | BinaryIO, rng: random.Random) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        with Image.open(fp) as src:
            width, height = oriented_size(src)  # crops are drawn on the upright picture
            boxes = [sample_crop(width, height, (cfg.crop_min, 1.0), rng) for _ in range(2)]
            wanted = [(b, cfg.size) for b in boxes]
            jig_box = None
            if cfg.jigsaw:
                jig_box = sample_crop(width, height, (cfg.jigsaw_crop_min, 1.0), rng)
                wanted.append((jig_box, cfg.jigsaw_size))
            factor = draft_factor(wanted) if src.format == "JPEG" else 1
            if factor > 1:
                src.draft("RGB", (math.ceil(src.width / factor), math.ceil(src.height / factor)))
            img = to_rgb(src)
        self.last_decode_size = img.size
        sx, sy = img.width / width, img.height / height
        self.last_trace = []
        views = [self._view(img, (l * sx, t * sy, r * sx, b * sy), rng) for l, t, r, b in boxes]
        out = {"views": torch.stack(views)}
        if jig_box is not None:
            l, t, r, b = jig_box
            out.update(self._jigsaw(img, (l * sx, t * sy, r * sx, b * sy), rng))
        for tr, box in zip(self.last_trace, boxes):
            tr.box = box
        return out

    def _view(self, img: Image.Image, box: Box, rng: random.Random) -> torch.Tensor:
        cfg = self.cfg
        v = img.resize((cfg.size, cfg.size), Image.Resampling.BILINEAR, box=box)
        flip = rng.random() < cfg.flip_p
        if flip:
            v = v.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        jitter = rng.random() < cfg.jitter_p
        if jitter:
            v = color_jitter(v, cfg.jitter, rng)
        blur = rng.random() < cfg.blur_p
        sigma = rng.uniform(*cfg.blur_sigma) if blur else 0.0
        if blur:
            v = gaussian_blur(v, sigma)
        v = rand_augment(v, cfg, rng)
        gray = rng.random() < cfg.gray_p
        if gray:
            v = v.convert("L").convert("RGB")
        self.last_trace.append(ViewTrace(box, flip, jitter, blur, sigma, gray))
        return to_uint8_tensor(v)

    def _jigsaw(self, img: Image.Image, box: Box, rng: random.Random) -> dict[str, torch.Tensor]:
        """Patches of the (virtual) ``jigsaw_size`` crop, each resized straight from the source:
        the same pixels as resizing the whole crop and slicing (within rounding), ~2x cheaper."""
        cfg = self.cfg
        size, cell, p, g = cfg.jigsaw_size, cfg.jigsaw_size // cfg.jigsaw_grid, cfg.jigsaw_patch, cfg.jigsaw_grid
        flip = rng.random() < cfg.flip_p
        sx, sy = (box[2] - box[0]) / size, (box[3] - box[1]) / size
        patches = []
        for k in range(g * g):
            r, c = divmod(k, g)
            y = r * cell + rng.randint(0, cell - p)
            x = c * cell + rng.randint(0, cell - p)
            x0 = size - x - p if flip else x  # column in the unflipped crop
            src = (box[0] + x0 * sx, box[1] + y * sy, box[0] + (x0 + p) * sx, box[1] + (y + p) * sy)
            patch = img.resize((p, p), Image.Resampling.BILINEAR, box=src)
            patches.append(np.asarray(patch.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if flip else patch))
        perm = list(range(g * g))
        rng.shuffle(perm)
        stacked = np.stack([patches[i] for i in perm])  # (9, P, P, 3)
        return {"jigsaw": torch.from_numpy(stacked).permute(0, 3, 1, 2),
                "perm": torch.tensor(perm, dtype=torch.int64)}


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
