"""``Res5ROIHeadsExtraNorm``: Detectron2's C4 ``Res5ROIHeads`` plus a norm layer after res5.

The MoCo / InfoMin C4 protocol (``MODEL.ROI_HEADS.NAME: Res5ROIHeadsExtraNorm``) normalises res5's
output with ``cfg.MODEL.RESNETS.NORM``. Importing :mod:`infomin_det.engine.trainer` (or this module)
registers it, so every process that builds a model has it.
"""

from __future__ import annotations

from detectron2.layers import get_norm
from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY, Res5ROIHeads


def _register() -> None:
    if "Res5ROIHeadsExtraNorm" in ROI_HEADS_REGISTRY:
        return

    @ROI_HEADS_REGISTRY.register()
    class Res5ROIHeadsExtraNorm(Res5ROIHeads):
        """Res5ROIHeads whose res5 block ends in ``get_norm(cfg.MODEL.RESNETS.NORM, out_channels)``."""

        @classmethod
        def _build_res5_block(cls, cfg):
            seq, out_channels = super()._build_res5_block(cfg)
            seq.add_module("norm", get_norm(cfg.MODEL.RESNETS.NORM, out_channels))
            return seq, out_channels


_register()
