"""One point of a view sweep: pretrain the encoder(s) at one (value, seed), measure I_NCE, linear-evaluate.

Owns the per-point procedure (:func:`run_point` -> the point's row, see
:data:`pretrain.views.sweep_outputs.CSV_FIELDS`):

1. **pretrain** TinyAlexNet encoder(s) (:mod:`pretrain.views.encoders`, 128-d embedding) with the
   symmetric intra-batch InfoNCE of :func:`pretrain.views.infonce.info_nce` for ``steps`` steps of
   ``batch_size`` pairs drawn (epoch-wise shuffled, :class:`PairSampler`) from the labelled set's
   TRAIN images, labels unused (patch-distance: pairs from the train photos, see
   :mod:`pretrain.views.sweep_data`). Optimiser: **AdamW** (lr ``lr``, weight decay
   ``weight_decay``), linear warm-up over the first 5% of steps, then cosine to 0 -- Adam rather
   than CMC's SGD(0.03, momentum .9) since the budget is a few hundred steps, not CMC's 3000 epochs
   (a choice for speed of convergence, not tuned against SGD). Encoder initialisation depends on
   the seed only, so the values of one seed are paired.
2. **I_NCE** on the VAL images: encoders in eval mode, the val set cut into ``n_val // K`` fixed
   batches of K = min(batch_size, n_val) pairs (fixed order and fixed view randomness,
   :data:`EVAL_VIEW_SEED`, the same for every point), ``I_NCE = log K - loss`` averaged over the
   batches (nats). The estimate is a lower bound on I(v1; v2) that can never exceed ``log K``
   (loss >= 0): points near ``log_k`` are saturated, not equal. It can be negative for a barely
   trained encoder (loss above log K). The val top-1 pair-retrieval accuracy of the same batches is
   recorded too.
3. **linear evaluation** (also of the same encoders before training: ``init_linear_top1``, the
   random-feature reference drawn as a dotted line in the plot): frozen ``features()`` (128-d,
   pooled) of the deterministic evaluation views -- frequency: [low, high] of the unaugmented
   image, features of the two encoders concatenated (256-d); other families: the unaugmented image
   -- for all train and val images, read by the toolkit's linear probe
   (:func:`pretrain.probe.linear_probe`: standardised, softmax regression, full-batch L-BFGS for
   ``probe_steps`` iterations, L2 penalty ``probe_weight_decay``); top-1 (%) on val.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch

from pretrain.probe import linear_probe
from pretrain.views.encoders import TinyAlexNet, tiny_alexnet
from pretrain.views.families import Views
from pretrain.views.infonce import info_nce
from pretrain.views.sweep_data import SweepData
from pretrain.views.sweep_spec import SweepSpec

EVAL_VIEW_SEED = 12345  # fixed view randomness of the I_NCE batches (same for every point)


class PairSampler:
    """Draws (v1, v2) batches for one family / value / split: epoch-wise shuffled images (or photos
    drawn uniformly for patch-distance) passed through the family's ``make_views``."""

    def __init__(self, spec: SweepSpec, value: float, data: SweepData, split: str, generator: torch.Generator):
        fam = spec.fam
        self.views = fam.make_views(value, spec.image_size)
        self.source = fam.source
        self.data, self.split, self.g = data, split, generator
        self.n = len(data.photos[split]) if self.source == "photos" else len(data.images[split])
        self._order: list[int] = []

    def _indices(self, k: int) -> list[int]:
        if self.source == "photos":
            return torch.randint(0, self.n, (k,), generator=self.g).tolist()
        out: list[int] = []
        while len(out) < k:
            if not self._order:
                self._order = torch.randperm(self.n, generator=self.g).tolist()
            take = min(k - len(out), len(self._order))
            out += self._order[:take]
            self._order = self._order[take:]
        return out

    def __call__(self, k: int) -> Views:
        idx = self._indices(k)
        if self.source == "photos":
            return self.views([self.data.photos[self.split][i] for i in idx], self.g)
        return self.views(self.data.images[self.split][idx], self.g)


def build_encoders(spec: SweepSpec, seed: int) -> list[TinyAlexNet]:
    """[shared encoder] or [encoder of v1, encoder of v2], initialised from ``seed`` only."""
    fam = spec.fam
    torch.manual_seed(seed)
    if fam.shared_encoder:
        return [tiny_alexnet(fam.in_channels[0], spec.feat_dim)]
    return [tiny_alexnet(c, spec.feat_dim) for c in fam.in_channels]


def _embed(encoders: list[TinyAlexNet], v1: torch.Tensor, v2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return encoders[0](v1), encoders[-1](v2)


def pretrain_point(spec: SweepSpec, value: float, seed: int, data: SweepData, progress: bool = True,
                   encoders: list[TinyAlexNet] | None = None) -> tuple[list[TinyAlexNet], float]:
    """Train the encoder(s) of one point (``encoders``, default freshly built from ``seed``);
    returns (the encoders in eval mode, training seconds)."""
    from tqdm import tqdm
    fam = spec.fam
    encoders = build_encoders(spec, seed) if encoders is None else encoders
    params = [p for e in encoders for p in e.parameters()]
    opt = torch.optim.AdamW(params, lr=spec.lr, weight_decay=spec.weight_decay)
    sampler = PairSampler(spec, value, data, "train", torch.Generator().manual_seed(1000 + seed))
    warmup = max(1, spec.steps // 20)
    for e in encoders:
        e.train()
    t0 = time.perf_counter()
    bar = tqdm(range(spec.steps), desc=f"{spec.family} {fam.param}={value:g} seed {seed}", unit="step",
               disable=not progress, leave=False, dynamic_ncols=True)
    for step in bar:
        lr = spec.lr * min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * step / spec.steps))
        for group in opt.param_groups:
            group["lr"] = lr
        v1, v2 = sampler(spec.batch_size)
        nce = info_nce(*_embed(encoders, v1, v2), temperature=spec.temperature)
        opt.zero_grad(set_to_none=True)
        nce.loss.backward()
        opt.step()
        if step % 10 == 0 or step == spec.steps - 1:
            bar.set_postfix(loss=f"{float(nce.loss.detach()):.3f}", i_nce=f"{nce.i_nce:.2f}")
    bar.close()
    for e in encoders:
        e.eval()
    return encoders, time.perf_counter() - t0


@torch.no_grad()
def measure_i_nce(spec: SweepSpec, value: float, encoders: list[TinyAlexNet], data: SweepData) -> dict[str, float]:
    """I_NCE (nats, mean over fixed val batches of K pairs), log K, K, val pair-retrieval accuracy (%)."""
    n_val = len(data.images["val"])
    k = min(spec.batch_size, n_val)
    n_batches = max(1, n_val // k)
    g = torch.Generator().manual_seed(EVAL_VIEW_SEED)
    sampler = PairSampler(spec, value, data, "val", g)
    i_nce, acc = [], []
    for _ in range(n_batches):
        v1, v2 = sampler(k)
        nce = info_nce(*_embed(encoders, v1, v2), temperature=spec.temperature)
        i_nce.append(nce.i_nce)
        acc.append(nce.accuracy)
    return {"i_nce": float(np.mean(i_nce)), "log_k": math.log(k), "k": k, "val_contrast_acc": 100.0 * float(np.mean(acc))}


@torch.no_grad()
def eval_features(spec: SweepSpec, value: float, encoders: list[TinyAlexNet], images: torch.Tensor,
                  chunk: int = 256) -> torch.Tensor:
    """Frozen features of the evaluation views: (N, 128 * number of encoders)."""
    make = spec.fam.eval_views(value)
    out = []
    for i in range(0, len(images), chunk):
        views = make(images[i:i + chunk])
        out.append(torch.cat([e.features(v) for e, v in zip(encoders, views)], dim=1))
    return torch.cat(out)


def probe(spec: SweepSpec, value: float, encoders: list[TinyAlexNet], data: SweepData) -> dict[str, float]:
    """Linear top-1 (%) on val (and on train) of the encoders' frozen evaluation features."""
    feats = {s: eval_features(spec, value, encoders, data.images[s]) for s in ("train", "val")}
    r = linear_probe(feats["train"], data.labels["train"], feats["val"], data.labels["val"],
                     len(data.classes), spec.probe_steps, spec.probe_weight_decay)
    return {"linear_top1": 100.0 * r.accuracy, "linear_train_top1": 100.0 * r.train_accuracy}


def run_point(spec: SweepSpec, value: float, seed: int, data: SweepData, progress: bool = True) -> dict[str, Any]:
    """Linear-evaluate the untrained encoders (``init_linear_top1``: the random-feature reference),
    pretrain them, measure I_NCE, linear-evaluate again: the point's row (its columns:
    :data:`pretrain.views.sweep_outputs.CSV_FIELDS`, plus ``linear_train_top1``)."""
    t0 = time.perf_counter()
    encoders = build_encoders(spec, seed)
    for e in encoders:
        e.eval()
    init = probe(spec, value, encoders, data)
    encoders, train_s = pretrain_point(spec, value, seed, data, progress, encoders)
    row: dict[str, Any] = {"family": spec.family, "param": spec.fam.param, "value": value, "seed": seed}
    row.update(measure_i_nce(spec, value, encoders, data))
    row.update(probe(spec, value, encoders, data))
    row["init_linear_top1"] = init["linear_top1"]
    row["train_seconds"] = train_s
    row["seconds"] = time.perf_counter() - t0
    return row
