"""``TrainSpec``: one fine-tuning run, as data. Built by ``train`` / ``submit``, run by the trainer.

A spec is what gets pickled into a SLURM job, so it holds only plain values and never resume state:
whether to resume is decided from the run directory (``last_checkpoint``) when the job starts, so a
requeued job replaying its original pickle still continues where the run stopped.
No detectron2 import here (the launcher and report import this module).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping


#: keys the toolkit sets from its own options; an override would be overwritten or contradict them
TOOLKIT_KEYS: Mapping[str, str] = {
    "OUTPUT_DIR": "--output-dir (or --root/--experiment)",
    "SEED": "--seed",
    "MODEL.DEVICE": "--device",
    "MODEL.WEIGHTS": "--weights",
}


@dataclass(frozen=True)
class TrainSpec:
    """One run: protocol id (``coco/R50-FPN-1x``), weights, seed, output directory, overrides.

    weights: a converted ``.pkl`` path, a ``detectron2://`` catalog URL, or ``""`` for random init.
    weights_name: the row name in reports (defaults to the weights file stem / ``random``).
    opts: trailing Detectron2 ``KEY VALUE`` overrides, applied last.
    dataset: ``""`` for the protocol's standard datasets under ``$DETECTRON2_DATASETS``, or
        ``"coco-json:<train.json>:<train_images>:<val.json>:<val_images>"`` for any COCO-format set.
    allow_mismatch: config keys whose disagreement with the weights' metadata is accepted.
    num_processes: processes per node; nodes: machines (the launcher sets both for SLURM).
    family: force the weight family (ssl | supervised) of weights without metadata; "" = from metadata.
    variant: a named deviation from the authors' leaf (``infomin_det.protocols.variants``); "" = theirs.
    device: ``auto`` (CUDA when the process sees a GPU, else CPU), ``cuda`` (refuse to run without
        one) or ``cpu`` (asked for explicitly; the distributed backend follows it: gloo).
    config_file: a user's Detectron2 YAML (absolute path) trained instead of the protocol's leaf; the
        run is then the custom variant ``custom-<stem>`` of ``protocol`` (its own row, never the paper's).
    """

    protocol: str
    weights: str
    output_dir: str
    weights_name: str = ""
    seed: int = 0
    experiment: str = "default"
    opts: tuple[str, ...] = ()
    dataset: str = ""
    allow_mismatch: tuple[str, ...] = ()
    eval_only: bool = False
    num_processes: int = 1
    nodes: int = 1
    family: str = ""
    variant: str = ""
    device: str = "auto"
    config_file: str = ""
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def row_variant(self) -> str:
        """The variant the run's directory and record carry: ``variant``, or ``custom-<stem>``."""
        from infomin_det.rundir import custom_variant

        return custom_variant(self.config_file) if self.config_file else self.variant
