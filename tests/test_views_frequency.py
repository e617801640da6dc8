"""pretrain.views.frequency against a float64 direct 2-D convolution and the Gaussian's spectrum."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from infomin_det.errors import UserError
from pretrain.views.frequency import FrequencySplit, frequency_split, gaussian_blur

SIGMAS = (0.5, 0.7, 1.0, 1.5, 2.0, 3.0)


def _direct_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """float64 (H, W) blurred by a full 2-D Gaussian, radius ceil(3 sigma), numpy 'reflect' padding."""
    r = math.ceil(3 * sigma)
    taps = [(dy, dx, math.exp(-(dy * dy + dx * dx) / (2 * sigma * sigma)))
            for dy in range(-r, r + 1) for dx in range(-r, r + 1)]
    total = sum(w for _, _, w in taps)
    h, w = img.shape
    p = np.pad(img, r, mode="reflect")
    out = np.zeros_like(img)
    for dy, dx, wt in taps:
        out += wt / total * p[r + dy:r + dy + h, r + dx:r + dx + w]
    return out


@pytest.mark.parametrize("sigma", [0.3, 0.7, 1.0, 2.5])
def test_matches_direct_2d_convolution(sigma: float) -> None:
    x = torch.rand(2, 3, 40, 37, generator=torch.Generator().manual_seed(0))
    got = gaussian_blur(x, sigma)
    assert got.shape == x.shape and got.dtype == x.dtype
    r = math.ceil(3 * sigma)
    for b in range(2):
        for c in range(3):
            ref = _direct_blur(x[b, c].double().numpy(), sigma)
            g = got[b, c].double().numpy()
            # interior: no padding involved at all
            assert np.abs(g[r:-r, r:-r] - ref[r:-r, r:-r]).max() < 1e-6
            # borders: reflect padding (edge pixel not repeated), as numpy's mode="reflect"
            assert np.abs(g - ref).max() < 1e-6


def test_impulse_response_has_radius_ceil_3_sigma() -> None:
    for sigma in (0.5, 1.0, 1.7):
        r = math.ceil(3 * sigma)
        x = torch.zeros(1, 1, 31, 31, dtype=torch.float64)
        x[0, 0, 15, 15] = 1.0
        y = gaussian_blur(x, sigma)[0, 0]
        support = (y != 0).nonzero()
        assert support.min().item() == 15 - r and support.max().item() == 15 + r
        assert y.sum().item() == pytest.approx(1.0, abs=1e-12)
        i = torch.arange(-r, r + 1, dtype=torch.float64)
        g = torch.exp(-i ** 2 / (2 * sigma ** 2))
        assert torch.allclose(y[15 - r:16 + r, 15 - r:16 + r], torch.outer(g, g) / g.sum() ** 2, atol=1e-14)


def test_low_plus_high_is_x_and_sigma_zero() -> None:
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    for sigma in SIGMAS:
        low, high = frequency_split(x, sigma)
        assert (low + high - x).abs().max().item() < 1e-6
        assert low.min().item() >= 0 and low.max().item() <= 1 + 1e-6
    low, high = frequency_split(x, 0.0)
    assert torch.equal(low, x) and torch.count_nonzero(high) == 0


def _band_energy(v: torch.Tensor, band: torch.Tensor) -> float:
    return float((torch.fft.fft2(v.double()).abs() ** 2)[..., band].sum())


def test_spectra_of_the_two_views() -> None:
    n = 128
    x = torch.rand(4, 1, n, n, generator=torch.Generator().manual_seed(2))
    x = x - x.mean(dim=(2, 3), keepdim=True)
    f = torch.fft.fftfreq(n)  # cycles / pixel
    radius = (f.view(-1, 1) ** 2 + f.view(1, -1) ** 2).sqrt()
    f_lo, f_hi = 0.03, 0.3
    low_band, high_band = (radius > 0) & (radius < f_lo), radius > f_hi
    e_lo, e_hi = _band_energy(x, low_band), _band_energy(x, high_band)
    high_leak, low_leak = [], []
    for sigma in SIGMAS:
        low, high = frequency_split(x, sigma)
        high_leak.append(_band_energy(high, low_band) / e_lo)
        low_leak.append(_band_energy(low, high_band) / e_hi)
        if sigma >= 0.7:
            # continuous Gaussian response |G(f)| = exp(-2 pi^2 sigma^2 f^2), bounded at the band edges
            g_lo = math.exp(-2 * math.pi ** 2 * sigma ** 2 * f_lo ** 2)
            g_hi = math.exp(-2 * math.pi ** 2 * sigma ** 2 * f_hi ** 2)
            assert high_leak[-1] <= (1 - g_lo) ** 2 + 0.005, (sigma, high_leak[-1])
            assert low_leak[-1] <= g_hi ** 2 + 0.01, (sigma, low_leak[-1])
    assert high_leak[0] < 0.001 and high_leak[-1] < 0.05  # high view: little low-frequency energy
    assert low_leak[2] < 0.05 and low_leak[-1] < 1e-3  # low view: little high-frequency energy (sigma >= 1)
    assert all(a < b for a, b in zip(high_leak, high_leak[1:]))  # more blur: more low freq in high view
    assert all(a > b for a, b in zip(low_leak, low_leak[1:]))  # more blur: less high freq in low view


def test_frequency_split_callable_on_uint8() -> None:
    img = torch.randint(0, 256, (3, 24, 24), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    split = FrequencySplit(1.0)
    v1, v2 = split(img)
    assert v1.shape == v2.shape == (3, 24, 24) and v1.dtype == v2.dtype == torch.float32
    x = img.float() / 255
    assert torch.allclose((v1 + 1 + v2) / 2, x, atol=1e-6)
    assert v1.min().item() >= -1 and v1.max().item() <= 1 and v2.abs().max().item() <= 2
    low, _ = frequency_split(x.unsqueeze(0), 1.0)
    assert torch.allclose(v1, 2 * low[0] - 1, atol=1e-6)
    b1, b2 = split(img.unsqueeze(0).repeat(2, 1, 1, 1))
    assert b1.shape == (2, 3, 24, 24) and torch.allclose(b2[1], v2)


def test_refusals() -> None:
    x = torch.rand(1, 3, 16, 16)
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(UserError):
            gaussian_blur(x, bad)
        with pytest.raises(UserError):
            FrequencySplit(bad)
    with pytest.raises(UserError) as e:
        gaussian_blur(x, 6.0)  # radius 18 >= 16 px
    assert "16x16" in e.value.cause
    with pytest.raises(UserError):
        gaussian_blur(torch.zeros(1, 3, 16, 16, dtype=torch.uint8), 1.0)
