"""Image folders for pretraining and linear evaluation; corrupt images are skipped and counted.

Layouts: ImageNet (``root/<class>/<image>``, classes = sorted subfolder names) or any folder of
images (searched recursively, no labels: label -1). A sample's randomness is a pure function of
(seed, epoch, index), so a resumed run sees exactly the batches the interrupted one would have.
Pixels come from :mod:`pretrain.decode` (every Pillow mode as 8-bit RGB). A folder where more than
:data:`MAX_UNREADABLE` of the images cannot be decoded is refused up front (:func:`check_decodable`).
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import cv2
import torch
from PIL import Image

from infomin_det.errors import UserError
from pretrain.decode import DECODE_ERRORS, to_rgb

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".ppm", ".pgm", ".tif", ".tiff")
MAX_UNREADABLE = 0.1       # refuse a folder where a larger fraction of the images cannot be decoded
DECODE_CHECK_SAMPLE = 256  # files decoded up front (all of them in a smaller folder)


@dataclass(frozen=True)
class ImageList:
    """Files (sorted, absolute) with integer labels (-1 when the folder has no class layout)."""

    root: str
    files: tuple[str, ...]
    labels: tuple[int, ...]
    classes: tuple[str, ...]


def scan_folder(root: str | os.PathLike) -> ImageList:
    """List the images under ``root``. Raises UserError for a missing, unreadable or empty folder."""
    path = Path(root)
    if not path.is_dir():
        what = "is a file, not a folder" if path.exists() else "does not exist"
        raise UserError(f"image folder {path} {what}",
                        "pass a folder of images (flat, or ImageNet layout root/<class>/*.jpg)")
    if not os.access(path, os.R_OK | os.X_OK):
        raise UserError(f"image folder {path} is not readable", f"check its permissions (chmod -R u+rX {path})")
    files: list[str] = []
    for dirpath, dirnames, filenames in os.walk(path, onerror=_raise_unreadable):
        dirnames.sort()
        files += [os.path.join(dirpath, f) for f in sorted(filenames) if f.lower().endswith(IMAGE_EXTENSIONS)]
    if not files:
        raise UserError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found under {path}",
                        "point at a folder that contains images")
    rels = [Path(f).relative_to(path) for f in files]
    if all(len(r.parts) == 2 for r in rels):
        classes = tuple(sorted({r.parts[0] for r in rels}))
        index = {c: i for i, c in enumerate(classes)}
        labels = tuple(index[r.parts[0]] for r in rels)
    else:
        classes, labels = (), tuple(-1 for _ in rels)
    return ImageList(str(path.resolve()), tuple(files), labels, classes)


def _raise_unreadable(err: OSError) -> None:
    raise UserError(f"cannot read {err.filename}: {err.strerror}", "check the folder's permissions")


def check_decodable(images: ImageList, sample: int = DECODE_CHECK_SAMPLE) -> int:
    """Decode ``sample`` files spread evenly over ``images`` (all of them when there are fewer) the
    way training does; UserError when more than :data:`MAX_UNREADABLE` of them fail, naming the
    first failures and why. Returns the number that failed. JPEGs are decoded at 1/8 size (the
    whole entropy-coded stream is still read, so a truncated file still fails)."""
    n = len(images.files)
    k = min(n, sample)
    picked = sorted({(i * (n - 1)) // max(1, k - 1) for i in range(k)}) if k > 1 else [0]
    bad: list[str] = []
    for i in picked:
        try:
            with Image.open(images.files[i]) as src:
                if src.format == "JPEG":
                    src.draft("RGB", (1, 1))
                to_rgb(src)
        except DECODE_ERRORS as e:
            bad.append(f"{images.files[i]}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    if len(bad) > MAX_UNREADABLE * len(picked):
        raise UserError(f"{len(bad)} of {len(picked)} images checked under {images.root} cannot be decoded "
                        f"(more than {MAX_UNREADABLE:.0%}); first: {'; '.join(bad[:3])}",
                        "repair or remove the unreadable files (or convert them to 8-bit PNG / JPEG)")
    return len(bad)


def worker_init(worker_id: int) -> None:
    """A DataLoader worker's set-up: OpenCV runs sequentially (torch already gives each worker one
    thread), so that N workers keep N cores busy instead of contending for them. (0, not 1: in a
    worker forked from a process that had used OpenCV's thread pool, ``setNumThreads(1)`` can wait
    forever for the pool's threads, which a fork does not copy; 0 is the workaround OpenCV's
    maintainers give for forked workers, opencv/opencv#5150.)"""
    cv2.setNumThreads(0)


def sample_rng(seed: int, epoch: int, index: int) -> random.Random:
    """The per-sample generator: independent streams for every (seed, epoch, index)."""
    return random.Random((seed * 1_000_003 + epoch) * 10_000_019 + index)


class SkipUnreadable(torch.utils.data.Dataset):
    """``ds[i]`` -> ``transform(file, rng)`` plus ``"label"`` and ``"skipped"``. An undecodable file
    is replaced by the next readable one (i + 1, i + 2, ...), so batch shapes stay equal across
    ranks; ``"skipped"`` counts the files passed over. Set ``epoch`` before each epoch."""

    MAX_CONSECUTIVE = 64

    def __init__(self, images: ImageList, transform: Callable[[Any, random.Random], dict[str, torch.Tensor]],
                 seed: int = 0) -> None:
        self.images, self.transform, self.seed, self.epoch = images, transform, seed, 0

    def __len__(self) -> int:
        return len(self.images.files)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        files = self.images.files
        tries = min(self.MAX_CONSECUTIVE, len(files))
        for skipped in range(tries):
            j = (i + skipped) % len(files)
            try:
                out = self.transform(files[j], sample_rng(self.seed, self.epoch, j))
            except DECODE_ERRORS:
                continue
            out["label"] = torch.tensor(self.images.labels[j])
            out["skipped"] = torch.tensor(skipped)
            return out
        raise UserError(f"{tries} consecutive images from {files[i]} on cannot be decoded",
                        "check the image folder (corrupt files, or not images)")


class EpochSampler(torch.utils.data.Sampler[int]):
    """Seeded shuffle per epoch, split across ranks (padded to equal length), drop-last batches,
    starting ``skip_batches`` batches in (for resuming mid-epoch)."""

    def __init__(self, n: int, batch_size: int, rank: int, world: int, seed: int) -> None:
        self.n, self.batch_size, self.rank, self.world, self.seed = n, batch_size, rank, world, seed
        self.epoch, self.skip_batches = 0, 0

    @property
    def batches_per_epoch(self) -> int:
        return (-(-self.n // self.world)) // self.batch_size

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed * 7919 + self.epoch)
        order = torch.randperm(self.n, generator=g).tolist()
        per_rank = -(-self.n // self.world)
        order = (order * (1 + per_rank * self.world // self.n))[: per_rank * self.world]
        mine = order[self.rank::self.world]
        start = self.skip_batches * self.batch_size
        return iter(mine[start: self.batches_per_epoch * self.batch_size])

    def __len__(self) -> int:
        return (self.batches_per_epoch - self.skip_batches) * self.batch_size
