"""Low/high-frequency views (the paper's appendix §B.3): v1 = Blur(x, sigma), v2 = x - v1.

Owns :func:`gaussian_blur` (an exact, truncated, separable Gaussian on float tensors on any device;
:func:`pretrain.augment.gaussian_blur` is the same Gaussian on uint8 arrays, by OpenCV), :func:`frequency_split` and the callable
:class:`FrequencySplit` that turns an image tensor into the two network-ready views.

Sigma is in pixels. The kernel is the sampled Gaussian ``exp(-i^2 / (2 sigma^2))``,
``i = -r..r`` with radius ``r = ceil(3 sigma)``, normalised to sum 1, applied along W then H with
reflect padding (the edge pixel is not repeated: ``... x2 x1 | x0 x1 x2 ...``). Its frequency
response is close to ``exp(-2 pi^2 sigma^2 f^2)`` (f in cycles/pixel), so the low view keeps
frequencies below ~``1 / (2 pi sigma)`` and the high view the rest. The paper finds I_NCE largest at
sigma = 0.7 and the best downstream accuracy at sigma = 1.0 on STL-10.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from infomin_det.errors import UserError


def _check_sigma(sigma: float) -> None:
    if not math.isfinite(sigma) or sigma < 0:
        raise UserError(f"Gaussian blur sigma must be a finite number >= 0 (pixels), got {sigma}",
                        "use sigma >= 0 (the paper sweeps about 0.2 .. 3; 0 means no blur)")


def gaussian_kernel(sigma: float, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """1-D kernel (2 r + 1,), r = ceil(3 sigma), sum 1; sigma > 0 in pixels."""
    _check_sigma(sigma)
    if sigma == 0:
        return torch.ones(1, dtype=dtype)
    r = math.ceil(3 * sigma)
    i = torch.arange(-r, r + 1, dtype=torch.float64)
    k = torch.exp(-(i * i) / (2 * sigma * sigma))
    return (k / k.sum()).to(dtype)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of float (B, C, H, W) (any value range; same shape and dtype out).

    ``sigma`` in pixels, >= 0; ``sigma == 0`` returns ``x`` itself (no copy). Reflect padding needs
    the radius ``ceil(3 sigma)`` to be smaller than H and W.
    """
    _check_sigma(sigma)
    if x.dim() != 4 or not x.is_floating_point():
        raise UserError(f"gaussian_blur needs a float (B, C, H, W) tensor, got {x.dtype} {tuple(x.shape)}",
                        "convert images with x.float() / 255 and add a batch dimension")
    if sigma == 0:
        return x
    b, c, h, w = x.shape
    r = math.ceil(3 * sigma)
    if r >= min(h, w):
        raise UserError(f"sigma {sigma} needs a blur radius of {r} px, too large for a {w}x{h} image",
                        f"use sigma < {min(h, w) / 3:.2f} for this size or larger images")
    k = gaussian_kernel(sigma, x.dtype).to(x.device)
    y = x.reshape(b * c, 1, h, w)
    y = F.conv2d(F.pad(y, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1))
    y = F.conv2d(F.pad(y, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1))
    return y.reshape(b, c, h, w)


def frequency_split(x: torch.Tensor, sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """float (B, C, H, W) -> (low, high) = (blur(x, sigma), x - low); low + high == x exactly
    up to one float rounding. For x in [0, 1]: low in [0, 1] (a convex combination of pixels),
    high in [-1, 1] (mostly near 0 for natural images)."""
    low = gaussian_blur(x, sigma)
    return low, x - low


class FrequencySplit:
    """Image tensor -> (v1, v2) low/high-frequency views for the encoders.

    Input: uint8 (3, H, W) / (B, 3, H, W) in 0..255, or float in [0, 1] (any channel count).
    Output: float32 tensors of the input's shape. One fixed rescale for both views, ``v1 = 2 low - 1``
    in [-1, 1] and ``v2 = 2 high`` in [-2, 2] (for natural images |v2| is mostly below 0.5), so that
    ``x = (v1 + 1 + v2) / 2`` (x in [0, 1]). ``in_channels`` of each view is the image's (3).
    """

    def __init__(self, sigma: float) -> None:
        _check_sigma(sigma)
        self.sigma = float(sigma)

    def __call__(self, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        unbatched = img.dim() == 3
        x = img.unsqueeze(0) if unbatched else img
        x = x.float() / 255 if x.dtype == torch.uint8 else x.float()
        low, high = frequency_split(x, self.sigma)
        v1, v2 = 2 * low - 1, 2 * high
        return (v1[0], v2[0]) if unbatched else (v1, v2)

    def __repr__(self) -> str:
        return f"FrequencySplit(sigma={self.sigma})"
