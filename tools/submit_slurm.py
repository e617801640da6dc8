#!/usr/bin/env python
"""Submit fine-tuning sweeps to SLURM: ``infomin-det submit --cluster slurm`` with the same options.

    python tools/submit_slurm.py --experiment exp1 --protocol coco/R50-FPN-1x --weights a.pkl --seeds 0 1 2
"""
import sys

from infomin_det.cli import main

if __name__ == "__main__":
    argv = sys.argv[1:]
    if not any(a == "--cluster" or a.startswith("--cluster=") for a in argv):
        argv = ["--cluster", "slurm", *argv]
    sys.exit(main(["submit", *argv]))
