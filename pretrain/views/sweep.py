"""Vary one view parameter; per value pretrain (CMC-style InfoNCE), measure I_NCE and linear accuracy.

Owns the paper's I_NCE-vs-accuracy experiment (appendix §B.1-B.3, Figure 1, the "reverse U") at CPU
scale: the view-family registry (:data:`VIEW_FAMILIES`, :func:`register_view_family`), the typed
:class:`SweepSpec`, :func:`run_sweep` and its outputs ``sweep.csv`` / ``sweep.json`` / ``sweep.png``.

Families (``infomin-det sweep --list``)::

    frequency       sigma (px)   v1 = Blur(x, sigma), v2 = x - v1               two encoders (CMC)
    crop            c (area)     two RandomResizedCrop(scale=(c, 1)) of x       one shared encoder
    jitter          x (strength) ColorJitter(.8x, .8x, .8x, .2x) p .8 per view  one shared encoder
    patch-distance  d (px)       two 64-px patches d apart in a 2k photo       one shared encoder

Only the varied factor makes two views differ (no flip, blur or other augmentation on top), so the
views' shared information moves with the parameter alone. Views are float, ImageNet-normalised
(``pretrain.augment.normalize``); the frequency split is taken of the normalised image.

Per (value, seed) point:

1. **pretrain** TinyAlexNet encoder(s) (:mod:`pretrain.views.encoders`, 128-d embedding) with the
   symmetric intra-batch InfoNCE of :func:`pretrain.views.infonce.info_nce` for ``steps`` steps of
   ``batch_size`` pairs drawn (epoch-wise shuffled) from the labelled set's TRAIN images, labels
   unused (patch-distance: pairs from the train photos, see below). Optimiser: **AdamW** (lr
   ``lr``, weight decay ``weight_decay``), linear warm-up over the first 5% of steps, then cosine
   to 0 -- Adam rather than CMC's SGD(0.03, momentum .9) since the budget is a few hundred steps,
   not CMC's 3000 epochs (a choice for speed of convergence, not tuned against SGD).
   Encoder initialisation depends on the seed only, so the values of one seed are paired.
2. **I_NCE** on the VAL images: encoders in eval mode, the val set cut into ``n_val // K`` fixed
   batches of K = min(batch_size, n_val) pairs (fixed order and fixed view randomness, the same for
   every point), ``I_NCE = log K - loss`` averaged over the batches (nats). The estimate is a lower
   bound on I(v1; v2) that can never exceed ``log K`` (loss >= 0): points near ``log_k`` are
   saturated, not equal. It can be negative for a barely trained encoder (loss above log K). The
   val top-1 pair-retrieval accuracy of the same batches is recorded too.
3. **linear evaluation** (also of the same encoders before training: ``init_linear_top1``, the
   random-feature reference drawn as a dotted line in the plot): frozen ``features()`` (128-d, pooled) of the deterministic evaluation
   views -- frequency: [low, high] of the unaugmented image, features of the two encoders
   concatenated (256-d); other families: the unaugmented image -- for all train and val images;
   standardised with the train mean / std; a softmax-regression classifier trained full-batch with
   L-BFGS (strong-Wolfe line search, ``probe_steps`` iterations, L2 penalty ``probe_weight_decay``
   on the weights; convex, so the result does not depend on the optimiser's path); top-1 (%) on val.

patch-distance pretrains on patch pairs of the high-resolution photos of
:func:`infomin_det.data.photos.photos` (decoded with the long side reduced to
:data:`PHOTO_MAX_SIDE` px, DIV2K-like "2k"; patch side = ``image_size``; d in those pixels), keeping
only photos where a pair at the sweep's largest d has coverage >= .5 (``pretrain.views.spatial``).
Photos used as val backgrounds of the labelled set are held out: its I_NCE is measured on pairs of
those. Linear evaluation is on the labelled set like every family.

Cost at the defaults (64 px, 600 steps x 64 pairs, 150 + 50 images per class), one torch thread:
~110 s per frequency point (two encoders), ~80-90 s per crop / jitter point, + ~5 s of evaluation;
the labelled set is built once (~1 min) and cached. A 5-value, 1-seed sweep: ~7-10 min.

Outputs in ``out`` (each written atomically): ``points/<family>_<value>_seed<s>.json`` as each point
finishes (a rerun with the same training settings skips points already there: resume, or extend a
sweep with more values / seeds), then ``sweep.csv`` (a row per point), ``sweep.json`` (spec, rows,
per-value mean / std over seeds -- sample std, 0 for one seed) and ``sweep.png`` (x: I_NCE, y: linear
top-1, one marker per value at the seed mean with std error bars, annotated, joined in parameter
order). Never imports detectron2.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from infomin_det.atomic import atomic_write, write_text_atomic
from infomin_det.errors import UserError
from pretrain.augment import color_jitter, normalize, sample_crop
from pretrain.views.encoders import TinyAlexNet, tiny_alexnet
from pretrain.views.frequency import frequency_split
from pretrain.views.infonce import info_nce

Views = tuple[torch.Tensor, torch.Tensor]
MakeViews = Callable[[Any, torch.Generator], Views]
PHOTO_MAX_SIDE = 2048  # patch-distance photos are decoded with the long side reduced to this (px)
POINT_FORMAT = 1  # bump when a point's row changes meaning (part of ``SweepSpec.point_key``)
EVAL_VIEW_SEED = 12345  # fixed view randomness of the I_NCE batches (same for every point)
CSV_FIELDS = ("family", "param", "value", "seed", "i_nce", "log_k", "k", "val_contrast_acc",
              "linear_top1", "init_linear_top1", "train_seconds", "seconds")


# ------------------------------------------------------------------------------------------------
# view families (registry)

class ViewFamily:
    """One way of making two views, varied by one number. Subclass, set the class attributes,
    implement :meth:`make_views`, and register with ``@register_view_family("name")``.

    ``make_views(value)`` returns ``views(batch, generator) -> (v1, v2)``: ``batch`` uint8
    (B, 3, H, W) (patch-distance: a list of B PIL photos), v1 / v2 float (B, C, S, S),
    ImageNet-normalised. ``eval_views(value)`` returns the deterministic views linear evaluation
    reads, one per encoder. ``shared_encoder``: one encoder for both views (same modality) or two.
    """

    name: ClassVar[str] = ""
    param: ClassVar[str] = ""
    unit: ClassVar[str] = ""
    defaults: ClassVar[tuple[float, ...]] = ()
    shared_encoder: ClassVar[bool] = True
    in_channels: ClassVar[tuple[int, int]] = (3, 3)
    source: ClassVar[str] = "labelled"  # what pretraining pairs come from: "labelled" or "photos"
    summary: ClassVar[str] = ""

    def check(self, value: float, image_size: int) -> str | None:
        """Why ``value`` is unusable at ``image_size`` (one line), or None when it is fine."""
        return None if math.isfinite(value) else "not a finite number"

    def make_views(self, value: float, image_size: int = 64) -> MakeViews:
        """``value`` -> ``views(batch, generator)``; ``image_size`` is the sweep's view side (px)."""
        raise NotImplementedError

    def eval_views(self, value: float) -> Callable[[torch.Tensor], list[torch.Tensor]]:
        """uint8 (B, 3, H, W) -> [view per encoder], deterministic (default: the normalised image)."""
        return lambda batch: [normalize(batch)]


VIEW_FAMILIES: dict[str, ViewFamily] = {}


def register_view_family(name: str) -> Callable[[type[ViewFamily]], type[ViewFamily]]:
    """Class decorator: register an instance of the :class:`ViewFamily` subclass under ``name``."""
    def deco(cls: type[ViewFamily]) -> type[ViewFamily]:
        if name in VIEW_FAMILIES:
            raise ValueError(f"view family {name!r} is already registered")
        cls.name = name
        VIEW_FAMILIES[name] = cls()
        return cls
    return deco


def get_family(name: str) -> ViewFamily:
    if name not in VIEW_FAMILIES:
        raise UserError(f"unknown view family {name!r}",
                        f"use one of {', '.join(VIEW_FAMILIES)} (infomin-det sweep --list)")
    return VIEW_FAMILIES[name]


def _py_rng(generator: torch.Generator) -> random.Random:
    """A ``random.Random`` drawn from the torch generator (for the PIL / ``sample_crop`` helpers)."""
    return random.Random(int(torch.randint(0, 2 ** 62, (1,), generator=generator)))


@register_view_family("frequency")
class FrequencyFamily(ViewFamily):
    """The paper's §B.3: v1 = Gaussian blur of the normalised image at sigma px, v2 = x - v1 (v1 + v2 == x)."""

    param, unit = "sigma", "px"
    defaults = (0.3, 0.7, 1.0, 2.0, 4.0)
    shared_encoder = False
    summary = "v1 = Blur(x, sigma), v2 = x - v1"

    def check(self, value: float, image_size: int) -> str | None:
        if not math.isfinite(value) or value <= 0:
            return "sigma must be > 0 px (sigma 0 leaves v2 = 0)"
        if math.ceil(3 * value) >= image_size:
            return f"a blur radius of ceil(3 sigma) = {math.ceil(3 * value)} px needs images larger than {image_size} px"
        return None

    def make_views(self, value: float, image_size: int = 64) -> MakeViews:
        def views(batch: torch.Tensor, generator: torch.Generator) -> Views:
            return frequency_split(normalize(batch), value)
        return views

    def eval_views(self, value: float) -> Callable[[torch.Tensor], list[torch.Tensor]]:
        return lambda batch: list(frequency_split(normalize(batch), value))


def _resized_crop(x: torch.Tensor, box: tuple[int, int, int, int], size: int) -> torch.Tensor:
    """float (C, H, W) -> (C, size, size): bilinear (antialiased) resize of box (l, t, r, b)."""
    l, t, r, b = box
    if (l, t, r, b) == (0, 0, x.shape[2], x.shape[1]) and x.shape[1] == x.shape[2] == size:
        return x
    crop = x[None, :, t:b, l:r]
    return F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0]


@register_view_family("crop")
class CropFamily(ViewFamily):
    """InfoMin §4 / Figure 4(a): two independent RandomResizedCrop(scale=(c, 1), ratio 3/4..4/3)
    of one image, resized back to its size (``pretrain.augment.sample_crop``). c = 1 -> identical views."""

    param, unit = "c", "area fraction"
    defaults = (0.08, 0.2, 0.4, 0.6, 0.8)
    summary = "two RandomResizedCrop(scale=(c, 1)) of one image"

    def check(self, value: float, image_size: int) -> str | None:
        return None if 0 < value <= 1 else "c must lie in (0, 1]"

    def make_views(self, value: float, image_size: int = 64) -> MakeViews:
        def views(batch: torch.Tensor, generator: torch.Generator) -> Views:
            rng = _py_rng(generator)
            x = normalize(batch)
            _, _, h, w = x.shape
            out: list[list[torch.Tensor]] = [[], []]
            for img in x:
                for v in out:
                    l, t, r, b = (int(round(c)) for c in sample_crop(w, h, (value, 1.0), rng))
                    v.append(_resized_crop(img, (l, t, r, b), h))
            return torch.stack(out[0]), torch.stack(out[1])
        return views


def _to_pil(img: torch.Tensor) -> Image.Image:
    return Image.fromarray(img.permute(1, 2, 0).contiguous().numpy(), "RGB")


def _from_pil(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1)


@register_view_family("jitter")
class JitterFamily(ViewFamily):
    """InfoMin Figure 4(b): ColorJitter(0.8x, 0.8x, 0.8x, 0.2x) with p .8, independently per view
    (``pretrain.augment.color_jitter``: torchvision semantics, hue as a YIQ rotation, capped at .5).
    x = 0 -> identical views."""

    param, unit = "x", "jitter strength"
    defaults = (0.25, 0.5, 1.0, 1.5, 2.5)
    summary = "ColorJitter(.8x, .8x, .8x, .2x) p .8, independently per view"

    def check(self, value: float, image_size: int) -> str | None:
        return None if 0 <= value <= 10 else "x must lie in [0, 10]"

    def make_views(self, value: float, image_size: int = 64) -> MakeViews:
        mags = (0.8 * value, 0.8 * value, 0.8 * value, min(0.2 * value, 0.5))

        def views(batch: torch.Tensor, generator: torch.Generator) -> Views:
            rng = _py_rng(generator)
            out: list[list[torch.Tensor]] = [[], []]
            for img in batch:
                for v in out:
                    if rng.random() < 0.8 and value > 0:
                        v.append(_from_pil(color_jitter(_to_pil(img), mags, rng)))
                    else:
                        v.append(img)
            return normalize(torch.stack(out[0])), normalize(torch.stack(out[1]))
        return views


@register_view_family("patch-distance")
class PatchDistanceFamily(ViewFamily):
    """The paper's §B.1: two ``image_size``-px patches whose centres are d px apart in one high-resolution
    photo (``pretrain.views.spatial.PatchPairViews``). ``make_views(d)`` takes a list of PIL photos."""

    param, unit = "d", "px"
    defaults = (64.0, 128.0, 192.0, 256.0, 384.0)
    source = "photos"
    summary = "two image_size-px patches d px apart in a 2k photo"
    max_distance: ClassVar[float] = 1024.0

    def check(self, value: float, image_size: int) -> str | None:
        return None if 0 <= value <= self.max_distance else f"d must lie in [0, {self.max_distance:g}] px"

    def make_views(self, value: float, image_size: int = 64) -> MakeViews:
        from pretrain.views.spatial import PatchPairViews
        pairs = PatchPairViews(image_size, value, min_coverage=0.0)

        def views(batch: Sequence[Image.Image], generator: torch.Generator) -> Views:
            rng = _py_rng(generator)
            v1, v2 = zip(*(pairs(img, rng) for img in batch))
            return normalize(torch.stack(v1)), normalize(torch.stack(v2))
        return views


# ------------------------------------------------------------------------------------------------
# the spec

def _positive(name: str, v: float) -> None:
    if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
        raise UserError(f"{name} must be > 0, got {v}", f"pass a positive --{name.replace('_', '-')}")


@dataclass(frozen=True)
class SweepSpec:
    """One sweep: ``family`` varied over ``values``, each pretrained with ``seeds`` seeds (0..seeds-1).

    Budgets: ``steps`` pretraining steps of ``batch_size`` pairs per point; images ``image_size``
    px; labelled set ``n_train_per_class`` / ``n_val_per_class`` images per class (8 classes,
    data seed ``data_seed``); ``probe_steps`` L-BFGS iterations of the linear probe. ``lr`` (AdamW),
    ``weight_decay``, ``temperature`` (InfoNCE tau). Everything is validated on construction.
    """

    family: str
    values: tuple[float, ...]
    out: str
    image_size: int = 64
    steps: int = 600
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    temperature: float = 0.1
    seeds: int = 1
    n_train_per_class: int = 150
    n_val_per_class: int = 50
    data_seed: int = 0
    probe_steps: int = 100
    probe_weight_decay: float = 1e-3
    feat_dim: int = 128

    # fields that define a point's result (a finished point is reused when these agree)
    _POINT_FIELDS: ClassVar[tuple[str, ...]] = (
        "family", "image_size", "steps", "batch_size", "lr", "weight_decay", "temperature",
        "n_train_per_class", "n_val_per_class", "data_seed", "probe_steps", "probe_weight_decay", "feat_dim")

    def __post_init__(self) -> None:
        fam = get_family(self.family)
        object.__setattr__(self, "values", tuple(float(v) for v in self.values))
        if not self.values:
            raise UserError(f"no values to sweep for {self.family}",
                            f"pass --values, e.g. {','.join(f'{v:g}' for v in fam.defaults)}")
        if len(set(self.values)) != len(self.values):
            raise UserError(f"duplicate values in {', '.join(f'{v:g}' for v in self.values)}",
                            "list each value once (use --seeds for repeats)")
        for v in self.values:
            why = fam.check(v, self.image_size) if math.isfinite(v) else "not a finite number"
            if why:
                raise UserError(f"{self.family} {fam.param}={v:g} is out of range: {why}",
                                f"use values like {','.join(f'{d:g}' for d in fam.defaults)}")
        for name in ("steps", "batch_size", "seeds", "n_train_per_class", "n_val_per_class", "probe_steps",
                     "feat_dim", "lr", "temperature"):
            _positive(name, getattr(self, name))
        for name in ("steps", "batch_size", "seeds", "n_train_per_class", "n_val_per_class", "probe_steps",
                     "feat_dim", "image_size", "data_seed"):
            if int(getattr(self, name)) != getattr(self, name) or isinstance(getattr(self, name), bool):
                raise UserError(f"{name} must be a whole number, got {getattr(self, name)}", f"pass an integer {name}")
        if self.data_seed < 0:
            raise UserError(f"data seed must be >= 0, got {self.data_seed}", "pass --data-seed 0 (or another >= 0)")
        if self.weight_decay < 0 or self.probe_weight_decay < 0:
            raise UserError("weight decays must be >= 0", "pass --weight-decay / --probe-weight-decay >= 0")
        if not 32 <= self.image_size <= 96:
            raise UserError(f"image size {self.image_size} px is outside the encoder's 32..96 px",
                            "use --image-size 64 (the paper's) or 32 for a quick run")
        if self.batch_size < 2:
            raise UserError(f"batch size {self.batch_size} leaves no negatives", "use --batch-size >= 2 (e.g. 64)")
        n_train = 8 * self.n_train_per_class
        if self.batch_size > n_train:
            raise UserError(f"batch size {self.batch_size} exceeds the {n_train} training images",
                            "use a smaller --batch-size or a larger --n-train-per-class")
        if 8 * self.n_val_per_class < 2:
            raise UserError("the val split needs >= 2 images for an I_NCE batch", "raise --n-val-per-class")
        if not str(self.out):
            raise UserError("no output directory given", "pass --out DIR")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SweepSpec":
        """Build from a mapping (e.g. ``sweep.json["spec"]``); unknown keys are a UserError."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise UserError(f"unknown sweep parameter(s): {', '.join(unknown)}", f"use only {', '.join(sorted(names))}")
        missing = sorted(n for n in ("family", "values", "out") if n not in d)
        if missing:
            raise UserError(f"missing sweep parameter(s): {', '.join(missing)}", "give family, values and out")
        return cls(**{**d, "values": tuple(d["values"])})

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "values": list(self.values)}

    @property
    def point_key(self) -> str:
        """Hash of the settings that determine a point's result (not ``values``, ``seeds``, ``out``)."""
        d = {k: getattr(self, k) for k in self._POINT_FIELDS} | {"format": POINT_FORMAT}
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def fam(self) -> ViewFamily:
        return VIEW_FAMILIES[self.family]


# ------------------------------------------------------------------------------------------------
# data

@dataclass
class SweepData:
    """The labelled set in memory: ``images[split]`` uint8 (N, 3, S, S), ``labels[split]`` int64 (N,);
    ``photos[split]``: PIL photos for patch-distance (train / val-held-out), else empty."""

    root: Path
    classes: tuple[str, ...]
    images: dict[str, torch.Tensor]
    labels: dict[str, torch.Tensor]
    photos: dict[str, list[Image.Image]] = field(default_factory=dict)
    photo_paths: dict[str, list[str]] = field(default_factory=dict)


def load_labelled(spec: SweepSpec) -> SweepData:
    """Build (or reuse) the labelled set of ``spec`` and read it into memory."""
    from infomin_det.data.labelled_set import build_labelled_set
    from pretrain.data import scan_folder
    root = build_labelled_set(spec.n_train_per_class, spec.n_val_per_class, spec.image_size, spec.data_seed)
    images, labels, classes = {}, {}, ()
    for split in ("train", "val"):
        lst = scan_folder(root / split)
        classes = lst.classes
        arr = np.stack([np.asarray(Image.open(f).convert("RGB"), dtype=np.uint8) for f in lst.files])
        images[split] = torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()
        labels[split] = torch.tensor(lst.labels, dtype=torch.int64)
    return SweepData(root, classes, images, labels)


def _load_photo(path: Path) -> Image.Image:
    with Image.open(path) as im:
        w, h = im.size
        s = min(1.0, PHOTO_MAX_SIDE / max(w, h))
        size = (max(1, round(w * s)), max(1, round(h * s)))
        if s < 1 and im.format == "JPEG":
            im.draft("RGB", size)
        im = im.convert("RGB")
        return im if im.size == size else im.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)


def photo_pools(spec: SweepSpec) -> dict[str, list[Path]]:
    """patch-distance photo paths: ``val`` = the labelled set's val backgrounds, ``train`` = every
    other photo; both keep only photos (at :data:`PHOTO_MAX_SIDE`) where a pair at the largest d has
    coverage >= .5. Reads image headers only. UserError when a pool ends up empty."""
    from infomin_det.data.composites import split_sources
    from infomin_det.data.photos import photos
    from pretrain.views.spatial import centre_coverage
    val_paths = {p.path for p in split_sources(spec.data_seed)["val"][0]}
    d_max = max(spec.values)
    pools: dict[str, list[Path]] = {"train": [], "val": []}
    for p in photos():
        with Image.open(p.path) as im:
            w, h = im.size
        s = min(1.0, PHOTO_MAX_SIDE / max(w, h))
        if centre_coverage(round(w * s), round(h * s), spec.image_size, d_max) >= 0.5:
            pools["val" if p.path in val_paths else "train"].append(p.path)
    for split, pool in pools.items():
        if not pool:
            raise UserError(f"no {split} photo fits {spec.image_size}-px patch pairs {d_max:g} px apart",
                            f"use distances below {PHOTO_MAX_SIDE // 3} px")
    return pools


def load_photos(spec: SweepSpec, data: SweepData, progress: bool) -> None:
    """Decode the :func:`photo_pools` photos (long side <= :data:`PHOTO_MAX_SIDE`) into ``data.photos``."""
    from tqdm import tqdm
    pools = photo_pools(spec)
    for split, paths in pools.items():
        data.photo_paths[split] = [str(p) for p in paths]
        data.photos[split] = [_load_photo(p) for p in tqdm(paths, desc=f"photos/{split}", unit="photo",
                                                            disable=not progress, leave=False)]


# ------------------------------------------------------------------------------------------------
# one point

class PairSampler:
    """Draws (v1, v2) batches for one family / value / split: epoch-wise shuffled images (or photos
    drawn uniformly for patch-distance) passed through the family's ``make_views``."""

    def __init__(self, spec: SweepSpec, value: float, data: SweepData, split: str, generator: torch.Generator):
        fam = spec.fam
        self.views = fam.make_views(value, spec.image_size)
        self.source = fam.source
        self.data, self.split, self.g = data, split, generator
        self.n = len(data.photos[split]) if self.source == "photos" else len(data.images[split])
        self._order: list[int] = []

    def _indices(self, k: int) -> list[int]:
        if self.source == "photos":
            return torch.randint(0, self.n, (k,), generator=self.g).tolist()
        out: list[int] = []
        while len(out) < k:
            if not self._order:
                self._order = torch.randperm(self.n, generator=self.g).tolist()
            take = min(k - len(out), len(self._order))
            out += self._order[:take]
            self._order = self._order[take:]
        return out

    def __call__(self, k: int) -> Views:
        idx = self._indices(k)
        if self.source == "photos":
            return self.views([self.data.photos[self.split][i] for i in idx], self.g)
        return self.views(self.data.images[self.split][idx], self.g)


def build_encoders(spec: SweepSpec, seed: int) -> list[TinyAlexNet]:
    """[shared encoder] or [encoder of v1, encoder of v2], initialised from ``seed`` only."""
    fam = spec.fam
    torch.manual_seed(seed)
    if fam.shared_encoder:
        return [tiny_alexnet(fam.in_channels[0], spec.feat_dim)]
    return [tiny_alexnet(c, spec.feat_dim) for c in fam.in_channels]


def _embed(encoders: list[TinyAlexNet], v1: torch.Tensor, v2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return encoders[0](v1), encoders[-1](v2)


def pretrain_point(spec: SweepSpec, value: float, seed: int, data: SweepData, progress: bool = True,
                   encoders: list[TinyAlexNet] | None = None) -> tuple[list[TinyAlexNet], float]:
    """Train the encoder(s) of one point (``encoders``, default freshly built from ``seed``);
    returns (the encoders in eval mode, training seconds)."""
    from tqdm import tqdm
    fam = spec.fam
    encoders = build_encoders(spec, seed) if encoders is None else encoders
    params = [p for e in encoders for p in e.parameters()]
    opt = torch.optim.AdamW(params, lr=spec.lr, weight_decay=spec.weight_decay)
    sampler = PairSampler(spec, value, data, "train", torch.Generator().manual_seed(1000 + seed))
    warmup = max(1, spec.steps // 20)
    for e in encoders:
        e.train()
    t0 = time.perf_counter()
    bar = tqdm(range(spec.steps), desc=f"{spec.family} {fam.param}={value:g} seed {seed}", unit="step",
               disable=not progress, leave=False, dynamic_ncols=True)
    for step in bar:
        lr = spec.lr * min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * step / spec.steps))
        for group in opt.param_groups:
            group["lr"] = lr
        v1, v2 = sampler(spec.batch_size)
        nce = info_nce(*_embed(encoders, v1, v2), temperature=spec.temperature)
        opt.zero_grad(set_to_none=True)
        nce.loss.backward()
        opt.step()
        if step % 10 == 0 or step == spec.steps - 1:
            bar.set_postfix(loss=f"{float(nce.loss.detach()):.3f}", i_nce=f"{nce.i_nce:.2f}")
    bar.close()
    for e in encoders:
        e.eval()
    return encoders, time.perf_counter() - t0


@torch.no_grad()
def measure_i_nce(spec: SweepSpec, value: float, encoders: list[TinyAlexNet], data: SweepData) -> dict[str, float]:
    """I_NCE (nats, mean over fixed val batches of K pairs), log K, K, val pair-retrieval accuracy (%)."""
    n_val = len(data.images["val"])
    k = min(spec.batch_size, n_val)
    n_batches = max(1, n_val // k)
    g = torch.Generator().manual_seed(EVAL_VIEW_SEED)
    sampler = PairSampler(spec, value, data, "val", g)
    i_nce, acc = [], []
    for _ in range(n_batches):
        v1, v2 = sampler(k)
        nce = info_nce(*_embed(encoders, v1, v2), temperature=spec.temperature)
        i_nce.append(nce.i_nce)
        acc.append(nce.accuracy)
    return {"i_nce": float(np.mean(i_nce)), "log_k": math.log(k), "k": k, "val_contrast_acc": 100.0 * float(np.mean(acc))}


@torch.no_grad()
def eval_features(spec: SweepSpec, value: float, encoders: list[TinyAlexNet], images: torch.Tensor,
                  chunk: int = 256) -> torch.Tensor:
    """Frozen features of the evaluation views: (N, 128 * number of encoders)."""
    make = spec.fam.eval_views(value)
    out = []
    for i in range(0, len(images), chunk):
        views = make(images[i:i + chunk])
        out.append(torch.cat([e.features(v) for e, v in zip(encoders, views)], dim=1))
    return torch.cat(out)


def linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, val_x: torch.Tensor, val_y: torch.Tensor,
                 n_classes: int, steps: int = 100, weight_decay: float = 1e-3) -> dict[str, float]:
    """Softmax regression on standardised features (train mean / std), full-batch L-BFGS for
    ``steps`` iterations, loss = CE + weight_decay / 2 * |W|^2. Returns train / val top-1 (%)."""
    mean, std = train_x.mean(0), train_x.std(0).clamp_min(1e-6)
    xt, xv = (train_x - mean) / std, (val_x - mean) / std
    head = nn.Linear(xt.shape[1], n_classes)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    opt = torch.optim.LBFGS(head.parameters(), lr=1.0, max_iter=steps, history_size=20,
                            line_search_fn="strong_wolfe", tolerance_grad=1e-6, tolerance_change=1e-9)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(head(xt), train_y) + weight_decay / 2 * head.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    with torch.no_grad():
        top1_train = 100.0 * float((head(xt).argmax(1) == train_y).float().mean())
        top1 = 100.0 * float((head(xv).argmax(1) == val_y).float().mean())
    return {"linear_top1": top1, "linear_train_top1": top1_train}


def _probe(spec: SweepSpec, value: float, encoders: list[TinyAlexNet], data: SweepData) -> dict[str, float]:
    feats = {s: eval_features(spec, value, encoders, data.images[s]) for s in ("train", "val")}
    return linear_probe(feats["train"], data.labels["train"], feats["val"], data.labels["val"],
                        len(data.classes), spec.probe_steps, spec.probe_weight_decay)


def run_point(spec: SweepSpec, value: float, seed: int, data: SweepData, progress: bool = True) -> dict[str, Any]:
    """Linear-evaluate the untrained encoders (``init_linear_top1``: the random-feature reference),
    pretrain them, measure I_NCE, linear-evaluate again: the point's row (see :data:`CSV_FIELDS`)."""
    t0 = time.perf_counter()
    encoders = build_encoders(spec, seed)
    for e in encoders:
        e.eval()
    init = _probe(spec, value, encoders, data)
    encoders, train_s = pretrain_point(spec, value, seed, data, progress, encoders)
    row: dict[str, Any] = {"family": spec.family, "param": spec.fam.param, "value": value, "seed": seed}
    row.update(measure_i_nce(spec, value, encoders, data))
    row.update(_probe(spec, value, encoders, data))
    row["init_linear_top1"] = init["linear_top1"]
    row["train_seconds"] = train_s
    row["seconds"] = time.perf_counter() - t0
    return row


# ------------------------------------------------------------------------------------------------
# the sweep

@dataclass(frozen=True)
class SweepResult:
    """``rows`` (one per point, value-major), per-value ``summary``, written paths, and which
    (value, seed) points were trained in this call / reused from finished point files."""

    rows: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    csv: Path
    json: Path
    png: Path
    trained: list[tuple[float, int]]
    reused: list[tuple[float, int]]


def point_path(out: Path, family: str, value: float, seed: int) -> Path:
    return out / "points" / f"{family}_{value:g}_seed{seed}.json"


def _read_point(path: Path, spec: SweepSpec) -> dict[str, Any] | None:
    """The finished row in ``path``; None if absent; UserError if it was made with other settings."""
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
        key, row = doc["point_key"], doc["row"]
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(f"{path} is not a sweep point file", f"delete it (it will be retrained) or use another --out") from None
    if key != spec.point_key:
        raise UserError(f"{path} was trained with other settings (steps, batch, lr, data, ...) than this sweep",
                        "use a new --out, the same settings as before, or delete the points/ folder")
    return row


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per value (ascending): n seeds, mean and std (sample std; 0 for one seed) of the metrics."""
    out = []
    for value in sorted({r["value"] for r in rows}):
        rs = [r for r in rows if r["value"] == value]
        s: dict[str, Any] = {"value": value, "n": len(rs)}
        for m in ("i_nce", "linear_top1", "init_linear_top1", "val_contrast_acc", "train_seconds"):
            a = np.array([r[m] for r in rs], dtype=float)
            s[f"{m}_mean"] = float(a.mean())
            s[f"{m}_std"] = float(a.std(ddof=1)) if len(a) > 1 else 0.0
        s["log_k"] = rs[0]["log_k"]
        out.append(s)
    return out


def plot_sweep(spec: SweepSpec, summary: list[dict[str, Any]], path: Path) -> None:
    """The paper's Figure 1: linear top-1 (%) against I_NCE (nats), one marker per value (seed mean,
    std error bars when several seeds), annotated, joined in parameter order; dashed line at log K,
    dotted line at the untrained encoders' linear top-1 (mean over points)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fam = spec.fam
    x = [s["i_nce_mean"] for s in summary]
    y = [s["linear_top1_mean"] for s in summary]
    fig = Figure(figsize=(6, 4.5), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot(x, y, "-", color="0.6", zorder=1)
    multi = any(s["n"] > 1 for s in summary)
    ax.errorbar(x, y, xerr=[s["i_nce_std"] for s in summary] if multi else None,
                yerr=[s["linear_top1_std"] for s in summary] if multi else None,
                fmt="o", color="C0", ecolor="C0", capsize=3, zorder=2)
    for s, xi, yi in zip(summary, x, y):
        ax.annotate(f"{fam.param}={s['value']:g}", (xi, yi), textcoords="offset points", xytext=(5, 5), fontsize=8)
    if summary:
        init = float(np.mean([s["init_linear_top1_mean"] for s in summary]))
        ax.axhline(init, color="C3", ls=":", lw=1.0, label=f"untrained encoder(s): {init:.1f}%")
        ax.legend(loc="best", fontsize=7)
        ax.axvline(summary[0]["log_k"], color="0.4", ls="--", lw=0.8)
        ax.text(summary[0]["log_k"], ax.get_ylim()[0], " log K", rotation=90, va="bottom", ha="right", fontsize=7)
    n = max((s["n"] for s in summary), default=1)
    ax.set_xlabel("I_NCE on val views (nats)")
    ax.set_ylabel("linear top-1 on val (%)")
    ax.set_title(f"{spec.family}: {fam.summary}\n{spec.steps} steps x {spec.batch_size}, {spec.image_size} px, "
                 f"{n} seed(s)", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    with atomic_write(path) as tmp:
        tmp.write_bytes(buf.getvalue())


def write_outputs(spec: SweepSpec, rows: list[dict[str, Any]], out: Path) -> tuple[Path, Path, Path]:
    """``sweep.csv``, ``sweep.json``, ``sweep.png`` in ``out`` (each atomically)."""
    rows = sorted(rows, key=lambda r: (r["value"], r["seed"]))
    summary = summarise(rows)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    paths = out / "sweep.csv", out / "sweep.json", out / "sweep.png"
    write_text_atomic(paths[0], buf.getvalue())
    write_text_atomic(paths[1], json.dumps({"spec": spec.to_dict(), "point_key": spec.point_key,
                                            "rows": rows, "summary": summary}, indent=2) + "\n")
    plot_sweep(spec, summary, paths[2])
    return paths


def run_sweep(spec: SweepSpec, progress: bool = True, log: Callable[[str], None] | None = None) -> SweepResult:
    """Run (or resume) the sweep of ``spec``; see the module docstring. Checks everything that can
    be checked without training (finished point files, photo pools) before writing anything."""
    out = Path(spec.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a directory", "pass a new or existing directory")
    points = [(v, s) for v in spec.values for s in range(spec.seeds)]
    done = {p: _read_point(point_path(out, spec.family, *p), spec) for p in points}
    if spec.fam.source == "photos":
        photo_pools(spec)  # refuse distances no photo fits before any work
    (out / "points").mkdir(parents=True, exist_ok=True)
    todo = [p for p in points if done[p] is None]
    rows = [r for r in done.values() if r is not None]
    trained = []
    data = load_labelled(spec) if todo else SweepData(out, (), {}, {})
    if todo and spec.fam.source == "photos":
        load_photos(spec, data, progress)
    for i, (value, seed) in enumerate(todo):
        if log:
            log(f"[{i + 1}/{len(todo)}] {spec.family} {spec.fam.param}={value:g} seed {seed}")
        row = run_point(spec, value, seed, data, progress)
        write_text_atomic(point_path(out, spec.family, value, seed),
                          json.dumps({"point_key": spec.point_key, "spec": spec.to_dict(), "row": row}, indent=2) + "\n")
        rows.append(row)
        trained.append((value, seed))
        write_outputs(spec, rows, out)
    csv_p, json_p, png_p = write_outputs(spec, rows, out)
    rows = sorted(rows, key=lambda r: (r["value"], r["seed"]))
    return SweepResult(rows, summarise(rows), csv_p, json_p, png_p, trained, [p for p in points if done[p] is not None])
