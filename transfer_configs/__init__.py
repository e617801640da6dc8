"""The paper's transfer protocols as Detectron2 YAML configs, shipped as package data.

``ROOT`` is the directory holding ``Base-*.yaml`` and the ``coco/`` and ``voc/`` leaves.
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parent
