"""Tiny real training runs through ``train_worker`` on the generated COCO set, and weight refusals."""

import dataclasses
import json

import pytest
import torch

from infomin_det.convert import convert
from infomin_det.convert.d2pkl import read_d2_pkl, write_d2_pkl
from infomin_det.convert.synthetic import random_trunk
from infomin_det.engine.spec import TrainSpec
from infomin_det.engine.tiny import tiny
from infomin_det.errors import UserError
from infomin_det.weights_meta import MSRA_CAFFE2, ResNetArch

TINY = tiny("SOLVER.MAX_ITER", "2", "SOLVER.BASE_LR", "0.001", "SOLVER.CHECKPOINT_PERIOD", "1")
ARCH = ResNetArch(50, 1, 16, 16, 64)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    d = tmp_path_factory.mktemp("w")
    torch.save(random_trunk(ARCH), d / "tv.pth")
    convert(d / "tv.pth", d / "r50tiny.pkl")
    return d / "r50tiny.pkl"


def _spec(tiny_coco, weights, out, protocol="coco/R50-FPN-1x", **kw):
    ds = "coco-json:{}:{}:{}:{}".format(*tiny_coco["train"], *tiny_coco["val"])
    return TrainSpec(protocol, str(weights), str(out), dataset=ds, opts=TINY, **kw)


def test_mask_fpn_trains_evaluates_and_resume_does_not_repeat(tiny_coco, weights, tmp_path):
    from infomin_det.engine.trainer import train_worker
    from infomin_det.rundir import RunInfo

    out = tmp_path / "run"
    results = train_worker(_spec(tiny_coco, weights, out, seed=3))
    assert set(results) >= {"bbox", "segm"} and "AP" in results["bbox"]
    lines = [json.loads(l) for l in (out / "metrics.json").read_text().splitlines()]
    finals = [l for l in lines if "bbox/AP" in l]
    assert len(finals) == 1 and finals[0]["iteration"] == 2
    assert (out / "last_checkpoint").read_text() == "model_final.pth"
    info = RunInfo.read(out)
    assert (info.family, info.seed, info.paper_table) == ("ssl", 3, "T3a")
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    again = train_worker(_spec(tiny_coco, weights, out, seed=3))
    assert again == results
    lines2 = (out / "metrics.json").read_text().splitlines()
    assert len([l for l in lines2 if "bbox/AP" in l]) == 1


def test_mismatched_weights_are_refused(tiny_coco, weights, tmp_path):
    from infomin_det.engine.config import build_config

    w = read_d2_pkl(weights)
    bgr = dataclasses.replace(w.meta, convention=MSRA_CAFFE2)
    write_d2_pkl(tmp_path / "bgr.pkl", {k: v.numpy() for k, v in w.model.items()}, bgr)
    spec = _spec(tiny_coco, tmp_path / "bgr.pkl", tmp_path / "o", family="ssl")
    with pytest.raises(UserError, match="INPUT.FORMAT|STRIDE_IN_1X1|PIXEL"):
        build_config(spec)
    with pytest.raises(UserError, match="DEPTH"):  # R-50 weights into R-101
        build_config(_spec(tiny_coco, weights, tmp_path / "o", protocol="coco/R101-FPN-1x"))
    build_config(_spec(tiny_coco, weights, tmp_path / "o", protocol="coco/R101-FPN-1x",
                       allow_mismatch=("MODEL.RESNETS.DEPTH",)))  # the explicit override passes the check


def test_forced_mismatch_leaves_backbone_unloaded_and_is_refused(tiny_coco, weights, tmp_path):
    from infomin_det.engine.trainer import train_worker

    with pytest.raises(UserError, match="backbone tensors were not loaded"):
        train_worker(_spec(tiny_coco, weights, tmp_path / "o", protocol="coco/R101-FPN-1x",
                           allow_mismatch=("MODEL.RESNETS.DEPTH",)))


@pytest.mark.parametrize("key, value", [("res3.0.conv1.weight", float("nan")), ("stem.conv1.weight", float("inf")),
                                        ("res2.0.conv1.norm.running_var", -1.0)])
def test_weights_with_broken_values_are_refused_when_loaded(tiny_coco, weights, tmp_path, key, value):
    """The pre-flight reads only the metadata; what the model holds after loading is checked."""
    from infomin_det.engine.trainer import train_worker

    w = read_d2_pkl(weights)
    model = {k: v.numpy().copy() for k, v in w.model.items()}
    model[key].flat[0] = value
    write_d2_pkl(tmp_path / "broken.pkl", model, w.meta)
    with pytest.raises(UserError, match="non-finite values or a negative BN variance"):
        train_worker(_spec(tiny_coco, tmp_path / "broken.pkl", tmp_path / "o"))


@pytest.mark.parametrize("world,batch,lr,max_iter,steps", [(8, 16, 0.02, 90000, (60000, 80000)),
                                                          (4, 8, 0.01, 180000, (120000, 160000)),
                                                          (1, 2, 0.0025, 720000, (480000, 640000))])
def test_protocol_scales_linearly_from_its_8_gpus(tiny_coco, tmp_path, world, batch, lr, max_iter, steps):
    """2 images per GPU whatever the GPU count; LR with the world size; schedule inversely."""
    from infomin_det.engine.config import build_config

    spec = TrainSpec("coco/R50-FPN-1x", "", str(tmp_path / "o"),
                     dataset="coco-json:{}:{}:{}:{}".format(*tiny_coco["train"], *tiny_coco["val"]))
    cfg, _, _ = build_config(spec, world=world)
    assert (cfg.SOLVER.IMS_PER_BATCH, cfg.SOLVER.MAX_ITER, tuple(cfg.SOLVER.STEPS)) == (batch, max_iter, steps)
    assert cfg.SOLVER.BASE_LR == pytest.approx(lr)


def test_a_batch_that_cannot_be_scaled_is_refused(tiny_coco, tmp_path):
    from infomin_det.engine.config import build_config

    spec = TrainSpec("coco/R50-FPN-1x", "", str(tmp_path / "o"), opts=("SOLVER.IMS_PER_BATCH", "2"),
                     dataset="coco-json:{}:{}:{}:{}".format(*tiny_coco["train"], *tiny_coco["val"]))
    with pytest.raises(UserError, match="REFERENCE_WORLD_SIZE 0"):
        build_config(spec, world=1)
