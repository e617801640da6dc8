"""The benchmark's inputs: 500x375 JPEG q90 made deterministically from the cached photos (no network)."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import numpy as np
from PIL import Image

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_augment.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_augment", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _digest(files):
    return [hashlib.sha256(f.read_bytes()).hexdigest() for f in files]


def test_inputs_are_500x375_q90_and_deterministic(tmp_path):
    bench = _bench()
    photos = tmp_path / "cache" / bench.PACKAGE / "usr" / "share"
    photos.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i, size in enumerate([(800, 600), (1200, 500), (640, 900)]):
        a = rng.integers(0, 256, (size[1] // 20, size[0] // 20, 3), dtype=np.uint8)
        Image.fromarray(a).resize(size, Image.Resampling.BICUBIC).save(photos / f"p{i}.jpg", quality=95)
    files = bench.make_inputs(tmp_path / "cache", 5)
    assert len(files) == 5
    for f in files:
        with Image.open(f) as im:
            assert im.size == (500, 375) and im.format == "JPEG"
            # q90 luminance table: quality 90 scales libjpeg's base table by 20 %: DC entry 16 -> 3
            assert im.quantization[0][0] == 3
    first = _digest(files)
    # reuse of a photo takes another window, so no two inputs are identical
    assert len(set(first)) == 5
    for f in files:
        f.unlink()
    assert _digest(bench.make_inputs(tmp_path / "cache", 5)) == first


def test_a_folder_that_is_not_a_pycontrast_checkout_is_refused(tmp_path):
    import pytest

    bench = _bench()
    (tmp_path / "pycontrast" / "datasets").mkdir(parents=True)      # the layout, but no util.py
    for where in (tmp_path, tmp_path / "nowhere"):
        with pytest.raises(SystemExit) as e:
            bench.pycontrast_methods(where, [], tmp_path)
        assert "is not a PyContrast checkout" in str(e.value) and "fix: git clone" in str(e.value)


def test_bad_device_part_settings_are_refused_before_anything_runs(tmp_path):
    import subprocess
    import sys

    for args, cause in ((["--device", "nonsense"], "--device 'nonsense' is not usable here"),
                        (["--batch", "0"], "--batch 0 is not a batch size")):
        r = subprocess.run([sys.executable, str(BENCH), "--device-part", "--cache", str(tmp_path / "c"), *args],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 1 and cause in r.stderr and "fix:" in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert not (tmp_path / "c").exists()
