"""infomin-det: detection transfer benchmarks for self-supervised ResNet/ResNeXt backbones.

Package map (each sub-package owns one concern; see README for the data flow):
  errors, atomic     -- user-facing error type, write-to-temp-then-rename helpers
  weights_meta       -- the metadata record a converted .pkl carries (converter writes, trainer checks)
  rundir             -- layout of a fine-tuning run directory and its run.json (trainer writes, report reads)
  convert/           -- checkpoint layout detection, ResNet arch inference, Detectron2 .pkl writing, verify
  protocols/ engine/ -- transfer protocols (transfer_configs/) and the Detectron2 training entry
  launch/            -- local / SLURM (submitit) launching, job registry, status
  report/            -- AP tables over runs, the paper's reference numbers, plots
"""

__version__ = "0.1.0"
