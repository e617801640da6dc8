"""Invertible view generators and adversarial / semi-supervised view learning (the paper's appendix §B.5).

Owns the VP / NVP coupling blocks (:class:`AdditiveCoupling`, :class:`AffineCoupling`), the stacked
:class:`ViewGenerator`, the I_NCE critic (:class:`ViewLearner`) and :func:`learn_views`, which trains
a generator and writes its checkpoint. Never imports detectron2.

A generator maps a 3-channel image (B, 3, H, W) to a 3-channel image of the same shape through an
invertible, pixel-wise map (every F / G is a stack of 1x1 convolutions, so each pixel's 3 values are
transformed on their own). Its output is split into the two views the colour-channel experiments
of §B.2 consume, a learned analogue of the "L vs ab" split::

    v1 = y[:, :1]     (B, 1, H, W)        v2 = y[:, 1:]     (B, 2, H, W)

Because the map is invertible no information about the image is lost; view learning only decides
how that information is shared between v1 and v2.

Unsupervised view learning: two encoders (``tiny_alexnet(1)`` for v1, ``tiny_alexnet(2)`` for v2)
are an InfoNCE critic trained to *minimise* the InfoNCE loss (maximise the I_NCE estimate); the
generator is trained to *maximise* the same loss (minimise I_NCE) -- a min-max game as in a GAN.
Semi-supervised view learning adds one linear classifier per view on that view's encoder features;
the generator and the classifiers minimise the cross-entropy on both views, so the views keep label
information while the adversarial term removes the rest of what they share.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from infomin_det.atomic import atomic_write, write_text_atomic
from infomin_det.errors import UserError
from pretrain.views.encoders import TinyAlexNet, tiny_alexnet
from pretrain.views.infonce import info_nce

KINDS = ("vp", "nvp")
MODES = ("unsupervised", "semi")
CHECKPOINT_FORMAT = "infomin-det/view-generator"

# NVP scale bound: s = S_MAX * tanh(raw), so one block scales its X1 channel by a factor within
# [e^-S_MAX, e^S_MAX] per pixel. Unbounded exp(s) lets the adversary blow a channel up or shrink it
# to nothing within a few steps (the "relatively unstable" training the paper reports); the bound
# keeps every block well conditioned, hence the stack numerically invertible in float32.
S_MAX = 1.0


def _others(x1_channel: int) -> list[int]:
    """The two channels that form X2 when ``x1_channel`` is X1, in increasing order."""
    return [c for c in range(3) if c != x1_channel]


def _pixel_mlp(c_in: int, c_out: int, hidden: int) -> nn.Sequential:
    """A pixel-wise function (B, c_in, H, W) -> (B, c_out, H, W): 1x1 conv -> LeakyReLU -> 1x1 conv.

    The last conv is zero-initialised, so the function starts at exactly 0 (the coupling block starts
    at the identity map).
    """
    net = nn.Sequential(nn.Conv2d(c_in, hidden, 1), nn.LeakyReLU(0.2), nn.Conv2d(hidden, c_out, 1))
    nn.init.zeros_(net[2].weight)
    nn.init.zeros_(net[2].bias)
    return net


class _Coupling(nn.Module):
    """Common part of the coupling blocks: which channel is X1 and how to split / merge."""

    def __init__(self, x1_channel: int) -> None:
        super().__init__()
        if x1_channel not in (0, 1, 2):
            raise ValueError(f"x1_channel must be 0, 1 or 2, got {x1_channel}")
        self.x1_channel = x1_channel
        self._x2_channels = _others(x1_channel)

    def _split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) -> X1 (B, 1, H, W), X2 (B, 2, H, W)."""
        c = self.x1_channel
        return x[:, c:c + 1], x[:, self._x2_channels]

    def _merge(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`_split`: X1 (B, 1, H, W), X2 (B, 2, H, W) -> (B, 3, H, W)."""
        a, b = x2[:, :1], x2[:, 1:]
        parts = {self.x1_channel: x1, self._x2_channels[0]: a, self._x2_channels[1]: b}
        return torch.cat([parts[0], parts[1], parts[2]], dim=1)


class AdditiveCoupling(_Coupling):
    """Volume-preserving block (seed Figure 3a): Y1 = X1 + F(X2); Y2 = X2 + G(Y1).

    Inverse: X2 = Y2 - G(Y1); X1 = Y1 - F(X2). The Jacobian is a product of two unit-triangular
    maps, so log|det J| = 0 exactly; :meth:`forward` returns zeros by construction.
    """

    def __init__(self, x1_channel: int, hidden: int = 16) -> None:
        super().__init__(x1_channel)
        self.f = _pixel_mlp(2, 1, hidden)
        self.g = _pixel_mlp(1, 2, hidden)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) -> y (B, 3, H, W), log|det J| (B,) = 0."""
        x1, x2 = self._split(x)
        y1 = x1 + self.f(x2)
        y2 = x2 + self.g(y1)
        return self._merge(y1, y2), torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> x (B, 3, H, W) with forward(x)[0] == y."""
        y1, y2 = self._split(y)
        x2 = y2 - self.g(y1)
        x1 = y1 - self.f(x2)
        return self._merge(x1, x2)


class AffineCoupling(_Coupling):
    """Non-volume-preserving block (seed Figure 3b): Y1 = X1 * exp(s(X2)) + t(X2); Y2 = X2.

    ``s = S_MAX * tanh(F(X2))`` (bounded, see :data:`S_MAX`), ``t = G(X2)``. Per sample,
    log|det J| = sum over pixels of s(X2) (nats).
    """

    def __init__(self, x1_channel: int, hidden: int = 16) -> None:
        super().__init__(x1_channel)
        self.f = _pixel_mlp(2, 1, hidden)  # raw log-scale
        self.g = _pixel_mlp(2, 1, hidden)  # shift

    def _scale_shift(self, x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return S_MAX * torch.tanh(self.f(x2)), self.g(x2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) -> y (B, 3, H, W), log|det J| (B,) in nats."""
        x1, x2 = self._split(x)
        s, t = self._scale_shift(x2)
        y1 = x1 * torch.exp(s) + t
        return self._merge(y1, x2), s.flatten(1).sum(1)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> x (B, 3, H, W) with forward(x)[0] == y."""
        y1, y2 = self._split(y)
        s, t = self._scale_shift(y2)
        return self._merge((y1 - t) * torch.exp(-s), y2)


class ViewGenerator(nn.Module):
    """A stack of ``blocks`` coupling blocks of one ``kind`` ("vp" or "nvp").

    Block i uses channel ``i % 3`` as X1 (first, second, third, first, ... as in §B.5). Every F / G
    starts at zero, so a fresh generator is the identity map and view learning starts from the
    input image's own channel split. ``hidden`` is the width of each 1x1-conv MLP.
    """

    def __init__(self, kind: str = "vp", blocks: int = 6, hidden: int = 16) -> None:
        super().__init__()
        if kind not in KINDS:
            raise UserError(f"unknown view-generator kind {kind!r}", f"use one of {', '.join(KINDS)}")
        if blocks < 1 or hidden < 1:
            raise UserError(f"a view generator needs blocks >= 1 and hidden >= 1, got {blocks}, {hidden}",
                            "pass a positive number of coupling blocks (the paper stacks several) and width")
        block = AdditiveCoupling if kind == "vp" else AffineCoupling
        self.kind, self.hidden = kind, hidden
        self.blocks = nn.ModuleList(block(i % 3, hidden) for i in range(blocks))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, 3, H, W) -> y (B, 3, H, W), log|det dy/dx| (B,) in nats (exactly 0 for "vp")."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise UserError(f"a view generator maps (B, 3, H, W) images, got shape {tuple(x.shape)}",
                            "pass a batch of 3-channel images")
        logdet = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        for blk in self.blocks:
            x, ld = blk(x)
            logdet = logdet + ld
        return x, logdet

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """y (B, 3, H, W) -> x (B, 3, H, W), the image with forward(x)[0] == y."""
        for blk in reversed(self.blocks):
            y = blk.inverse(y)
        return y

    def views(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, 3, H, W) -> v1 (B, 1, H, W) = y[:, :1], v2 (B, 2, H, W) = y[:, 1:]."""
        y, _ = self(x)
        return y[:, :1], y[:, 1:]


def to_generator_input(images: torch.Tensor) -> torch.Tensor:
    """RGB in [0, 1] (B, 3, H, W) -> the generator's input space, 2 * rgb - 1 in [-1, 1].

    Centred channels match the ~[-1, 1] normalisation of :mod:`pretrain.views.colorspaces`, the
    range the encoders are fed in §B.2.
    """
    return images * 2 - 1


@dataclass
class ViewLearningSpec:
    """One view-learning run (§B.5).

    ``steps`` optimisation steps (one critic update then one generator update each) on random
    batches of ``batch_size`` images resized to ``image_size`` px. ``temperature`` is InfoNCE's T.
    ``ce_weight`` scales the generator's classification loss in "semi" mode. ``feat_dim`` is the
    encoders' embedding size. Checkpoint and history go to ``output_dir``.
    """

    kind: str = "vp"
    blocks: int = 6
    mode: str = "unsupervised"
    steps: int = 200
    batch_size: int = 64
    # The paper's numbers (Adam, generator 2e-4, I_NCE approximator 6e-4). Note: the OCR'd appendix
    # sentence says "the learning rate of view generator should be larger than that of I_NCE
    # approximator", which contradicts these two numbers; we follow the numbers (as the issue does).
    lr_generator: float = 2e-4
    lr_critic: float = 6e-4
    temperature: float = 0.07
    image_size: int = 64
    seed: int = 0
    output_dir: str = "view_learning"
    hidden: int = 16
    feat_dim: int = 128
    ce_weight: float = 1.0
    progress: bool = True

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise UserError(f"unknown view-generator kind {self.kind!r}", f"use one of {', '.join(KINDS)}")
        if self.mode not in MODES:
            raise UserError(f"unknown view-learning mode {self.mode!r}", f"use one of {', '.join(MODES)}")
        if self.blocks < 1 or self.steps < 1:
            raise UserError(f"blocks and steps must be >= 1, got blocks={self.blocks}, steps={self.steps}",
                            "pass positive numbers of coupling blocks and training steps")
        if self.batch_size < 2:
            raise UserError(f"batch_size must be >= 2 for InfoNCE's in-batch negatives, got {self.batch_size}",
                            "use a batch of at least 2 images (the paper uses 128)")
        if not (self.lr_generator > 0 and self.lr_critic > 0 and self.temperature > 0 and self.ce_weight >= 0):
            raise UserError("learning rates and temperature must be > 0 and ce_weight >= 0",
                            "use e.g. lr_generator=2e-4, lr_critic=6e-4, temperature=0.07, ce_weight=1")
        if not 32 <= self.image_size <= 96:
            raise UserError(f"image_size {self.image_size} is outside the encoders' 32..96 px",
                            "use an image_size between 32 and 96 (the paper uses 64)")


class ViewLearner(nn.Module):
    """Generator + I_NCE critic (+ per-view linear classifiers in "semi" mode), with their optimisers.

    :meth:`critic_step` and :meth:`generator_step` each take one optimiser step on a batch
    ``x`` (B, 3, H, W) in the generator's input space and, in "semi" mode, ``labels`` (B,) int64.
    The encoders are trained by the InfoNCE loss only (they stay a pure I_NCE estimator); the
    classifiers read their features detached in the critic step. In the generator step the critic
    and classifiers are frozen and the classification gradient reaches the generator through them.
    """

    def __init__(self, spec: ViewLearningSpec, num_classes: int = 0) -> None:
        super().__init__()
        self.spec = spec
        self.generator = ViewGenerator(spec.kind, spec.blocks, spec.hidden)
        self.enc1: TinyAlexNet = tiny_alexnet(1, spec.feat_dim)
        self.enc2: TinyAlexNet = tiny_alexnet(2, spec.feat_dim)
        self.semi = spec.mode == "semi"
        critic_params = list(self.enc1.parameters()) + list(self.enc2.parameters())
        if self.semi:
            self.cls1 = nn.Linear(self.enc1.feature_dim, num_classes)
            self.cls2 = nn.Linear(self.enc2.feature_dim, num_classes)
            critic_params += list(self.cls1.parameters()) + list(self.cls2.parameters())
        self.opt_generator = torch.optim.Adam(self.generator.parameters(), lr=spec.lr_generator)
        self.opt_critic = torch.optim.Adam(critic_params, lr=spec.lr_critic)

    def _critic_modules(self) -> list[nn.Module]:
        return [self.enc1, self.enc2] + ([self.cls1, self.cls2] if self.semi else [])

    def _forward_views(self, v1: torch.Tensor, v2: torch.Tensor, labels: torch.Tensor | None,
                       detach_features_for_cls: bool) -> tuple[torch.Tensor, float, torch.Tensor | None]:
        """-> InfoNCE loss (graph), I_NCE (nats), summed CE of both views (graph) or None."""
        f1, f2 = self.enc1.features(v1), self.enc2.features(v2)
        nce = info_nce(self.enc1.head(f1), self.enc2.head(f2), self.spec.temperature)
        ce = None
        if self.semi and labels is not None:
            if detach_features_for_cls:
                f1, f2 = f1.detach(), f2.detach()
            ce = F.cross_entropy(self.cls1(f1), labels) + F.cross_entropy(self.cls2(f2), labels)
        return nce.loss, nce.i_nce, ce

    @torch.no_grad()
    def measure(self, x: torch.Tensor) -> float:
        """The critic's I_NCE (nats) on batch ``x`` without changing anything.

        Uses the encoders' current mode; in train mode BatchNorm normalises with the batch's own
        statistics (running averages are restored afterwards), so repeated calls agree.
        """
        saved = {k: v.clone() for k, v in self.state_dict().items() if "running_" in k or "num_batches" in k}
        v1, v2 = self.generator.views(x)
        _, i_nce, _ = self._forward_views(v1, v2, None, True)
        self.load_state_dict(saved, strict=False)
        return i_nce

    def critic_step(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, float]:
        """One critic update: minimise InfoNCE (+ the classifiers' CE on detached features)."""
        with torch.no_grad():
            v1, v2 = self.generator.views(x)
        loss, i_nce, ce = self._forward_views(v1, v2, labels, detach_features_for_cls=True)
        total = loss if ce is None else loss + ce
        self.opt_critic.zero_grad(set_to_none=True)
        total.backward()
        self.opt_critic.step()
        out = {"critic_loss": float(loss.detach()), "i_nce": i_nce}
        if ce is not None:
            out["cls_loss"] = float(ce.detach()) / 2  # mean over the two views
        return out

    def generator_step(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, float]:
        """One generator update with the critic frozen: maximise InfoNCE (minimise I_NCE) (+ CE)."""
        frozen = self._critic_modules()
        for m in frozen:
            m.requires_grad_(False)
        try:
            v1, v2 = self.generator.views(x)
            loss, i_nce, ce = self._forward_views(v1, v2, labels, detach_features_for_cls=False)
            total = -loss if ce is None else -loss + self.spec.ce_weight * ce
            self.opt_generator.zero_grad(set_to_none=True)
            total.backward()
            self.opt_generator.step()
        finally:
            for m in frozen:
                m.requires_grad_(True)
        out = {"generator_loss": float(total.detach()), "generator_i_nce": i_nce}
        if ce is not None:
            out["generator_cls_loss"] = float(ce.detach()) / 2
        return out


def _check_inputs(spec: ViewLearningSpec, images: torch.Tensor, labels: torch.Tensor | None) -> int:
    """Validate images / labels for ``spec``; return the number of classes (0 when unsupervised)."""
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise UserError(f"view learning needs images as a (N, 3, H, W) tensor, got {shape}",
                        "stack RGB images into one float tensor of shape (N, 3, H, W)")
    if not images.is_floating_point() or float(images.min()) < 0 or float(images.max()) > 1:
        raise UserError("view learning needs float RGB images in [0, 1]",
                        "convert uint8 images with images.float() / 255")
    if images.shape[0] < spec.batch_size:
        raise UserError(f"{images.shape[0]} images are fewer than one batch of {spec.batch_size}",
                        "pass more images or a smaller batch_size")
    if spec.mode == "unsupervised":
        return 0
    if labels is None:
        raise UserError("semi-supervised view learning needs labels, got none",
                        "pass labels (N,) of class indices, or use mode='unsupervised'")
    if not isinstance(labels, torch.Tensor) or labels.dim() != 1 or labels.shape[0] != images.shape[0]:
        shape = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
        raise UserError(f"labels must be one class index per image, shape ({images.shape[0]},), got {shape}",
                        "pass a 1-D integer tensor with one label for each image")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool or int(labels.min()) < 0:
        raise UserError(f"labels must be non-negative integer class indices, got dtype {labels.dtype}",
                        "pass labels as an int64 tensor of 0..C-1")
    num_classes = int(labels.max()) + 1
    if num_classes < 2:
        raise UserError("labels name a single class, so there is nothing to classify",
                        "pass labels with at least two classes, or use mode='unsupervised'")
    return num_classes


def save_generator(generator: ViewGenerator, path: str | Path, extra: dict | None = None) -> Path:
    """Write ``generator`` (kind, blocks, hidden, weights, ``extra``) to ``path`` atomically."""
    path = Path(path)
    ckpt = {"format": CHECKPOINT_FORMAT, "kind": generator.kind, "blocks": len(generator.blocks),
            "hidden": generator.hidden, "state_dict": generator.state_dict(), **(extra or {})}
    with atomic_write(path) as tmp:
        torch.save(ckpt, tmp)
    return path


def load_generator(path: str | Path) -> ViewGenerator:
    """Read a checkpoint written by :func:`save_generator` back into a :class:`ViewGenerator`."""
    from infomin_det.untrusted import torch_load

    ckpt = torch_load(Path(path))  # weights-only: a hostile pickle runs no code
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{path} is not a view-generator checkpoint",
                        "pass the generator.pt that learn_views wrote")
    try:
        gen = ViewGenerator(ckpt["kind"], ckpt["blocks"], ckpt["hidden"])
        gen.load_state_dict(ckpt["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise UserError(f"{path} is a damaged view-generator checkpoint ({type(e).__name__}: {e})",
                        "pass the generator.pt that learn_views wrote") from None
    return gen


def learn_views(spec: ViewLearningSpec, images: torch.Tensor, labels: torch.Tensor | None = None) -> dict:
    """Train a view generator as in §B.5; return its history and write ``generator.pt``.

    ``images``: (N, 3, H, W) float RGB in [0, 1], resized to ``spec.image_size`` here. ``labels``:
    (N,) int class indices, required in "semi" mode (ignored otherwise). Each step draws a random
    batch, updates the critic once, then the generator once.

    Returns ``{"history": {"i_nce": [...], "critic_loss": [...], "generator_loss": [...],
    "cls_loss": [...] (semi only)}, "generator": ViewGenerator, "checkpoint": Path,
    "history_path": Path}`` -- one entry per step; ``i_nce`` (nats) and ``critic_loss`` are the
    critic's on the step's batch before its update, ``cls_loss`` the mean CE of the two views.
    Writes ``output_dir/generator.pt`` and ``output_dir/history.json`` atomically.
    """
    num_classes = _check_inputs(spec, images, labels)
    torch.manual_seed(spec.seed)
    x_all = images.float()
    if x_all.shape[-2:] != (spec.image_size, spec.image_size):
        x_all = F.interpolate(x_all, size=(spec.image_size, spec.image_size), mode="bilinear",
                              antialias=True, align_corners=False).clamp(0, 1)
    x_all = to_generator_input(x_all)
    y_all = labels.long() if num_classes else None
    learner = ViewLearner(spec, num_classes).train()
    rng = torch.Generator().manual_seed(spec.seed)
    keys = ["i_nce", "critic_loss", "generator_loss"] + (["cls_loss"] if num_classes else [])
    history: dict[str, list[float]] = {k: [] for k in keys}
    bar = tqdm(range(spec.steps), desc=f"view learning ({spec.kind}, {spec.mode})", unit="step",
               disable=not spec.progress)
    for _ in bar:
        idx = torch.randperm(x_all.shape[0], generator=rng)[:spec.batch_size]
        x = x_all[idx]
        y = y_all[idx] if y_all is not None else None
        c = learner.critic_step(x, y)
        g = learner.generator_step(x, y)
        rec = {**c, "generator_loss": g["generator_loss"]}
        for k in keys:
            history[k].append(rec[k])
        bar.set_postfix(i_nce=f"{c['i_nce']:.3f}", **({"ce": f"{c['cls_loss']:.3f}"} if num_classes else {}))
        if not math.isfinite(c["critic_loss"]) or not math.isfinite(g["generator_loss"]):
            raise RuntimeError(f"view learning diverged at step {len(history['i_nce'])} (non-finite loss)")
    out_dir = Path(spec.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt = save_generator(learner.generator, out_dir / "generator.pt",
                          {"spec": asdict(spec), "num_classes": num_classes, "final_i_nce": history["i_nce"][-1]})
    hist_path = out_dir / "history.json"
    write_text_atomic(hist_path, json.dumps({"spec": asdict(spec), "history": history}, indent=1) + "\n")
    return {"history": history, "generator": learner.generator.eval(), "checkpoint": ckpt,
            "history_path": hist_path}
