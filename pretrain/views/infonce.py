"""Intra-batch InfoNCE between two views and the I_NCE lower bound it gives (the paper, §3, CPC/CMC).

For a batch of K paired embeddings z1[i] <-> z2[i] (positives on the diagonal, the other K-1 of the
batch as negatives), the symmetric loss is

    L = (CE(z1 z2^T / T, diag) + CE(z2 z1^T / T, diag)) / 2        (nats)

and ``I_NCE = log K - L`` (nats) is the InfoNCE lower bound on I(v1; v2), capped at log K.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class NCE:
    """One batch's contrast. ``loss`` keeps its graph; ``i_nce`` and ``accuracy`` are floats."""

    loss: torch.Tensor
    i_nce: float  # nats, <= log K
    accuracy: float  # fraction of rows whose positive scores highest (top-1 retrieval, both directions)


def info_nce(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.07, normalize: bool = True) -> NCE:
    """Symmetric intra-batch InfoNCE of ``z1`` (K, D) against ``z2`` (K, D); rows i are the positives."""
    if z1.shape != z2.shape or z1.dim() != 2:
        raise ValueError(f"info_nce needs two (K, D) tensors of one shape, got {tuple(z1.shape)} and {tuple(z2.shape)}")
    k = z1.shape[0]
    if k < 2:
        raise ValueError("info_nce needs a batch of at least 2 pairs (the others are the negatives)")
    if normalize:
        z1, z2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
    logits = z1 @ z2.t() / temperature
    target = torch.arange(k, device=z1.device)
    loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2
    with torch.no_grad():
        acc = ((logits.argmax(1) == target).float().mean() + (logits.argmax(0) == target).float().mean()) / 2
    return NCE(loss, math.log(k) - float(loss.detach()), float(acc))
