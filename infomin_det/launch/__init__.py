"""Launching runs -- fine-tuning sweeps and pretraining -- locally or on SLURM through submitit.

Public API (no torch / detectron2 imported here; the job imports its worker when it runs)::

    from infomin_det.launch import DistributedTask, ExecutorOptions, submit_tasks, experiment_status

    task = DistributedTask("pretrain.train:pretrain_worker", spec)       # spec.output_dir required
    submit_tasks([task], "runs/pretrain", ExecutorOptions(gpus_per_node=8, nodes=2), cluster="auto")
    for run in experiment_status("runs/pretrain"): print(run.key, run.state, run.cause)

A worker is ``fn(spec) -> dict``: it finds ``torch.distributed`` initialised when the job has
several tasks, resumes from ``spec.output_dir`` itself, checkpoints atomically, and never repeats
its final evaluation on a finished run. See ``task.py`` for the contract, ``docs/launch.md`` for use.
"""

from infomin_det.launch.options import ExecutorOptions, check_against_slurm, resolve_cluster
from infomin_det.launch.registry import Registry, RunRecord
from infomin_det.launch.status import RunStatus, experiment_status
from infomin_det.launch.submit import Submitted, submit_tasks
from infomin_det.launch.task import DistributedTask

__all__ = [
    "DistributedTask", "ExecutorOptions", "Registry", "RunRecord", "RunStatus", "Submitted",
    "check_against_slurm", "experiment_status", "resolve_cluster", "submit_tasks",
]
