"""pretrain.views.colorspaces against independent references (colorsys, BT.601/SECAM formulas,
published CIE reference values, Ruifrok & Johnston stain vectors) and its split / parser contract."""

from __future__ import annotations

import colorsys
import math
import random

import pytest
import torch

from infomin_det.errors import UserError
from pretrain.views.colorspaces import (CHANNEL_RANGES, CHANNELS, SPACES, SPLITS, ChannelSplit, from_space,
                                        parse_split, to_space)


def _random_rgb(n: int, seed: int) -> torch.Tensor:
    """(1, 3, n, 1) float32 uniform random colours in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, n, 1, generator=g)


def _pixels(x: torch.Tensor) -> list[tuple[float, float, float]]:
    return [tuple(float(v) for v in p) for p in x[0, :, :, 0].t()]


def _one(rgb: tuple[float, float, float]) -> torch.Tensor:
    return torch.tensor(rgb, dtype=torch.float32).view(1, 3, 1, 1)


@pytest.mark.parametrize("space", SPACES)
def test_round_trip_rgb_space_rgb(space: str) -> None:
    x = torch.rand(2, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    # include the cube's corners and a near-black ramp (the piecewise parts of gamma, f(t), L*)
    corners = torch.tensor([[i >> 2 & 1, i >> 1 & 1, i & 1] for i in range(8)], dtype=torch.float32)
    x[0, :, 0, :8] = corners.t()
    x[1, :, 0, :] = torch.linspace(0, 0.01, 48)
    y = to_space(x, space)
    assert y.shape == x.shape and y.dtype == x.dtype
    back = from_space(y, space)
    assert (back - x).abs().max().item() < 1e-4


def test_hsv_round_trip_from_hsv_side_away_from_zero_saturation() -> None:
    g = torch.Generator().manual_seed(1)
    hsv = torch.rand(1, 3, 4000, 1, generator=g)
    hsv[:, 1:] = 0.05 + 0.95 * hsv[:, 1:]  # s, v >= 0.05: hue is defined (no s = 0 singularity)
    back = to_space(from_space(hsv, "HSV"), "HSV")
    dh = (back[:, 0] - hsv[:, 0]).abs()
    assert torch.minimum(dh, 1 - dh).max().item() < 1e-4  # hue is circular
    assert (back[:, 1:] - hsv[:, 1:]).abs().max().item() < 1e-4


def test_hsv_matches_colorsys() -> None:
    x = _random_rgb(3000, 2)
    hsv = to_space(x, "HSV")
    for (r, g, b), (h, s, v) in zip(_pixels(x), _pixels(hsv)):
        rh, rs, rv = colorsys.rgb_to_hsv(r, g, b)
        assert min(abs(h - rh), 1 - abs(h - rh)) < 1e-5
        assert abs(s - rs) < 1e-5 and abs(v - rv) < 1e-6
    rgb = from_space(hsv, "HSV")
    for (h, s, v), got in zip(_pixels(hsv), _pixels(rgb)):
        assert max(abs(a - b) for a, b in zip(got, colorsys.hsv_to_rgb(h, s, v))) < 1e-5
    grey = to_space(_one((0.4, 0.4, 0.4)), "HSV").flatten().tolist()
    assert grey == pytest.approx(list(colorsys.rgb_to_hsv(0.4, 0.4, 0.4)), abs=1e-7)


def test_yiq_matches_colorsys() -> None:
    x = _random_rgb(3000, 3)
    yiq = to_space(x, "YIQ")
    for rgb, got in zip(_pixels(x), _pixels(yiq)):
        assert max(abs(a - b) for a, b in zip(got, colorsys.rgb_to_yiq(*rgb))) < 1e-6
    back = from_space(yiq, "YIQ")
    for q, got in zip(_pixels(yiq), _pixels(back)):
        assert max(abs(a - b) for a, b in zip(got, colorsys.yiq_to_rgb(*q))) < 1e-5


def test_ycbcr_is_bt601_full_range() -> None:
    kr, kb = 0.299, 0.114  # ITU-R BT.601 luma weights
    x = _random_rgb(2000, 4)
    got = to_space(x, "YCbCr")
    for (r, g, b), (y, cb, cr) in zip(_pixels(x), _pixels(got)):
        ry = kr * r + (1 - kr - kb) * g + kb * b
        assert abs(y - ry) < 1e-6
        assert abs(cb - (0.5 + 0.5 * (b - ry) / (1 - kb))) < 1e-6
        assert abs(cr - (0.5 + 0.5 * (r - ry) / (1 - kr))) < 1e-6


def test_ydbdr_is_secam() -> None:
    x = _random_rgb(2000, 5)
    got = to_space(x, "YDbDr")
    for (r, g, b), (y, db, dr) in zip(_pixels(x), _pixels(got)):
        ry = 0.299 * r + 0.587 * g + 0.114 * b
        assert abs(y - ry) < 1e-6
        assert abs(db - 1.505 * (b - ry)) < 2e-3  # SECAM: Db = +1.505 (B - Y), Dr = -1.902 (R - Y)
        assert abs(dr - -1.902 * (r - ry)) < 2e-3


def test_cie_reference_points() -> None:
    white, black, red = _one((1, 1, 1)), _one((0, 0, 0)), _one((1, 0, 0))
    assert to_space(white, "XYZ").flatten().tolist() == pytest.approx([0.95047, 1.0, 1.08883], abs=1e-5)
    assert to_space(white, "Lab").flatten().tolist() == pytest.approx([100, 0, 0], abs=1e-3)
    assert to_space(white, "LUV").flatten().tolist() == pytest.approx([100, 0, 0], abs=1e-3)
    for space in ("XYZ", "Lab", "LUV"):
        assert to_space(black, space).abs().max().item() == 0.0
    # published sRGB red: L*a*b* (53.24, 80.09, 67.20), L*u*v* (53.24, 175.01, 37.76)
    assert to_space(red, "Lab").flatten().tolist() == pytest.approx([53.24, 80.09, 67.20], abs=0.01)
    assert to_space(red, "LUV").flatten().tolist() == pytest.approx([53.24, 175.01, 37.76], abs=0.02)
    # CIE: L* of a neutral with Y = 0.18 is 116 * 0.18^(1/3) - 16 = 49.50; sRGB grey with that Y:
    c = 0.18 ** (1 / 2.4) * 1.055 - 0.055
    lab = to_space(_one((c, c, c)), "Lab").flatten().tolist()
    assert lab == pytest.approx([116 * 0.18 ** (1 / 3) - 16, 0, 0], abs=1e-3)


def test_hed_recovers_pure_stains() -> None:
    # Ruifrok & Johnston OD vectors as published in scikit-image's rgb_from_hed
    stains = {0: (0.65, 0.70, 0.29), 1: (0.07, 0.99, 0.11), 2: (0.27, 0.57, 0.78)}
    for k, vec in stains.items():
        for amount in (0.05, 0.2, 0.5):
            # Beer-Lambert: transmitted light exp(-OD * ln(1e6)); scikit-image's OD unit is log(1e-6)
            rgb = tuple(math.exp(-amount * v * -math.log(1e-6)) for v in vec)
            hed = to_space(_one(rgb), "HED").flatten().tolist()
            want = [amount if i == k else 0.0 for i in range(3)]
            assert hed == pytest.approx(want, abs=1e-5)
    assert to_space(_one((1, 1, 1)), "HED").abs().max().item() < 1e-7  # white = no stain


def test_split_ranges_fill_minus_one_to_one() -> None:
    n = 33
    g = torch.linspace(0, 1, n)
    r, gg, b = torch.meshgrid(g, g, g, indexing="ij")
    cube = torch.stack([r, gg, b]).reshape(1, 3, n * n, n)
    for space in SPACES:
        names = CHANNELS[space]
        v1, v2 = ChannelSplit(space, names[0], "".join(names[1:])).split(cube)
        y = torch.cat([v1, v2], 1)
        for i in range(3):
            lo, hi = y[:, i].min().item(), y[:, i].max().item()
            # hue never reaches 1 (wraps to 0): on this grid its top is 1 - 1/192 -> 0.9896
            assert -1.0001 <= lo < -0.98 and 0.98 < hi <= 1.0001, (space, names[i], lo, hi)


@pytest.mark.parametrize("name", sorted(SPLITS))
def test_named_splits_invert(name: str) -> None:
    split = SPLITS[name]
    assert parse_split(name) == split
    x = torch.rand(2, 3, 20, 24, generator=torch.Generator().manual_seed(6))
    v1, v2 = split.split(x)
    c1, c2 = split.in_channels
    assert v1.shape == (2, c1, 20, 24) and v2.shape == (2, c2, 20, 24) and c1 + c2 == 3
    assert (split.merge(v1, v2) - x).abs().max().item() < 1e-4
    # concatenating the views in space order gives the full normalised space
    full = torch.empty(2, 3, 20, 24)
    full[:, list(split.index1)] = v1
    full[:, list(split.index2)] = v2
    lo = torch.tensor([r[0] for r in CHANNEL_RANGES[split.space]]).view(1, 3, 1, 1)
    hi = torch.tensor([r[1] for r in CHANNEL_RANGES[split.space]]).view(1, 3, 1, 1)
    assert torch.allclose((full + 1) / 2 * (hi - lo) + lo, to_space(x, split.space), atol=1e-4)


def test_expected_named_splits_and_channel_counts() -> None:
    for name, counts in {"Lab:L|ab": (1, 2), "YDbDr:Y|DbDr": (1, 2), "YCbCr:Y|CbCr": (1, 2),
                         "YIQ:Y|IQ": (1, 2), "HSV:H|SV": (1, 2), "RGB:R|GB": (1, 2)}.items():
        assert SPLITS[name].in_channels == counts
    s = parse_split("lab:ab|L")
    assert (s.space, s.index1, s.index2, s.in_channels) == ("Lab", (1, 2), (0,), (2, 1))
    assert parse_split("YCbCr:CbCr|Y").index1 == (1, 2)


def test_split_accepts_uint8_and_unbatched() -> None:
    img = torch.randint(0, 256, (3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(7))
    split = SPLITS["Lab:L|ab"]
    a1, a2 = split(img)
    b1, b2 = split.split(img.float().unsqueeze(0) / 255)
    assert a1.shape == (1, 16, 16) and a2.shape == (2, 16, 16)
    assert torch.allclose(a1, b1[0]) and torch.allclose(a2, b2[0])


def test_refusals_name_the_valid_choices() -> None:
    with pytest.raises(UserError) as e:
        parse_split("Lub:L|ab")
    assert "Lub" in e.value.cause and "YDbDr" in e.value.fix
    with pytest.raises(UserError) as e:
        parse_split("Lab:L|ax")
    assert "L, a, b" in e.value.fix
    with pytest.raises(UserError):
        parse_split("Lab:L|La")  # L twice
    with pytest.raises(UserError):
        parse_split("Lab:L|a")  # b in neither view
    with pytest.raises(UserError):
        parse_split("Lab-L-ab")
    with pytest.raises(UserError) as e:
        to_space(torch.rand(1, 3, 4, 4), "YUV")
    assert "HED" in e.value.fix
    with pytest.raises(UserError):
        from_space(torch.rand(1, 2, 4, 4), "Lab")
    with pytest.raises(UserError):
        ChannelSplit("RGB", "", "RGB")


def test_random_spaces_are_deterministic_functions() -> None:
    """Same colour, same output, regardless of batch position (no data-dependent normalisation)."""
    rnd = random.Random(8)
    c = (rnd.random(), rnd.random(), rnd.random())
    x = torch.rand(1, 3, 5, 5)
    x[0, :, 2, 3] = torch.tensor(c)
    for name, split in SPLITS.items():
        v1, _ = split.split(x)
        w1, _ = split.split(_one(c))
        assert torch.allclose(v1[0, :, 2, 3], w1[0, :, 0, 0], atol=1e-6), name
