"""pretrain.views.invertible: VP/NVP invertibility and log-dets vs autograd Jacobians, channel
alternation, the adversarial objective's sign, semi-supervised view learning on real crops, refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.autograd.functional import jacobian

from infomin_det.data.pretrain_set import build_pretrain_set
from infomin_det.errors import UserError
from pretrain.views.invertible import (AdditiveCoupling, AffineCoupling, ViewGenerator, ViewLearner,
                                       ViewLearningSpec, learn_views, load_generator, to_generator_input)


def _randomize(module: nn.Module, seed: int, gain: float = 0.7) -> None:
    """Re-initialise every 1x1 conv (the zero-initialised last layers included) with random weights.

    std = gain / sqrt(fan_in): far from the identity (outputs move by O(1)) while staying O(1) in
    size, so a 1e-5 absolute round-trip tolerance is meaningful in float32.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.Conv2d):
                std = gain / m.weight.shape[1] ** 0.5
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * std)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * std / 2)


@pytest.fixture(scope="module")
def crops() -> tuple[torch.Tensor, torch.Tensor]:
    """200 real 96 px photo crops (N, 3, 96, 96) in [0, 1] and a TEST-ONLY label per crop.

    The label is the crop's brightness tercile (mean Rec.601 luma, split at the 1/3 and 2/3
    quantiles): a real, cheap property of each photo crop with balanced classes. It stands in for
    semantic labels, which the crop set does not record.
    """
    root = build_pretrain_set(n_images=200, size=96, seed=0)
    files = sorted((root / "images").glob("*.jpg"))
    imgs = torch.stack([torch.from_numpy(np.array(Image.open(f).convert("RGB"))).permute(2, 0, 1) for f in files])
    imgs = imgs.float() / 255
    luma = (0.299 * imgs[:, 0] + 0.587 * imgs[:, 1] + 0.114 * imgs[:, 2]).mean((1, 2))
    labels = torch.bucketize(luma, torch.quantile(luma, torch.tensor([1 / 3, 2 / 3])))
    return imgs, labels


# ---------------------------------------------------------------- (1) invertibility


@pytest.mark.parametrize("kind", ["vp", "nvp"])
@pytest.mark.parametrize("blocks", [1, 3, 6])
@torch.no_grad()
def test_inverse_round_trips(kind: str, blocks: int) -> None:
    torch.manual_seed(blocks)
    gen = ViewGenerator(kind, blocks)
    x = torch.rand(4, 3, 8, 8) * 2 - 1
    # freshly built: exactly the identity map (zero-initialised last convs)
    y0, ld0 = gen(x)
    assert torch.equal(y0, x) and torch.equal(ld0, torch.zeros(4))
    _randomize(gen, seed=10 + blocks)
    y, _ = gen(x)
    assert float((y - x).abs().max()) > 0.25  # far from the identity
    assert float((gen.inverse(y) - x).abs().max()) <= 1e-5
    y_target = torch.rand(4, 3, 8, 8) * 2 - 1
    assert float((gen(gen.inverse(y_target))[0] - y_target).abs().max()) <= 1e-5


# ---------------------------------------------------------------- (2) + (3) log-determinants


def _autograd_logabsdet(gen: ViewGenerator, x: torch.Tensor) -> tuple[float, torch.Tensor]:
    """log|det| of the full (3HW x 3HW) Jacobian of gen at one sample x (1, 3, H, W), and J itself."""
    n = x.numel()
    j = jacobian(lambda v: gen(v)[0], x).reshape(n, n)
    sign, logabs = torch.linalg.slogdet(j)
    assert float(sign) != 0.0
    return float(logabs), j


def test_vp_logdet_is_exactly_zero_and_matches_jacobian() -> None:
    gen = ViewGenerator("vp", 5).double()
    _randomize(gen, seed=3)
    x = torch.rand(2, 3, 2, 2, dtype=torch.float64) * 2 - 1
    with torch.no_grad():
        _, logdet = gen(x)
    assert torch.equal(logdet, torch.zeros(2, dtype=torch.float64))
    for b in range(2):
        logabs, j = _autograd_logabsdet(gen, x[b:b + 1])
        assert not torch.allclose(j, torch.eye(12, dtype=torch.float64), atol=1e-2)  # a non-trivial map
        assert abs(logabs) < 1e-5


def test_nvp_logdet_matches_jacobian() -> None:
    gen = ViewGenerator("nvp", 5).double()
    _randomize(gen, seed=4)
    x = torch.rand(3, 3, 2, 2, dtype=torch.float64) * 2 - 1
    with torch.no_grad():
        _, logdet = gen(x)
    assert logdet.shape == (3,)
    for b in range(3):
        logabs, _ = _autograd_logabsdet(gen, x[b:b + 1])
        assert abs(logabs) > 0.1  # really not volume preserving
        assert abs(float(logdet[b]) - logabs) < 1e-4
    # float32 (the training dtype) agrees too
    with torch.no_grad():
        assert torch.allclose(gen.float()(x.float())[1].double(), logdet, atol=1e-4)


# ---------------------------------------------------------------- (4) channel alternation


def test_x1_channel_alternates_0_1_2() -> None:
    x = torch.rand(2, 3, 4, 4) * 2 - 1
    for kind in ("vp", "nvp"):
        gen = ViewGenerator(kind, 7)
        _randomize(gen, seed=5)
        for i, blk in enumerate(gen.blocks):
            c = i % 3
            others = [k for k in range(3) if k != c]
            if kind == "nvp":
                assert isinstance(blk, AffineCoupling)
                y, _ = blk(x)
                assert not torch.allclose(y[:, c], x[:, c], atol=1e-3)  # X1 is transformed ...
                assert torch.equal(y[:, others], x[:, others])  # ... X2 passes through exactly
            else:
                assert isinstance(blk, AdditiveCoupling)
                with torch.no_grad():  # silence G: only Y1 = X1 + F(X2) may change
                    g_w, g_b = blk.g[2].weight.clone(), blk.g[2].bias.clone()
                    blk.g[2].weight.zero_(), blk.g[2].bias.zero_()
                y, _ = blk(x)
                assert not torch.allclose(y[:, c], x[:, c], atol=1e-3)
                assert torch.equal(y[:, others], x[:, others])
                with torch.no_grad():  # silence F instead: only Y2 = X2 + G(X1) may change
                    blk.g[2].weight.copy_(g_w), blk.g[2].bias.copy_(g_b)
                    blk.f[2].weight.zero_(), blk.f[2].bias.zero_()
                y, _ = blk(x)
                assert torch.equal(y[:, c], x[:, c])
                assert not torch.allclose(y[:, others], x[:, others], atol=1e-3)


# ---------------------------------------------------------------- (5) adversarial objective's sign


def _params(m: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in m.parameters()]


@pytest.mark.parametrize("kind", ["vp", "nvp"])
def test_generator_lowers_and_critic_raises_i_nce(kind: str, crops) -> None:
    imgs, _ = crops
    torch.manual_seed(0)
    spec = ViewLearningSpec(kind=kind, blocks=3, steps=1, batch_size=24, image_size=32, progress=False)
    learner = ViewLearner(spec).train()
    x = to_generator_input(torch.nn.functional.interpolate(imgs[:24], size=32, mode="bilinear", antialias=True))
    for _ in range(3):
        before = learner.measure(x)
        assert learner.measure(x) == before  # measuring changes nothing
        gen_before = _params(learner.generator)
        learner.critic_step(x)
        after_critic = learner.measure(x)
        assert after_critic > before + 1e-3  # critic maximises I_NCE
        assert all(torch.equal(a, b) for a, b in zip(gen_before, _params(learner.generator)))
        critic_before = _params(learner.enc1) + _params(learner.enc2)
        learner.generator_step(x)
        after_gen = learner.measure(x)
        assert after_gen < after_critic - 1e-5  # generator minimises I_NCE
        assert all(torch.equal(a, b) for a, b in zip(critic_before, _params(learner.enc1) + _params(learner.enc2)))
        assert not all(torch.equal(a, b) for a, b in zip(gen_before, _params(learner.generator)))


# ---------------------------------------------------------------- (6) semi-supervised run on real crops


def test_semi_supervised_run_lowers_classification_loss(crops, tmp_path) -> None:
    imgs, labels = crops
    spec = ViewLearningSpec(kind="vp", blocks=3, mode="semi", steps=40, batch_size=32, image_size=32, seed=0,
                            output_dir=str(tmp_path / "views"), progress=False)
    out = learn_views(spec, imgs, labels)
    h = out["history"]
    assert all(len(h[k]) == 40 for k in ("i_nce", "critic_loss", "generator_loss", "cls_loss"))
    assert all(np.isfinite(v) for k in h for v in h[k])
    first, last = float(np.mean(h["cls_loss"][:8])), float(np.mean(h["cls_loss"][-8:]))
    assert first > 0.9 * np.log(3)  # starts near chance for 3 balanced classes
    assert last < first - 0.05
    # the generator moved away from the identity, and its checkpoint reloads to the same map
    gen = out["generator"]
    x = to_generator_input(imgs[:4, :, :32, :32])
    with torch.no_grad():
        y = gen(x)[0]
        assert float((y - x).abs().max()) > 1e-3
        assert torch.equal(load_generator(out["checkpoint"])(x)[0], y)
    saved = json.loads(out["history_path"].read_text())
    assert saved["history"]["cls_loss"] == h["cls_loss"] and saved["spec"]["mode"] == "semi"
    assert not list((tmp_path / "views").glob(".*.tmp"))  # atomic writes left no temp files


# ---------------------------------------------------------------- (7) refusals


def _refused(fn) -> UserError:
    with pytest.raises(UserError) as err:
        fn()
    e = err.value
    assert e.cause and e.fix and "\n" not in e.cause and "\n" not in e.fix
    return e


def test_refusals(tmp_path) -> None:
    imgs = torch.rand(8, 3, 32, 32)
    labels = torch.tensor([0, 1] * 4)

    def spec(**kw) -> ViewLearningSpec:
        return ViewLearningSpec(**{"steps": 1, "batch_size": 4, "image_size": 32, "progress": False,
                                   "output_dir": str(tmp_path / "v"), **kw})

    assert "glow" in _refused(lambda: ViewGenerator("glow", 2)).cause
    _refused(lambda: ViewGenerator("vp", 0))
    _refused(lambda: spec(kind="realnvp"))
    _refused(lambda: spec(mode="supervised"))
    _refused(lambda: spec(batch_size=1))
    assert "labels" in _refused(lambda: learn_views(spec(mode="semi"), imgs, None)).cause
    assert "(8,)" in _refused(lambda: learn_views(spec(mode="semi"), imgs, labels[:5])).cause
    _refused(lambda: learn_views(spec(mode="semi"), imgs, labels.float()))
    _refused(lambda: learn_views(spec(mode="semi"), imgs, torch.zeros(8, dtype=torch.long)))
    _refused(lambda: learn_views(spec(), imgs * 255, None))
    _refused(lambda: learn_views(spec(), imgs[:, :2], None))
    _refused(lambda: learn_views(spec(batch_size=16), imgs, None))
    _refused(lambda: ViewGenerator("vp", 2)(torch.rand(1, 1, 4, 4)))
    assert not (tmp_path / "v").exists()  # nothing written for refused runs
