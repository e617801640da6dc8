"""Converter bad input: each a one-line cause + fix, exit 2, and no output (or temp file) left behind."""

import argparse
import errno
import json
import os
import pickle
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from infomin_det.cli import main as cli_main
from infomin_det.convert.synthetic import random_trunk, wrap
from infomin_det.errors import UserError
from infomin_det.weights_meta import META_KEY, ResNetArch

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


# ---------------------------------------------------------------------------------------------
# every tensor's dtype and values, before anything is written

NARROW = ResNetArch(50, 1, 16, 16, 64)  # a small bottleneck trunk (1.5 M values): fast to save and load


@pytest.fixture(scope="module")
def narrow():
    return random_trunk(NARROW, seed=7)


BAD_TENSORS = {  # name: (trunk key, replacement, words the error must contain)
    "nan-conv": ("layer2.0.conv1.weight", lambda t: t.clone().index_fill_(0, torch.tensor([0]), float("nan")), ["NaN"]),
    "inf-running-var": ("layer3.1.bn2.running_var", lambda t: torch.full_like(t, float("inf")), ["Inf"]),
    "negative-running-var": ("bn1.running_var", lambda t: -t, ["negative", ">= 0"]),
    "int-conv": ("conv1.weight", lambda t: t.long(), ["int64", "floating point"]),
    "float-counter": ("bn1.num_batches_tracked", lambda t: torch.tensor(3.5), ["float32", "integer"]),
    "complex": ("bn1.bias", lambda t: t.to(torch.complex64), ["complex64"]),
    "bool": ("bn1.weight", lambda t: torch.ones_like(t, dtype=torch.bool), ["bool"]),
    "f64-beyond-f32": ("layer1.0.bn3.weight", lambda t: torch.full(t.shape, 1e300, dtype=torch.float64), ["float32's range"]),
    "f16-inf": ("layer4.0.bn1.bias", lambda t: torch.full(t.shape, float("inf"), dtype=torch.float16), ["Inf"]),
    "sparse": ("bn1.bias", lambda t: t.to_sparse(), ["sparse"]),
    "meta-device": ("bn1.bias", lambda t: torch.empty(t.shape, device="meta"), ["no data"]),
    "empty-dim": ("conv1.weight", lambda t: torch.zeros(0, 3, 7, 7), ["empty dimension"]),
    "0-d": ("bn1.running_var", lambda t: torch.tensor(1.0), ["shape ()"]),
    "huge-expanded": ("bn1.running_var", lambda t: torch.zeros(1).expand(10**10), ["10000000000"]),
}


@pytest.mark.filterwarnings("ignore::UserWarning")  # torch warns when it validates a loaded sparse tensor
@pytest.mark.parametrize("case", BAD_TENSORS)
def test_bad_tensor_is_refused_naming_its_key(tmp_path, capsys, narrow, case):
    key, replace, needles = BAD_TENSORS[case]
    trunk = dict(narrow)
    trunk[key] = replace(trunk[key])
    src = _save_to(tmp_path / "s.pth", {"state_dict": {"module.encoder_q." + k: v for k, v in trunk.items()}})
    _fails(capsys, tmp_path, _conv(tmp_path, src), key, *needles)


def test_good_narrow_trunk_still_converts_exactly(tmp_path, narrow):
    from infomin_det.convert import convert, read_d2_pkl
    from infomin_det.convert.resnet_keys import d2_to_tv
    src = _save_to(tmp_path / "s.pth", wrap("moco-v1/v2", narrow, NARROW))
    convert(src, tmp_path / "o.pkl")
    got = {d2_to_tv(k): v for k, v in read_d2_pkl(tmp_path / "o.pkl").model.items()}
    assert all(torch.equal(got[k], narrow[k]) for k in got) and len(got) == len(narrow) - 53


def test_bn_running_var_of_zero_is_fine(tmp_path, narrow):
    from infomin_det.convert import convert
    trunk = dict(narrow) | {"bn1.running_var": torch.zeros(16)}  # eps keeps it finite; not an error
    convert(_save_to(tmp_path / "s.pth", trunk), tmp_path / "o.pkl")


# ---------------------------------------------------------------------------------------------
# the source file's form and integrity

def _fifo(path):
    os.mkfifo(path)
    return path


def _socket(path):
    import socket
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    return path, s


def test_source_that_is_not_a_regular_file(tmp_path, capsys):
    _fails(capsys, tmp_path, _conv(tmp_path, "/dev/zero"), "/dev/zero is a character device")
    _fails(capsys, tmp_path, _conv(tmp_path, _fifo(tmp_path / "f.pth")), "named pipe (FIFO)")  # would block on open
    sock, s = _socket(tmp_path / "s.pth")
    with s:
        _fails(capsys, tmp_path, _conv(tmp_path, sock), "is a socket")
    _fails(capsys, tmp_path, _conv(tmp_path, tmp_path), "is a directory")
    os.symlink(tmp_path / "gone.pth", tmp_path / "link.pth")
    _fails(capsys, tmp_path, _conv(tmp_path, tmp_path / "link.pth"), "broken symbolic link", "gone.pth")


def test_source_name_with_a_newline_stays_on_one_line(tmp_path, capsys):
    _fails(capsys, tmp_path, _conv(tmp_path, tmp_path / "a\nb.pth"), r"a\nb.pth", "no such file")


def test_archive_damage(tmp_path, capsys, narrow):
    import zipfile
    good = _save_to(tmp_path / "good.pth", narrow)
    data = bytearray(good.read_bytes())
    data[len(data) // 2: len(data) // 2 + 64] = bytes(64)  # flipped bytes inside a tensor: torch loads them silently
    (tmp_path / "flipped.pth").write_bytes(bytes(data))
    _fails(capsys, tmp_path, _conv(tmp_path, tmp_path / "flipped.pth"), "fails its CRC-32 check")
    with zipfile.ZipFile(good) as z, zipfile.ZipFile(tmp_path / "gap.pth", "w") as o:
        victim = [n for n in z.namelist() if "/data/" in n][3]
        for n in z.namelist():
            if n != victim:
                o.writestr(z.getinfo(n), z.read(n))
    _fails(capsys, tmp_path, _conv(tmp_path, tmp_path / "gap.pth"), "incomplete torch.save archive", "is missing")
    np.savez(tmp_path / "a.npz", x=np.zeros(3))
    _fails(capsys, tmp_path, _conv(tmp_path, tmp_path / "a.npz"), "numpy .npz archive")
    (tmp_path / "z.pth").write_bytes(bytes(4096))
    _fails(capsys, tmp_path, _conv(tmp_path, tmp_path / "z.pth"), "all zero bytes")


# ---------------------------------------------------------------------------------------------
# the output path's form: each a one-line cause, nothing written, nothing replaced

@pytest.fixture()
def src(tmp_path, narrow):
    return _save_to(tmp_path / "s.pth", narrow)


def test_output_in_a_virtual_filesystem(tmp_path, capsys, src):
    # before: "cannot write /proc/x.pkl: No such file or directory / fix: free disk space"
    _fails(capsys, tmp_path, _conv(tmp_path, src, out="/proc/x.pkl"), "virtual filesystem")
    if os.path.isdir("/sys"):
        _fails(capsys, tmp_path, _conv(tmp_path, src, out="/sys/x.pkl"), "virtual filesystem")


def test_output_devices_fifos_and_links_are_never_written_through(tmp_path, capsys, src):
    _fails(capsys, tmp_path, _conv(tmp_path, src, out="/dev/null"), "character device")
    os.symlink("/dev/null", tmp_path / "null.pkl")
    _fails(capsys, tmp_path, _conv(tmp_path, src, "--force", out="null.pkl"), "symbolic link", "/dev/null")
    _fifo(tmp_path / "f.pkl")
    _fails(capsys, tmp_path, _conv(tmp_path, src, "--force", out="f.pkl"), "named pipe")
    assert stat.S_ISFIFO(os.lstat(tmp_path / "f.pkl").st_mode)  # not replaced by a file
    (tmp_path / "real.pkl").write_bytes(b"keep")
    os.symlink("real.pkl", tmp_path / "link.pkl")
    _fails(capsys, tmp_path, _conv(tmp_path, src, "--force", out="link.pkl"), "symbolic link", "real.pkl")
    os.symlink(tmp_path / "nowhere.pkl", tmp_path / "dangling.pkl")
    _fails(capsys, tmp_path, _conv(tmp_path, src, out="dangling.pkl"), "symbolic link", "nowhere.pkl")
    assert (tmp_path / "real.pkl").read_bytes() == b"keep" and os.path.islink(tmp_path / "link.pkl")


def test_output_that_is_the_source(tmp_path, capsys, src):
    os.symlink(src, tmp_path / "ln.pkl")
    _fails(capsys, tmp_path, _conv(tmp_path, src, "--force", out="ln.pkl"), "symbolic link to the source")
    os.link(src, tmp_path / "hard.pkl")
    before = src.read_bytes()
    _fails(capsys, tmp_path, _conv(tmp_path, src, "--force", out="hard.pkl"), "the source file (a hard link")
    assert src.read_bytes() == before and os.path.samefile(src, tmp_path / "hard.pkl")


def test_output_directory_forms(tmp_path, capsys, src):
    _fails(capsys, tmp_path, _conv(tmp_path, src, out="s.pth/x.pkl"), "s.pth is a file, not a directory")
    _fails(capsys, tmp_path, _conv(tmp_path, src, out="s.pth/a/x.pkl"), "s.pth is a file, not a directory")
    _fails(capsys, tmp_path, _conv(tmp_path, src, out="no/x.pkl"), "does not exist", "mkdir -p")
    (tmp_path / "d.pkl").mkdir()
    _fails(capsys, tmp_path, _conv(tmp_path, src, out="d.pkl"), "d.pkl is a directory")
    _fails(capsys, tmp_path, _conv(tmp_path, src, "--force", out="d.pkl"), "d.pkl is a directory")
    assert cli_main(["convert", str(src), ""]) == 2 and "is a directory" in capsys.readouterr().err  # was a traceback
    assert cli_main(["convert", str(src), "/"]) == 2 and "is a directory" in capsys.readouterr().err


def test_output_names(tmp_path, capsys, src):
    _fails(capsys, tmp_path, _conv(tmp_path, src, out="a\nb.pkl"), "control character", r"a\nb.pkl")
    _fails(capsys, tmp_path, _conv(tmp_path, src, out=".pkl"), "does not end in .pkl", "weights.pkl")
    _fails(capsys, tmp_path, _conv(tmp_path, src, out="x" * 250 + ".pkl"), "file name too long", "at most 241")
    _fails(capsys, tmp_path, _conv(tmp_path, src, out="x" * 300 + ".pkl"), "file name too long")  # was a traceback


def _unshare_tmpfs_ok():
    return shutil.which("unshare") and subprocess.run(
        ["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=64k none /mnt 2>/dev/null || "
         "mount -t tmpfs -o size=64k none \"$TMPDIR\""], capture_output=True).returncode == 0


@pytest.mark.skipif(not _unshare_tmpfs_ok(), reason="needs unshare -rm and tmpfs mounts (user namespaces)")
def test_full_filesystems_are_refused_before_writing(tmp_path, src):
    """Real tmpfs mounts in a private mount namespace: 1 MiB of space, and no free inodes."""
    small, inodes = tmp_path / "small", tmp_path / "inodes"
    small.mkdir(), inodes.mkdir()
    conv = f"{sys.executable} -m infomin_det convert {src}"
    script = (f"mount -t tmpfs -o size=1m none {small} && mount -t tmpfs -o size=64m,nr_inodes=1 none {inodes} && "
              f"{conv} {small}/o.pkl; echo rc=$?; {conv} {inodes}/o.pkl; echo rc=$?; ls -A {small} {inodes}")
    r = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, timeout=120,
                       cwd=Path(__file__).resolve().parents[1])
    assert r.stdout.count("rc=2") == 2, (r.stdout, r.stderr)
    assert "not enough space" in r.stderr and "1.0 MiB free" in r.stderr and "the weights need 6.7 MiB" in r.stderr
    assert "no space or no free inodes" in r.stderr
    assert "o.pkl" not in r.stdout and ".tmp" not in r.stdout  # nothing left in either
    assert r.stderr.count("error: ") == 2 and "Traceback" not in r.stderr


def test_os_errors_map_to_one_line_causes(tmp_path):
    from infomin_det.convert.files import os_error
    out = tmp_path / "o.pkl"
    for code, needle in [(errno.ENOSPC, "no space"), (errno.EDQUOT, "quota"), (errno.EROFS, "read-only filesystem"),
                         (errno.EACCES, "permission denied"), (errno.ENAMETOOLONG, "name too long"),
                         (errno.EIO, "Input/output error")]:
        e = os_error(OSError(code, os.strerror(code)), out, f"cannot write {out}")
        assert needle in e.cause and "\n" not in e.cause + e.fix and e.fix, (code, e.cause)
        assert ("free disk space" in e.fix) == (code in (errno.ENOSPC, errno.EDQUOT))  # the old fix for everything


# ---------------------------------------------------------------------------------------------
# what the checkpoint holds, and --key / --prefix / --ema

def test_state_dict_with_non_tensor_entries_names_them_and_the_way_out(tmp_path, capsys, narrow):
    ck = {"state_dict": {**{"module.encoder_q." + k: v for k, v in narrow.items()}, "module.n_iter": 5}}
    src = _save_to(tmp_path / "nt.pth", ck)
    _fails(capsys, tmp_path, _conv(tmp_path, src), "module.n_iter (int)", "--key state_dict --prefix module.encoder_q.")
    # the suggested flags work, and the coverage says what was dropped
    assert cli_main(_conv(tmp_path, src, "--key", "state_dict", "--prefix", "module.encoder_q.", "--json")) == 0
    assert json.loads(capsys.readouterr().out)["coverage"]["dropped"]["non-tensor entries"] == 1
    plain = _save_to(tmp_path / "p.pth", {**narrow, 5: torch.zeros(1), "epoch": 3})
    _fails(capsys, tmp_path, _conv(tmp_path, plain, out="p.pkl"), "5 (a int key)", "epoch (int)", "--key '' --prefix ''")


@pytest.mark.parametrize("obj,needle", [({}, "empty dict"), ({"state_dict": {}, "epoch": 1}, "['state_dict'] is an empty dict"),
                                        ([1], "holds a list"), (None, "holds a NoneType")])
def test_checkpoints_holding_nothing(tmp_path, capsys, obj, needle):
    _fails(capsys, tmp_path, _conv(tmp_path, _save_to(tmp_path / "e.pth", obj)), needle)


@pytest.fixture(scope="module")
def moco_src(tmp_path_factory, narrow):
    return _save_to(tmp_path_factory.mktemp("moco") / "moco.pth", wrap("moco-v1/v2", narrow, NARROW))


@pytest.mark.parametrize("flags,needles", [
    (["--key", "checkpoint"], ["the file has no entry 'checkpoint'", "entries: epoch, arch"]),
    (["--key", "state_dict.module"], ["has no entry 'module'", "dots inside key names belong in --prefix"]),
    (["--key", "args"], ["leads to a Namespace"]),
    (["--key", "epoch.x"], ["['epoch'] is a int, not a dict"]),
    (["--key", "state_dict", "--prefix", "zzz."], ["matches no tensor key", "'module.encoder_q.'"]),
    (["--key", "state_dict", "--prefix", "module.enc"], ["does not end at a '.'", "'module.encoder_k.'"]),
    (["--key", "state_dict", "--prefix", "module.encoder_q"], ["does not end at a '.'", "pass --prefix 'module.encoder_q.'"]),
    (["--ema"], ["no EMA model"]),
    (["--ema", "--key", "state_dict", "--prefix", "module.encoder_q."], ["--ema together with --key/--prefix"]),
])
def test_key_prefix_ema_pointing_nowhere(tmp_path, capsys, moco_src, flags, needles):
    _fails(capsys, tmp_path, _conv(tmp_path, moco_src, *flags), *needles)


def test_prefix_of_a_momentum_copy_converts_but_says_so(tmp_path, capsys, moco_src):
    assert cli_main(_conv(tmp_path, moco_src, "--key", "state_dict", "--prefix", "module.encoder_k.")) == 0
    assert "by its name a momentum/EMA/target/teacher copy" in capsys.readouterr().out


def test_pretrain_checkpoint_with_ema_or_a_malformed_arch_record(tmp_path, capsys, narrow):
    ck = wrap("infomin-det/pretrain", narrow, NARROW)
    src = _save_to(tmp_path / "p.pth", ck)
    _fails(capsys, tmp_path, _conv(tmp_path, src, "--ema"), "query encoder only")  # --ema was silently ignored
    ck["arch"]["depth"] = "fifty"
    _fails(capsys, tmp_path, _conv(tmp_path, _save_to(tmp_path / "q.pth", ck)), "malformed", "depth='fifty'")  # traceback
    ck["arch"]["depth"] = 50.7  # int(50.7) == 50 would have passed
    _fails(capsys, tmp_path, _conv(tmp_path, _save_to(tmp_path / "r.pth", ck)), "malformed", "depth=50.7")


# ---------------------------------------------------------------------------------------------
# reading a .pkl back (what train and verify use)

def _converted(tmp_path, trunk, name="w.pkl"):
    from infomin_det.convert import convert
    convert(_save_to(tmp_path / "w_src.pth", trunk), tmp_path / name)
    with open(tmp_path / name, "rb") as f:
        return pickle.load(f)


def _dump(path, data):
    with open(path, "wb") as f:
        pickle.dump(data, f)
    return path


@pytest.mark.parametrize("edit,needles", [
    (lambda d: d["model"]["res4.1.conv2.norm.running_var"].fill(np.inf), ["res4.1.conv2.norm.running_var", "Inf"]),
    (lambda d: d["model"]["stem.conv1.weight"].fill(np.nan), ["stem.conv1.weight", "NaN"]),
    (lambda d: d["model"]["res2.0.conv1.norm.running_var"].__imul__(-1), ["negative"]),
    (lambda d: d["model"].__setitem__("stem.conv1.norm.bias", np.full(16, 1e300)), ["float32's range"]),
    (lambda d: d["model"].__setitem__("stem.conv1.weight", "abc"), ["is a str, not a numeric array"]),
    (lambda d: d["model"].__setitem__("stem.conv1.weight", np.array(["a"])), ["<U1 array"]),
    (lambda d: d["model"].__setitem__(5, np.zeros(3)), ["key 5 that is not a name"]),
    (lambda d: d.__setitem__("model", {}), ["'model' is empty", "no weights at all"]),
    (lambda d: d.__setitem__("model", [1]), ["'model' is a list"]),
    (lambda d: d.__setitem__(META_KEY, {"arch": 5}), ["metadata", "malformed"]),
    (lambda d: d[META_KEY]["arch"].__setitem__("depth", 999), ["malformed", "depth 999"]),
    (lambda d: d[META_KEY]["arch"].__setitem__("num_groups", 0), ["malformed", "positive"]),
])
def test_read_d2_pkl_refuses_what_would_train_wrong(tmp_path, narrow, edit, needles):
    from infomin_det.convert import read_d2_pkl
    data = _converted(tmp_path, narrow)
    edit(data)
    with pytest.raises(UserError) as e:
        read_d2_pkl(_dump(tmp_path / "e.pkl", data))
    for n in needles:
        assert n in e.value.cause, e.value.cause
    assert "\n" not in e.value.cause


def test_non_pkl_given_where_a_pkl_is_expected_says_what_it_is(tmp_path, capsys, narrow):
    tar = _save_to(tmp_path / "moco_v2_800ep.pth.tar", narrow)
    # before: "is a torch.save archive named .pkl" for a file named .pth.tar
    _fails(capsys, tmp_path, ["verify", str(tar)], "is a torch.save archive (a training checkpoint)",
           f"infomin-det convert {tar} {tmp_path / 'moco_v2_800ep.pkl'}")
    torch.save(narrow, tmp_path / "leg.pth", _use_new_zipfile_serialization=False)
    _fails(capsys, tmp_path, ["verify", str(tmp_path / "leg.pth")], "legacy (pre-1.6) torch.save file")  # was "lacks 'model'"
    (tmp_path / "notes.txt").write_text("hello\n")
    _fails(capsys, tmp_path, ["verify", str(tmp_path / "notes.txt")], "is a text file, not Detectron2 .pkl weights")
    _fails(capsys, tmp_path, ["verify", "/dev/zero"], "character device")  # was "no such file"
    _fails(capsys, tmp_path, ["verify", str(_fifo(tmp_path / "f.pkl"))], "named pipe")
    _fails(capsys, tmp_path, ["verify", str(tmp_path / "v.pkl"), "--source", str(tmp_path / "f.pkl")], "weights file")
