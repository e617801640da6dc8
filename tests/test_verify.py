"""verify: Detectron2's ResNet loaded from the converted .pkl reproduces torchvision on the source.

Sources are torchvision's own constructors (random weights, randomised BN statistics) saved in
foreign layouts; the big nets are real size (X-101 32x8d is 88 M parameters).
"""

import pickle

import pytest
import torch
import torchvision

from infomin_det.cli import main as cli_main
from infomin_det.convert import convert
from infomin_det.convert.reference import STAGES, build_reference
from infomin_det.convert.synthetic import random_trunk, randomise_bn, wrap
from infomin_det.convert.verify import verify
from infomin_det.weights_meta import ResNetArch

pytestmark = pytest.mark.detectron2

CASES = [  # torchvision constructor, layout it is saved in, arch, Detectron2 "Total num"
    ("resnet18", "torchvision/timm", ResNetArch(18, 1, 64, 64, 64), 20),
    ("resnet50", "moco-v1/v2", ResNetArch(50), 53),
    ("resnet101", "pycontrast", ResNetArch(101), 104),
    ("resnet152", "dino", ResNetArch(152), 155),
    ("resnext101_32x8d", "swav", ResNetArch(101, 32, 8), 104),
    ("wide_resnet50_2", "lightning/solo-learn", ResNetArch(50, 1, 128), 53),
]


def _tv_trunk(name, seed=0):
    torch.manual_seed(seed)
    model = randomise_bn(getattr(torchvision.models, name)(), seed)
    return {k: v for k, v in model.state_dict().items() if not k.startswith("fc.")}


@pytest.mark.parametrize("name,layout,arch,groups", CASES, ids=[c[0] for c in CASES])
def test_verify_matches_torchvision(tmp_path, name, layout, arch, groups):
    src = tmp_path / "src.pth"
    torch.save(wrap(layout, _tv_trunk(name), arch), src)
    assert convert(src, tmp_path / "out.pkl").meta.arch == arch
    r = verify(tmp_path / "out.pkl", src)
    assert r.matched_groups == groups == r.expected_groups
    assert r.missing_keys == [] and r.unexpected_keys == [] and r.unequal_tensors == []
    assert set(r.stages) == set(STAGES)
    assert all(s.max_rel <= 1e-4 for s in r.stages.values()), r.render()
    assert r.passed and r.reference.startswith("source ")


def test_verify_simclr_style_widened_stem(tmp_path):
    arch = ResNetArch(50, 1, 32, 32, 128)  # every width x0.5 (as SimCLR/SwAV widen x2/x4), stem included
    torch.save(wrap("infomin-det/pretrain", random_trunk(arch, seed=2), arch), tmp_path / "p.pth")
    convert(tmp_path / "p.pth", tmp_path / "p.pkl")
    r = verify(tmp_path / "p.pkl", tmp_path / "p.pth")
    assert r.passed and r.matched_groups == 53 and r.arch == arch.name


def test_reference_is_torchvision_itself():
    # the reference trunk must compute exactly what torchvision's ResNet computes (layer1..layer4)
    model = randomise_bn(torchvision.models.resnext50_32x4d(), 1).eval()
    sd = {k: v for k, v in model.state_dict().items() if not k.startswith("fc.")}
    ref = build_reference(ResNetArch(50, 32, 4), sd)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        y = model.maxpool(model.relu(model.bn1(model.conv1(x))))
        got = ref(x)
        for i, stage in enumerate(STAGES):
            y = getattr(model, f"layer{i + 1}")(y)
            assert torch.equal(got[stage], y), stage


@pytest.fixture()
def r18_pair(tmp_path):
    arch = ResNetArch(18, 1, 64, 64, 64)
    torch.save(wrap("moco-v3", random_trunk(arch, seed=4), arch), tmp_path / "s.pth")
    convert(tmp_path / "s.pth", tmp_path / "o.pkl")
    return tmp_path / "s.pth", tmp_path / "o.pkl"


def _edit_pkl(path, fn):
    with open(path, "rb") as f:
        data = pickle.load(f)
    fn(data["model"])
    with open(path, "wb") as f:
        pickle.dump(data, f)


def test_verify_detects_a_changed_tensor(r18_pair, capsys):
    src, pkl = r18_pair
    _edit_pkl(pkl, lambda m: m["res4.1.conv2.norm.running_var"].__imul__(3.0))
    r = verify(pkl, src)
    assert not r.passed and r.stages["res4"].max_rel > 1e-2 and r.stages["res3"].max_rel == 0
    assert cli_main(["verify", str(pkl), "--source", str(src)]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_verify_detects_a_missing_tensor(r18_pair):
    _, pkl = r18_pair
    _edit_pkl(pkl, lambda m: m.pop("res3.0.conv2.weight"))
    r = verify(pkl)  # no source: the reference is the .pkl renamed back -- still caught by the loading check
    # the conv's norm still matches, so "Total num" stays 20: only the missing-key check catches it
    assert not r.passed and r.matched_groups == 20
    assert r.missing_keys == ["backbone.bottom_up.res3.0.conv2.weight"]
    assert "layer2.0.conv2.weight" in r.reference_error and "FAIL" in r.render()


def test_verify_refuses_a_different_source_and_a_foreign_pkl(r18_pair, tmp_path, capsys):
    src, pkl = r18_pair
    torch.save({"other": torch.zeros(1)}, tmp_path / "other.pth")
    assert cli_main(["verify", str(pkl), "--source", str(tmp_path / "other.pth")]) == 2
    assert "is not the file" in capsys.readouterr().err
    with open(tmp_path / "caffe2.pkl", "wb") as f:
        pickle.dump({"blobs": {}}, f)
    assert cli_main(["verify", str(tmp_path / "caffe2.pkl")]) == 2
    assert "parse it as a Caffe2 blob file" in capsys.readouterr().err


def test_verify_catches_a_wrong_stride_in_1x1(tmp_path):
    # STRIDE_IN_1X1 produces no warning in Detectron2; a file claiming the caffe2 convention must fail.
    arch = ResNetArch(50, 1, 16, 16, 64)  # narrow R-50: the stride only matters for bottlenecks
    torch.save(wrap("torchvision/timm", random_trunk(arch, seed=6), arch), tmp_path / "s.pth")
    convert(tmp_path / "s.pth", tmp_path / "o.pkl")
    from infomin_det.weights_meta import META_KEY
    with open(tmp_path / "o.pkl", "rb") as f:
        data = pickle.load(f)
    data[META_KEY]["convention"]["stride_in_1x1"] = True
    with open(tmp_path / "o.pkl", "wb") as f:
        pickle.dump(data, f)
    r = verify(tmp_path / "o.pkl", tmp_path / "s.pth")
    assert r.stages["res2"].max_rel == 0 and r.stages["res3"].max_rel > 1e-3 and not r.passed
