"""The linear probe on frozen features: standardise, multinomial logistic regression, full-batch L-BFGS.

Owns the toolkit's one classifier on a fixed feature matrix, used by the view sweep
(:mod:`pretrain.views.sweep_point`: linear top-1 of each point) and by the Colorful Moving MNIST
factor probes (:func:`pretrain.views.moving_mnist.probe`), and the one feature standardisation both
use (also the Moving-MNIST position regression's).

:func:`linear_probe`: features standardised with the train part's mean / std (std floored at
1e-6), a linear softmax classifier (weights and bias initialised to 0) trained full-batch with L-BFGS
(strong-Wolfe line search, ``steps`` iterations, history 20) on cross-entropy + ``weight_decay`` / 2
* |W|^2 (bias unpenalised). The problem is convex and the start fixed, so the result depends on the
data, ``steps`` and ``weight_decay`` only -- not on a seed or an optimiser's path; no augmentation.

Not this: :mod:`pretrain.linear_eval`, the paper's ImageNet linear-evaluation protocol (SGD on
augmented images through the frozen backbone, features recomputed every step; see its docstring).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


def standardise(train: torch.Tensor, *others: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``(train, *others)`` standardised per feature with the train part's mean / std (std >= 1e-6)."""
    mean, std = train.mean(0), train.std(0).clamp_min(1e-6)
    return tuple((x - mean) / std for x in (train, *others))


@dataclass(frozen=True)
class ProbeResult:
    """Accuracies (fractions in [0, 1]) of the probe on the held-out and the training features, and
    how many of each it saw."""

    accuracy: float
    train_accuracy: float
    n_train: int
    n_val: int


def linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, val_x: torch.Tensor, val_y: torch.Tensor,
                 n_classes: int, steps: int = 100, weight_decay: float = 1e-3) -> ProbeResult:
    """Fit the probe on ``train_x`` (N, D) / ``train_y`` (N,) int64 labels in 0..n_classes-1 and
    score it on ``val_x`` / ``val_y`` (see the module docstring)."""
    xt, xv = standardise(train_x, val_x)
    head = nn.Linear(xt.shape[1], n_classes)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    opt = torch.optim.LBFGS(head.parameters(), lr=1.0, max_iter=steps, history_size=20,
                            line_search_fn="strong_wolfe", tolerance_grad=1e-6, tolerance_change=1e-9)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(head(xt), train_y) + weight_decay / 2 * head.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    with torch.no_grad():
        train_acc = float((head(xt).argmax(1) == train_y).float().mean())
        acc = float((head(xv).argmax(1) == val_y).float().mean())
    return ProbeResult(acc, train_acc, len(train_y), len(val_y))
