"""pretrain.views.spatial: pair distance, placement bias on small vs large images, the coverage
measure against a brute-force count, the views' pixels, refusals and the folder check."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from PIL import Image

from infomin_det.errors import UserError
from pretrain.views.spatial import PatchPairViews, centre_coverage, check_folder, sample_patch_pair


def _centre(box: tuple[int, int, int, int]) -> tuple[float, float]:
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2


@pytest.mark.parametrize("w, h, patch, d", [(2048, 1080, 64, 384), (512, 512, 64, 384), (300, 200, 32, 250),
                                            (256, 256, 64, 0), (96, 96, 16, 7.5)])
def test_distance_and_boxes_inside(w: int, h: int, patch: int, d: float) -> None:
    rng = random.Random(0)
    for _ in range(2000):
        b1, b2 = sample_patch_pair(w, h, patch, d, rng)
        for x0, y0, x1, y1 in (b1, b2):
            assert 0 <= x0 and 0 <= y0 and x1 <= w and y1 <= h
            assert x1 - x0 == patch and y1 - y0 == patch
        (cx1, cy1), (cx2, cy2) = _centre(b1), _centre(b2)
        assert abs(math.hypot(cx2 - cx1, cy2 - cy1) - d) <= math.sqrt(0.5) + 1e-9  # per-axis rounding


def test_large_image_is_unbiased_small_image_pushes_to_border() -> None:
    rng = random.Random(1)
    n = 3000
    mids, inner = [], 0
    for _ in range(n):
        b1, b2 = sample_patch_pair(2048, 2048, 64, 384, rng)
        c1, c2 = _centre(b1), _centre(b2)
        mids.append(((c1[0] + c2[0]) / 2, (c1[1] + c2[1]) / 2))
        inner += all(512 <= v <= 1536 for v in (*c1, *c2))  # the central half (per axis) of the image
    mx, my = np.mean(mids, axis=0)
    assert abs(mx - 1024) < 40 and abs(my - 1024) < 40  # standard error is about 10 px
    assert inner / n > 0.1
    # direction is uniform when every direction fits: quadrants equally likely, mean direction ~ 0
    angles = []
    for _ in range(n):
        b1, b2 = sample_patch_pair(2048, 2048, 64, 384, rng)
        angles.append(math.atan2(b2[1] - b1[1], b2[0] - b1[0]))
    assert abs(np.mean(np.cos(angles))) < 0.06 and abs(np.mean(np.sin(angles))) < 0.06
    counts = np.histogram(angles, bins=4, range=(-math.pi, math.pi))[0] / n
    assert np.all(np.abs(counts - 0.25) < 0.04)
    # on 512x512 the same d never puts both centres in the central half (its diagonal is 362 px < 384)
    for _ in range(1000):
        c1, c2 = map(_centre, sample_patch_pair(512, 512, 64, 384, rng))
        assert not all(128 <= v <= 384 for v in (*c1, *c2))


def _brute_coverage(w: int, h: int, patch: int, d: float, n_pos: int = 80, n_ang: int = 720) -> float:
    """Definition: fraction of (centre position, direction) on a midpoint grid whose partner fits."""
    a, b = w - patch, h - patch
    px = (np.arange(n_pos) + 0.5) / n_pos * a
    py = (np.arange(n_pos) + 0.5) / n_pos * b
    th = (np.arange(n_ang) + 0.5) / n_ang * 2 * np.pi
    qx = px[:, None] + d * np.cos(th)[None, :]  # (pos, ang)
    qy = py[:, None] + d * np.sin(th)[None, :]
    okx = (qx >= 0) & (qx <= a)
    oky = (qy >= 0) & (qy <= b)
    return float((okx[:, None, :] & oky[None, :, :]).mean())


@pytest.mark.parametrize("w, h, patch, d", [(512, 512, 64, 384), (512, 512, 64, 100), (2048, 1080, 64, 384),
                                            (300, 200, 32, 250), (512, 512, 64, 600), (400, 120, 20, 150)])
def test_coverage_matches_brute_force(w: int, h: int, patch: int, d: float) -> None:
    assert centre_coverage(w, h, patch, d) == pytest.approx(_brute_coverage(w, h, patch, d), abs=0.01)


def test_coverage_limits_and_monotonicity() -> None:
    assert centre_coverage(512, 512, 64, 0) == 1.0
    assert centre_coverage(512, 512, 64, 0.5) > 0.998
    values = [centre_coverage(512, 384, 64, d) for d in range(0, 700, 5)]
    assert all(a >= b for a, b in zip(values, values[1:]))
    assert values[10] > values[60] > values[100]  # strictly lower somewhere along the way
    diag = math.hypot(512 - 64, 384 - 64)
    assert centre_coverage(512, 384, 64, diag + 1) == 0.0
    assert centre_coverage(512, 384, 64, diag - 20) > 0.0
    assert centre_coverage(60, 600, 64, 10) == 0.0  # patch wider than the image
    assert centre_coverage(4096, 4096, 64, 384) > centre_coverage(2048, 2048, 64, 384) > \
        centre_coverage(512, 512, 64, 384)


def _coded_image(w: int, h: int) -> Image.Image:
    """Pixel (x, y) stores x and y: R = x % 256, G = y % 256, B = 16 * (x // 256) + y // 256."""
    x = np.arange(w)[None, :].repeat(h, 0)
    y = np.arange(h)[:, None].repeat(w, 1)
    return Image.fromarray(np.stack([x % 256, y % 256, 16 * (x // 256) + y // 256], -1).astype(np.uint8))


def _decode_origin(t) -> tuple[int, int]:
    r, g, b = (int(v) for v in t[:, 0, 0])
    return r + 256 * (b // 16), g + 256 * (b % 16)


def test_views_are_the_image_pixels_at_distance_d() -> None:
    img = _coded_image(1200, 1100)
    views = PatchPairViews(patch=48, distance=200)
    rng = random.Random(2)
    for _ in range(50):
        t1, t2 = views(img, rng)
        assert t1.shape == t2.shape == (3, 48, 48) and str(t1.dtype) == "torch.uint8"
        (x1, y1), (x2, y2) = _decode_origin(t1), _decode_origin(t2)
        assert abs(math.hypot(x2 - x1, y2 - y1) - 200) <= math.sqrt(0.5)
        # the whole patch is the contiguous crop starting there
        assert _decode_origin(t1[:, 47:, 47:]) == (x1 + 47, y1 + 47)
    r1, r2 = PatchPairViews(48, 200, out_size=32)(img, random.Random(3))
    assert r1.shape == r2.shape == (3, 32, 32)
    # same rng seed, same views
    a = views(img, random.Random(4))
    b = views(img, random.Random(4))
    assert all((u == v).all() for u, v in zip(a, b))


def test_refuses_small_image_for_large_distance() -> None:
    views = PatchPairViews(patch=64, distance=384, min_coverage=0.5)
    cov = centre_coverage(512, 512, 64, 384)
    assert cov < 0.5
    with pytest.raises(UserError) as e:
        views(Image.new("RGB", (512, 512)), random.Random(0))
    assert "512x512" in e.value.cause and "384" in e.value.cause and f"{cov:.3f}" in e.value.cause
    assert e.value.fix == "use higher-resolution images (the paper uses 2K DIV2K images) or a smaller distance"
    with pytest.raises(UserError):
        sample_patch_pair(512, 512, 64, 700, random.Random(0))  # beyond the diagonal: cannot fit at all
    with pytest.raises(UserError):
        sample_patch_pair(50, 50, 64, 0, random.Random(0))  # patch larger than the image
    for bad in (dict(patch=0, distance=10), dict(patch=64, distance=-1), dict(patch=64, distance=10, min_coverage=2)):
        with pytest.raises(UserError):
            PatchPairViews(**bad)


def test_check_folder(tmp_path) -> None:
    big, small = tmp_path / "big.png", tmp_path / "small.png"
    Image.new("RGB", (2048, 1536)).save(big)
    Image.new("RGB", (512, 512)).save(small)
    report = check_folder([big, small], patch=64, distance=384, min_coverage=0.5)
    assert report.n_usable == 1 and report.n_refused == 1
    assert report.usable == (big,)
    path, w, h, cov = report.refused[0]
    assert (path, w, h) == (small, 512, 512) and cov == pytest.approx(centre_coverage(512, 512, 64, 384))
    with pytest.raises(UserError) as e:
        check_folder([small], 64, 384, 0.5)
    assert "512x512" in e.value.cause and "DIV2K" in e.value.fix
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(UserError) as e:
        check_folder([big, tmp_path / "notes.txt"], 64, 384, 0.5)
    assert "notes.txt" in e.value.cause
    with pytest.raises(UserError):
        check_folder([], 64, 384, 0.5)
