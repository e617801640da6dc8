"""What the protocol configs need registered in every process that builds a model.

Importing this module registers ``Res5ROIHeadsExtraNorm`` (MoCo's C4 head: Detectron2's
``Res5ROIHeads`` plus a norm layer after res5) and provides :func:`add_infomin_config` (the
``INFOMIN`` config node: FAMILY, PAPER_TABLE, PAPER_ROW). Idempotent.
"""

from __future__ import annotations

from detectron2.config import CfgNode

from infomin_det.engine import heads  # noqa: F401  (registers Res5ROIHeadsExtraNorm)


def add_infomin_config(cfg: CfgNode) -> CfgNode:
    """Add the ``INFOMIN`` node (metadata of the leaf: family, seed table and row) to ``cfg``."""
    if "INFOMIN" not in cfg:
        cfg.INFOMIN = CfgNode({"FAMILY": "", "PAPER_TABLE": "", "PAPER_ROW": ""})
    return cfg
