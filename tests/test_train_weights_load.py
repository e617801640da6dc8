"""Converter output loads into each protocol's full-size model with zero missing backbone tensors.

Real converted weights (a random torchvision trunk with randomised BN, saved in MoCo v2 layout, then
``infomin_det.convert``) for the R-50 C4, R-101 FPN, X-101-32x8d FPN and X-152-32x8d FPN protocols:
the trainer's config (with its weights/config cross-check) and checkpointer load them, every trunk
tensor (stem, res2..res5, and C4's ``roi_heads.res5``) is loaded and equal to the source.
"""

import dataclasses

import pytest
import torch

from infomin_det.convert import convert
from infomin_det.convert.d2pkl import read_d2_pkl, write_d2_pkl
from infomin_det.convert.synthetic import random_trunk, wrap
from infomin_det.engine.spec import TrainSpec
from infomin_det.errors import UserError
from infomin_det.weights_meta import ResNetArch

CASES = [("coco/R50-C4-1x", ResNetArch(50)), ("coco/R101-FPN-1x", ResNetArch(101)),
         ("coco/X101-FPN-1x", ResNetArch(101, 32, 8)), ("coco/X152-FPN-1x", ResNetArch(152, 32, 8))]


def _converted(tmp_path, arch):
    torch.save(wrap("moco-v1/v2", random_trunk(arch), arch), tmp_path / "moco.pth.tar")
    convert(tmp_path / "moco.pth.tar", tmp_path / "w.pkl")
    return tmp_path / "w.pkl"


def _spec(tiny_coco, weights, protocol, out, **kw):
    ds = "coco-json:{}:{}:{}:{}".format(*tiny_coco["train"], *tiny_coco["val"])
    return TrainSpec(protocol, str(weights), str(out), dataset=ds, device="cpu", **kw)


@pytest.mark.parametrize("protocol,arch", CASES, ids=[c[0] for c in CASES])
def test_converted_weights_load_with_zero_missing_backbone_keys(tiny_coco, tmp_path, protocol, arch):
    from infomin_det.engine.config import build_config
    from infomin_det.engine.trainer import AtomicCheckpointer, Trainer, trunk_keys

    pkl = _converted(tmp_path, arch)
    cfg, family, meta = build_config(_spec(tiny_coco, pkl, protocol, tmp_path / "out"))
    assert family == "ssl" and meta.arch == arch
    model = Trainer.build_model(cfg)
    ck = AtomicCheckpointer(model, str(tmp_path / "out"))
    ck.load(cfg.MODEL.WEIGHTS)
    trunk = trunk_keys(model)
    assert trunk and not set(trunk) & set(ck.incompatible.missing_keys)
    assert not ck.incompatible.incorrect_shapes
    source = read_d2_pkl(pkl).model
    state = model.state_dict()
    for key in trunk:
        src = "res5." + key.split("roi_heads.res5.", 1)[1] if "roi_heads.res5." in key else \
            key.split("bottom_up.", 1)[-1].split("backbone.", 1)[-1]
        assert src in source, key
        assert torch.equal(state[key], source[src]), key


def test_stride_in_1x1_weights_are_refused_by_a_stride_in_3x3_config(tiny_coco, tmp_path):
    from infomin_det.engine.config import build_config

    pkl = _converted(tmp_path, ResNetArch(50))
    w = read_d2_pkl(pkl)
    strided = dataclasses.replace(w.meta, convention=dataclasses.replace(w.meta.convention, stride_in_1x1=True))
    write_d2_pkl(tmp_path / "s.pkl", {k: v.numpy() for k, v in w.model.items()}, strided)
    with pytest.raises(UserError, match="STRIDE_IN_1X1") as e:
        build_config(_spec(tiny_coco, tmp_path / "s.pkl", "coco/R50-FPN-1x", tmp_path / "o", family="ssl"))
    assert "INPUT.FORMAT" not in str(e.value)   # only the key that differs is named
    build_config(_spec(tiny_coco, tmp_path / "s.pkl", "coco/R50-FPN-1x", tmp_path / "o", family="ssl",
                       allow_mismatch=("MODEL.RESNETS.STRIDE_IN_1X1",)))
