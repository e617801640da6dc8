"""Colorful Moving MNIST (the paper's appendix §B.4): data, factor variants, ConvNet+LSTM encoder, training, probes.

Owns everything of the §B.4 experiment in one module:

* :class:`MovingMNISTConfig` and :func:`sample_sequence` / :func:`trajectory` / :func:`render`:
  a real MNIST digit (:func:`pretrain.views.mnist.load_mnist`) moving with constant speed and
  specular reflection over a 64x64 crop of a 96x96 photo. The photos are the STL-10 stand-in of
  this toolkit, :func:`infomin_det.data.pretrain_set.build_pretrain_set` (STL-10-like 96x96 crops
  of real photos; STL-10 itself is not redistributable here).
* :class:`MovingMNIST`, a ``torch.utils.data.Dataset`` generating sample ``i`` from ``(seed, i)``
  alone (no video is stored): v1 = frames 1..k, v2 = frame t of a sequence that shares exactly one
  chosen factor (``shared``) with v1's, plus the factors of both.
* :class:`MovingMNISTEncoder`: 4-layer ConvNet (8, 16, 32, 64 filters) + one-layer LSTM (64).
* :class:`MovingMNISTSpec` / :func:`train_moving_mnist`: intra-batch InfoNCE training.
* :func:`probe`: linear read-out of digit class, position at frame t, or background identity from
  frozen v1 embeddings -- the paper's point is that the factor shared by the views is what is learned.
  The classification read-outs are the toolkit's one linear probe (:mod:`pretrain.probe`, also the
  view sweep's); the position read-out is a least-squares regression.

Geometry. Positions are the (x, y) = (column, row) pixel coordinates of the top-left corner of the
28x28 digit box, continuous, in ``[0, L]`` with ``L = canvas - digit = 36``, so the box always lies
inside the canvas. The start is uniform in ``[0, L]^2``, the direction ``theta ~ U[0, 2 pi)`` (x = cos,
y = sin), the speed ``speed * canvas = 6.4`` px/frame. A step moves by the velocity; a coordinate
that leaves ``[0, L]`` is mirrored at the border (``p -> -p`` or ``p -> 2L - p``) and that velocity
component is negated (specular reflection: speed conserved). One step reflects more than once
per axis only when the speed exceeds ``L`` (36 px/frame, i.e. ``speed > 0.5625``), which the
mirroring loop handles. Frame 1 is at the start position. For drawing, positions are rounded to
the nearest integer pixel (``floor(p + 0.5)``); the physics keeps the continuous trajectory.

Rendering. ``frame = bg * (1 - a) + 255 * a`` per RGB channel inside the digit box, with
``a = digit / 255``: the digit is drawn in WHITE on every sequence ("colorful" refers to the photo
background); uint8 result (rounded). Backgrounds are ``(image id, crop y, crop x)``: a uniformly
random 64x64 crop of one of the first ``n_backgrounds`` images of the pretrain set.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from tqdm import tqdm

from infomin_det.atomic import atomic_write, write_text_atomic
from infomin_det.data.pretrain_set import build_pretrain_set
from infomin_det.errors import UserError
from pretrain.probe import linear_probe, standardise
from pretrain.views.infonce import info_nce
from pretrain.views.mnist import load_mnist

SHARED = ("all", "digit", "position", "background")
FACTORS = ("digit", "position", "background")


# ----------------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MovingMNISTConfig:
    """The §B.4 data. Sizes in px; ``speed`` is a fraction of ``canvas`` per frame; k, t are 1-based.

    ``split``: MNIST digits used (``"train"`` / ``"test"`` / ``"all"``, see :mod:`pretrain.views.mnist`).
    ``pretrain_images``: size of the pretrain set built for backgrounds; ``n_backgrounds``: how many of
    its images (the first ones) backgrounds are drawn from (the background-identity classes of a probe).
    """

    canvas: int = 64
    digit: int = 28
    frames: int = 20
    k: int = 10
    t: int = 20
    speed: float = 0.1
    seed: int = 0
    split: str = "train"
    pretrain_images: int = 300
    n_backgrounds: int = 300

    def __post_init__(self) -> None:
        if not 0 < self.digit < self.canvas:
            raise UserError(f"digit size {self.digit} must be in 1..{self.canvas - 1} (canvas {self.canvas})",
                            "use the paper's canvas=64, digit=28")
        if not (1 <= self.k <= self.frames and 1 <= self.t <= self.frames):
            raise UserError(f"k={self.k} and t={self.t} must lie in 1..frames={self.frames}",
                            "raise frames or lower k / t (seed: k=10, t=20, frames=20)")
        if self.canvas > 96:
            raise UserError(f"canvas {self.canvas} exceeds the 96 px background images", "use canvas <= 96")
        if not 2 <= self.n_backgrounds <= self.pretrain_images:
            raise UserError(f"n_backgrounds={self.n_backgrounds} must lie in 2..pretrain_images={self.pretrain_images}",
                            "lower n_backgrounds or raise pretrain_images")
        if self.speed < 0:
            raise UserError(f"speed {self.speed} is negative", "use a fraction of the canvas >= 0 (seed: 0.1)")

    @property
    def limit(self) -> float:
        """L = canvas - digit (px): positions lie in [0, L]."""
        return float(self.canvas - self.digit)

    @property
    def speed_px(self) -> float:
        """Speed in px/frame (6.4 for the paper's setting)."""
        return self.speed * self.canvas


@dataclass(frozen=True)
class Sequence:
    """The factors of one video: digit (index into ``load_mnist(split)``, label), motion, background.

    ``start``: (x, y) px in [0, L]; ``theta``: radians in [0, 2 pi); ``background``: pretrain-set image
    id; ``crop``: (y, x) px top-left of the 64x64 background crop in the 96x96 image.
    """

    digit_index: int
    label: int
    start: tuple[float, float]
    theta: float
    background: int
    crop: tuple[int, int]


@lru_cache(maxsize=4)
def _digits(split: str) -> tuple[np.ndarray, np.ndarray]:
    return load_mnist(split, progress=False)


@lru_cache(maxsize=4)
def _backgrounds(n_images: int, n_used: int, seed: int) -> np.ndarray:
    """uint8 (n_used, 96, 96, 3): the first ``n_used`` images of ``build_pretrain_set(n_images, 96, seed)``."""
    root = build_pretrain_set(n_images, size=96, seed=seed)
    files = sorted((root / "images").glob("*.jpg"))[:n_used]
    out = np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])
    out.setflags(write=False)
    return out


def digits(cfg: MovingMNISTConfig) -> tuple[np.ndarray, np.ndarray]:
    """The digit pool of ``cfg.split``: images uint8 (N, 28, 28), labels int64 (N,)."""
    return _digits(cfg.split)


def backgrounds(cfg: MovingMNISTConfig) -> np.ndarray:
    """The background pool: uint8 (cfg.n_backgrounds, 96, 96, 3). The pretrain set is built with seed 0."""
    return _backgrounds(cfg.pretrain_images, cfg.n_backgrounds, 0)


def _draw_digit(cfg: MovingMNISTConfig, rng: np.random.Generator, avoid: int | None = None) -> tuple[int, int]:
    labels = digits(cfg)[1]
    i = int(rng.integers(len(labels) - (avoid is not None)))
    if avoid is not None and i >= avoid:
        i += 1  # uniform over the others
    return i, int(labels[i])


def _draw_motion(cfg: MovingMNISTConfig, rng: np.random.Generator) -> tuple[tuple[float, float], float]:
    start = rng.uniform(0.0, cfg.limit, size=2)
    return (float(start[0]), float(start[1])), float(rng.uniform(0.0, 2 * math.pi))


def _draw_background(cfg: MovingMNISTConfig, rng: np.random.Generator,
                     avoid: int | None = None) -> tuple[int, tuple[int, int]]:
    b = int(rng.integers(cfg.n_backgrounds - (avoid is not None)))
    if avoid is not None and b >= avoid:
        b += 1
    y, x = rng.integers(0, 96 - cfg.canvas + 1, size=2)
    return b, (int(y), int(x))


def sample_sequence(cfg: MovingMNISTConfig, rng: np.random.Generator) -> Sequence:
    """Draw one sequence's factors: digit uniform over the split, start/direction/background as documented."""
    i, label = _draw_digit(cfg, rng)
    start, theta = _draw_motion(cfg, rng)
    b, crop = _draw_background(cfg, rng)
    return Sequence(i, label, start, theta, b, crop)


def trajectory(cfg: MovingMNISTConfig, start: tuple[float, float], theta: float,
               n_frames: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Positions and velocities of frames 1..n (default ``cfg.frames``).

    Returns (positions float64 (n, 2) in [0, L], velocities float64 (n, 2) px/frame), (x, y) order;
    ``velocities[i]`` is the velocity leaving frame i+1 (after any reflection at that frame).
    """
    n = cfg.frames if n_frames is None else n_frames
    lim = cfg.limit
    p = np.array(start, dtype=np.float64)
    v = cfg.speed_px * np.array([math.cos(theta), math.sin(theta)])
    pos, vel = np.empty((n, 2)), np.empty((n, 2))
    for f in range(n):
        pos[f], vel[f] = p, v
        p = p + v
        for a in range(2):
            while p[a] < 0 or p[a] > lim:  # mirror; repeats only when |v| > L
                p[a] = -p[a] if p[a] < 0 else 2 * lim - p[a]
                v[a] = -v[a]
    return pos, vel


def pixel_position(p: np.ndarray) -> np.ndarray:
    """Continuous (..., 2) positions -> int64 drawing positions, rounded half up (``floor(p + 0.5)``)."""
    return np.floor(np.asarray(p) + 0.5).astype(np.int64)


def background_crop(cfg: MovingMNISTConfig, background: int, crop: tuple[int, int]) -> np.ndarray:
    """uint8 (canvas, canvas, 3): the background of a sequence."""
    y, x = crop
    return backgrounds(cfg)[background, y:y + cfg.canvas, x:x + cfg.canvas]


def render(cfg: MovingMNISTConfig, digit: np.ndarray, background: np.ndarray, position: np.ndarray) -> np.ndarray:
    """One frame: uint8 (3, canvas, canvas) from digit uint8 (28, 28), background uint8 (canvas, canvas, 3)
    and a continuous (x, y) position (rounded for drawing). White digit, alpha = digit / 255."""
    x, y = (int(c) for c in pixel_position(position))
    d = cfg.digit
    frame = background.astype(np.float32)  # a copy
    a = (digit.astype(np.float32) / 255.0)[..., None]
    box = frame[y:y + d, x:x + d]
    frame[y:y + d, x:x + d] = box * (1.0 - a) + 255.0 * a
    return np.floor(frame + 0.5).astype(np.uint8).transpose(2, 0, 1)


def render_frames(cfg: MovingMNISTConfig, seq: Sequence, frames: list[int]) -> np.ndarray:
    """uint8 (len(frames), 3, canvas, canvas): the given 0-based frames of ``seq``."""
    pos, _ = trajectory(cfg, seq.start, seq.theta, max(frames) + 1)
    digit = digits(cfg)[0][seq.digit_index]
    bg = background_crop(cfg, seq.background, seq.crop)
    return np.stack([render(cfg, digit, bg, pos[f]) for f in frames])


def _factors(cfg: MovingMNISTConfig, seq: Sequence) -> dict[str, Any]:
    pos, _ = trajectory(cfg, seq.start, seq.theta, cfg.t)
    return {"label": seq.label, "digit": seq.digit_index,
            "position": torch.tensor(pos[cfg.t - 1], dtype=torch.float32),
            "background": seq.background, "crop": torch.tensor(seq.crop, dtype=torch.int64)}


def view_pair(cfg: MovingMNISTConfig, shared: str, rng: np.random.Generator) -> tuple[Sequence, Sequence]:
    """v1's sequence and v2's: identical for ``"all"``; otherwise only ``shared`` is equal, and the
    other factors are drawn anew (digit index and background image id are forced to differ)."""
    if shared not in SHARED:
        raise UserError(f"unknown shared factor {shared!r}", f"use one of {', '.join(SHARED)}")
    s1 = sample_sequence(cfg, rng)
    if shared == "all":
        return s1, s1
    i, label = (s1.digit_index, s1.label) if shared == "digit" else _draw_digit(cfg, rng, avoid=s1.digit_index)
    start, theta = (s1.start, s1.theta) if shared == "position" else _draw_motion(cfg, rng)
    b, crop = (s1.background, s1.crop) if shared == "background" else _draw_background(cfg, rng, avoid=s1.background)
    return s1, Sequence(i, label, start, theta, b, crop)


class MovingMNIST(torch.utils.data.Dataset):
    """Pairs (v1, v2) of Colorful Moving MNIST, generated from ``(cfg.seed, index)``; ``length`` items.

    Item: ``{"v1": uint8 (k, 3, 64, 64) = frames 1..k, "v2": uint8 (3, 64, 64) = frame t of v2's
    sequence, "f1": factors of v1's sequence, "f2": factors of v2's}``, where factors are
    ``{"label": int 0..9, "digit": int index into load_mnist(split), "position": float32 (2,) (x, y) px
    at frame t, "background": int image id, "crop": int64 (2,) (y, x)}``. The default collate stacks
    them (v1 -> (B, k, 3, 64, 64)).
    """

    def __init__(self, cfg: MovingMNISTConfig, shared: str = "all", length: int = 10_000) -> None:
        if shared not in SHARED:
            raise UserError(f"unknown shared factor {shared!r}", f"use one of {', '.join(SHARED)}")
        self.cfg, self.shared, self.length = cfg, shared, length
        digits(cfg), backgrounds(cfg)  # fetch / build now, not inside a worker

    def __len__(self) -> int:
        return self.length

    def sequences(self, index: int) -> tuple[Sequence, Sequence]:
        """The (v1, v2) sequences of item ``index`` (deterministic in ``(cfg.seed, index)``)."""
        rng = np.random.default_rng([self.cfg.seed, index])
        return view_pair(self.cfg, self.shared, rng)

    def __getitem__(self, index: int) -> dict[str, Any]:
        cfg = self.cfg
        s1, s2 = self.sequences(index)
        v1 = render_frames(cfg, s1, list(range(cfg.k)))
        v2 = render_frames(cfg, s2, [cfg.t - 1])[0]
        return {"v1": torch.from_numpy(v1), "v2": torch.from_numpy(v2),
                "f1": _factors(cfg, s1), "f2": _factors(cfg, s2)}


# ----------------------------------------------------------------------------------------------
# encoder
# ----------------------------------------------------------------------------------------------


def to_float(frames: torch.Tensor) -> torch.Tensor:
    """uint8 frames in 0..255 -> float32 in [-1, 1] (same shape); float input is passed through."""
    return frames.float() / 127.5 - 1.0 if frames.dtype == torch.uint8 else frames


class MovingMNISTEncoder(nn.Module):
    """§B.4 encoder: ONE ConvNet for every frame (v1's and v2's weights are shared), an LSTM over v1.

    ConvNet: 4 x (conv 3x3 stride 2 -> BatchNorm -> ReLU) with 8, 16, 32, 64 filters
    (64 -> 32 -> 16 -> 8 -> 4 px), global average pooling -> (N, 64) per frame.

    ``embed_v1(v1)``: (B, k, 3, H, W) -> frame features (B, k, 64) -> one-layer LSTM (hidden 64)
    -> last hidden state (B, 64), in (-1, 1). ``embed_v2(v2)``: (B, 3, H, W) -> ConvNet (B, 64) ->
    Linear(64, 64) (B, 64) (the pooled ReLU features are non-negative; the linear head lets v2's
    embedding span the same space as the LSTM's). Frames: uint8 0..255 or float in [-1, 1].
    Embeddings are not L2-normalised (``info_nce`` normalises).
    """

    widths = (8, 16, 32, 64)
    dim = 64

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = 3
        for w in self.widths:
            layers += [nn.Conv2d(c, w, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
            c = w
        self.convnet = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.lstm = nn.LSTM(self.dim, self.dim, num_layers=1, batch_first=True)
        self.head2 = nn.Linear(self.dim, self.dim)

    def frame_features(self, frames: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> (N, 64) pooled ConvNet features (>= 0)."""
        return self.convnet(to_float(frames))

    def embed_v1(self, v1: torch.Tensor) -> torch.Tensor:
        """(B, k, 3, H, W) -> (B, 64): the LSTM's last hidden state over the k frame features."""
        b, k = v1.shape[:2]
        feats = self.frame_features(v1.reshape(b * k, *v1.shape[2:])).reshape(b, k, self.dim)
        _, (h, _) = self.lstm(feats)
        return h[-1]

    def embed_v2(self, v2: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, 64)."""
        return self.head2(self.frame_features(v2))

    def forward(self, v1: torch.Tensor, v2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, k, 3, H, W), (B, 3, H, W) -> the two (B, 64) embeddings."""
        return self.embed_v1(v1), self.embed_v2(v2)


# ----------------------------------------------------------------------------------------------
# training
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MovingMNISTSpec:
    """One contrastive run. ``variant`` is the factor v2 shares with v1 (:data:`SHARED`).

    Each step draws ``batch_size`` fresh sequences (items ``step * batch_size + j`` of the dataset; no
    epochs: the paper's 200 epochs over a fixed set become ``steps`` fresh batches). Intra-batch
    contrast: ``batch_size - 1`` negatives. SGD (momentum, weight decay), lr cosine-decayed from ``lr``
    to 0 over ``steps``. ``temperature`` of InfoNCE. Outputs go to ``output_dir``.
    """

    variant: str
    steps: int
    output_dir: str
    batch_size: int = 128
    lr: float = 0.03
    temperature: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    seed: int = 0
    data: MovingMNISTConfig = field(default_factory=MovingMNISTConfig)
    num_workers: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        if self.variant not in SHARED:
            raise UserError(f"unknown variant {self.variant!r}", f"use one of {', '.join(SHARED)}")
        if self.steps < 1 or self.batch_size < 2:
            raise UserError(f"steps={self.steps}, batch_size={self.batch_size}: need >= 1 step and >= 2 per batch",
                            "use e.g. steps=2000, batch_size=128 (seed)")


def train_moving_mnist(spec: MovingMNISTSpec) -> dict[str, Any]:
    """Train a :class:`MovingMNISTEncoder` on ``spec``; write ``history.json`` and ``model_final.pth``.

    Returns ``{"history": [{"step", "i_nce" (nats, <= log B), "loss", "accuracy", "lr"}, ...],
    "i_nce_start", "i_nce_end" (means over the first / last min(10, steps) steps), "checkpoint": path,
    "history_file": path, "encoder": the trained module (eval mode)}``. Both files are written atomically;
    the checkpoint holds ``{"model": state_dict, "spec": dict}``.
    """
    out = Path(spec.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(spec.seed)
    data_cfg = replace(spec.data, seed=spec.data.seed + 1000 * spec.seed)
    ds = MovingMNIST(data_cfg, spec.variant, length=spec.steps * spec.batch_size)
    loader = torch.utils.data.DataLoader(ds, batch_size=spec.batch_size, shuffle=False, drop_last=True,
                                         num_workers=spec.num_workers)
    model = MovingMNISTEncoder()
    opt = torch.optim.SGD(model.parameters(), lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=spec.steps)
    history: list[dict[str, float]] = []
    model.train()
    bar = tqdm(loader, total=spec.steps, desc=f"moving-mnist {spec.variant}", unit="step", disable=not spec.progress)
    for step, batch in enumerate(bar):
        z1, z2 = model(batch["v1"], batch["v2"])
        nce = info_nce(z1, z2, spec.temperature)
        opt.zero_grad(set_to_none=True)
        nce.loss.backward()
        lr = opt.param_groups[0]["lr"]
        opt.step()
        sched.step()
        history.append({"step": step, "i_nce": nce.i_nce, "loss": float(nce.loss.detach()),
                        "accuracy": nce.accuracy, "lr": lr})
        bar.set_postfix(i_nce=f"{nce.i_nce:.3f}", acc=f"{nce.accuracy:.2f}")
    n = min(10, len(history))
    spec_dict = asdict(spec)
    result = {"spec": spec_dict, "history": history,
              "i_nce_start": float(np.mean([h["i_nce"] for h in history[:n]])),
              "i_nce_end": float(np.mean([h["i_nce"] for h in history[-n:]])),
              "i_nce_max": math.log(spec.batch_size)}
    ckpt = out / "model_final.pth"
    with atomic_write(ckpt) as tmp:
        torch.save({"model": model.state_dict(), "spec": spec_dict}, tmp)
    hist_file = out / "history.json"
    write_text_atomic(hist_file, json.dumps(result, indent=1) + "\n")
    model.eval()
    return {**result, "checkpoint": str(ckpt), "history_file": str(hist_file), "encoder": model}


def load_encoder(checkpoint: str | Path) -> MovingMNISTEncoder:
    """A :class:`MovingMNISTEncoder` (eval mode) from a ``model_final.pth`` of :func:`train_moving_mnist`."""
    from infomin_det.untrusted import torch_load

    ckpt = torch_load(checkpoint)  # weights-only: a hostile pickle runs no code
    model = MovingMNISTEncoder()
    try:
        model.load_state_dict(ckpt["model"])
    except (KeyError, TypeError, RuntimeError) as e:
        raise UserError(f"{checkpoint} is not a model_final.pth of train_moving_mnist ({type(e).__name__}: {e})",
                        "pass the model_final.pth that train_moving_mnist wrote") from None
    return model.eval()


# ----------------------------------------------------------------------------------------------
# probes
# ----------------------------------------------------------------------------------------------


@torch.no_grad()
def _embed(encoder: MovingMNISTEncoder, cfg: MovingMNISTConfig, seqs: list[Sequence], batch: int = 128) -> torch.Tensor:
    encoder.eval()
    out = []
    for i in range(0, len(seqs), batch):
        v1 = np.stack([render_frames(cfg, s, list(range(cfg.k))) for s in seqs[i:i + batch]])
        out.append(encoder.embed_v1(torch.from_numpy(v1)))
    return torch.cat(out)


def probe(encoder: MovingMNISTEncoder, factor: str, n_train: int = 1000, n_test: int = 500,
          cfg: MovingMNISTConfig | None = None, seed: int = 0, steps: int = 100,
          n_background_classes: int = 10, weight_decay: float = 1e-3) -> dict[str, float]:
    """Linear read-out of one factor from frozen v1 embeddings (B, 64) (standardised on the train part,
    :func:`pretrain.probe.standardise`); ``seed`` draws the train / test sequences.

    ``"digit"``: the toolkit's linear probe (:func:`pretrain.probe.linear_probe`: softmax regression,
    ``steps`` full-batch L-BFGS iterations, L2 penalty ``weight_decay``) on the label; train sequences
    use the MNIST train split, test ones the test split -> ``{"accuracy", "chance": 0.1}``.
    ``"position"``: least-squares linear regression (with bias) of the (x, y) position at frame t ->
    ``{"mean_error_px"`` (mean Euclidean error on test), ``"baseline_error_px"`` (predicting the train
    mean)}``. ``"background"``: softmax regression on which of ``n_background_classes`` photos the
    background crop comes from (crop offsets random), the same probe -> ``{"accuracy", "chance"}``.
    All returned numbers are floats; accuracies in [0, 1], errors in px in [0, L * sqrt 2].
    """
    if factor not in FACTORS:
        raise UserError(f"unknown probe factor {factor!r}", f"use one of {', '.join(FACTORS)}")
    base = cfg or MovingMNISTConfig()
    parts = {}
    for name, n, split in (("train", n_train, "train"), ("test", n_test, "test")):
        c = replace(base, split=split if factor == "digit" else base.split,
                    n_backgrounds=n_background_classes if factor == "background" else base.n_backgrounds)
        rng = np.random.default_rng([seed, 7, 0 if name == "train" else 1])
        seqs = [sample_sequence(c, rng) for _ in range(n)]
        parts[name] = (c, seqs, _embed(encoder, c, seqs))
    xtr, xte = parts["train"][2], parts["test"][2]
    if factor == "position":
        xtr, xte = standardise(xtr, xte)
        pos = {k: torch.tensor(np.stack([trajectory(c, s.start, s.theta, c.t)[0][c.t - 1] for s in seqs]),
                               dtype=torch.float64) for k, (c, seqs, _) in parts.items()}
        a_tr = torch.cat([xtr.double(), torch.ones(len(xtr), 1, dtype=torch.float64)], 1)
        a_te = torch.cat([xte.double(), torch.ones(len(xte), 1, dtype=torch.float64)], 1)
        w = torch.linalg.lstsq(a_tr, pos["train"]).solution
        err = (a_te @ w - pos["test"]).norm(dim=1).mean()
        baseline = (pos["train"].mean(0) - pos["test"]).norm(dim=1).mean()
        return {"mean_error_px": float(err), "baseline_error_px": float(baseline)}
    attr = "label" if factor == "digit" else "background"
    n_classes = 10 if factor == "digit" else n_background_classes
    y = {k: torch.tensor([getattr(s, attr) for s in seqs]) for k, (_, seqs, _) in parts.items()}
    r = linear_probe(xtr, y["train"], xte, y["test"], n_classes, steps, weight_decay)
    return {"accuracy": r.accuracy, "chance": 1.0 / n_classes}
