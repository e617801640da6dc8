"""Every image mode Pillow opens reaches the network with the values the same picture has as 8-bit RGB.

One smooth 64x64 reference picture is written in each mode / container; after decoding -- by
``pretrain.decode.open_rgb``, by the fast augmentation (identity recipe, so a view is the decoded
picture), by the linear-evaluation val view (a 56-px centre crop of it) and, on uniform pictures,
by the random train views -- the pixels must match the reference within the stated tolerance:

* lossless containers: exact (0 levels); 16-bit sources ``round(v / 257)``; 16-bit RGB PNG / TIFF,
  which Pillow reduces by dropping the low byte: 1 level;
* YCbCr TIFF: 3 levels (mean <= 1.5), HSV: 6, GIF / animated WebP: 2, LAB (8-bit CIELAB
  quantisation): 17 (mean <= 1.5);
* JPEG q95 4:4:4 (baseline, progressive, CMYK, EXIF-rotated): 6 levels (mean <= 1).

Before ``pretrain.decode`` a 16-bit grey PNG came out 99.6 % white (Pillow's ``convert("RGB")``
clips at 255), PGM / float TIFFs likewise, and EXIF-rotated photos came out sideways.
"""

from __future__ import annotations

import random
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms

from pretrain.augment import AugmentConfig, InfoMinAugment
from pretrain.decode import UnsupportedImage, open_rgb, oriented_size, to_rgb
from pretrain.linear_eval import train_view, val_view

S = 64
_y, _x = np.mgrid[0:S, 0:S] / S
REF = np.stack([128 + 100 * np.sin(2 * np.pi * _x), 128 + 100 * np.cos(2 * np.pi * _y), 255 * _x * _y],
               -1).clip(0, 255).astype(np.uint8)
GRAY = np.asarray(Image.fromarray(REF).convert("L"))
GRAY16 = GRAY.astype(np.uint16) * 257 + (np.arange(S * S).reshape(S, S) % 97).astype(np.uint16)  # low byte varies
GRAY16_AS_8 = ((GRAY16.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
RGB16 = REF.astype(np.uint16) * 257 + 100
JPEG = dict(quality=95, subsampling=0)


def rgb(a: np.ndarray) -> np.ndarray:
    return np.repeat(a[..., None], 3, -1) if a.ndim == 2 else a


def png16(path: Path, arr: np.ndarray) -> None:
    """A 16-bit PNG (grey or RGB) written byte by byte (Pillow writes no 16-bit RGB PNG)."""
    h, w = arr.shape[:2]
    colour = 0 if arr.ndim == 2 else 2
    raw = b"".join(b"\x00" + arr[r].astype(">u2").tobytes() for r in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, colour, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def tiff_rgb16(path: Path, arr: np.ndarray) -> None:
    """An uncompressed little-endian 16-bit RGB TIFF, one strip (Pillow writes none)."""
    h, w, _ = arr.shape
    data = arr.astype("<u2").tobytes()
    entries = [(256, 3, 1, w), (257, 3, 1, h), (258, 3, 3, None), (259, 3, 1, 1), (262, 3, 1, 2),
               (273, 4, 1, None), (277, 3, 1, 3), (278, 3, 1, h), (279, 4, 1, len(data)), (284, 3, 1, 1)]
    ifd_at = 8
    extra_at = ifd_at + 2 + 12 * len(entries) + 4
    bits_at, data_at = extra_at, extra_at + 6
    out = bytearray(b"II*\x00" + struct.pack("<I", ifd_at) + struct.pack("<H", len(entries)))
    for tag, kind, count, value in entries:
        value = bits_at if tag == 258 else data_at if tag == 273 else value
        fmt = "<HHIHH" if kind == 3 and count == 1 else "<HHII"
        out += struct.pack(fmt, tag, kind, count, value, 0) if fmt == "<HHIHH" else struct.pack(fmt, tag, kind, count, value)
    out += struct.pack("<I", 0) + struct.pack("<HHH", 16, 16, 16) + data
    path.write_bytes(bytes(out))


def pgm(path: Path, arr: np.ndarray, maxval: int) -> None:
    path.write_bytes(f"P5\n{arr.shape[1]} {arr.shape[0]}\n{maxval}\n".encode() + arr.astype(">u2").tobytes())


def _exif(orientation: int) -> bytes:
    e = Image.Exif()
    e[0x0112] = orientation
    return e.tobytes()


def _lab(img: Image.Image) -> Image.Image:
    t = ImageCms.buildTransform(ImageCms.createProfile("sRGB"), ImageCms.createProfile("LAB"), "RGB", "LAB")
    return ImageCms.applyTransform(img, t)


def make_cases(d: Path) -> dict[str, tuple[Path, np.ndarray, int, float]]:
    """name -> (file, expected 8-bit RGB, max abs error, max mean abs error)."""
    ref = Image.fromarray(REF)
    pal = ref.quantize(64)
    pal_rgb = np.asarray(pal.convert("RGB"))
    alpha = Image.fromarray((np.arange(S * S).reshape(S, S) * 7 % 256).astype(np.uint8))
    bilevel = Image.fromarray(GRAY).point(lambda v: 255 if v >= 128 else 0).convert("1")
    c: dict[str, tuple[Path, np.ndarray, int, float]] = {}

    def put(name: str, img: Image.Image, suffix: str, expected: np.ndarray, tol: int = 0, mean: float = 0.0, **kw):
        p = d / f"{name}{suffix}"
        img.save(p, **kw)
        c[name] = (p, rgb(expected), tol, mean)

    put("mode_1", bilevel, ".png", np.asarray(bilevel.convert("L")))
    put("mode_L", Image.fromarray(GRAY), ".png", GRAY)
    la = Image.merge("LA", (Image.fromarray(GRAY), alpha))
    put("mode_LA", la, ".png", GRAY)
    put("mode_P", pal, ".png", pal_rgb)
    put("mode_P_transparency", pal, ".png", pal_rgb, transparency=0)
    pa = pal.convert("PA")
    pa.putalpha(alpha)
    put("mode_PA", pa, ".tif", np.asarray(pa.convert("RGB")))
    put("mode_RGB_png", ref, ".png", REF)
    put("mode_RGB_bmp", ref, ".bmp", REF)
    put("mode_RGB_ppm", ref, ".ppm", REF)
    put("mode_RGB_tiff", ref, ".tif", REF)
    rgba = ref.copy()
    rgba.putalpha(alpha)
    put("mode_RGBA", rgba, ".png", REF)
    put("mode_CMYK_tiff", ref.convert("CMYK"), ".tif", REF)
    put("mode_CMYK_jpeg", ref.convert("CMYK"), ".jpg", REF, 6, 1.0, **JPEG)
    put("mode_YCbCr_tiff", ref.convert("YCbCr"), ".tif", REF, 3, 1.5)
    put("mode_LAB_tiff", _lab(ref), ".tif", REF, 17, 1.5)
    put("mode_I16_png", Image.fromarray(GRAY16), ".png", GRAY16_AS_8)
    put("mode_I16_tiff", Image.fromarray(GRAY16), ".tif", GRAY16_AS_8)
    put("mode_I16B_tiff", Image.fromarray(GRAY16.astype(">u2")), ".tif", GRAY16_AS_8)
    put("mode_F_tiff", Image.fromarray((GRAY / 255).astype(np.float32)), ".tif", GRAY)
    put("palette_gif", pal, ".gif", pal_rgb, 2, 0.1)
    put("animated_gif", pal, ".gif", pal_rgb, 2, 0.1, save_all=True,
        append_images=[Image.fromarray(255 - REF).quantize(64)])
    put("animated_webp", ref, ".webp", REF, 2, 0.1, save_all=True, lossless=True,
        append_images=[Image.fromarray(255 - REF)])
    put("jpeg", ref, ".jpg", REF, 6, 1.0, **JPEG)
    put("jpeg_progressive", ref, ".jpg", REF, 6, 1.0, progressive=True, **JPEG)
    # stored turned a quarter left, EXIF orientation 6 says "turn right to display": displays as REF
    put("jpeg_exif_rotated", ref.transpose(Image.Transpose.ROTATE_90), ".jpg", REF, 6, 1.0, exif=_exif(6), **JPEG)
    put("png_exif_mirrored", ref.transpose(Image.Transpose.FLIP_LEFT_RIGHT), ".png", REF, exif=_exif(2))
    png16(d / "rgb16.png", RGB16)
    c["rgb16_png"] = (d / "rgb16.png", REF, 1, 1.0)
    tiff_rgb16(d / "rgb16.tif", RGB16)
    c["rgb16_tiff"] = (d / "rgb16.tif", REF, 1, 1.0)
    pgm(d / "gray16.pgm", GRAY16, 65535)  # Pillow opens maxval > 255 as mode I
    c["mode_I_pgm"] = (d / "gray16.pgm", rgb(GRAY16_AS_8), 0, 0.0)
    pgm(d / "gray_max1000.pgm", np.round(GRAY / 255 * 1000), 1000)
    c["mode_I_pgm_maxval_1000"] = (d / "gray_max1000.pgm", rgb(GRAY), 1, 0.5)
    return c


@pytest.fixture(scope="module")
def cases(tmp_path_factory) -> dict[str, tuple[Path, np.ndarray, int, float]]:
    return make_cases(tmp_path_factory.mktemp("modes"))


def _close(got: np.ndarray, want: np.ndarray, tol: int, mean: float, what: str) -> None:
    assert got.shape == want.shape, (what, got.shape, want.shape)
    err = np.abs(got.astype(int) - want.astype(int))
    assert err.max() <= tol and err.mean() <= mean, \
        f"{what}: max error {err.max()} (allowed {tol}), mean {err.mean():.3f} (allowed {mean}); " \
        f"{(got == 255).mean():.0%} of values are 255"


IDENTITY = AugmentConfig(size=S, crop_min=1.0, flip_p=0.0, jitter_p=0.0, blur_p=0.0, randaug_p=0.0, gray_p=0.0)
NAMES = ["mode_1", "mode_L", "mode_LA", "mode_P", "mode_P_transparency", "mode_PA", "mode_RGB_png", "mode_RGB_bmp",
         "mode_RGB_ppm", "mode_RGB_tiff", "mode_RGBA", "mode_CMYK_tiff", "mode_CMYK_jpeg", "mode_YCbCr_tiff",
         "mode_LAB_tiff", "mode_I16_png", "mode_I16_tiff", "mode_I16B_tiff", "mode_F_tiff", "palette_gif",
         "animated_gif", "animated_webp", "jpeg", "jpeg_progressive", "jpeg_exif_rotated", "png_exif_mirrored",
         "rgb16_png", "rgb16_tiff", "mode_I_pgm", "mode_I_pgm_maxval_1000"]


def test_the_case_list_is_complete(cases):
    assert sorted(cases) == sorted(NAMES)
    modes = {name: Image.open(cases[name][0]).mode for name in NAMES}
    assert {"1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "YCbCr", "LAB", "I", "I;16", "I;16B", "F"} <= set(modes.values())


@pytest.mark.parametrize("name", NAMES)
def test_every_mode_decodes_to_its_8bit_rgb_values(cases, name):
    path, want, tol, mean = cases[name]
    _close(np.asarray(open_rgb(path)), want, tol, mean, f"{name} decode")
    views = InfoMinAugment(IDENTITY)(path, random.Random(0))["views"]  # the fast uint8 training path
    _close(views[0].permute(1, 2, 0).numpy(), want, tol, mean, f"{name} fast augmentation")
    img = val_view(56)(path, random.Random(0))["image"]                 # linear eval / supervised (val)
    _close(img.permute(1, 2, 0).numpy(), want[4:60, 4:60], tol, mean, f"{name} val view")


def test_hsv_images_convert_to_their_rgb():
    img = Image.fromarray(REF).convert("HSV")  # no file format stores HSV: in-memory images only
    _close(np.asarray(to_rgb(img)), REF, 6, 1.0, "HSV")


@pytest.mark.parametrize("mode", ["I;16", "I", "F", "RGB"])
def test_random_train_views_of_uniform_pictures_keep_the_value(tmp_path, mode):
    """Crops, flips and resizes of a uniform picture are that picture's value: train views (linear
    eval, supervised) and the fast pipeline with random crops and flips."""
    value8 = 117
    if mode == "I;16":
        Image.fromarray(np.full((48, 80), value8 * 257 + 60, np.uint16)).save(p := tmp_path / "u.png")
    elif mode == "I":
        pgm(p := tmp_path / "u.pgm", np.full((48, 80), value8 * 257 - 60), 65535)
    elif mode == "F":
        Image.fromarray(np.full((48, 80), value8 / 255, np.float32)).save(p := tmp_path / "u.tif")
    else:
        Image.new("RGB", (80, 48), (value8,) * 3).save(p := tmp_path / "u.png")
    assert Image.open(p).mode == mode
    for seed in range(3):
        tv = train_view(32)(p, random.Random(seed))["image"]
        assert (tv == value8).all(), (mode, tv.unique())
        cfg = AugmentConfig(size=32, jitter_p=0.0, blur_p=0.0, randaug_p=0.0, gray_p=0.0)  # random crops + flips
        out = InfoMinAugment(cfg)(p, random.Random(seed))["views"]
        assert (out == value8).all(), (mode, out.unique())


def test_reduced_jpeg_decode_keeps_orientation_and_values(tmp_path):
    """The draft (1/4-size) JPEG path of the fast pipeline: an EXIF-rotated and a CMYK 256-px JPEG
    give the upright 64-px picture (within 6 levels of a box-filtered reduction of the reference)."""
    big = Image.fromarray(REF).resize((256, 256), Image.Resampling.BICUBIC)
    want = np.asarray(big.resize((S, S), Image.Resampling.BOX))
    big.transpose(Image.Transpose.ROTATE_90).save(rot := tmp_path / "rot.jpg", exif=_exif(6), **JPEG)
    big.convert("CMYK").save(cmyk := tmp_path / "cmyk.jpg", **JPEG)
    for p in (rot, cmyk):
        aug = InfoMinAugment(IDENTITY)
        views = aug(p, random.Random(0))["views"]
        assert aug.last_decode_size == (S, S)  # decoded at 1/4 size
        _close(views[0].permute(1, 2, 0).numpy(), want, 6, 1.0, p.name)


def test_oriented_size_swaps_sides_and_crops_stay_inside(tmp_path):
    Image.fromarray(REF[:, :32]).save(p := tmp_path / "tall.jpg", exif=_exif(6), **JPEG)  # stored 32 x 64
    with Image.open(p) as im:
        assert im.size == (32, 64) and oriented_size(im) == (64, 32)
    aug = InfoMinAugment(AugmentConfig(size=32))
    for seed in range(20):
        aug(p, random.Random(seed))
        for tr in aug.last_trace:
            l, t, r, b = tr.box
            assert 0 <= l < r <= 64 and 0 <= t < b <= 32, tr.box


@pytest.mark.parametrize("kind", ["int32_tiff", "float_0_255", "float_nan"])
def test_images_without_an_8bit_meaning_are_refused_not_clipped(tmp_path, kind):
    if kind == "int32_tiff":
        Image.fromarray(np.full((8, 8), 70000, np.int32)).save(p := tmp_path / "i.tif")
    elif kind == "float_0_255":
        Image.fromarray(GRAY.astype(np.float32)).save(p := tmp_path / "f.tif")  # 0..255 floats: not 0..1
    else:
        a = (GRAY / 255).astype(np.float32)
        a[3, 3] = np.nan
        Image.fromarray(a).save(p := tmp_path / "f.tif")
    with pytest.raises(UnsupportedImage):
        open_rgb(p)


def test_linear_eval_separates_16bit_grey_classes(tmp_path):
    """End to end: classes that differ only in their 16-bit grey level (dark vs mid grey). When
    16-bit PNGs were clipped to white both classes were the same picture (top-1 50 %)."""
    from pretrain.linear_eval import LinearEvalSpec, linear_eval
    from pretrain.train import PretrainSpec, pretrain_worker

    rng = np.random.default_rng(3)
    for c, level in (("dark", 10000), ("mid", 30000)):
        (tmp_path / "data" / c).mkdir(parents=True)
        for i in range(8):
            a = np.clip(level + rng.normal(0, 1500, (6, 8)), 0, 65535)
            big = np.asarray(Image.fromarray(a.astype(np.float32)).resize((64, 48), Image.Resampling.BICUBIC))
            Image.fromarray(np.clip(big, 0, 65535).astype(np.uint16)).save(tmp_path / "data" / c / f"{i}.png")
    data = tmp_path / "data"
    run = pretrain_worker(PretrainSpec(data=str(data), output_dir=str(tmp_path / "run"), arch="R-18", epochs=1,
                                       batch_size=8, queue_size=256, image_size=32, workers=0, progress=False,
                                       tensorboard=False, max_steps=1))
    ev = linear_eval(LinearEvalSpec(run["checkpoint"], str(data), str(data), epochs=4, batch_size=8, image_size=32,
                                    workers=0, progress=False))
    assert ev["top1"] >= 90.0 and ev["val_images"] == 16, ev


def _turbo_used(monkeypatch) -> list[int]:
    """Count the calls that reach libjpeg-turbo's decoder."""
    import pretrain.decode as decode

    calls: list[int] = []
    real = decode.simplejpeg.decode_jpeg

    def counted(*a, **k):
        calls.append(1)
        return real(*a, **k)
    monkeypatch.setattr(decode.simplejpeg, "decode_jpeg", counted)
    return calls


@pytest.mark.parametrize("kind", ["baseline", "progressive", "grey", "subsampled"])
def test_libjpeg_turbo_path_gives_pillows_pixels(tmp_path, monkeypatch, kind):
    """Plain JPEGs skip Pillow's decoder; full size and every DCT reduction are Pillow's own pixels."""
    from pretrain.decode import EncodedImage

    big = Image.fromarray(REF).resize((256, 192), Image.Resampling.BICUBIC)
    opts = {"baseline": JPEG, "progressive": dict(JPEG, progressive=True), "grey": JPEG,
            "subsampled": dict(quality=90, subsampling=2)}[kind]
    (big.convert("L") if kind == "grey" else big).save(p := tmp_path / "a.jpg", **opts)
    calls = _turbo_used(monkeypatch)
    for factor in (1, 2, 4, 8):
        with EncodedImage(p) as enc:
            ours = enc.decode(factor)
        with Image.open(p) as im:
            if factor > 1:
                im.draft("RGB", (256 // factor, 192 // factor))
            ref = np.asarray(im.convert("RGB"), int)
        assert ours.shape == ref.shape == (192 // factor, 256 // factor, 3) and ours.flags["WRITEABLE"]
        assert np.abs(ours.astype(int) - ref).max() <= 1, (kind, factor)
    assert len(calls) == 4


def test_jpegs_libjpeg_turbo_objects_to_are_pillows_to_decide(tmp_path, monkeypatch):
    """A JPEG with junk before a marker (libjpeg warns; Pillow reads it) still decodes, through Pillow;
    a truncated one is refused as Pillow refuses it; CMYK and EXIF-rotated files never reach turbo."""
    from pretrain.decode import DECODE_ERRORS, EncodedImage

    Image.fromarray(REF).save(p := tmp_path / "a.jpg", **JPEG)
    data = p.read_bytes()
    sos = data.index(b"\xff\xda")
    (junk := tmp_path / "junk.jpg").write_bytes(data[:sos] + b"\x00\x00\x00" + data[sos:])
    import simplejpeg

    with pytest.raises(ValueError, match="extraneous bytes"):
        simplejpeg.decode_jpeg(junk.read_bytes(), colorspace="RGB")  # libjpeg-turbo alone refuses it
    with Image.open(junk) as im:
        want = np.asarray(im.convert("RGB"))
    calls = _turbo_used(monkeypatch)
    with EncodedImage(junk) as enc:
        assert np.array_equal(enc.decode(), want)
    assert len(calls) == 1  # tried, refused (strict), handed to Pillow
    (cut := tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(DECODE_ERRORS):
        with EncodedImage(cut) as enc:
            enc.decode()
    Image.fromarray(REF).convert("CMYK").save(c := tmp_path / "c.jpg", **JPEG)
    Image.fromarray(REF).save(r := tmp_path / "r.jpg", exif=_exif(6), **JPEG)
    calls.clear()
    for f in (c, r):
        with EncodedImage(f) as enc:
            assert enc.decode().shape == (S, S, 3)
    assert calls == []
