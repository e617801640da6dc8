"""Checkpoint conversion to Detectron2 weights (``infomin-det convert``) and its proof (``verify``).

Only :mod:`infomin_det.convert.verify` imports detectron2, lazily; everything else runs without it.
"""

from infomin_det.convert.converter import ConversionResult, Extracted, convert, extract
from infomin_det.convert.d2pkl import D2Weights, read_d2_pkl

__all__ = ["ConversionResult", "D2Weights", "Extracted", "convert", "extract", "read_d2_pkl"]
