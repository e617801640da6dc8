"""Every protocol leaf config: exists, merges in Detectron2, carries its family's input convention,
its arch and schedule, and names the paper panels it reproduces (cross-checked with the report's data)."""

import json
import re
import subprocess
import sys

import pytest

from infomin_det.errors import UserError
from infomin_det.protocols import FAMILIES, config_path, family_for_weights, get_protocol, list_protocols
from infomin_det.report import paper
from infomin_det.weights_meta import CATALOG, FAIR_CAFFE2, MSRA_CAFFE2, TORCHVISION, ResNetArch, WeightsMeta
from transfer_configs import ROOT

LEAVES = [(p.id, f) for p in list_protocols() for f in FAMILIES]
SCHEDULES = {"1x": ((60000, 80000), 90000), "2x": ((120000, 160000), 180000),
             "6x": ((480000, 520000), 540000), "24k": ((18000, 22000), 24000)}
ARCH = {"R-50": (50, 1, 64), "R-101": (101, 1, 64), "X-101-32x8d": (101, 32, 8), "X-152-32x8d": (152, 32, 8)}


def merged(pid, family):
    from detectron2.config import get_cfg

    cfg = get_cfg()
    cfg.merge_from_file(str(config_path(pid, family)))
    return cfg


def test_every_leaf_file_exists_and_nothing_else():
    leaves = {str(p.relative_to(ROOT)) for p in ROOT.glob("*/*.yaml") if p.parent.name in ("coco", "voc")}
    assert leaves == {f"{pid}.{f}.yaml" for pid, f in LEAVES}
    assert len(LEAVES) == 17 * 3


@pytest.mark.parametrize("pid,family", LEAVES)
def test_leaf_merges_with_its_protocol_values(pid, family):
    proto = get_protocol(pid)
    cfg = merged(pid, family)
    steps, max_iter = SCHEDULES[proto.schedule]
    assert (tuple(cfg.SOLVER.STEPS), cfg.SOLVER.MAX_ITER) == (steps, max_iter)
    assert cfg.SOLVER.IMS_PER_BATCH == 16 and cfg.SOLVER.BASE_LR == 0.02
    r = cfg.MODEL.RESNETS
    assert (r.DEPTH, r.NUM_GROUPS, r.WIDTH_PER_GROUP) == ARCH[proto.arch]
    assert cfg.MODEL.BACKBONE.FREEZE_AT == 0 and cfg.TEST.PRECISE_BN.ENABLED
    assert cfg.MODEL.MASK_ON == proto.has_masks
    # input convention of the family == what converted / catalog weights record
    conv = {"ssl": TORCHVISION, "random": TORCHVISION}.get(family)
    if family == "supervised":
        meta = CATALOG[cfg.MODEL.WEIGHTS]
        conv = meta.convention
        assert meta.arch == ResNetArch(*ARCH[proto.arch][:3])
        assert r.NORM == ("FrozenBN" if meta.norm_fused else "SyncBN")
        assert conv in (MSRA_CAFFE2, FAIR_CAFFE2)
    else:
        assert cfg.MODEL.WEIGHTS == "" and r.NORM == "SyncBN"
    for key, value in conv.config_values().items():
        node = cfg
        for part in key.split("."):
            node = node[part]
        assert (list(node) if isinstance(value, list) else node) == value, key
    if proto.meta_arch in ("mask_fpn", "cascade_fpn"):
        assert cfg.MODEL.FPN.NORM == "SyncBN" and cfg.MODEL.ROI_BOX_HEAD.NORM == "SyncBN"
        assert (cfg.MODEL.ROI_BOX_HEAD.NUM_CONV, cfg.MODEL.ROI_BOX_HEAD.NUM_FC) == (4, 1)
        assert cfg.MODEL.ROI_MASK_HEAD.NORM == "SyncBN"
    else:
        assert cfg.MODEL.ROI_HEADS.NAME == "Res5ROIHeadsExtraNorm"
    if proto.meta_arch == "cascade_fpn":
        assert cfg.MODEL.ROI_HEADS.NAME == "CascadeROIHeads" and cfg.MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG
        assert tuple(cfg.MODEL.ROI_BOX_CASCADE_HEAD.IOUS) == (0.5, 0.6, 0.7)
    if proto.dataset == "voc":
        assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == 20 and cfg.SOLVER.WARMUP_ITERS == 100
        assert cfg.DATASETS.TRAIN == ("voc_2007_trainval", "voc_2012_trainval")


@pytest.mark.parametrize("pid,family", LEAVES)
def test_leaf_names_the_panels_it_reproduces(pid, family):
    header = config_path(pid, family).read_text().splitlines()[:2]
    assert header[0].startswith(f"# {pid}:")
    named = re.findall(r"Table (\d+)\((\w)\)|Table (\d+)(?!\()", header[1])
    panels = {f"T{a}{b}" if a else f"T{c}" for a, b, c in named}
    assert panels == set(get_protocol(pid).panels)


def test_panels_match_the_report_data():
    by_panel = {p.id: p.protocol for p in paper.panels()}
    ours = {panel: p.id for p in list_protocols() for panel in p.panels}
    assert ours == by_panel


def test_family_for_weights():
    assert family_for_weights(None, "") == "random"
    assert family_for_weights(WeightsMeta(ResNetArch(50), TORCHVISION, "moco_v2"), "w.pkl") == "ssl"
    assert family_for_weights(CATALOG["detectron2://ImageNetPretrained/MSRA/R-50.pkl"], "x") == "supervised"
    with pytest.raises(UserError, match="no infomin-det metadata"):
        family_for_weights(None, "w.pkl")


def test_unknown_protocol_lists_the_known_ones():
    with pytest.raises(UserError) as e:
        get_protocol("coco/R50-FPN-3x")
    assert "coco/R50-FPN-1x" in e.value.fix


def test_protocols_cli_lists_all():
    out = subprocess.run([sys.executable, "-m", "infomin_det", "protocols", "--json"],
                         capture_output=True, text=True, check=True).stdout
    rows = json.loads(out)
    assert [r["protocol"] for r in rows] == [p.id for p in list_protocols()]
