"""``tools/train_net.py``: Detectron2's flags map onto a TrainSpec; a config outside the protocols is refused."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("detectron2", reason="tools/train_net.py is Detectron2's")
from detectron2.engine import default_argument_parser  # noqa: E402

from transfer_configs import ROOT  # noqa: E402

pytestmark = pytest.mark.detectron2

TOOL = Path(__file__).resolve().parents[1] / "tools" / "train_net.py"


def _tool():
    spec = importlib.util.spec_from_file_location("train_net_tool", TOOL)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_detectron2_flags_become_a_spec():
    args = default_argument_parser().parse_args(
        ["--config-file", str(ROOT / "coco" / "R101-C4-2x.supervised.yaml"), "--num-gpus", "4", "--eval-only",
         "MODEL.WEIGHTS", "w.pkl", "SOLVER.BASE_LR", "0.01", "OUTPUT_DIR", "out/x", "SEED", "7"])
    spec = _tool().spec_from_d2_args(args)
    assert (spec.protocol, spec.family, spec.weights, spec.output_dir, spec.seed) == \
        ("coco/R101-C4-2x", "supervised", "w.pkl", "out/x", 7)
    assert spec.opts == ("SOLVER.BASE_LR", "0.01") and spec.num_processes == 4 and spec.eval_only


def test_variant_leaf_and_device_map_onto_the_spec():
    args = default_argument_parser().parse_args(
        ["--config-file", str(ROOT / "coco" / "R50-FPN-1x.random+rgb.yaml"), "MODEL.DEVICE", "cpu"])
    spec = _tool().spec_from_d2_args(args)
    assert (spec.protocol, spec.family, spec.variant, spec.device, spec.opts) == \
        ("coco/R50-FPN-1x", "random", "rgb", "cpu", ())


def test_config_outside_the_protocols_is_refused(tmp_path):
    other = tmp_path / "mine.yaml"
    other.write_text("MODEL: {}\n")
    r = subprocess.run([sys.executable, str(TOOL), "--config-file", str(other)], capture_output=True, text=True)
    assert r.returncode == 2
    assert "is not a leaf under" in r.stderr and "fix:" in r.stderr
