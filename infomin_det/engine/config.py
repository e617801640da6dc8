"""From a :class:`TrainSpec` to a frozen Detectron2 config: protocol leaf, family, dataset, overrides,
runtime adaptation (CPU / process count), and the weights-metadata cross-check.

Family from the weights: ``""``/``none`` -> random; a ``detectron2://`` catalog URL or caffe2
convention -> supervised; torchvision convention -> ssl (``spec.extra["family"]`` overrides).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from detectron2.config import CfgNode, get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances
from detectron2.utils import comm

from infomin_det.engine import heads  # noqa: F401  (registers Res5ROIHeadsExtraNorm)
from infomin_det.engine.spec import TrainSpec
from infomin_det.errors import UserError
from infomin_det.protocols import config_path, family_for_weights
from infomin_det.engine.weights_check import cfg_value, check_weights, weights_meta
from infomin_det.weights_meta import WeightsMeta

NORM_KEYS = ("MODEL.RESNETS.NORM", "MODEL.FPN.NORM", "MODEL.ROI_BOX_HEAD.NORM", "MODEL.ROI_MASK_HEAD.NORM")


def register_dataset(cfg: CfgNode, dataset: str) -> None:
    """``coco-json:<train.json>:<train_images>:<val.json>:<val_images>`` -> registered train/val sets."""
    parts = dataset.split(":")
    if len(parts) != 5 or parts[0] != "coco-json":
        raise UserError(f"dataset {dataset!r} is not understood",
                        "use coco-json:<train.json>:<train_images>:<val.json>:<val_images>")
    names = []
    for split, js, imgs in (("train", parts[1], parts[2]), ("val", parts[3], parts[4])):
        for p in (js, imgs):
            if not Path(p).exists():
                raise UserError(f"dataset path {p} does not exist", "check the coco-json:... paths")
        name = f"infomin_{split}_{abs(hash((js, imgs))) % 10**8}"
        if name not in DatasetCatalog.list():
            register_coco_instances(name, {}, js, imgs)
        names.append(name)
    data = json.loads(Path(parts[1]).read_text())
    cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = (names[0],), (names[1],)
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = len(data["categories"])
    if any(isinstance(a.get("segmentation"), dict) for a in data["annotations"]):
        cfg.INPUT.MASK_FORMAT = "bitmask"


def check_standard_datasets(cfg: CfgNode) -> None:
    """Refuse, naming the path, when a builtin COCO/VOC set is absent under $DETECTRON2_DATASETS."""
    import detectron2.data.datasets  # noqa: F401  (registers the builtin sets)

    for name in (*cfg.DATASETS.TRAIN, *cfg.DATASETS.TEST):
        md = MetadataCatalog.get(name)
        for attr in ("json_file", "image_root", "dirname"):
            p = getattr(md, attr, None) if attr in md.as_dict() else None
            if p and not Path(p).exists():
                raise UserError(f"dataset {name}: {p} does not exist",
                                "set DETECTRON2_DATASETS to the folder holding coco/ and VOC2007/ VOC2012/ "
                                "(Detectron2's standard layout), or pass --dataset coco-json:...")


def adapt_to_runtime(cfg: CfgNode) -> None:
    """CPU: device cpu; with several processes SyncBN -> naiveSyncBN (heads: naiveSyncBN_N, which
    accepts empty inputs), since torch's SyncBatchNorm refuses CPU tensors (DESIGN.md section 2)."""
    if not torch.cuda.is_available():
        cfg.MODEL.DEVICE = "cpu"
    if cfg.MODEL.DEVICE == "cpu" and comm.get_world_size() > 1:
        for key in NORM_KEYS:
            if cfg_value(cfg, key) == "SyncBN":
                head = "ROI_" in key
                node, leaf = key.rsplit(".", 1)
                cfg_value(cfg, node)[leaf] = "naiveSyncBN_N" if head else "naiveSyncBN"


def build_config(spec: TrainSpec) -> tuple[CfgNode, str, WeightsMeta | None]:
    """(frozen cfg, family, weights metadata) for ``spec``."""
    weights = "" if spec.weights in ("", "none") else spec.weights
    meta = weights_meta(weights) if weights else None
    family = spec.family or spec.extra.get("family") or family_for_weights(meta, weights)
    cfg = get_cfg()
    cfg.merge_from_file(str(config_path(spec.protocol, family, spec.variant)))
    if weights or family == "random":
        cfg.MODEL.WEIGHTS = weights
    if spec.dataset:
        register_dataset(cfg, spec.dataset)
    cfg.merge_from_list(list(spec.opts))
    if not spec.dataset:
        check_standard_datasets(cfg)
    cfg.OUTPUT_DIR = spec.output_dir
    cfg.SEED = spec.seed
    adapt_to_runtime(cfg)
    if cfg.MODEL.WEIGHTS and cfg.MODEL.WEIGHTS != weights:
        meta = weights_meta(cfg.MODEL.WEIGHTS)
    check_weights(cfg, cfg.MODEL.WEIGHTS, meta, spec.allow_mismatch)
    cfg.freeze()
    return cfg, family, meta


def check_spec(spec: TrainSpec) -> None:
    """Every refusal ``train`` would make for ``spec`` -- protocol, family/variant, overrides, dataset,
    weights against the config -- without building a model or writing anything (``submit`` calls
    this for every run before queueing any)."""
    build_config(spec)
