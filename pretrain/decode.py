"""The one way pretraining and evaluation turn an image file into 8-bit RGB pixels.

``to_rgb(img)`` gives, for every mode Pillow opens, the values the same picture has as 8-bit RGB:

* EXIF orientation is applied (a phone photo stored sideways comes out upright);
* 16-bit grey (``I;16``, ``I;16B``, ... from 16-bit PNG / TIFF) is scaled ``v / 257`` (rounded),
  where Pillow's own ``convert("RGB")`` clips every value above 255 -- a white image;
* ``I`` (32-bit integers) only where Pillow has put 16-bit data in it (PGM / PPM with maxval > 255,
  which Pillow rescales to 0..65535); any other ``I`` image (32-bit or signed TIFF) has no defined
  8-bit range and is refused (:class:`UnsupportedImage`);
* ``F`` (32-bit float TIFF / PFM) is read as intensities in [0, 1] (1 = white, as image editors
  write float TIFFs); values outside [0, 1] (beyond half a level) or NaN are refused, never clipped;
* alpha is dropped: ``RGBA``, ``LA``, ``PA``, ``P`` with transparency give their colour channels,
  as torchvision's image loader does (premultiplied ``RGBa`` / ``La`` are un-premultiplied first);
* ``1``, ``L``, ``P``, ``CMYK``, ``YCbCr``, ``LAB`` (through LittleCMS), ``HSV``: Pillow's conversion;
  ICC profiles are not applied (as everywhere in torchvision / timm pipelines);
* animated GIF / WebP: the first frame.

:class:`UnsupportedImage` is a ``ValueError``, so :class:`pretrain.data.SkipUnreadable` counts such
a file as unreadable; :func:`pretrain.data.check_decodable` reports the reason up front.

:class:`EncodedImage` is the augmentation's path: the file read once, its header parsed (the picture's
upright size, for drawing crops), then decoded at a reduced size where the crops allow. Baseline and
progressive JPEGs in YCbCr / grey stored upright decode through libjpeg-turbo's own API
(``simplejpeg``, ~1.8x Pillow's decoder, the same library and IDCT, so the same pixels); every other
file, and any JPEG that libjpeg-turbo reports a recoverable error for, goes through Pillow and
:func:`to_rgb` -- so which files are readable, and their values, are Pillow's.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import simplejpeg
from PIL import Image, ImageOps, UnidentifiedImageError

# what decoding a file may raise (Pillow's many ways of saying "not an image I can read")
DECODE_ERRORS = (OSError, UnidentifiedImageError, SyntaxError, ValueError, Image.DecompressionBombError)

_ORIENTATION = 0x0112
_SWAPS_SIDES = (5, 6, 7, 8)      # EXIF orientations that transpose width and height
_FLOAT_SLACK = 0.5 / 255         # float values this far outside [0, 1] are rounding, not content


class UnsupportedImage(ValueError):
    """A file Pillow decodes but whose pixel values have no defined 8-bit RGB meaning."""


def orientation(img: Image.Image) -> int:
    """The EXIF orientation tag (1..8; 1 = as stored) of an opened image."""
    try:
        value = img.getexif().get(_ORIENTATION, 1)
    except Exception:  # noqa: BLE001 - a broken EXIF block: Pillow raises many types; treat as upright
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def oriented_size(img: Image.Image, upright: int | None = None) -> tuple[int, int]:
    """(width, height) of the picture as displayed (after EXIF orientation; ``upright``: the
    already-read :func:`orientation` of ``img``)."""
    w, h = img.size
    return (h, w) if (orientation(img) if upright is None else upright) in _SWAPS_SIDES else (w, h)


def _gray16_to_l(arr: np.ndarray) -> Image.Image:
    return Image.fromarray(((arr.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8), "L")


def _describe(img: Image.Image) -> str:
    return f"{img.format or 'in-memory'} image of mode {img.mode}"


def to_rgb(img: Image.Image) -> Image.Image:
    """``img`` (any mode, loaded or not) as a new 8-bit RGB image with its picture's values."""
    if orientation(img) != 1:
        img = ImageOps.exif_transpose(img)
    mode = img.mode
    if mode == "RGB":
        return img.copy()
    if mode.startswith("I;16"):
        return _gray16_to_l(np.asarray(img)).convert("RGB")
    if mode == "I":
        if img.format not in ("PPM",):  # PGM/PPM with maxval > 255: Pillow rescales to 0..65535
            raise UnsupportedImage(f"{_describe(img)} (32-bit or signed integers) has no defined 8-bit range; "
                                   "convert it to 8- or 16-bit unsigned")
        arr = np.asarray(img)
        if arr.min() < 0 or arr.max() > 65535:
            raise UnsupportedImage(f"{_describe(img)} has values outside 0..65535")
        return _gray16_to_l(arr).convert("RGB")
    if mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        if not np.isfinite(arr).all() or arr.min() < -_FLOAT_SLACK or arr.max() > 1 + _FLOAT_SLACK:
            lo, hi = (float(np.nanmin(arr)), float(np.nanmax(arr))) if np.isfinite(arr).any() else (np.nan, np.nan)
            raise UnsupportedImage(f"{_describe(img)} has values in [{lo:g}, {hi:g}]{' and NaN/inf' if not np.isfinite(arr).all() else ''}; "
                                   "float images are read as intensities in [0, 1] (1 = white)")
        return Image.fromarray(np.round(np.clip(arr, 0, 1) * 255).astype(np.uint8), "L").convert("RGB")
    if mode == "RGBa":
        return img.convert("RGBA").convert("RGB")
    if mode == "La":
        return img.convert("LA").convert("RGB")
    if mode == "P" and "transparency" in img.info:
        return img.convert("RGBA").convert("RGB")  # the palette colours (no "transparency in bytes" warning)
    try:
        return img.convert("RGB")
    except ValueError as e:
        raise UnsupportedImage(f"{_describe(img)} cannot be converted to RGB ({e})") from None


def open_rgb(fp: Any, reduce_to: tuple[int, int] | None = None) -> Image.Image:
    """Decode the file ``fp`` to 8-bit RGB (:func:`to_rgb`). ``reduce_to``: a JPEG may be decoded
    at 1/2..1/8 size as long as the result stays at least this large (``Image.draft``)."""
    with Image.open(fp) as src:
        if reduce_to is not None and src.format == "JPEG":
            src.draft("RGB", reduce_to)
        return to_rgb(src)


class EncodedImage:
    """An image file in memory with its header parsed; :meth:`decode` gives 8-bit RGB (H, W, 3).

    ``size`` is the upright (width, height), as :func:`oriented_size`. Use as a context manager."""

    def __init__(self, fp: str | Path | BinaryIO) -> None:
        self.data = fp.read() if hasattr(fp, "read") else Path(fp).read_bytes()
        self._img = img = Image.open(io.BytesIO(self.data))
        upright = orientation(img)  # (parses the EXIF block: once)
        self.size = oriented_size(img, upright)
        self._turbo = img.format == "JPEG" and img.mode in ("RGB", "L") and upright == 1

    def decode(self, factor: int = 1) -> np.ndarray:
        """Decode at 1/``factor`` of the size (a JPEG's DCT scaling: ``factor`` in 1, 2, 4, 8; other
        formats ignore it). Returns a C-contiguous uint8 array (H, W, 3) of the upright picture."""
        img = self._img
        if self._turbo:
            w, h = img.size
            try:
                return simplejpeg.decode_jpeg(self.data, colorspace="RGB", min_width=math.ceil(w / factor),
                                              min_height=math.ceil(h / factor))
            except ValueError:
                pass  # libjpeg-turbo's recoverable errors: Pillow decides (it reads some, refuses others)
        if factor > 1 and img.format == "JPEG":
            img.draft("RGB", (math.ceil(img.width / factor), math.ceil(img.height / factor)))
        return np.array(to_rgb(img))

    def close(self) -> None:
        self._img.close()

    def __enter__(self) -> "EncodedImage":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
