#!/usr/bin/env python
"""Convert an SSL/torchvision ResNet checkpoint to Detectron2 weights, in the MoCo habit:

    python tools/convert_to_d2.py SRC OUT.pkl [--key K] [--prefix P] [--ema] [--force] [--json]

A thin wrapper over ``infomin-det convert`` (same code, same options, same errors).
"""

import sys

from infomin_det.cli import main

if __name__ == "__main__":
    sys.exit(main(["convert", *sys.argv[1:]]))
