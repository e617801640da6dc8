"""Every protocol leaf config: exists, merges in Detectron2, equals the authors' published config key by
key (transfer_configs/authors.json), carries its family's input convention, arch and schedule, names
the paper panels it reproduces; every named variant says exactly which keys it changes; the weights
named by the supervised leaves have catalog metadata that the cross-check accepts."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from infomin_det.engine.weights_check import check_weights, weights_meta
from infomin_det.errors import UserError
from infomin_det.protocols import (FAMILIES, config_path, family_for_weights, get_protocol, list_protocols,
                                   variants)
from infomin_det.protocols.authors import NOT_PINNED, deviations, expected, flatten, merged, published
from infomin_det.report import paper
from infomin_det.weights_meta import (CATALOG, FAIR_CAFFE2, FAIR_DETECTRON, MSRA_CAFFE2, TORCHVISION, ResNetArch,
                                      WeightsMeta)
from transfer_configs import ROOT

pytestmark = pytest.mark.detectron2  # builds Detectron2 configs / models

LEAVES = [(p.id, f) for p in list_protocols() for f in FAMILIES]
VARIANTS = [(pid, f, v) for pid, f in LEAVES for v in variants(pid, f)]
SCHEDULES = {"1x": ((60000, 80000), 90000), "2x": ((120000, 160000), 180000),
             "6x": ((480000, 520000), 540000), "24k": ((18000, 22000), 24000)}
ARCH = {"R-50": (50, 1, 64), "R-101": (101, 1, 64), "X-101-32x8d": (101, 32, 8), "X-152-32x8d": (152, 32, 8)}
X152_IN5K = "catalog://ImageNetPretrained/FAIR/X-152-32x8d-IN5k"
KEY = re.compile(r"\b[A-Z][A-Z0-9_]*(?:\.[A-Z0-9_]+)+\b")


def cfg_of(pid, family, variant=""):
    from detectron2.config import get_cfg

    cfg = get_cfg()
    cfg.merge_from_file(str(config_path(pid, family, variant)))
    return cfg


def test_every_leaf_file_exists_and_nothing_else():
    files = {str(p.relative_to(ROOT)) for p in ROOT.glob("*/*.yaml") if p.parent.name in ("coco", "voc")}
    assert {f for f in files if "+" not in f} == {f"{pid}.{f}.yaml" for pid, f in LEAVES}
    assert {f for f in files if "+" in f} == {f"{pid}.{f}+{v}.yaml" for pid, f, v in VARIANTS}
    # the paper's 17 protocols (Tables 3-11), each with a random / ssl / supervised leaf: counted from
    # the files, not from the list the leaves were built from
    assert len({f.rsplit(".", 2)[0] for f in files if "+" not in f}) == 17 and len(files) == 17 * 3 + 16
    assert {f.rsplit(".", 2)[1] for f in files if "+" not in f} == {"random", "ssl", "supervised"}


# ---------------------------------------------------------------------------------------------
# the authors' values

def test_the_authors_published_exactly_these_counterparts():
    """33 published leaves: random init only for R50-FPN, no 6x for R101/Cascade, VOC from MoCo."""
    pub = set(published())
    assert len(pub) == 33
    missing = {(pid, f) for pid, f in LEAVES if (pid, f) not in pub}
    assert {f"{pid}.{f}" for pid, f in missing} == {
        *(f"{p.id}.random" for p in list_protocols() if not p.id.startswith("coco/R50-FPN-")),
        "coco/R101-FPN-6x.ssl", "coco/R101-FPN-6x.supervised",
        "coco/Cascade-R101-FPN-6x.ssl", "coco/Cascade-R101-FPN-6x.supervised"}
    assert expected("voc/R50-C4-24k", "ssl").source.repo == "facebookresearch/moco"
    assert expected("coco/R50-C4-2x", "ssl").source.repo == "HobbitLong/PyContrast"


@pytest.mark.parametrize("pid,family", LEAVES)
def test_default_leaf_equals_the_authors_key_by_key(pid, family):
    exp = expected(pid, family)
    ours = merged(pid, family)
    assert set(ours) == set(exp.values), "the table and the installed detectron2 have different keys"
    assert deviations(ours, exp.values) == {}, f"differs from {exp.source}"
    if not exp.published:  # derived: only the keys a schedule / the random family define were changed
        assert set(exp.changed) <= {"MODEL.WEIGHTS", "SOLVER.STEPS", "SOLVER.MAX_ITER"}


def test_the_review_findings_are_fixed():
    """The keys the first comparison found (random init BGR/caffe2, X-152 SyncBN / std 1 / catalog)."""
    rnd, x152 = merged("coco/R50-FPN-1x", "random"), merged("coco/X152-FPN-1x", "supervised")
    assert (rnd["INPUT.FORMAT"], rnd["MODEL.PIXEL_STD"], rnd["MODEL.RESNETS.STRIDE_IN_1X1"]) == ("BGR", [1, 1, 1], True)
    assert rnd["MODEL.PIXEL_MEAN"] == [103.530, 116.280, 123.675] and rnd["MODEL.WEIGHTS"] == ""
    assert (x152["MODEL.RESNETS.NORM"], x152["MODEL.PIXEL_STD"], x152["MODEL.WEIGHTS"]) == ("SyncBN", [1, 1, 1],
                                                                                            X152_IN5K)


def test_deviations_skip_only_the_listed_keys():
    base = {"SOLVER.REFERENCE_WORLD_SIZE": 0, "MODEL.WEIGHTS": "See Instructions", "SOLVER.BASE_LR": 0.02,
            "MODEL.RESNETS.STRIDE_IN_1X1": True}
    assert deviations({**base, "SOLVER.REFERENCE_WORLD_SIZE": 8, "MODEL.WEIGHTS": ""}, base) == {}
    assert deviations({**base, "MODEL.WEIGHTS": ""}, {**base, "MODEL.WEIGHTS": X152_IN5K}) == {
        "MODEL.WEIGHTS": ("", X152_IN5K)}
    assert deviations({**base, "MODEL.RESNETS.STRIDE_IN_1X1": 1}, base)  # 1 is not True
    assert deviations({**base, "SOLVER.BASE_LR": 0.0200001}, base)
    assert deviations({k: v for k, v in base.items() if k != "SOLVER.BASE_LR"}, base)  # a key gone
    assert set(NOT_PINNED) == {"SOLVER.REFERENCE_WORLD_SIZE", "MODEL.WEIGHTS"}
    assert flatten({"A": {"B": (1, (2, 3))}}) == {"A.B": [1, [2, 3]]}


# ---------------------------------------------------------------------------------------------
# variants

@pytest.mark.parametrize("pid,family,variant", VARIANTS)
def test_variant_description_names_exactly_the_keys_it_changes(pid, family, variant):
    desc = variants(pid, family)[variant]
    changed = deviations(merged(pid, family, variant), merged(pid, family))
    assert changed and set(KEY.findall(desc)) == set(changed), desc
    assert "\n" not in desc and len(desc) < 400


@pytest.mark.parametrize("pid", [pid for pid, f, v in VARIANTS if v == "rgb"])
def test_the_rgb_random_variant_is_the_ssl_leaf_without_weights(pid):
    """Variant rgb (the demo's random row) trains exactly what the previous random leaf trained."""
    assert merged(pid, "random", "rgb") == {**merged(pid, "ssl"), "MODEL.WEIGHTS": ""}


def test_frozenbn_variant_freezes_the_backbone_norm_only():
    cfg = cfg_of("coco/X152-FPN-1x", "supervised", "frozenbn")
    assert cfg.MODEL.RESNETS.NORM == "FrozenBN"
    assert cfg.MODEL.FPN.NORM == cfg.MODEL.ROI_BOX_HEAD.NORM == cfg.MODEL.ROI_MASK_HEAD.NORM == "SyncBN"


@pytest.mark.parametrize("variant", ["bgr", "RGB", "rgb ", "../random", "rgb/../../x", "+rgb", "rgb.yaml", "\x00",
                                     "r" * 5000, "frozenbn"])
def test_unknown_variant_is_refused_listing_the_valid_ones(variant):
    with pytest.raises(UserError) as e:
        config_path("coco/R50-FPN-1x", "random", variant)
    assert "has no variant" in e.value.cause and e.value.fix == "one of: rgb"


def test_variant_of_a_leaf_without_variants_and_bad_family():
    with pytest.raises(UserError) as e:
        config_path("coco/X101-FPN-1x", "ssl", "rgb")
    assert "drop --variant" in e.value.fix
    for family in ("", "RANDOM", "random+rgb", "../coco"):
        with pytest.raises(UserError, match="unknown weight family"):
            variants("coco/R50-FPN-1x", family)
    assert config_path("coco/R50-FPN-1x", "random", "") == config_path("coco/R50-FPN-1x", "random")
    for wrong_type in (["rgb"], {"rgb": 1}, 1, b"rgb"):
        with pytest.raises(UserError, match="has no variant"):
            config_path("coco/R50-FPN-1x", "random", wrong_type)


def test_engine_builds_the_requested_variant(tmp_path, tiny_coco):
    from infomin_det.engine.config import build_config
    from infomin_det.engine.spec import TrainSpec

    (tr, tri), (va, vai) = tiny_coco["train"], tiny_coco["val"]
    spec = dict(protocol="coco/R50-FPN-1x", weights="", output_dir=str(tmp_path), dataset=f"coco-json:{tr}:{tri}:{va}:{vai}")
    cfg, family, _ = build_config(TrainSpec(**spec))
    assert (family, cfg.INPUT.FORMAT, list(cfg.MODEL.PIXEL_STD)) == ("random", "BGR", [1.0, 1.0, 1.0])
    cfg, _, _ = build_config(TrainSpec(**spec, variant="rgb"))
    assert (cfg.INPUT.FORMAT, list(cfg.MODEL.PIXEL_STD)) == ("RGB", [58.395, 57.120, 57.375])
    with pytest.raises(UserError, match="no variant 'frozenbn'"):
        build_config(TrainSpec(**spec, variant="frozenbn"))


# ---------------------------------------------------------------------------------------------
# the weights the supervised leaves name

def test_catalog_metadata_of_every_supervised_leaf():
    named = {cfg_of(p.id, "supervised").MODEL.WEIGHTS for p in list_protocols()}
    assert named == set(CATALOG)  # every entry is used, every address a leaf names has one
    x = weights_meta(X152_IN5K)
    assert x == CATALOG[X152_IN5K] and x.arch == ResNetArch(152, 32, 8) and x.norm_fused
    assert x.convention == FAIR_DETECTRON and x.convention.pixel_std == (1.0, 1.0, 1.0)
    assert family_for_weights(x, X152_IN5K) == "supervised"
    # Detectron2 resolves exactly this address; near misses have no metadata (and are refused by the check)
    for near in (X152_IN5K + ".pkl", "catalog://ImageNetPretrained/FAIR/X-152-32x8d", "catalog://",
                 "detectron2://ImageNetPretrained/FAIR/X-152-32x8d-IN5k.pkl", "CATALOG://ImageNetPretrained/MSRA/R-50"):
        assert weights_meta(near) is None, near
    with pytest.raises(UserError, match="no infomin-det metadata"):
        check_weights(cfg_of("coco/X152-FPN-1x", "supervised"), X152_IN5K + ".pkl", None)


@pytest.mark.parametrize("pid", [p.id for p in list_protocols() if p.id != "coco/X152-FPN-1x"])
def test_cross_check_accepts_every_supervised_leaf(pid):
    cfg = cfg_of(pid, "supervised")
    assert check_weights(cfg, cfg.MODEL.WEIGHTS, weights_meta(cfg.MODEL.WEIGHTS)) == []


def test_cross_check_accepts_the_frozenbn_x152_variant():
    cfg = cfg_of("coco/X152-FPN-1x", "supervised", "frozenbn")
    assert check_weights(cfg, cfg.MODEL.WEIGHTS, weights_meta(cfg.MODEL.WEIGHTS)) == []


def test_cross_check_accepts_the_authors_x152_leaf():
    cfg = cfg_of("coco/X152-FPN-1x", "supervised")
    assert check_weights(cfg, cfg.MODEL.WEIGHTS, weights_meta(cfg.MODEL.WEIGHTS)) == []


# ---------------------------------------------------------------------------------------------
# structure, panels, CLI

@pytest.mark.parametrize("pid,family", LEAVES)
def test_leaf_merges_with_its_protocol_values(pid, family):
    proto = get_protocol(pid)
    cfg = cfg_of(pid, family)
    steps, max_iter = SCHEDULES[proto.schedule]
    assert (tuple(cfg.SOLVER.STEPS), cfg.SOLVER.MAX_ITER) == (steps, max_iter)
    assert cfg.SOLVER.IMS_PER_BATCH == 16 and cfg.SOLVER.BASE_LR == 0.02
    r = cfg.MODEL.RESNETS
    assert (r.DEPTH, r.NUM_GROUPS, r.WIDTH_PER_GROUP) == ARCH[proto.arch]
    assert cfg.MODEL.BACKBONE.FREEZE_AT == 0 and cfg.TEST.PRECISE_BN.ENABLED
    assert cfg.MODEL.MASK_ON == proto.has_masks and r.NORM == "SyncBN"
    # input convention: ssl = torchvision; supervised = what the catalog weights record; random = supervised's
    if family == "ssl":
        conv = TORCHVISION
        assert cfg.MODEL.WEIGHTS == ""
    else:
        sup = cfg_of(pid, "supervised").MODEL.WEIGHTS
        meta = weights_meta(sup)
        assert meta.arch == ResNetArch(*ARCH[proto.arch][:3])
        assert meta.convention in (MSRA_CAFFE2, FAIR_CAFFE2, FAIR_DETECTRON)
        conv = meta.convention
        assert cfg.MODEL.WEIGHTS == (sup if family == "supervised" else "")
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
    x152 = rows[[r["protocol"] for r in rows].index("coco/X152-FPN-1x")]
    assert set(x152["variants"]["supervised"]) == {"frozenbn"} and set(x152["variants"]["random"]) == {"rgb"}


# ---------------------------------------------------------------------------------------------
# the generator refuses what it cannot read (it is not run here: it needs the authors' snapshots)

TOOL = Path(__file__).resolve().parents[1] / "tools" / "authors_configs.py"


def test_generator_refuses_a_missing_or_wrong_snapshot(tmp_path):
    empty = tmp_path / "empty.git"
    subprocess.run(["git", "init", "-q", "--bare", str(empty)], check=True)
    out = tmp_path / "authors.json"
    for snap in (tmp_path / "nonexistent", empty, TOOL):
        r = subprocess.run([sys.executable, str(TOOL), "--pycontrast", str(snap), "--moco", str(snap), "--out", str(out)],
                           capture_output=True, text=True)
        assert r.returncode == 2 and r.stderr.startswith("error: git ") and "  fix: " in r.stderr, r.stderr
        assert "Traceback" not in r.stderr and not out.exists()
