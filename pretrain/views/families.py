"""View families: two views of one image, varied by one number -- the sweep's extension point.

Owns :class:`ViewFamily` (what a family declares and implements), the registry
:data:`VIEW_FAMILIES` (``infomin_det.registry.Registry``: name -> family class, in registration
order) and the four families of the paper's I_NCE-vs-accuracy experiments::

    frequency       sigma (px)   v1 = Blur(x, sigma), v2 = x - v1               two encoders (CMC)
    crop            c (area)     two RandomResizedCrop(scale=(c, 1)) of x       one shared encoder
    jitter          x (strength) ColorJitter(.8x, .8x, .8x, .2x) p .8 per view  one shared encoder
    patch-distance  d (px)       two 64-px patches d apart in a 2k photo       one shared encoder

Only the varied factor makes two views differ (no flip, blur or other augmentation on top), so the
views' shared information moves with the parameter alone. Views are float, ImageNet-normalised
(``pretrain.augment.normalize``); the frequency split is taken of the normalised image.

A new family: subclass :class:`ViewFamily`, set its class attributes, implement ``make_views``
(and ``check`` / ``eval_views`` where the defaults do not fit) and decorate the class with
``@VIEW_FAMILIES.register("name")``; ``infomin-det sweep --family name`` then finds it once the
module defining it is imported (see ``docs/views.md``). Never imports detectron2.
"""

from __future__ import annotations

import math
import random
from typing import Any, Callable, ClassVar, Sequence

import torch
import torch.nn.functional as F
from PIL import Image

from infomin_det.registry import Registry
from pretrain.augment import color_jitter, normalize, sample_crop
from pretrain.views.frequency import frequency_split

Views = tuple[torch.Tensor, torch.Tensor]
MakeViews = Callable[[Any, torch.Generator], Views]


class ViewFamily:
    """One way of making two views, varied by one number. Subclass, set the class attributes,
    implement :meth:`make_views`, and register the class with ``@VIEW_FAMILIES.register("name")``.

    ``make_views(value)`` returns ``views(batch, generator) -> (v1, v2)``: ``batch`` uint8
    (B, 3, H, W) (``source = "photos"``: a list of B PIL photos), v1 / v2 float (B, C, S, S),
    ImageNet-normalised, all randomness drawn from ``generator``. ``eval_views(value)`` returns the
    deterministic views linear evaluation reads, one per encoder. ``shared_encoder``: one encoder
    for both views (same modality) or two (``in_channels`` each). Families hold no state: the
    sweep instantiates the registered class with no arguments.
    """

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


VIEW_FAMILIES: Registry[type[ViewFamily]] = Registry("view family")


def _py_rng(generator: torch.Generator) -> random.Random:
    """A ``random.Random`` drawn from the torch generator (for the PIL / ``sample_crop`` helpers)."""
    return random.Random(int(torch.randint(0, 2 ** 62, (1,), generator=generator)))


@VIEW_FAMILIES.register("frequency")
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


@VIEW_FAMILIES.register("crop")
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


def _jittered(img: torch.Tensor, mags: tuple[float, float, float, float], rng: random.Random) -> torch.Tensor:
    """``color_jitter`` of a uint8 (3, H, W) tensor, as a uint8 (3, H, W) tensor."""
    return torch.from_numpy(color_jitter(img.permute(1, 2, 0).contiguous().numpy(), mags, rng)).permute(2, 0, 1)


@VIEW_FAMILIES.register("jitter")
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
                        v.append(_jittered(img, mags, rng))
                    else:
                        v.append(img)
            return normalize(torch.stack(out[0])), normalize(torch.stack(out[1]))
        return views


@VIEW_FAMILIES.register("patch-distance")
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
