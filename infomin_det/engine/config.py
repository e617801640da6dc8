"""From a :class:`TrainSpec` to a frozen Detectron2 config: protocol leaf, family, dataset, overrides,
runtime adaptation (device, norms and linear scaling for the process count), and the
weights-metadata cross-check.

Family from the weights: ``""``/``none`` -> random; a ``detectron2://`` catalog URL or caffe2
convention -> supervised; torchvision convention -> ssl (``spec.family`` overrides).
"""

from __future__ import annotations

import difflib
import hashlib
import os
from pathlib import Path
from typing import Collection

from detectron2.config import CfgNode, get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances
from detectron2.utils import comm

from infomin_det.engine import heads  # noqa: F401  (registers Res5ROIHeadsExtraNorm)
from infomin_det.dist import resolve_device
from infomin_det.engine.dataset_check import DatasetSummary, check_dataset
from infomin_det.engine.overrides import apply_overrides
from infomin_det.engine.spec import TrainSpec
from infomin_det.errors import UserError
from infomin_det.protocols import config_path, family_for_weights
from infomin_det import wandb_log
from infomin_det.engine.weights_check import cfg_value, check_weights, weights_meta
from infomin_det.rundir import is_random_init
from infomin_det.weights_meta import WeightsMeta

NORM_KEYS = ("MODEL.RESNETS.NORM", "MODEL.FPN.NORM", "MODEL.ROI_BOX_HEAD.NORM", "MODEL.ROI_MASK_HEAD.NORM")


def register_dataset(cfg: CfgNode, dataset: str, overridden: Collection[str] = ()) -> DatasetSummary:
    """``coco-json:<train.json>:<train_images>:<val.json>:<val_images>`` -> both splits checked
    (:func:`~infomin_det.engine.dataset_check.check_dataset`; masks required when ``MODEL.MASK_ON``) and
    registered under names derived from their absolute paths; sets the class count and mask format
    (``bitmask`` for RLE masks) unless ``overridden`` names them -- then they must agree with the set."""
    summary = check_dataset(dataset, need_masks=bool(cfg.MODEL.MASK_ON))
    names = []
    for split, s in (("train", summary.train), ("val", summary.val)):
        js, imgs = os.path.abspath(s.json), os.path.abspath(s.image_root)
        digest = hashlib.sha256(f"{js}\n{imgs}".encode()).hexdigest()[:12]
        name = f"infomin_{split}_{digest}"
        if name not in DatasetCatalog.list():
            register_coco_instances(name, {}, js, imgs)
        names.append(name)
    cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = (names[0],), (names[1],)
    classes = len(summary.classes)
    if "MODEL.ROI_HEADS.NUM_CLASSES" in overridden and cfg.MODEL.ROI_HEADS.NUM_CLASSES != classes:
        raise UserError(f"override MODEL.ROI_HEADS.NUM_CLASSES {cfg.MODEL.ROI_HEADS.NUM_CLASSES} contradicts the "
                        f"{classes} categories of {summary.train.json}", "drop the override (--dataset sets it)")
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = classes
    rle = "rle" in summary.train.mask_format
    if "INPUT.MASK_FORMAT" in overridden:
        if rle and cfg.MODEL.MASK_ON and cfg.INPUT.MASK_FORMAT != "bitmask":
            raise UserError(f"override INPUT.MASK_FORMAT {cfg.INPUT.MASK_FORMAT} cannot read the RLE masks of "
                            f"{summary.train.json}", "drop the override (--dataset sets bitmask for RLE masks)")
    elif rle:
        cfg.INPUT.MASK_FORMAT = "bitmask"
    return summary


_LAYOUT = ("coco/annotations/instances_{train,val}2017.json, coco/train2017/, coco/val2017/; "
           "VOC2007/ and VOC2012/, each with Annotations/, ImageSets/Main/<split>.txt, JPEGImages/")


def check_standard_datasets(cfg: CfgNode) -> None:
    """Refuse, naming the exact missing path and the expected layout, when a builtin COCO/VOC set of
    ``cfg.DATASETS`` is absent under $DETECTRON2_DATASETS (or is not a registered name at all)."""
    import detectron2.data.datasets  # noqa: F401  (registers the builtin sets)

    root = os.environ.get("DETECTRON2_DATASETS")
    where = f"DETECTRON2_DATASETS={root}" if root else "DETECTRON2_DATASETS is unset, so Detectron2 looks in ./datasets"
    for name in (*cfg.DATASETS.TRAIN, *cfg.DATASETS.TEST):
        if name not in DatasetCatalog.list():
            near = difflib.get_close_matches(name, DatasetCatalog.list(), n=3)
            raise UserError(f"dataset {name!r} is not a registered Detectron2 dataset"
                            + (f" (did you mean {' or '.join(near)}?)" if near else ""),
                            "use the protocol's own datasets, or pass --dataset coco-json:...")
        md = MetadataCatalog.get(name).as_dict()
        needed = [(md[k], k == "json_file") for k in ("json_file", "image_root", "dirname") if md.get(k)]
        if md.get("dirname") and md.get("split"):  # VOC: what load_voc_instances reads
            d = md["dirname"]
            needed += [(os.path.join(d, "ImageSets", "Main", f"{md['split']}.txt"), True),
                       (os.path.join(d, "Annotations"), False), (os.path.join(d, "JPEGImages"), False)]
        fix = (f"set DETECTRON2_DATASETS to the folder holding Detectron2's layout ({_LAYOUT}), "
               "or pass --dataset coco-json:...")
        for path, is_file in needed:
            kind = "file" if is_file else "directory"
            if not (os.path.isfile(path) if is_file else os.path.isdir(path)):
                raise UserError(f"dataset {name}: {os.path.abspath(path)} ({kind}) does not exist ({where})", fix)
            if not is_file and path.endswith(("2017", "JPEGImages")) and _empty_dir(path):
                raise UserError(f"dataset {name}: {os.path.abspath(path)} holds no images ({where})",
                                "finish the download / extraction of the images, " + fix)
            if is_file and path.endswith(".json") and os.path.getsize(path) == 0:
                raise UserError(f"dataset {name}: {os.path.abspath(path)} is empty (0 bytes; a broken download?)",
                                "download the annotations again, " + fix)


def _empty_dir(path: str) -> bool:
    """Whether ``path`` has no entry at all (one ``scandir`` step, whatever its size)."""
    try:
        with os.scandir(path) as it:
            return next(it, None) is None
    except OSError:
        return True


def adapt_to_runtime(cfg: CfgNode, device: str, world: int, eval_only: bool = False) -> CfgNode:
    """The run's device (``cuda`` | ``cpu``, already resolved: never a silent fallback); on CPU with
    several processes SyncBN -> naiveSyncBN (heads: naiveSyncBN_N, which accepts empty inputs), since
    torch's SyncBatchNorm refuses CPU tensors; then Detectron2's linear scaling from
    ``SOLVER.REFERENCE_WORLD_SIZE`` (the protocols' 8 GPUs) to ``world`` processes: the per-GPU batch
    stays 2, LR scales with the world size, iterations / steps / periods inversely."""
    from detectron2.engine import DefaultTrainer

    cfg.MODEL.DEVICE = device
    if device == "cpu" and cfg.SOLVER.AMP.ENABLED:
        raise UserError("SOLVER.AMP.ENABLED is true but the run is on the CPU, where Detectron2's AMPTrainer "
                        "would train in float32 without saying so", "drop SOLVER.AMP.ENABLED, or run on a GPU")
    if device == "cpu" and world > 1:
        for key in NORM_KEYS:
            if cfg_value(cfg, key) == "SyncBN":
                head = "ROI_" in key
                node, leaf = key.rsplit(".", 1)
                cfg_value(cfg, node)[leaf] = "naiveSyncBN_N" if head else "naiveSyncBN"
    if eval_only:   # the SOLVER (batch, LR, schedule) plays no part in an evaluation: kept as trained
        return cfg
    ref, batch = cfg.SOLVER.REFERENCE_WORLD_SIZE, cfg.SOLVER.IMS_PER_BATCH
    if ref and ref != world:
        if batch % ref or (batch * world) % ref or ((batch * world) // ref) % world:
            raise UserError(f"SOLVER.IMS_PER_BATCH {batch} cannot be scaled from SOLVER.REFERENCE_WORLD_SIZE "
                            f"{ref} to {world} processes (the per-process batch {batch}/{ref} must be a whole number)",
                            f"give a batch that is a multiple of {ref}, or pass SOLVER.REFERENCE_WORLD_SIZE 0 "
                            "to run your SOLVER values exactly as given")
        cfg = DefaultTrainer.auto_scale_workers(cfg, world)
        cfg.defrost()
    if cfg.SOLVER.IMS_PER_BATCH % world:
        raise UserError(f"SOLVER.IMS_PER_BATCH {cfg.SOLVER.IMS_PER_BATCH} is not divisible by the {world} processes",
                        "use a batch that is a multiple of the process count")
    return cfg


def leaf_config(protocol: str, family: str, variant: str = "") -> CfgNode:
    """The protocol leaf as shipped (no weights, dataset or overrides applied)."""
    cfg = get_cfg()
    cfg.merge_from_file(str(config_path(protocol, family, variant)))
    return cfg


CONFIG_SUFFIXES = (".yaml", ".yml")
MAX_CONFIG_BYTES = 1 << 20


def custom_config(path: str) -> CfgNode:
    """A user's Detectron2 YAML merged onto the defaults as data (``allow_unsafe=False``: no Python
    objects; ``.py`` LazyConfigs, which run code, are refused); UserError naming what is wrong."""
    import yaml

    p = Path(path)
    fix = "pass a Detectron2 YAML config (e.g. one with _BASE_ set to a leaf of `infomin-det protocols --json`)"
    if not p.is_file():
        raise UserError(f"--config-file {path} is not a file" + (" (it does not exist)" if not p.exists() else ""), fix)
    if p.suffix.lower() not in CONFIG_SUFFIXES:
        raise UserError(f"--config-file {path} is not a .yaml file (Python configs run code when loaded)", fix)
    if p.stat().st_size > MAX_CONFIG_BYTES:
        raise UserError(f"--config-file {path} is {p.stat().st_size} bytes, too large for a config", fix)
    cfg = get_cfg()
    try:
        cfg.merge_from_file(str(p), allow_unsafe=False)
    except yaml.YAMLError as e:
        raise UserError(f"--config-file {path} is not plain YAML: {str(e).splitlines()[0][:160]}", fix) from None
    except (OSError, RecursionError) as e:
        raise UserError(f"--config-file {path}: {type(e).__name__}: {str(e)[:160]} (a _BASE_ it names?)",
                        "check the _BASE_ paths (relative to the file) and that they do not include each other") from None
    except (KeyError, AssertionError, ValueError, TypeError) as e:
        text = (str(e).strip().splitlines() or [type(e).__name__])[0].strip("'\"")
        raise UserError(f"--config-file {path}: Detectron2 refuses it: {text[:200]}", fix) from None
    return cfg


def base_config(spec: TrainSpec, family: str) -> CfgNode:
    """What a run starts from before weights, dataset and overrides: the user's ``config_file`` or the
    protocol's leaf."""
    return custom_config(spec.config_file) if spec.config_file else leaf_config(spec.protocol, family, spec.variant)


def build_config(spec: TrainSpec, world: int | None = None) -> tuple[CfgNode, str, WeightsMeta | None]:
    """(frozen cfg, family, weights metadata) for ``spec`` run by ``world`` processes (default: the
    current process group's size) -- the config exactly as it will run (device, norms, scaling)."""
    weights = "" if is_random_init(spec.weights) else spec.weights
    meta = weights_meta(weights) if weights else None
    family = spec.family or family_for_weights(meta, weights)
    if spec.config_file and spec.variant:
        raise UserError(f"--config-file and --variant {spec.variant} both say what to train",
                        "give one: your config file, or a named variant of the protocol's leaf")
    config_path(spec.protocol, family, spec.variant)   # protocol, family and variant exist
    cfg = base_config(spec, family)
    if weights or family == "random":
        cfg.MODEL.WEIGHTS = weights
    apply_overrides(cfg, spec.opts, custom_dataset=bool(spec.dataset))
    if spec.dataset:
        register_dataset(cfg, spec.dataset, overridden=spec.opts[0::2])
    if not spec.dataset:
        check_standard_datasets(cfg)
    cfg.OUTPUT_DIR = spec.output_dir
    cfg.SEED = spec.seed
    cfg = adapt_to_runtime(cfg, resolve_device(spec.device), comm.get_world_size() if world is None else world,
                           eval_only=spec.eval_only)
    check_weights(cfg, cfg.MODEL.WEIGHTS, meta, spec.allow_mismatch)
    cfg.freeze()
    return cfg, family, meta


def check_spec(spec: TrainSpec) -> None:
    """Every refusal ``train`` would make for ``spec`` -- protocol, family/variant, overrides, dataset,
    weights against the config -- without building a model or writing anything (``submit`` calls
    this for every run before queueing any)."""
    check_run_numbers(spec)
    wandb_log.check(spec.extra.get("wandb", ""))
    build_config(spec, world=spec.num_processes * spec.nodes)


def check_run_numbers(spec: TrainSpec) -> None:
    """Seed, process counts and threads of ``spec``: whole numbers in range."""
    for name, value, low in (("seed", spec.seed, 0), ("num_processes", spec.num_processes, 1),
                             ("nodes", spec.nodes, 1), ("threads", spec.extra.get("threads", 0) or 0, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low or value > 2**31 - 1:
            raise UserError(f"{name} {value!r} is out of range (a whole number from {low} to {2**31 - 1})",
                            f"pass --{name.replace('_', '-')} with a value >= {low}"
                            + (" (Detectron2 would draw a random seed for a negative one)" if name == "seed" else ""))
