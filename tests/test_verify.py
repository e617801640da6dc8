"""verify: Detectron2's ResNet loaded from the converted .pkl reproduces torchvision on the source.

Sources are torchvision's own constructors (random weights, randomised BN statistics) saved in
foreign layouts; the big nets are real size (X-101 32x8d is 88 M parameters).
"""

import json
import pickle

import numpy as np
import pytest
import torch
import torchvision

from infomin_det.cli import main as cli_main
from infomin_det.convert import convert
from infomin_det.convert.reference import STAGES, build_reference
from infomin_det.convert.synthetic import random_trunk, randomise_bn, wrap
from infomin_det.convert.verify import verify
from infomin_det.weights_meta import META_KEY, ResNetArch

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


# ---------------------------------------------------------------------------------------------
# verify never PASSes what it did not prove

NARROW = ResNetArch(50, 1, 16, 16, 64)


@pytest.fixture()
def narrow_pair(tmp_path):
    torch.save(wrap("moco-v1/v2", random_trunk(NARROW, seed=8), NARROW), tmp_path / "s.pth")
    convert(tmp_path / "s.pth", tmp_path / "o.pkl")
    return tmp_path / "s.pth", tmp_path / "o.pkl"


def _edit(path, fn):
    with open(path, "rb") as f:
        data = pickle.load(f)
    fn(data)
    with open(path, "wb") as f:
        pickle.dump(data, f)


def _err(capsys, argv):
    rc = cli_main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 2 and err[0].startswith("error: ") and err[1].startswith("  fix: "), (rc, err)
    return err[0]


@pytest.mark.parametrize("value", [np.inf, np.nan, -1.0])
def test_non_finite_or_negative_variance_never_passes(narrow_pair, capsys, value):
    src, pkl = narrow_pair
    _edit(pkl, lambda d: d["model"]["res4.1.conv2.norm.running_var"].fill(value))  # before: PASS without --source
    for argv in (["verify", str(pkl)], ["verify", str(pkl), "--source", str(src)]):
        assert "res4.1.conv2.norm.running_var" in _err(capsys, argv)


def test_non_finite_stage_outputs_fail_and_json_stays_json(narrow_pair, capsys):
    _, pkl = narrow_pair
    _edit(pkl, lambda d: d["model"]["stem.conv1.weight"].fill(3e38))  # finite weights, Inf activations
    r = verify(pkl)
    assert not r.passed and not any(s.finite for s in r.stages.values())
    assert "FAIL (non-finite output)" in r.render()
    assert cli_main(["verify", str(pkl), "--json"]) == 1
    out = json.loads(capsys.readouterr().out, parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    assert out["passed"] is False and out["stages"]["res5"]["max_rel"] is None


def test_all_zero_outputs_compare_nothing_and_fail(narrow_pair):
    _, pkl = narrow_pair
    _edit(pkl, lambda d: [v.fill(0) for v in d["model"].values()])  # before: PASS (0 / max(0, 1e-12) = 0)
    r = verify(pkl)
    assert not r.passed and all(s.ref_max_abs == 0 for s in r.stages.values())
    assert "all zeros: nothing compared" in r.render()


@pytest.mark.parametrize("size", [0, -5, 1, 31, 1025, 10**9])
def test_size_out_of_range_is_refused(narrow_pair, capsys, size):
    _, pkl = narrow_pair  # before: tracebacks for 0 / -5 / 10**9, a hang for 5000, PASS for 1 and 31
    msg = _err(capsys, ["verify", str(pkl), "--size", str(size)])
    assert "outside 32..1024" in msg and "stride is 32" in msg


def test_size_at_the_lower_bound_passes(narrow_pair):
    src, pkl = narrow_pair
    r = verify(pkl, src, size=32)
    assert r.passed and r.input_shape == (1, 3, 32, 32)


def test_metadata_that_disagrees_with_the_source_fails(narrow_pair, capsys):
    src, pkl = narrow_pair
    _edit(pkl, lambda d: d[META_KEY]["convention"].update(input_format="BGR"))  # train would feed BGR: wrong APs
    r = verify(pkl, src)
    assert not r.passed and r.meta_mismatches and "convention" in r.meta_mismatches[0]
    assert all(s.max_rel == 0 for s in r.stages.values())  # the tensors alone would have passed
    assert "metadata   FAIL: convention" in r.render()


def test_metadata_arch_far_larger_than_the_tensors_is_refused_before_building(narrow_pair, capsys):
    _, pkl = narrow_pair
    _edit(pkl, lambda d: d[META_KEY]["arch"].update(depth=152, width_per_group=512, res2_out_channels=8192))
    assert "the metadata does not describe these tensors" in _err(capsys, ["verify", str(pkl)])


def test_integer_backbone_tensor_is_refused(narrow_pair, capsys):
    _, pkl = narrow_pair
    _edit(pkl, lambda d: d["model"].__setitem__("res3.0.conv1.weight", d["model"]["res3.0.conv1.weight"].astype(np.int32)))
    assert "res3.0.conv1.weight is int32" in _err(capsys, ["verify", str(pkl)])


def test_bad_source_forms(narrow_pair, capsys, tmp_path):
    import os
    _, pkl = narrow_pair
    os.mkfifo(tmp_path / "f.pth")
    for source, needle in [(tmp_path / "nope.pth", "no such file"), (tmp_path / "f.pth", "named pipe"),
                           (tmp_path, "is a directory"), ("/dev/zero", "character device")]:
        # before: FileNotFoundError / IsADirectoryError tracebacks, and a hang on the FIFO and /dev/zero
        assert needle in _err(capsys, ["verify", str(pkl), "--source", str(source)])
