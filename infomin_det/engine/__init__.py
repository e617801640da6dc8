"""Detectron2 fine-tuning under the paper's protocols (``spec`` is import-light; the rest needs detectron2)."""
