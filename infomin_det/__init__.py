"""infomin-det: detection transfer benchmarks for self-supervised ResNet/ResNeXt backbones.

Package map (each sub-package owns one concern; see README for the data flow):
  errors, atomic     -- user-facing error type, write-to-temp-then-rename helpers
  weights_meta       -- the metadata record a converted .pkl carries (converter writes, trainer checks)
  pretrain_format    -- the pretrain checkpoint's format tag + version (pretrain writes, converter reads)
  cache              -- the cache root every fetched or generated input lives under
  rundir             -- layout of a fine-tuning run directory and its run.json (trainer writes, report reads)
  convert/           -- checkpoint layout detection, ResNet arch inference, Detectron2 .pkl writing, verify
  protocols/ engine/ -- transfer protocols (transfer_configs/) and the Detectron2 training entry
  launch/            -- local / SLURM (submitit) launching, job registry, status
  report/            -- AP tables over runs, the paper's reference numbers, plots

Imports point one way (README "Layout"; ``python tools/import_graph.py --check`` enforces it).
"""

__version__ = "0.1.0"
