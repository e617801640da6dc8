"""Training batches as a pure function of (seed, rank, iteration), so that a resumed run sees exactly
the batches -- and the random augmentations -- an uninterrupted one would.

Detectron2's default train loader draws an infinite shuffled index stream (``TrainingSampler``),
shards it over ranks, groups samples by aspect ratio after loading them (``AspectRatioGroupedDataset``)
and augments them with each worker's numpy stream. Its position is not saved with a checkpoint, so a
resumed run starts the stream again and trains on other images than the uninterrupted run would have.
Here the same sampling is *planned on indices* (:class:`BatchPlan`: one shuffled permutation per
pass, ``rank::world`` shard, two aspect-ratio buckets ``w > h`` / ``w <= h``), batch ``b`` of a rank
is found by replaying the plan (indices only, no image is read), and every sample of batch ``b`` is
augmented under numpy / ``random`` seeded from ``(seed, stream, rank, b, j)``. Resume at iteration
``k`` = start the stream at batch ``k``.

:func:`build_resumable_loader` is what ``Trainer.build_train_loader`` returns; ``.start`` is set by
the trainer after it resumed. :class:`KeyedLoader` restarts its stream whenever a key (the trainer's
iteration) changes -- PreciseBN's data, which Detectron2 otherwise draws from a stream that also
restarts on resume.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from infomin_det.errors import UserError

_DICTS_CACHE: dict[tuple, Any] = {}


def sample_seed(*parts: Any) -> int:
    """A 32-bit seed from any tuple of plain values (stable across processes and runs)."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:4], "little")


class BatchPlan:
    """The index batches of one rank: ``batches(start)`` yields batch ``start``, ``start+1``, ...

    n: dataset size; groups: aspect-ratio bucket of every index (None: no grouping); batch_size: per rank.
    """

    def __init__(self, n: int, groups: np.ndarray | None, batch_size: int, rank: int, world: int, seed: int):
        if n < 1:
            raise UserError("the training set is empty after Detectron2's filtering (no image with annotations)",
                            "check the dataset, or set DATALOADER.FILTER_EMPTY_ANNOTATIONS False")
        self.n, self.groups, self.batch_size = n, groups, batch_size
        self.rank, self.world, self.seed = rank, world, seed

    def _shard(self) -> Iterator[int]:
        pos = 0
        for epoch in range(1 << 62):
            g = torch.Generator().manual_seed(sample_seed(self.seed, "epoch", epoch))
            for i in torch.randperm(self.n, generator=g).tolist():
                if pos % self.world == self.rank:
                    yield i
                pos += 1

    def batches(self, start: int = 0) -> Iterator[list[int]]:
        emitted = 0
        if self.groups is None:
            batch: list[int] = []
            for i in self._shard():
                batch.append(i)
                if len(batch) == self.batch_size:
                    if emitted >= start:
                        yield batch
                    emitted += 1
                    batch = []
            return
        buckets: list[list[int]] = [[], []]
        for i in self._shard():
            bucket = buckets[int(self.groups[i])]
            bucket.append(i)
            if len(bucket) == self.batch_size:
                if emitted >= start:
                    yield bucket[:]
                emitted += 1
                del bucket[:]


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """numpy's and Python's global RNG seeded for one sample; the previous states restored after."""
    np_state, py_state = np.random.get_state(), random.getstate()
    np.random.seed(seed)
    random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)


class TrainStream(IterableDataset):
    """Mapped batches (lists of Detectron2 inputs) of one rank, from batch ``start`` on; a worker of a
    ``DataLoader`` takes every ``num_workers``-th batch, so the loader's output is in batch order."""

    def __init__(self, dicts: Any, mapper: Callable[[dict], Any], plan: BatchPlan, stream: str) -> None:
        self.dicts, self.mapper, self.plan, self.stream = dicts, mapper, plan, stream
        self.start = 0

    def __iter__(self) -> Iterator[list]:
        info = get_worker_info()
        w, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        for b, batch in enumerate(self.plan.batches(self.start), start=self.start):
            if (b - self.start) % workers == w:
                yield [self._sample(b, j, i) for j, i in enumerate(batch)]

    def _sample(self, b: int, j: int, i: int) -> Any:
        seed = sample_seed(self.plan.seed, self.stream, self.plan.rank, b, j)
        rng = np.random.default_rng(seed)
        with _seeded(seed):
            for _ in range(10):
                out = self.mapper(self.dicts[i])
                if out is not None:
                    return out
                i = int(rng.integers(len(self.dicts)))   # a mapper may reject a sample: another, seeded
        raise UserError(f"the dataset mapper rejected 10 samples in a row (batch {b})",
                        "check the dataset and the mapper's filters")


def _as_is(batch: list) -> list:
    return batch


class ResumableLoader:
    """Iterable of training batches; ``start`` (the first iteration) is read when iteration begins."""

    def __init__(self, stream: TrainStream, num_workers: int) -> None:
        self.stream, self.num_workers = stream, num_workers

    @property
    def start(self) -> int:
        return self.stream.start

    @start.setter
    def start(self, value: int) -> None:
        self.stream.start = value

    def __iter__(self) -> Iterator[list]:
        if self.num_workers == 0:
            return iter(self.stream)
        return iter(DataLoader(self.stream, batch_size=None, num_workers=self.num_workers, collate_fn=_as_is))


class KeyedLoader:
    """A loader whose stream restarts at ``key()`` whenever ``key()`` changes (PreciseBN's data at
    iteration k is the same whether or not the run was resumed in between)."""

    def __init__(self, loader: ResumableLoader, key: Callable[[], int]) -> None:
        self.loader, self.key = loader, key
        self._key: int | None = None
        self._it: Iterator[list] | None = None

    def __iter__(self) -> "KeyedLoader":
        return self

    def __next__(self) -> list:
        key = self.key()
        if key != self._key or self._it is None:
            self.loader.start, self._key = key, key
            self._it = iter(self.loader)
        return next(self._it)


def build_resumable_loader(cfg: Any, stream: str = "train") -> ResumableLoader:
    """The training loader of ``cfg`` for this rank (see the module docstring)."""
    from detectron2.data import DatasetMapper, get_detection_dataset_dicts
    from detectron2.data.common import DatasetFromList
    from detectron2.utils import comm

    if cfg.DATALOADER.SAMPLER_TRAIN != "TrainingSampler":
        raise UserError(f"DATALOADER.SAMPLER_TRAIN {cfg.DATALOADER.SAMPLER_TRAIN} is not supported "
                        "(the paper's protocols use TrainingSampler; resumable batches are planned for it)",
                        "drop the DATALOADER.SAMPLER_TRAIN override")
    world, rank = comm.get_world_size(), comm.get_rank()
    if cfg.SOLVER.IMS_PER_BATCH % world:
        raise UserError(f"SOLVER.IMS_PER_BATCH {cfg.SOLVER.IMS_PER_BATCH} is not divisible by the "
                        f"{world} processes", "use a batch size that is a multiple of the process count")
    key = (tuple(cfg.DATASETS.TRAIN), cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS, cfg.MODEL.MASK_ON,
           cfg.INPUT.MASK_FORMAT)
    if key not in _DICTS_CACHE:
        dicts = get_detection_dataset_dicts(cfg.DATASETS.TRAIN, filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS)
        groups = np.array([0 if d["width"] > d["height"] else 1 for d in dicts], dtype=np.uint8)
        _DICTS_CACHE.clear()
        _DICTS_CACHE[key] = (DatasetFromList(dicts, copy=False), groups)
    dicts, groups = _DICTS_CACHE[key]
    plan = BatchPlan(len(dicts), groups if cfg.DATALOADER.ASPECT_RATIO_GROUPING else None,
                     cfg.SOLVER.IMS_PER_BATCH // world, rank, world, cfg.SEED)
    return ResumableLoader(TrainStream(dicts, DatasetMapper(cfg, True), plan, stream), cfg.DATALOADER.NUM_WORKERS)
