"""pretrain.views.encoders: TinyAlexNet shapes for 1/2/3-channel views, channel refusal, trainability."""

from __future__ import annotations

import pytest
import torch

from infomin_det.errors import UserError
from pretrain.views.encoders import TinyAlexNet, tiny_alexnet
from pretrain.views.infonce import info_nce


@pytest.mark.parametrize("in_channels", [1, 2, 3])
@pytest.mark.parametrize("size", [32, 64, 96])
def test_shapes(in_channels: int, size: int) -> None:
    torch.manual_seed(0)
    net = tiny_alexnet(in_channels, feat_dim=32)
    assert isinstance(net, TinyAlexNet)
    x = torch.randn(4, in_channels, size, size)
    f = net.features(x)
    z = net(x)
    assert f.shape == (4, net.feature_dim)
    assert z.shape == (4, 32)
    assert bool(torch.isfinite(z).all())
    assert float(f.detach().min()) >= 0.0  # pooled post-ReLU features
    # the first conv really consumes in_channels channels
    assert net.trunk[0][0].weight.shape[1] == in_channels


@pytest.mark.parametrize("built, fed", [(1, 3), (2, 1), (3, 2)])
def test_refuses_wrong_channel_count(built: int, fed: int) -> None:
    net = tiny_alexnet(built)
    with pytest.raises(UserError) as err:
        net(torch.randn(2, fed, 64, 64))
    assert f"{built}-channel" in err.value.cause and f"in_channels={fed}" in err.value.fix
    with pytest.raises(UserError):
        net.features(torch.randn(2, fed, 64, 64))


def test_refuses_non_float_and_3d_input() -> None:
    net = tiny_alexnet(3)
    with pytest.raises(UserError):
        net(torch.zeros(2, 3, 64, 64, dtype=torch.uint8))
    with pytest.raises(UserError):
        net(torch.randn(3, 64, 64))


def test_embedding_is_not_normalised_and_every_parameter_gets_gradient() -> None:
    torch.manual_seed(1)
    n1, n2 = tiny_alexnet(1), tiny_alexnet(2)
    x = torch.rand(8, 3, 64, 64)
    z1, z2 = n1(x[:, :1]), n2(x[:, 1:])
    norms = z1.norm(dim=1)
    assert not torch.allclose(norms, torch.ones_like(norms), atol=1e-3)
    info_nce(z1, z2).loss.backward()
    for net in (n1, n2):
        for name, p in net.named_parameters():
            assert p.grad is not None and float(p.grad.abs().sum()) > 0, name


def test_a_few_steps_raise_i_nce_on_a_fixed_batch() -> None:
    """Two encoders trained end to end with info_nce on one fixed batch must raise I_NCE and accuracy."""
    torch.manual_seed(2)
    base = torch.rand(16, 1, 32, 32)
    v1, v2 = base, torch.cat([base.flip(-1), 1 - base], dim=1)
    n1, n2 = tiny_alexnet(1, 32), tiny_alexnet(2, 32)
    opt = torch.optim.Adam([*n1.parameters(), *n2.parameters()], lr=1e-3)
    first = info_nce(n1(v1), n2(v2), temperature=0.2)
    for _ in range(40):
        opt.zero_grad()
        nce = info_nce(n1(v1), n2(v2), temperature=0.2)
        nce.loss.backward()
        opt.step()
    assert nce.i_nce > first.i_nce + 0.5
    assert nce.accuracy > 0.5
