"""Backbones (torchvision ResNet/ResNeXt, torchvision key names) and MoCo v2 with InfoMin heads.

Shapes: images are uint8 (B, 3, H, W), normalised here (on the model's device); features (B, C)
after global pooling (C = 512 for R-18, 2048 for R-50+); embeddings (B, 128), L2-normalised. JigSaw
patches (B, 9, 3, P, P) are embedded by the query encoder, projected per patch, concatenated in the
(shuffled) order they arrive in, mapped by one linear layer and L2-normalised.
Loss: InfoNCE against the momentum key and the queue at temperature T (``negatives="batch"``: against
the other keys of the global batch instead, every one made by the current key encoder); with JigSaw
``0.5 * main + 0.5 * jigsaw`` (same key and queue). Key encoder uses shuffle-BN across ranks.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from infomin_det.errors import UserError
from infomin_det.weights_meta import ResNetArch
from pretrain.augment import normalize

_BLOCKS = {18: (BasicBlock, [2, 2, 2, 2]), 34: (BasicBlock, [3, 4, 6, 3]), 50: (Bottleneck, [3, 4, 6, 3]),
           101: (Bottleneck, [3, 4, 23, 3]), 152: (Bottleneck, [3, 8, 36, 3])}

# name -> (depth, groups, width_per_group). Wide = torchvision's wide_resnet (bottleneck x k, stem 64).
ARCHS: dict[str, tuple[int, int, int]] = {
    "R-18": (18, 1, 64), "R-34": (34, 1, 64), "R-50": (50, 1, 64), "R-101": (101, 1, 64),
    "R-152": (152, 1, 64), "R-50-w2x": (50, 1, 128), "R-50-w4x": (50, 1, 256),
    "R-101-w2x": (101, 1, 128),
    **{f"X-{d}-{g}x{w}d": (d, g, w) for d in (50, 101, 152) for g, w in ((32, 4), (32, 8), (64, 4))},
}


def arch_of(name: str) -> ResNetArch:
    """Arch name -> ResNetArch (the record the checkpoint and the converter share)."""
    if name not in ARCHS:
        raise UserError(f"unknown backbone {name!r}", f"one of {', '.join(ARCHS)}")
    depth, groups, width = ARCHS[name]
    return ResNetArch(depth, groups, width, 64, 64 if depth < 50 else 256)


def build_backbone(arch: ResNetArch) -> ResNet:
    """torchvision ResNet for ``arch`` with ``fc`` = Identity: forward gives (B, C) pooled features."""
    block, layers = _BLOCKS[arch.depth]
    net = ResNet(block, layers, groups=arch.num_groups, width_per_group=arch.width_per_group,
                 zero_init_residual=False)
    net.fc = nn.Identity()
    return net


def feature_dim(arch: ResNetArch) -> int:
    return 512 if arch.depth < 50 else 2048


def mlp_head(dim_in: int, dim_out: int = 128) -> nn.Sequential:
    """MoCo v2 head: Linear(dim_in, dim_in) -> ReLU -> Linear(dim_in, dim_out)."""
    return nn.Sequential(nn.Linear(dim_in, dim_in), nn.ReLU(inplace=True), nn.Linear(dim_in, dim_out))


class JigsawHead(nn.Module):
    """(B*n, C) patch features -> per-patch MLP -> (B, n*D) in arrival order -> linear -> (B, D), L2-normed."""

    def __init__(self, dim_in: int, dim_out: int = 128, n_patches: int = 9) -> None:
        super().__init__()
        self.n = n_patches
        self.patch = mlp_head(dim_in, dim_out)
        self.fc = nn.Linear(n_patches * dim_out, dim_out)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        z = self.patch(feats).reshape(-1, self.n * self.patch[-1].out_features)
        return F.normalize(self.fc(z), dim=1)


#: where the negatives of the InfoNCE come from: ``queue`` -- MoCo's queue of keys made by earlier
#: key-encoder states (the paper's); ``batch`` -- the other keys of the global batch, all made by the
#: current key encoder (no stale keys, so no "fresh key" shortcut; B - 1 negatives per query).
NEGATIVES = ("queue", "batch")


def check_negatives(name: object) -> None:
    if name not in NEGATIVES:
        raise UserError(f"--negatives {name!r} is not one of {', '.join(NEGATIVES)}",
                        "use queue (MoCo's, the paper's) or batch (the other keys of the batch)")


def _world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


@torch.no_grad()
def concat_all_gather(x: torch.Tensor) -> torch.Tensor:
    if _world() == 1:
        return x
    out = [torch.empty_like(x) for _ in range(_world())]
    dist.all_gather(out, x.contiguous())
    return torch.cat(out)


def _pointer_from_buffer(module: "MoCo", _incompatible: Any) -> None:
    """After ``load_state_dict``: the Python pointer follows the loaded ``queue_ptr`` (one sync, at load)."""
    module._ptr = int(module.queue_ptr)


class MoCo(nn.Module):
    """Query encoder + heads (trained), momentum key encoder + head, queue (dim, K) of keys.

    ``forward(views, jigsaw=None)`` -> dict(loss, loss_main, loss_jig?, acc, acc_batch) ; ``views``
    uint8 (B, 2, 3, S, S): view 0 is the query, view 1 the key. ``acc``: the query's own key scores
    above every queue key (chance 1 / (K + 1)); ``acc_batch``: above every other key of this batch
    (chance 1 / B) -- all made by the same key encoder, so a network cannot meet it by telling
    fresh keys from stale ones (``docs/pretrain.md``, "Does the demo's pretraining learn?").
    """

    def __init__(self, arch: ResNetArch, dim: int = 128, queue_size: int = 65536, momentum: float = 0.999,
                 temperature: float = 0.15, jigsaw: bool = False, negatives: str = "queue") -> None:
        super().__init__()
        check_negatives(negatives)
        self.arch, self.m, self.t, self.use_jigsaw, self.negatives = arch, momentum, temperature, jigsaw, negatives
        c = feature_dim(arch)
        self.encoder_q = build_backbone(arch)
        self.head_q = mlp_head(c, dim)
        self.head_jig = JigsawHead(c, dim) if jigsaw else None
        self.encoder_k = copy.deepcopy(self.encoder_q)
        self.head_k = copy.deepcopy(self.head_q)
        for p in (*self.encoder_k.parameters(), *self.head_k.parameters()):
            p.requires_grad = False
        self.register_buffer("queue", F.normalize(torch.randn(dim, queue_size), dim=0))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))  # checkpointed
        self._ptr = 0  # the same pointer as a Python int: enqueue never reads the device
        self.register_load_state_dict_post_hook(_pointer_from_buffer)

    def heads(self) -> dict[str, nn.Module]:
        h = {"head_q": self.head_q, "head_k": self.head_k}
        if self.head_jig is not None:
            h["head_jig"] = self.head_jig
        return h

    @torch.no_grad()
    def momentum_update(self) -> None:
        """key <- m * key + (1 - m) * query for encoder and head parameters. BN running statistics of
        the key encoder come from its own forward passes (as in MoCo)."""
        for q, k in ((self.encoder_q, self.encoder_k), (self.head_q, self.head_k)):
            for pq, pk in zip(q.parameters(), k.parameters()):
                pk.mul_(self.m).add_(pq.detach(), alpha=1 - self.m)

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Write the (gathered) keys (N, dim) into the ring buffer at the pointer; N must divide K."""
        keys = concat_all_gather(keys)
        n, k = keys.shape[0], self.queue.shape[1]
        if k % n:
            raise UserError(f"queue size {k} is not a multiple of the global batch {n}",
                            "choose --queue-size as a multiple of batch size x processes")
        ptr = self._ptr
        self.queue[:, ptr:ptr + n] = keys.T
        self._ptr = (ptr + n) % k
        self.queue_ptr.fill_(self._ptr)

    @torch.no_grad()
    def _keys(self, x: torch.Tensor) -> torch.Tensor:
        """Key embeddings with shuffle-BN: the batch is permuted across all ranks before the key
        encoder and un-permuted after, so a rank's BN statistics are not those of its query batch.
        One process: no shuffle (nothing to shuffle across), as MoCo's single-GPU runs."""
        world = _world()
        if world == 1:
            return F.normalize(self.head_k(self.encoder_k(x)), dim=1)
        x_all = concat_all_gather(x)
        perm = torch.randperm(x_all.shape[0], device=x.device)
        dist.broadcast(perm, src=0)
        unperm = torch.argsort(perm)
        rank = dist.get_rank()
        mine = perm.view(world, -1)[rank]
        k = F.normalize(self.head_k(self.encoder_k(x_all[mine])), dim=1)
        return concat_all_gather(k)[unperm.view(world, -1)[rank]]

    @torch.no_grad()
    def _negatives(self, k: torch.Tensor) -> torch.Tensor:
        """What this step's InfoNCE losses contrast against, made once per step: the keys of the
        global batch (N, dim), own keys included, or a snapshot of the queue (dim, K)."""
        return concat_all_gather(k) if self.negatives == "batch" else self.queue.clone()

    def _nce(self, q: torch.Tensor, k: torch.Tensor, negatives: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.negatives == "batch":   # own key at column rank * B + i of the gathered keys
            rank = dist.get_rank() if _world() > 1 else 0
            logits = (q @ negatives.T).float() / self.t
            target = torch.arange(q.shape[0], device=q.device) + rank * q.shape[0]
            return F.cross_entropy(logits, target), (logits.argmax(1) == target).float().mean()
        pos = (q * k).sum(1, keepdim=True)
        neg = q @ negatives
        logits = torch.cat([pos, neg], 1).float() / self.t
        target = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
        acc = (logits.argmax(1) == 0).float().mean()
        return F.cross_entropy(logits, target), acc

    @torch.no_grad()
    def key_retrieval(self, batches: list[torch.Tensor]) -> float:
        """Positive-pair accuracy without stale keys: each query's own key must score highest among
        the keys of *all* images of ``batches`` (uint8 (B, 2, 3, S, S) each), every key made by the
        current key encoder. Chance is 1 / (number of images). The training-time ``acc`` compares the
        fresh key with a queue of keys made by older key encoders, which a network can tell apart by
        the encoder's version alone (``docs/pretrain.md``, "Does the demo's pretraining learn?").
        Modes as in training (BN batch statistics per batch); the queue is not touched."""
        qs, ks = [], []
        for views in batches:
            qs.append(F.normalize(self.head_q(self.encoder_q(normalize(views[:, 0]))), dim=1))
            ks.append(F.normalize(self.head_k(self.encoder_k(normalize(views[:, 1]))), dim=1))
        q, k = torch.cat(qs).float(), torch.cat(ks).float()
        return float(((q @ k.T).argmax(1) == torch.arange(len(q), device=q.device)).float().mean())

    def forward(self, views: torch.Tensor, jigsaw: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        xq, xk = normalize(views[:, 0]), normalize(views[:, 1])
        q = F.normalize(self.head_q(self.encoder_q(xq)), dim=1)
        with torch.no_grad():
            self.momentum_update()
            k = self._keys(xk).to(q.dtype)
        negatives = self._negatives(k)
        loss_main, acc = self._nce(q, k, negatives)
        with torch.no_grad():   # every key of the batch made by the same key encoder: no stale-key shortcut
            acc_batch = ((q @ k.T).argmax(1) == torch.arange(len(q), device=q.device)).float().mean()
        out: dict[str, Any] = {"loss_main": loss_main, "acc": acc, "acc_batch": acc_batch}
        if self.use_jigsaw:
            if jigsaw is None:
                raise ValueError("model built with jigsaw=True needs the jigsaw patches")
            feats = self.encoder_q(normalize(jigsaw.flatten(0, 1)))
            loss_jig, _ = self._nce(self.head_jig(feats).to(q.dtype), k, negatives)
            out["loss_jig"] = loss_jig
            out["loss"] = 0.5 * loss_main + 0.5 * loss_jig
        else:
            out["loss"] = loss_main
        if self.negatives == "queue":   # batch negatives never read the queue: no gather, no write
            self.enqueue(k.float())
        return out
