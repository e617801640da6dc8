"""Colour spaces and channel-split views (the paper's appendix §B.2): RGB <-> 8 spaces, v1 | v2 channel splits.

Owns :func:`to_space` / :func:`from_space` (float (B, 3, H, W) tensors, channel order as in
:data:`CHANNELS`), :class:`ChannelSplit` (one space's channels cut into two views), the named
:data:`SPLITS` and the parser :func:`parse_split` (``"Lab:L|ab"``).

Input RGB is sRGB-encoded, float, in [0, 1]. Output channel ranges (exact over the sRGB cube):

    ==========  =====================================================================
    RGB         R, G, B in [0, 1]
    YCbCr       ITU-R BT.601 full range (JFIF): Y in [0, 1], Cb, Cr in [0, 1] (0.5 = neutral)
    Lab         CIE L*a*b*, D65: L in [0, 100], a in [-86.18, 98.23], b in [-107.86, 94.48]
    HSV         H in [0, 1) (fraction of a turn, as :mod:`colorsys`), S, V in [0, 1]
    YDbDr       SECAM: Y in [0, 1], Db, Dr in [-1.333, 1.333]
    YIQ         NTSC 1953 (the :mod:`colorsys` coefficients): Y in [0, 1],
                I in [-0.599, 0.599], Q in [-0.5251, 0.5251]
    XYZ         CIE 1931, D65, Y of white = 1: X in [0, 0.95047], Y in [0, 1], Z in [0, 1.08883]
    LUV         CIE L*u*v*, D65: L in [0, 100], u in [-83.08, 175.02], v in [-134.10, 107.40]
    HED         Ruifrok & Johnston stain densities: H in [-0.668, 1.878], E in [-1.488, 1.135],
                D in [-0.692, 1.574] (0 = no stain; negative where a colour is no mix of the stains)
    ==========  =====================================================================

Lab / LUV / XYZ linearise with the sRGB transfer function (IEC 61966-2-1: ``c / 12.92`` for
``c <= 0.04045``, else ``((c + 0.055) / 1.055) ** 2.4``) and use the sRGB -> XYZ matrix of
B. Lindbloom (brucelindbloom.com, "RGB/XYZ Matrices", sRGB, D65), whose row sums are the D65
white (0.95047, 1.0, 1.08883) used as reference white; L*, f(t), u', v' follow CIE 15:2004
with epsilon = 216/24389 and kappa = 24389/27.

HED follows scikit-image ``skimage.color.rgb2hed`` (A. C. Ruifrok and D. A. Johnston,
"Quantification of histochemical staining by color deconvolution", Anal. Quant. Cytol. Histol.
23(4):291-299, 2001): optical density ``od = log(max(rgb, 1e-6)) / log(1e-6)`` (in [0, 1]) times
``hed_from_rgb = inv(rgb_from_hed)`` with scikit-image's ``rgb_from_hed`` constants below. Unlike
scikit-image we do NOT clip negative densities to 0, so :func:`from_space` inverts it exactly
(for rgb >= 1e-6).

Split views are rescaled per channel by a FIXED affine map (not data-dependent): the channel's
sRGB-cube range [lo, hi] in :data:`CHANNEL_RANGES` goes to [-1, 1] (``2 (c - lo) / (hi - lo) - 1``);
hue is rescaled like any other channel (its wrap-around at 0/1 is kept).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from infomin_det.errors import UserError

SPACES = ("RGB", "YCbCr", "Lab", "HSV", "YDbDr", "YIQ", "XYZ", "LUV", "HED")

CHANNELS: dict[str, tuple[str, str, str]] = {
    "RGB": ("R", "G", "B"),
    "YCbCr": ("Y", "Cb", "Cr"),
    "Lab": ("L", "a", "b"),
    "HSV": ("H", "S", "V"),
    "YDbDr": ("Y", "Db", "Dr"),
    "YIQ": ("Y", "I", "Q"),
    "XYZ": ("X", "Y", "Z"),
    "LUV": ("L", "u", "v"),
    "HED": ("H", "E", "D"),
}

# sRGB -> XYZ (Lindbloom, sRGB D65). Rows sum to the D65 white below.
_M_XYZ = ((0.4124564, 0.3575761, 0.1804375),
          (0.2126729, 0.7151522, 0.0721750),
          (0.0193339, 0.1191920, 0.9503041))
D65_WHITE = (0.95047, 1.0, 1.08883)

# ITU-R BT.601 luma Y = Kr R + Kg G + Kb B; full-range chroma Cb = 0.5 + (B - Y) / (2 (1 - Kb)),
# Cr = 0.5 + (R - Y) / (2 (1 - Kr)).
_KR, _KB = 0.299, 0.114
_KG = 1 - _KR - _KB
_M_YCBCR = ((_KR, _KG, _KB),
            (-0.5 * _KR / (1 - _KB), -0.5 * _KG / (1 - _KB), 0.5),
            (0.5, -0.5 * _KG / (1 - _KR), -0.5 * _KB / (1 - _KR)))
_OFF_YCBCR = (0.0, 0.5, 0.5)
# SECAM YDbDr.
_M_YDBDR = ((0.299, 0.587, 0.114), (-0.450, -0.883, 1.333), (-1.333, 1.116, 0.217))
# NTSC 1953 YIQ exactly as Python's colorsys: Y = .30R + .59G + .11B, I = .74(R-Y) - .27(B-Y),
# Q = .48(R-Y) + .41(B-Y), expanded.
_M_YIQ = ((0.30, 0.59, 0.11),
          (0.74 * 0.70 + 0.27 * 0.30, -0.74 * 0.59 + 0.27 * 0.59, -0.74 * 0.11 - 0.27 * 0.89),
          (0.48 * 0.70 - 0.41 * 0.30, -0.48 * 0.59 - 0.41 * 0.59, -0.48 * 0.11 + 0.41 * 0.89))
# scikit-image skimage/color/colorconv.py: rgb_from_hed (rows: haematoxylin, eosin, DAB OD vectors).
RGB_FROM_HED = ((0.65, 0.70, 0.29), (0.07, 0.99, 0.11), (0.27, 0.57, 0.78))
_HED_EPS = 1e-6

_EPSILON = 216 / 24389  # CIE: (6/29)^3
_KAPPA = 24389 / 27  # CIE: (29/3)^3
_UPN = 4 * D65_WHITE[0] / (D65_WHITE[0] + 15 * D65_WHITE[1] + 3 * D65_WHITE[2])  # u' of the white
_VPN = 9 * D65_WHITE[1] / (D65_WHITE[0] + 15 * D65_WHITE[1] + 3 * D65_WHITE[2])  # v' of the white

# Per-channel [lo, hi] over the sRGB cube, the fixed affine of the split views (see module doc).
CHANNEL_RANGES: dict[str, tuple[tuple[float, float], ...]] = {
    "RGB": ((0.0, 1.0), (0.0, 1.0), (0.0, 1.0)),
    "YCbCr": ((0.0, 1.0), (0.0, 1.0), (0.0, 1.0)),
    "Lab": ((0.0, 100.0), (-86.183, 98.235), (-107.861, 94.478)),
    "HSV": ((0.0, 1.0), (0.0, 1.0), (0.0, 1.0)),
    "YDbDr": ((0.0, 1.0), (-1.333, 1.333), (-1.333, 1.333)),
    "YIQ": ((0.0, 1.0), (-0.599, 0.599), (-0.5251, 0.5251)),
    "XYZ": ((0.0, 0.95047), (0.0, 1.0), (0.0, 1.08883)),
    "LUV": ((0.0, 100.0), (-83.078, 175.016), (-134.103, 107.399)),
    "HED": ((-0.6679, 1.8780), (-1.4881, 1.1348), (-0.6917, 1.5736)),
}


def _check_space(space: str) -> None:
    if space not in CHANNELS:
        raise UserError(f"unknown colour space {space!r}", f"use one of {', '.join(SPACES)}")


def _check_image(x: torch.Tensor, what: str) -> None:
    if x.dim() != 4 or x.shape[1] != 3 or not x.is_floating_point():
        raise UserError(f"{what} must be a float (B, 3, H, W) tensor, got {x.dtype} {tuple(x.shape)}",
                        "convert images with x.float() / 255 and add a batch dimension")


def _matmul(x: torch.Tensor, m: tuple[tuple[float, ...], ...] | torch.Tensor) -> torch.Tensor:
    """Per-pixel ``m @ [c0, c1, c2]`` on (B, 3, H, W)."""
    mt = torch.as_tensor(m, dtype=torch.float64).to(dtype=x.dtype, device=x.device)
    return torch.einsum("ij,bjhw->bihw", mt, x)


def _inv(m: tuple[tuple[float, ...], ...]) -> torch.Tensor:
    return torch.linalg.inv(torch.tensor(m, dtype=torch.float64))


def _offset(x: torch.Tensor, off: tuple[float, float, float], sign: float) -> torch.Tensor:
    return x + sign * torch.tensor(off, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)


def srgb_to_linear(c: torch.Tensor) -> torch.Tensor:
    """sRGB-encoded [0, 1] -> linear light [0, 1] (IEC 61966-2-1)."""
    return torch.where(c <= 0.04045, c / 12.92, ((c.clamp(min=0.04045) + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(c: torch.Tensor) -> torch.Tensor:
    """Linear light [0, 1] -> sRGB-encoded [0, 1] (IEC 61966-2-1)."""
    return torch.where(c <= 0.0031308, c * 12.92, 1.055 * c.clamp(min=0.0031308) ** (1 / 2.4) - 0.055)


def _white(x: torch.Tensor) -> torch.Tensor:
    return torch.tensor(D65_WHITE, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)


def _f(t: torch.Tensor) -> torch.Tensor:
    return torch.where(t > _EPSILON, t.clamp(min=_EPSILON) ** (1 / 3), (_KAPPA * t + 16) / 116)


def _f_inv(f: torch.Tensor) -> torch.Tensor:
    return torch.where(f ** 3 > _EPSILON, f ** 3, (116 * f - 16) / _KAPPA)


def _xyz_to_lab(xyz: torch.Tensor) -> torch.Tensor:
    fx, fy, fz = _f(xyz / _white(xyz)).unbind(1)
    return torch.stack([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)], 1)


def _lab_to_xyz(lab: torch.Tensor) -> torch.Tensor:
    el, ea, eb = lab.unbind(1)
    fy = (el + 16) / 116
    return torch.stack([_f_inv(fy + ea / 500), _f_inv(fy), _f_inv(fy - eb / 200)], 1) * _white(lab)


def _uv_prime(xyz: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x, y, z = xyz.unbind(1)
    den = x + 15 * y + 3 * z
    safe = torch.where(den > 0, den, torch.ones_like(den))
    return torch.where(den > 0, 4 * x / safe, 0.0), torch.where(den > 0, 9 * y / safe, 0.0)


def _xyz_to_luv(xyz: torch.Tensor) -> torch.Tensor:
    yr = xyz[:, 1] / D65_WHITE[1]
    el = torch.where(yr > _EPSILON, 116 * yr.clamp(min=_EPSILON) ** (1 / 3) - 16, _KAPPA * yr)
    up, vp = _uv_prime(xyz)
    return torch.stack([el, 13 * el * (up - _UPN), 13 * el * (vp - _VPN)], 1)


def _luv_to_xyz(luv: torch.Tensor) -> torch.Tensor:
    el, u, v = luv.unbind(1)
    y = D65_WHITE[1] * torch.where(el > _KAPPA * _EPSILON, ((el + 16) / 116) ** 3, el / _KAPPA)
    pos = el > 0
    l13 = torch.where(pos, 13 * el, torch.ones_like(el))
    up = u / l13 + _UPN
    vp = v / l13 + _VPN
    vp_safe = torch.where(pos & (vp != 0), vp, torch.ones_like(vp))
    x = y * 9 * up / (4 * vp_safe)
    z = y * (12 - 3 * up - 20 * vp) / (4 * vp_safe)
    zero = torch.zeros_like(y)
    return torch.stack([torch.where(pos, x, zero), torch.where(pos, y, zero), torch.where(pos, z, zero)], 1)


def _rgb_to_hsv(rgb: torch.Tensor) -> torch.Tensor:
    r, g, b = rgb.unbind(1)
    maxc, _ = rgb.max(1)
    minc, _ = rgb.min(1)
    delta = maxc - minc
    s = torch.where(maxc > 0, delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc)), 0.0)
    d = torch.where(delta > 0, delta, torch.ones_like(delta))
    h = torch.where(maxc == r, (g - b) / d, torch.where(maxc == g, 2 + (b - r) / d, 4 + (r - g) / d))
    h = torch.where(delta > 0, torch.remainder(h / 6, 1.0), 0.0)
    return torch.stack([h, s, maxc], 1)


def _hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    h, s, v = hsv.unbind(1)
    out = []
    for n in (5.0, 3.0, 1.0):  # R, G, B
        k = torch.remainder(n + 6 * h, 6.0)
        out.append(v - v * s * torch.minimum(k, 4 - k).clamp(0, 1))
    return torch.stack(out, 1)


def _rgb_to_hed(rgb: torch.Tensor) -> torch.Tensor:
    od = torch.log(rgb.clamp(min=_HED_EPS)) / math.log(_HED_EPS)
    # scikit-image: stains_row = od_row @ hed_from_rgb  ==  hed_from_rgb^T @ od (per pixel)
    return _matmul(od, _inv(RGB_FROM_HED).t())


def _hed_to_rgb(hed: torch.Tensor) -> torch.Tensor:
    od = _matmul(hed, torch.tensor(RGB_FROM_HED, dtype=torch.float64).t())
    return torch.exp(od * math.log(_HED_EPS))


def to_space(rgb: torch.Tensor, space: str) -> torch.Tensor:
    """sRGB float (B, 3, H, W) in [0, 1] -> (B, 3, H, W) in ``space`` (ranges in the module doc)."""
    _check_space(space)
    _check_image(rgb, "to_space input")
    if space == "RGB":
        return rgb.clone()
    if space == "YCbCr":
        return _offset(_matmul(rgb, _M_YCBCR), _OFF_YCBCR, +1)
    if space == "YDbDr":
        return _matmul(rgb, _M_YDBDR)
    if space == "YIQ":
        return _matmul(rgb, _M_YIQ)
    if space == "HSV":
        return _rgb_to_hsv(rgb)
    if space == "HED":
        return _rgb_to_hed(rgb)
    xyz = _matmul(srgb_to_linear(rgb), _M_XYZ)
    if space == "XYZ":
        return xyz
    return _xyz_to_lab(xyz) if space == "Lab" else _xyz_to_luv(xyz)


def from_space(x: torch.Tensor, space: str) -> torch.Tensor:
    """(B, 3, H, W) in ``space`` -> sRGB float (B, 3, H, W), [0, 1] for in-gamut input (not clipped)."""
    _check_space(space)
    _check_image(x, "from_space input")
    if space == "RGB":
        return x.clone()
    if space == "YCbCr":
        return _matmul(_offset(x, _OFF_YCBCR, -1), _inv(_M_YCBCR))
    if space == "YDbDr":
        return _matmul(x, _inv(_M_YDBDR))
    if space == "YIQ":
        return _matmul(x, _inv(_M_YIQ))
    if space == "HSV":
        return _hsv_to_rgb(x)
    if space == "HED":
        return _hed_to_rgb(x)
    xyz = x if space == "XYZ" else _lab_to_xyz(x) if space == "Lab" else _luv_to_xyz(x)
    return linear_to_srgb(_matmul(xyz, _inv(_M_XYZ)))


def _parse_channels(space: str, spec: str) -> tuple[int, ...]:
    """``"ab"`` in Lab -> (1, 2): greedy, longest channel name first, case-insensitive."""
    names = CHANNELS[space]
    order = sorted(range(3), key=lambda i: -len(names[i]))
    out: list[int] = []
    rest = spec
    while rest:
        for i in order:
            if rest.lower().startswith(names[i].lower()):
                out.append(i)
                rest = rest[len(names[i]):]
                break
        else:
            raise UserError(f"{spec!r} is not a run of {space} channels",
                            f"{space} channels are {', '.join(names)} (e.g. {names[0]!r} and {''.join(names[1:])!r})")
    if not out:
        raise UserError(f"empty channel group in a {space} split", f"name channels from {', '.join(names)}")
    return tuple(out)


@dataclass(frozen=True)
class ChannelSplit:
    """Views v1 = ``first`` channels, v2 = ``second`` channels of ``space`` (a partition of its 3).

    ``split(rgb)``: sRGB float (B, 3, H, W) in [0, 1] (or uint8 0..255, or unbatched (3, H, W)) ->
    (v1 (B, c1, H, W), v2 (B, c2, H, W)) float, each channel mapped affinely from its sRGB-cube
    range (:data:`CHANNEL_RANGES`) to [-1, 1]. ``in_channels`` = (c1, c2), what
    ``tiny_alexnet(in_channels)`` takes. ``merge(v1, v2)`` inverts ``split`` back to RGB.
    """

    space: str
    first: str
    second: str
    index1: tuple[int, ...] = field(init=False, repr=False)
    index2: tuple[int, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        _check_space(self.space)
        i1, i2 = _parse_channels(self.space, self.first), _parse_channels(self.space, self.second)
        if sorted(i1 + i2) != [0, 1, 2]:
            names = CHANNELS[self.space]
            raise UserError(f"{self.name} does not split the {self.space} channels {', '.join(names)} in two",
                            "give each channel to exactly one view, e.g. "
                            f"{self.space}:{names[0]}|{''.join(names[1:])}")
        object.__setattr__(self, "index1", i1)
        object.__setattr__(self, "index2", i2)

    @property
    def name(self) -> str:
        return f"{self.space}:{self.first}|{self.second}"

    @property
    def in_channels(self) -> tuple[int, int]:
        return len(self.index1), len(self.index2)

    def _affine(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rng = torch.tensor(CHANNEL_RANGES[self.space], dtype=x.dtype, device=x.device)
        return rng[:, 0].view(1, 3, 1, 1), (rng[:, 1] - rng[:, 0]).view(1, 3, 1, 1)

    def split(self, rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        unbatched = rgb.dim() == 3
        x = rgb.unsqueeze(0) if unbatched else rgb
        if x.dtype == torch.uint8:
            x = x.float() / 255
        lo, width = self._affine(x)
        y = 2 * (to_space(x, self.space) - lo) / width - 1
        v1, v2 = y[:, list(self.index1)], y[:, list(self.index2)]
        return (v1[0], v2[0]) if unbatched else (v1, v2)

    __call__ = split

    def merge(self, v1: torch.Tensor, v2: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`split` for batched views: -> sRGB float (B, 3, H, W)."""
        y = torch.empty(v1.shape[0], 3, *v1.shape[2:], dtype=v1.dtype, device=v1.device)
        y[:, list(self.index1)] = v1
        y[:, list(self.index2)] = v2
        lo, width = self._affine(y)
        return from_space((y + 1) * width / 2 + lo, self.space)


def parse_split(spec: str) -> ChannelSplit:
    """``"Lab:L|ab"`` -> ChannelSplit("Lab", "L", "ab"). Space names are case-insensitive."""
    if spec.count(":") != 1 or spec.count("|") != 1 or spec.index(":") > spec.index("|"):
        raise UserError(f"cannot parse channel split {spec!r}",
                        f"write SPACE:FIRST|SECOND, e.g. Lab:L|ab; named splits: {', '.join(SPLITS)}")
    space, rest = spec.split(":")
    first, second = rest.split("|")
    by_lower = {s.lower(): s for s in SPACES}
    if space.strip().lower() not in by_lower:
        raise UserError(f"unknown colour space {space!r} in {spec!r}", f"use one of {', '.join(SPACES)}")
    return ChannelSplit(by_lower[space.strip().lower()], first.strip(), second.strip())


# The paper's §B.2 protocol: each space cut into its first channel (luma-like where there is one)
# and the remaining two; HSV also as V|HS (value is its brightness channel).
SPLITS: dict[str, ChannelSplit] = {
    s.name: s
    for s in (
        ChannelSplit("RGB", "R", "GB"),
        ChannelSplit("YCbCr", "Y", "CbCr"),
        ChannelSplit("Lab", "L", "ab"),
        ChannelSplit("HSV", "H", "SV"),
        ChannelSplit("HSV", "V", "HS"),
        ChannelSplit("YDbDr", "Y", "DbDr"),
        ChannelSplit("YIQ", "Y", "IQ"),
        ChannelSplit("XYZ", "X", "YZ"),
        ChannelSplit("LUV", "L", "uv"),
        ChannelSplit("HED", "H", "ED"),
    )
}
