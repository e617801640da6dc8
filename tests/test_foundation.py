"""Foundation pieces every capability uses: atomic writes, weights metadata, run dirs, the CLI."""

import json
import subprocess
import sys

import pytest

from infomin_det.atomic import atomic_directory, atomic_write, write_text_atomic
from infomin_det.cli import main
from infomin_det.errors import UserError
from infomin_det.rundir import RunInfo, run_dir
from infomin_det.weights_meta import CATALOG, TORCHVISION, ResNetArch, WeightsMeta


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    write_text_atomic(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_atomic_directory_renames_on_success_and_cleans_up_on_failure(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_directory(tmp_path / "set") as tmp:
            (tmp / "a.txt").write_text("half")
            raise RuntimeError("killed mid-build")
    assert list(tmp_path.iterdir()) == []
    with atomic_directory(tmp_path / "set") as tmp:
        (tmp / "a.txt").write_text("first")
    with atomic_directory(tmp_path / "set") as tmp:      # a second build of the same set loses the race
        (tmp / "a.txt").write_text("second")
    assert (tmp_path / "set" / "a.txt").read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["set"]


def test_weights_meta_round_trip_and_config_values():
    meta = WeightsMeta(ResNetArch(101, 32, 8), TORCHVISION, "moco_v2", source_sha256="ab")
    d = json.loads(json.dumps(meta.to_dict()))
    assert WeightsMeta.from_dict(d) == meta
    assert d["arch"]["name"] == "X-101-32x8d"
    vals = meta.config_values()
    assert vals["MODEL.RESNETS.NUM_GROUPS"] == 32 and vals["MODEL.RESNETS.WIDTH_PER_GROUP"] == 8
    assert vals["INPUT.FORMAT"] == "RGB" and vals["MODEL.RESNETS.STRIDE_IN_1X1"] is False


def test_catalog_marks_caffe2_conventions():
    msra = CATALOG["detectron2://ImageNetPretrained/MSRA/R-50.pkl"]
    assert msra.convention.input_format == "BGR" and msra.convention.stride_in_1x1
    assert msra.convention.pixel_std == (1.0, 1.0, 1.0)
    assert CATALOG["catalog://ImageNetPretrained/FAIR/X-152-32x8d-IN5k"].norm_fused


def test_run_dir_layout_and_run_json(tmp_path):
    d = run_dir(tmp_path, "exp1", "coco/R50-FPN-1x", "infomin_r50", 3)
    assert d == tmp_path / "exp1" / "coco" / "R50-FPN-1x" / "infomin_r50" / "seed3"
    d.mkdir(parents=True)
    info = RunInfo("exp1", "coco/R50-FPN-1x", "ssl", "infomin_r50", "/w.pkl", 3, "T3")
    info.write(d)
    assert RunInfo.read(d) == info
    with pytest.raises(UserError):
        run_dir(tmp_path, "exp1", "coco/R50-FPN-1x", "../escape", 0)


def test_cli_overview_and_unknown_command(capsys):
    assert main([]) == 2                           # bare call: the overview on stderr, exit 2 (argparse's rule)
    assert "convert" in capsys.readouterr().err
    assert main(["--help"]) == 0
    assert "convert" in capsys.readouterr().out
    assert main(["no-such-command"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown command") and "fix:" in err


def test_console_module_runs():
    out = subprocess.run([sys.executable, "-m", "infomin_det", "--version"],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "infomin-det 0.1.0"
