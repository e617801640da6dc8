"""``train --config-file my.yaml``: a user's Detectron2 YAML instead of the protocol's leaf -- trained,
recorded as the custom variant of the protocol, still checked against the weights, loaded as data
only, and never set beside the paper's numbers."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from infomin_det.convert import convert
from infomin_det.convert.synthetic import random_trunk
from infomin_det.engine.spec import TrainSpec
from infomin_det.errors import UserError
from infomin_det.weights_meta import ResNetArch
from transfer_configs import ROOT

LEAF = ROOT / "coco/R50-FPN-1x.ssl.yaml"
TINY_YAML = f"""_BASE_: "{LEAF}"
MODEL:
  RESNETS: {{WIDTH_PER_GROUP: 16, RES2_OUT_CHANNELS: 64, STEM_OUT_CHANNELS: 16}}
  FPN: {{OUT_CHANNELS: 32}}
  ROI_BOX_HEAD: {{CONV_DIM: 32, FC_DIM: 64}}
  ROI_MASK_HEAD: {{CONV_DIM: 32}}
  RPN: {{BATCH_SIZE_PER_IMAGE: 32}}
  ROI_HEADS: {{BATCH_SIZE_PER_IMAGE: 16}}
INPUT: {{MIN_SIZE_TRAIN: [96], MAX_SIZE_TRAIN: 128, MIN_SIZE_TEST: 96, MAX_SIZE_TEST: 128}}
SOLVER: {{IMS_PER_BATCH: 2, REFERENCE_WORLD_SIZE: 0, STEPS: [], WARMUP_ITERS: 1, MAX_ITER: 2, CHECKPOINT_PERIOD: 100}}
TEST: {{PRECISE_BN: {{NUM_ITER: 1}}}}
DATALOADER: {{NUM_WORKERS: 0}}
"""


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    d = tmp_path_factory.mktemp("w")
    torch.save(random_trunk(ResNetArch(50, 1, 16, 16, 64)), d / "tv.pth")
    convert(d / "tv.pth", d / "infomin.pkl")
    return d / "infomin.pkl"


def _dataset(tiny_coco):
    return "coco-json:{}:{}:{}:{}".format(*tiny_coco["train"], *tiny_coco["val"])


def test_a_custom_config_trains_as_its_own_variant_and_is_never_the_papers(tmp_path, tiny_coco, weights):
    cfg = tmp_path / "my.yaml"
    cfg.write_text(TINY_YAML)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    p = subprocess.run([sys.executable, "-m", "infomin_det", "train", "--protocol", "coco/R50-FPN-1x",
                        "--config-file", cfg, "--weights", weights, "--dataset", _dataset(tiny_coco),
                        "--root", tmp_path / "runs", "--experiment", "e", "--device", "cpu", "--threads", "1"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    out = Path(json.loads(p.stdout)["output_dir"])
    assert out == tmp_path / "runs/e/coco/R50-FPN-1x/infomin+custom-my/seed0"
    info = json.loads((out / "run.json").read_text())
    assert info["variant"] == "custom-my"
    assert info["provenance"]["config_file"]["path"] == str(cfg)
    assert len(info["provenance"]["config_file"]["sha256"]) == 64
    # the file's own change is what ran (16 RoIs per image, the leaf says 512)
    assert "BATCH_SIZE_PER_IMAGE: 16" in (out / "config.yaml").read_text()
    rep = subprocess.run([sys.executable, "-m", "infomin_det", "report", tmp_path / "runs/e", "--format", "json"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert rep.returncode == 0, rep.stderr
    table = json.loads(rep.stdout)["tables"][0]
    assert table["modified"][0] == "custom config my.yaml"
    assert table["rows"][0]["label"] == "infomin [custom-my]"
    ref = subprocess.run([sys.executable, "-m", "infomin_det", "report", tmp_path / "runs/e", "--baseline",
                          "paper:supervised"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert ref.returncode == 2 and "custom config my.yaml" in ref.stderr


def _check(tiny_coco, weights, tmp_path, config_file, **kw):
    from infomin_det.engine.config import check_spec

    check_spec(TrainSpec("coco/R50-FPN-1x", str(weights), str(tmp_path / "o"), dataset=_dataset(tiny_coco),
                         config_file=str(config_file), device="cpu", **kw))


def test_the_custom_config_is_still_checked_against_the_weights(tmp_path, tiny_coco, weights):
    cfg = tmp_path / "deep.yaml"
    cfg.write_text(TINY_YAML.replace("RESNETS: {", "RESNETS: {DEPTH: 101, "))
    with pytest.raises(UserError, match="MODEL.RESNETS.DEPTH"):
        _check(tiny_coco, weights, tmp_path, cfg)
    ok = tmp_path / "ok.yaml"
    ok.write_text(TINY_YAML)
    _check(tiny_coco, weights, tmp_path, ok)


@pytest.mark.parametrize("name, text, words", [
    ("missing.yaml", None, "does not exist"),
    ("my.py", "from x import y\n", "not a .yaml file"),
    ("bad.yaml", "MODEL: [unclosed\n", "not plain YAML"),
    ("obj.yaml", "MODEL: !!python/object/apply:os.system ['touch {marker}']\n", "not plain YAML"),
    ("unknown.yaml", "MODEL:\n  NO_SUCH_KEY: 1\n", "Detectron2 refuses it"),
    ("base.yaml", "_BASE_: nowhere.yaml\n", "_BASE_"),
    ("loop.yaml", "_BASE_: loop.yaml\n", "_BASE_"),
    ("big.yaml", "# " + "x" * (1 << 20) + "\n", "too large"),
    ("dir.yaml", "DIR", "is not a file"),
    ("type.yaml", "SOLVER:\n  MAX_ITER: many\n", "Detectron2 refuses it"),
])
def test_bad_config_files_are_refused_as_data(tmp_path, tiny_coco, weights, name, text, words):
    marker = tmp_path / "marker"
    path = tmp_path / name
    if text == "DIR":
        path.mkdir()
    elif text is not None:
        path.write_text(text.replace("{marker}", str(marker)))
    with pytest.raises(UserError, match=words):
        _check(tiny_coco, weights, tmp_path, path)
    assert not marker.exists()


def test_a_config_file_and_a_variant_together_are_refused(tmp_path, tiny_coco, weights):
    (tmp_path / "my.yaml").write_text(TINY_YAML)
    with pytest.raises(UserError, match="both say what to train"):
        _check(tiny_coco, weights, tmp_path, tmp_path / "my.yaml", variant="rgb")


def test_submit_takes_a_config_file_and_records_its_hash(tmp_path, tiny_coco, weights):
    cfg = tmp_path / "my.yaml"
    cfg.write_text(TINY_YAML)
    def submit(config):
        return subprocess.run([sys.executable, "-m", "infomin_det", "submit", "--experiment", "e", "--root",
                               tmp_path / "runs", "--protocol", "coco/R50-FPN-1x", "--weights", f"infomin={weights}",
                               "--config-file", config, "--dataset", _dataset(tiny_coco), "--cluster", "local",
                               "--device", "cpu", "--dry-run"], cwd=tmp_path, capture_output=True, text=True, timeout=120)

    p = submit(cfg)
    assert p.returncode == 0, p.stderr
    assert "coco/R50-FPN-1x/infomin+custom-my/seed0  would-submit" in p.stdout
    assert "infomin+custom-my  ssl" in p.stdout and not (tmp_path / "runs").exists()
    bad = submit(tmp_path / "nope.yaml")
    assert bad.returncode == 2 and "nope.yaml is not a file" in bad.stderr and not (tmp_path / "runs").exists()
