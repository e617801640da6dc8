"""Converter bad input: each a one-line cause + fix, exit 2, and no output (or temp file) left behind."""

import argparse
import os
import shutil
import subprocess

import pytest
import torch

from infomin_det.cli import main as cli_main
from infomin_det.convert.synthetic import random_trunk, wrap
from infomin_det.weights_meta import ResNetArch

R18 = ResNetArch(18, 1, 64, 64, 64)


@pytest.fixture(scope="module")
def r18():
    return random_trunk(R18, seed=5)


def _fails(capsys, tmp_path, argv, *needles, out="out.pkl"):
    """Run the CLI; demand exit 2, one 'error:' line naming every needle, one 'fix:' line, no new files."""
    before = set(os.listdir(tmp_path))
    rc = cli_main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2, err
    assert len(err) == 2 and err[0].startswith("error: ") and err[1].startswith("  fix: "), err
    for n in needles:
        assert n in "\n".join(err), (n, err)
    assert set(os.listdir(tmp_path)) - before == set(), "something was left behind"
    return err[0]


def _conv(tmp_path, src, *extra, out="out.pkl"):
    return ["convert", str(src), str(tmp_path / out), *extra]


def test_missing_file(tmp_path, capsys):
    _fails(capsys, tmp_path, _conv(tmp_path, tmp_path / "nope.pth"), "no such file")


def test_not_a_checkpoint(tmp_path, capsys):
    (tmp_path / "notes.pth").write_text("these are not weights\n")
    _fails(capsys, tmp_path, _conv(tmp_path, tmp_path / "notes.pth"), "not a checkpoint")


def test_truncated_file(tmp_path, capsys, r18):
    torch.save(wrap("moco-v1/v2", r18, R18), tmp_path / "full.pth")
    data = (tmp_path / "full.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    _fails(capsys, tmp_path, _conv(tmp_path, tmp_path / "cut.pth"), "truncated")


def test_torch_saved_file_named_pkl(tmp_path, capsys, r18):
    # As a source it is read by content and converts; fed to verify (i.e. to Detectron2) it is refused.
    torch.save(wrap("torchvision/timm", r18, R18), tmp_path / "model.pkl")
    assert cli_main(_conv(tmp_path, tmp_path / "model.pkl")) == 0
    capsys.readouterr()
    _fails(capsys, tmp_path, ["verify", str(tmp_path / "model.pkl")], "torch.save archive named .pkl")


def test_plain_pickle_source_is_not_guessed(tmp_path, capsys):
    import pickle
    (tmp_path / "d2.pkl").write_bytes(pickle.dumps({"model": {}, "__author__": "x"}))
    _fails(capsys, tmp_path, _conv(tmp_path, tmp_path / "d2.pkl"), "plain pickle")


def test_two_candidate_encoders(tmp_path, capsys, r18):
    ck = {"state_dict": {**{"net_a." + k: v for k, v in r18.items()}, **{"net_b." + k: v for k, v in r18.items()}}}
    torch.save(ck, tmp_path / "two.pth")
    _fails(capsys, tmp_path, _conv(tmp_path, tmp_path / "two.pth"), "2 candidate encoders", "'net_a.'", "'net_b.'")
    assert cli_main(_conv(tmp_path, tmp_path / "two.pth", "--key", "state_dict", "--prefix", "net_b.")) == 0


def test_vit_weights(tmp_path, capsys):
    vit = {"cls_token": torch.zeros(1, 1, 8), "pos_embed": torch.zeros(1, 5, 8),
           "patch_embed.proj.weight": torch.zeros(8, 3, 16, 16), "blocks.0.attn.qkv.weight": torch.zeros(24, 8),
           "conv1.weight": torch.zeros(64, 3, 7, 7)}
    torch.save(vit, tmp_path / "vit.pth")
    _fails(capsys, tmp_path, _conv(tmp_path, tmp_path / "vit.pth"), "Vision Transformer", "cls_token")


def test_stage_missing(tmp_path, capsys, r18):
    torch.save({k: v for k, v in r18.items() if not k.startswith("layer4.")}, tmp_path / "s.pth")
    _fails(capsys, tmp_path, _conv(tmp_path, tmp_path / "s.pth"), "partial backbone", "layer4")


def test_one_tensor_missing(tmp_path, capsys, r18):
    torch.save({k: v for k, v in r18.items() if k != "layer2.1.bn2.running_var"}, tmp_path / "s.pth")
    _fails(capsys, tmp_path, _conv(tmp_path, tmp_path / "s.pth"), "partial R-18", "layer2.1.bn2.running_var")


def test_only_some_keys_carry_the_prefix(tmp_path, capsys, r18):
    # the classic converter prefix bug: stem under 'module.', stages without -> refused, never half-converted
    mixed = {("module." + k if k.startswith(("conv1", "bn1")) else k): v for k, v in r18.items()}
    torch.save(mixed, tmp_path / "mixed.pth")
    _fails(capsys, tmp_path, _conv(tmp_path, tmp_path / "mixed.pth"), "inconsistently", "'module.'")


def test_unknown_key_in_a_known_layout(tmp_path, capsys, r18):
    ck = wrap("moco-v1/v2", r18, R18)
    ck["state_dict"]["module.extra_branch.weight"] = torch.zeros(3)
    torch.save(ck, tmp_path / "m.pth")
    _fails(capsys, tmp_path, _conv(tmp_path, tmp_path / "m.pth"), "fit no rule", "module.extra_branch.weight")


def test_deep_stem_and_avgpool_shortcut(tmp_path, capsys, r18):
    deep = {k: v for k, v in r18.items() if not k.startswith("conv1")}
    deep |= {"conv1.0.weight": torch.zeros(32, 3, 3, 3), "conv1.1.weight": torch.zeros(32),
             "conv1.3.weight": torch.zeros(64, 32, 3, 3)}
    torch.save(deep, tmp_path / "d.pth")
    _fails(capsys, tmp_path, _conv(tmp_path, tmp_path / "d.pth"), "deep 'D' stem", "conv1.0.weight")
    avg = dict(r18) | {"layer2.0.downsample.2.weight": torch.zeros(128)}
    torch.save(avg, tmp_path / "a.pth")
    _fails(capsys, tmp_path, _conv(tmp_path, tmp_path / "a.pth"), "avg-pool shortcuts", "layer2.0.downsample.2")


def test_pretrain_arch_record_disagreeing_with_tensors(tmp_path, capsys, r18):
    ck = wrap("infomin-det/pretrain", r18, R18)
    ck["arch"]["depth"] = 34
    torch.save(ck, tmp_path / "p.pth")
    _fails(capsys, tmp_path, _conv(tmp_path, tmp_path / "p.pth"), "records arch")


def test_output_exists_needs_force(tmp_path, capsys, r18):
    torch.save(r18, tmp_path / "s.pth")
    (tmp_path / "out.pkl").write_bytes(b"keep me")
    _fails(capsys, tmp_path, _conv(tmp_path, tmp_path / "s.pth"), "exists")
    assert (tmp_path / "out.pkl").read_bytes() == b"keep me"
    assert cli_main(_conv(tmp_path, tmp_path / "s.pth", "--force")) == 0
    assert (tmp_path / "out.pkl").read_bytes() != b"keep me"


def test_output_not_pkl(tmp_path, capsys, r18):
    torch.save(r18, tmp_path / "s.pth")
    _fails(capsys, tmp_path, _conv(tmp_path, tmp_path / "s.pth", out="out.pth"), "does not end in .pkl")


def test_read_only_output_dir(tmp_path, capsys, r18):
    torch.save(r18, tmp_path / "s.pth")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    immutable = os.geteuid() == 0 and shutil.which("chattr")  # root ignores mode bits
    if immutable:
        subprocess.run(["chattr", "+i", str(ro)], check=True)
    try:
        _fails(capsys, tmp_path, ["convert", str(tmp_path / "s.pth"), str(ro / "out.pkl")], "not writable")
        assert os.listdir(ro) == []
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(ro)], check=True)
        ro.chmod(0o755)


def test_pickled_objects_outside_allowlist_need_trust_pickle(tmp_path, capsys, r18):
    ck = wrap("moco-v1/v2", r18, R18)  # carries an argparse.Namespace: allowed without --trust-pickle
    assert cli_main(_conv(tmp_path, _save_to(tmp_path / "ok.pth", ck), out="ok.pkl")) == 0
    capsys.readouterr()
    ck["sched"] = argparse.ArgumentParser  # any other class is refused by default
    src = _save_to(tmp_path / "bad.pth", ck)
    msg = _fails(capsys, tmp_path, _conv(tmp_path, src), "weights-only allowlist: argparse.ArgumentParser", "--trust-pickle")
    assert "Namespace" not in msg
    assert cli_main(_conv(tmp_path, src, "--trust-pickle")) == 0


def _save_to(path, obj):
    torch.save(obj, path)
    return path


def test_mmselfsup_encoder_q_that_differs_from_backbone(tmp_path, capsys, r18):
    ck = wrap("mmselfsup/densecl", r18, R18)
    ck["state_dict"]["encoder_q.0.layer3.1.bn1.running_mean"] = torch.zeros(256)
    src = _save_to(tmp_path / "m.pth", ck)
    _fails(capsys, tmp_path, _conv(tmp_path, src), "two different encoders", "layer3.1.bn1.running_mean")
