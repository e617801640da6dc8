"""The paper's transfer protocols: ids, what each reproduces, and which config file to train with.

A protocol id (``coco/R50-FPN-1x``) names a detector x backbone x schedule x dataset; each has three
leaf configs in ``transfer_configs/`` -- one per weight family -- equal, key by key, to the authors'
published Detectron2 configs (``infomin_det.protocols.authors``, docs/protocols.md):

    ssl         self-supervised / torchvision-style weights (RGB, ImageNet mean/std, stride in 3x3)
    supervised  the caffe2 ImageNet weights of the paper's baselines (MSRA R-50/101, FAIR X-101/152)
    random      random initialisation: the supervised leaf without weights (caffe2 input settings)

A named ``variant`` (``transfer_configs/<protocol>.<family>+<name>.yaml``, first line
``# variant <name>: <what differs from the authors' leaf and why>``) is a deliberate deviation.
``panels`` are the ids of the paper's table panels in ``infomin_det/report/paper_tables.json``.
No detectron2 import here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from infomin_det.errors import UserError
from infomin_det.rundir import RANDOM_INIT, is_random_init
from infomin_det.weights_meta import TORCHVISION, WeightsMeta
from transfer_configs import ROOT as CONFIG_ROOT

FAMILIES = ("ssl", "supervised", "random")
#: the paper's runs: 8 GPUs x 2 images per GPU (the leaves' SOLVER.REFERENCE_WORLD_SIZE / IMS_PER_BATCH)
REFERENCE_GPUS = 8
REFERENCE_BATCH = 16
#: SOLVER.MAX_ITER of each schedule at the reference batch
ITERATIONS = {"1x": 90000, "2x": 180000, "6x": 540000, "24k": 24000}


@dataclass(frozen=True)
class Protocol:
    """One protocol. meta_arch: mask_fpn | mask_c4 | cascade_fpn | faster_c4; dataset: coco | voc."""

    id: str
    meta_arch: str
    dataset: str
    arch: str
    schedule: str
    panels: tuple[str, ...]

    @property
    def has_masks(self) -> bool:
        return self.meta_arch != "faster_c4"

    @property
    def max_iter(self) -> int:
        """SOLVER.MAX_ITER at the reference batch (``REFERENCE_BATCH`` images per iteration)."""
        return ITERATIONS[self.schedule]


def _p(pid: str, meta: str, arch: str, sched: str, *panels: str) -> Protocol:
    return Protocol(pid, meta, pid.split("/")[0], arch, sched, panels)


PROTOCOLS: tuple[Protocol, ...] = (
    _p("coco/R50-FPN-1x", "mask_fpn", "R-50", "1x", "T3a"),
    _p("coco/R50-FPN-2x", "mask_fpn", "R-50", "2x", "T3b", "T6a"),
    _p("coco/R50-FPN-6x", "mask_fpn", "R-50", "6x", "T6b"),
    _p("coco/R50-C4-1x", "mask_c4", "R-50", "1x", "T5a"),
    _p("coco/R50-C4-2x", "mask_c4", "R-50", "2x", "T5b"),
    _p("coco/R101-C4-1x", "mask_c4", "R-101", "1x", "T7a"),
    _p("coco/R101-C4-2x", "mask_c4", "R-101", "2x", "T7b"),
    _p("coco/R101-FPN-1x", "mask_fpn", "R-101", "1x", "T8a"),
    _p("coco/R101-FPN-2x", "mask_fpn", "R-101", "2x", "T8b"),
    _p("coco/R101-FPN-6x", "mask_fpn", "R-101", "6x", "T8c"),
    _p("coco/Cascade-R101-FPN-1x", "cascade_fpn", "R-101", "1x", "T9a"),
    _p("coco/Cascade-R101-FPN-2x", "cascade_fpn", "R-101", "2x", "T9b"),
    _p("coco/Cascade-R101-FPN-6x", "cascade_fpn", "R-101", "6x", "T9c"),
    _p("coco/X101-FPN-1x", "mask_fpn", "X-101-32x8d", "1x", "T10a"),
    _p("coco/X101-FPN-2x", "mask_fpn", "X-101-32x8d", "2x", "T10b"),
    _p("coco/X152-FPN-1x", "mask_fpn", "X-152-32x8d", "1x", "T11a"),
    _p("voc/R50-C4-24k", "faster_c4", "R-50", "24k", "T4"),
)
_BY_ID = {p.id: p for p in PROTOCOLS}


def list_protocols() -> list[Protocol]:
    return list(PROTOCOLS)


def get_protocol(pid: str) -> Protocol:
    try:
        return _BY_ID[pid]
    except KeyError:
        raise UserError(f"unknown protocol {pid!r}",
                        f"one of: {', '.join(_BY_ID)} (see `infomin-det protocols`)") from None


def _check_family(family: str) -> None:
    if family not in FAMILIES:
        raise UserError(f"unknown weight family {family!r}", f"one of: {', '.join(FAMILIES)}")


def variants(pid: str, family: str) -> dict[str, str]:
    """Named deviations from the authors' leaf of ``pid`` x ``family``: ``{name: what differs and why}``."""
    get_protocol(pid)
    _check_family(family)
    folder, stem = (CONFIG_ROOT / pid).parent, f"{pid.rsplit('/', 1)[1]}.{family}+"
    out = {}
    for path in sorted(folder.glob(f"{stem}*.yaml")):
        name = path.name[len(stem):-len(".yaml")]
        first = path.read_text().split("\n", 1)[0]
        tag = f"# variant {name}: "
        if not first.startswith(tag):
            raise UserError(f"{path} does not start with {tag.strip()!r} and a description",
                            "reinstall infomin-det (a variant leaf was edited or truncated)")
        out[name] = first[len(tag):].strip()
    return out


def config_path(pid: str, family: str, variant: str = "") -> Path:
    """The leaf config of ``pid`` for ``family`` (``transfer_configs/<pid>.<family>.yaml``), or of one
    of its named ``variants`` (``<pid>.<family>+<variant>.yaml``)."""
    get_protocol(pid)
    _check_family(family)
    if not variant:
        return CONFIG_ROOT / f"{pid}.{family}.yaml"
    known = variants(pid, family)
    if not isinstance(variant, str) or variant not in known:
        raise UserError(f"protocol {pid} ({family} weights) has no variant {variant!r}",
                        f"one of: {', '.join(known) or 'none (drop --variant)'}")
    return CONFIG_ROOT / f"{pid}.{family}+{variant}.yaml"


def family_for_weights(meta: WeightsMeta | None, weights: str) -> str:
    """``random`` for no weights; ``ssl`` for torchvision-convention weights; ``supervised`` for caffe2.

    Weights without metadata cannot be classified: the caller must refuse them or be told the family.
    """
    if is_random_init(weights):
        return RANDOM_INIT
    if meta is None:
        raise UserError(f"cannot tell the weight family of {weights!r}: it carries no infomin-det metadata",
                        "convert it with `infomin-det convert`, or pass --family ssl|supervised")
    return "ssl" if meta.convention == TORCHVISION else "supervised"
