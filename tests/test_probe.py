"""The shared linear probe on frozen features (``pretrain.probe``): what the sweep and Moving MNIST read out."""

import torch

from pretrain.probe import linear_probe, standardise


def _blobs(n_per_class: int, seed: int, spread: float = 0.3):
    g = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[3.0, 0.0, 100.0], [0.0, 3.0, 100.0], [-3.0, -3.0, 100.0]])
    y = torch.arange(3).repeat_interleave(n_per_class)
    x = centres[y] + spread * torch.randn(len(y), 3, generator=g)
    x[:, 2] = 100.0  # a constant feature: std 0 must not turn into NaN
    return x, y


def test_standardise_uses_the_train_statistics_only():
    train, other = torch.randn(50, 4) * 5 + 2, torch.randn(20, 4)
    st, so = standardise(train, other)
    assert torch.allclose(st.mean(0), torch.zeros(4), atol=1e-5) and torch.allclose(st.std(0), torch.ones(4))
    assert torch.allclose(so, (other - train.mean(0)) / train.std(0))


def test_separable_classes_are_read_out_deterministically():
    (xt, yt), (xv, yv) = _blobs(30, 0), _blobs(10, 1)
    r = linear_probe(xt, yt, xv, yv, n_classes=3, steps=50)
    assert r.train_accuracy == 1.0 and r.accuracy == 1.0
    assert linear_probe(xt, yt, xv, yv, n_classes=3, steps=50) == r  # zero start, convex: no seed
    # unreadable labels stay near chance on held-out data
    shuffled = yv[torch.randperm(len(yv), generator=torch.Generator().manual_seed(2))]
    assert linear_probe(xt, yt[torch.randperm(len(yt), generator=torch.Generator().manual_seed(3))],
                        xv, shuffled, n_classes=3).accuracy < 0.7
