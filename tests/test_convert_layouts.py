"""Converter: every layout of docs/convert.md, encoder choice, arch inference, output format."""

import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision

from infomin_det.cli import main as cli_main
from infomin_det.convert import convert, read_d2_pkl
from infomin_det.filehash import sha256_file
from infomin_det.convert.resnet_keys import d2_to_tv, expected_groups, expected_shapes, infer_arch, tv_to_d2
from infomin_det.convert.synthetic import LAYOUT_NAMES, random_trunk, wrap
from infomin_det.weights_meta import META_KEY, TORCHVISION, ResNetArch

R18 = ResNetArch(18, 1, 64, 64, 64)
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def r18():
    return random_trunk(R18, seed=3)


def _save(tmp_path, obj, name="src.pth"):
    path = tmp_path / name
    torch.save(obj, path)
    return path


def _as_tv(pkl):
    w = read_d2_pkl(pkl)
    return {d2_to_tv(k): v for k, v in w.model.items()}, w


@pytest.mark.parametrize("layout", LAYOUT_NAMES)
def test_each_layout_takes_the_query_encoder_exactly(tmp_path, r18, layout):
    src = _save(tmp_path, wrap(layout, r18, R18))
    res = convert(src, tmp_path / "out.pkl")
    got, w = _as_tv(tmp_path / "out.pkl")
    want = {k: v for k, v in r18.items() if not k.endswith("num_batches_tracked")}
    assert got.keys() == want.keys()
    for k in want:  # the query/online tensors, bit for bit -- never the momentum/EMA decoy
        assert torch.equal(got[k], want[k]), k
    assert res.meta.source_format == layout and w.meta.source_format == layout
    assert w.meta.arch == R18 and w.meta.convention == TORCHVISION
    assert w.meta.source_sha256 == sha256_file(src)
    assert res.coverage.mapped == len(want) and not res.coverage.unmatched
    assert w.author and w.matching_heuristics


def test_moco_coverage_groups_and_ignored_entries(tmp_path, r18):
    src = _save(tmp_path, wrap("moco-v1/v2", r18, R18))
    cov = convert(src, tmp_path / "o.pkl").coverage
    n_trunk = sum(1 for k in r18 if not k.endswith("num_batches_tracked"))
    n_counters = len(r18) - n_trunk
    assert cov.dropped == {"momentum encoder": len(r18) + 3, "fc head": 3, "queue": 2,
                           "BN batch counters": n_counters}
    assert cov.where == "['state_dict'] prefix 'module.encoder_q.'"
    assert set(cov.ignored_entries) == {"epoch", "arch", "args", "optimizer"}


def test_pycontrast_ema_flag_takes_the_ema_model(tmp_path, r18):
    src = _save(tmp_path, wrap("pycontrast", r18, R18))
    res = convert(src, tmp_path / "ema.pkl", ema=True)
    got, _ = _as_tv(tmp_path / "ema.pkl")
    assert res.meta.source_format == "pycontrast-ema"
    assert torch.equal(got["conv1.weight"], r18["conv1.weight"] * 0.5 + 0.01)  # the EMA copy this time


def test_output_is_detectron2_format_with_metadata(tmp_path, r18):
    src = _save(tmp_path, wrap("torchvision/timm", r18, R18))
    convert(src, tmp_path / "o.pkl")
    with open(tmp_path / "o.pkl", "rb") as f:
        raw = pickle.load(f, encoding="latin1")  # exactly how DetectionCheckpointer reads a .pkl
    assert {"model", "__author__", "matching_heuristics", META_KEY} <= raw.keys()
    assert raw["matching_heuristics"] is True
    assert type(raw["model"]["stem.conv1.weight"]).__module__ == "numpy"
    cv = raw[META_KEY]["config_values"]
    assert cv["MODEL.RESNETS.DEPTH"] == 18 and cv["MODEL.RESNETS.RES2_OUT_CHANNELS"] == 64
    assert cv["INPUT.FORMAT"] == "RGB" and cv["MODEL.RESNETS.STRIDE_IN_1X1"] is False
    assert cv["MODEL.PIXEL_STD"] == [58.395, 57.12, 57.375]


def test_key_and_prefix_override_for_unknown_layout(tmp_path, r18):
    ck = {"nets": {"online": {**{"enc." + k: v for k, v in r18.items()}, "proj.w": torch.ones(2)}}}
    src = _save(tmp_path, ck)
    res = convert(src, tmp_path / "o.pkl", key="nets.online", prefix="enc.")
    assert res.meta.source_format == "custom" and res.coverage.dropped["outside --prefix: proj"] == 1
    got, _ = _as_tv(tmp_path / "o.pkl")
    assert torch.equal(got["layer4.1.bn2.running_var"], r18["layer4.1.bn2.running_var"])


def test_generic_search_finds_a_single_unknown_trunk(tmp_path, r18):
    src = _save(tmp_path, {"weights": {"net." + k: v for k, v in r18.items()}, "step": 5})
    res = convert(src, tmp_path / "o.pkl")
    assert res.meta.source_format == "generic" and res.coverage.where == "['weights'] prefix 'net.'"


def test_fp16_source_is_widened_exactly(tmp_path, r18):
    half = {k: (v.half() if v.is_floating_point() else v) for k, v in r18.items()}
    convert(_save(tmp_path, half), tmp_path / "o.pkl")
    got, _ = _as_tv(tmp_path / "o.pkl")
    assert got["conv1.weight"].dtype == torch.float32
    assert torch.equal(got["conv1.weight"], half["conv1.weight"].float())


# -- arch inference from shapes: torchvision's own constructors, built on the meta device (no memory).
TV_NETS = {
    "resnet18": ResNetArch(18, 1, 64, 64, 64), "resnet34": ResNetArch(34, 1, 64, 64, 64),
    "resnet50": ResNetArch(50), "resnet101": ResNetArch(101), "resnet152": ResNetArch(152),
    "resnext50_32x4d": ResNetArch(50, 32, 4), "resnext101_32x8d": ResNetArch(101, 32, 8),
    "resnext101_64x4d": ResNetArch(101, 64, 4), "wide_resnet50_2": ResNetArch(50, 1, 128),
    "wide_resnet101_2": ResNetArch(101, 1, 128),
}


@pytest.mark.parametrize("name", TV_NETS)
def test_infer_arch_of_torchvision_constructors(name):
    with torch.device("meta"):
        sd = getattr(torchvision.models, name)().state_dict()
    shapes = {k: tuple(v.shape) for k, v in sd.items() if not k.startswith("fc.") and "num_batches" not in k}
    assert infer_arch(shapes) == TV_NETS[name]


@pytest.mark.parametrize("mult", [2, 4])
def test_infer_arch_of_simclr_style_wide_nets_widens_the_stem(mult):
    arch = ResNetArch(50, 1, 64 * mult, 64 * mult, 256 * mult)  # SimCLR/SwAV R50-wK: every width x K
    assert infer_arch(expected_shapes(arch)) == arch


def test_expected_group_counts_match_detectron2_logs():
    # Detectron2 logs "Total num: 53 / 104 / 155" for.
    assert [expected_groups(ResNetArch(d)) for d in (50, 101, 152)] == [53, 104, 155]


def test_renaming_round_trips_and_follows_detectron2_names():
    shapes = expected_shapes(ResNetArch(50))
    assert {tv_to_d2(k) for k in ("bn1.running_var", "layer1.0.downsample.1.weight", "layer4.2.bn3.bias")} == {
        "stem.conv1.norm.running_var", "res2.0.shortcut.norm.weight", "res5.2.conv3.norm.bias"}
    assert all(d2_to_tv(tv_to_d2(k)) == k for k in shapes)


def test_cli_json_and_tools_wrapper(tmp_path, r18, capsys):
    src = _save(tmp_path, wrap("swav", r18, R18))
    assert cli_main(["convert", str(src), str(tmp_path / "a.pkl"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["coverage"]["dropped"] == {"projection head": 3, "prototypes": 1, "BN batch counters": 20}
    assert out["meta"]["arch"]["name"] == "R-18" and out["expected_groups"] == 20
    # the MoCo-habit script, run as a user would, without detectron2 ever imported
    code = ("import runpy, sys; sys.argv = ['convert_to_d2.py', %r, %r]\n"
            "try: runpy.run_path(%r, run_name='__main__')\n"
            "except SystemExit as e: assert e.code == 0, e.code\n"
            "assert 'detectron2' not in sys.modules") % (str(src), str(tmp_path / "b.pkl"), str(REPO / "tools/convert_to_d2.py"))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "source     swav" in r.stdout and "R-18" in r.stdout
    assert read_d2_pkl(tmp_path / "b.pkl").model.keys() == read_d2_pkl(tmp_path / "a.pkl").model.keys()


def test_legacy_non_zip_torch_save_converts(tmp_path, r18):
    torch.save(wrap("moco-v3", r18, R18), tmp_path / "old.pth", _use_new_zipfile_serialization=False)
    res = convert(tmp_path / "old.pth", tmp_path / "o.pkl")
    got, _ = _as_tv(tmp_path / "o.pkl")
    assert res.meta.source_format == "moco-v3" and torch.equal(got["layer1.0.conv1.weight"], r18["layer1.0.conv1.weight"])


def test_real_pretrain_checkpoint_writer_converts_with_no_flags(tmp_path, r18):
    from pretrain.checkpoint import save  # the pretrain area's own writer, not our synthetic copy

    heads = {"head_q": {"0.weight": torch.randn(4, 4)}, "head_k": {"0.weight": torch.randn(4, 4)}}
    save(tmp_path / "checkpoint_00000010.pth", R18, r18, heads, {"epoch": 1, "step": 10, "queue": torch.randn(4, 8)})
    res = convert(tmp_path / "checkpoint_00000010.pth", tmp_path / "o.pkl")
    assert res.meta.source_format == "infomin-det/pretrain" and res.meta.arch == R18
    got, _ = _as_tv(tmp_path / "o.pkl")
    assert torch.equal(got["layer3.0.downsample.1.running_mean"], r18["layer3.0.downsample.1.running_mean"])


def test_vissl_model_state_dict_variant(tmp_path, r18):
    ck = {"model_state_dict": {**{"_feature_blocks." + k: v for k, v in r18.items()}, "heads.0.clf.0.weight": torch.ones(2)}}
    res = convert(_save(tmp_path, ck), tmp_path / "o.pkl")
    assert res.meta.source_format == "vissl" and res.coverage.dropped["heads"] == 1
