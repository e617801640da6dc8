"""The pretrain checkpoint format (self-describing), atomic saving, finding and validating for resume.

A checkpoint is a dict readable with ``torch.load(weights_only=True)`` (and read only that way,
through :func:`infomin_det.untrusted.torch_load`)::

    {"format": "infomin-det/pretrain", "format_version": 1,
     "arch": {depth, num_groups, width_per_group, stem_out_channels, res2_out_channels, name},
     "backbone": query encoder state dict, torchvision key names (conv1.weight, layer1.0..., no fc),
     "heads": {"head_q": ..., "head_k": ..., ["head_jig": ...]},
     "state": {model (full MoCo incl. key encoder + queue), optimizer, scaler, epoch, step,
               rng (one entry per rank: torch, python, cuda of its own device), config,
               skipped_images, world_size}}

The tag and version are the constants of :mod:`infomin_det.pretrain_format`, which the converter
reads too.

Files are ``checkpoint_<step:08d>.pth`` in the run's output dir; the newest complete one is the
resume point (atomic writes: a file either exists whole or not at all).
"""

from __future__ import annotations

import re
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import torch

from infomin_det.atomic import atomic_write
from infomin_det.errors import UserError
from infomin_det.pretrain_format import PRETRAIN_FORMAT as FORMAT
from infomin_det.pretrain_format import PRETRAIN_FORMAT_VERSION as FORMAT_VERSION
from infomin_det.untrusted import torch_load
from infomin_det.weights_meta import ResNetArch

_NAME = re.compile(r"^checkpoint_(\d{8})\.pth$")


def arch_dict(arch: ResNetArch) -> dict[str, Any]:
    return {**asdict(arch), "name": arch.name}


def save(path: str | Path, arch: ResNetArch, backbone: dict[str, torch.Tensor],
         heads: dict[str, dict[str, torch.Tensor]], state: dict[str, Any]) -> Path:
    """Write one checkpoint atomically; returns its path."""
    path = Path(path)
    ckpt = {"format": FORMAT, "format_version": FORMAT_VERSION, "arch": arch_dict(arch),
            "backbone": {k: v.detach().cpu() for k, v in backbone.items()},
            "heads": {n: {k: v.detach().cpu() for k, v in sd.items()} for n, sd in heads.items()},
            "state": state}
    with atomic_write(path) as tmp:
        torch.save(ckpt, tmp)
    return path


def checkpoint_path(output_dir: str | Path, step: int) -> Path:
    return Path(output_dir) / f"checkpoint_{step:08d}.pth"


def latest(output_dir: str | Path) -> Path | None:
    """The checkpoint with the highest step in ``output_dir``, or None."""
    d = Path(output_dir)
    found = sorted(p for p in d.glob("checkpoint_*.pth") if _NAME.match(p.name)) if d.is_dir() else []
    return found[-1] if found else None


def prune(output_dir: str | Path, keep: int) -> None:
    """Delete all but the ``keep`` newest checkpoints."""
    d = Path(output_dir)
    found = sorted(p for p in d.glob("checkpoint_*.pth") if _NAME.match(p.name))
    for p in found[:-keep] if keep > 0 else []:
        p.unlink(missing_ok=True)


def load(path: str | Path) -> dict[str, Any]:
    """Load (weights-only, :func:`infomin_det.untrusted.torch_load`) and check the format tag and the
    arch record. UserError for anything that is not our checkpoint -- no code in it ever runs."""
    try:
        ckpt = torch_load(path)
    except UserError as e:
        raise UserError(f"cannot read checkpoint {path}: {e.cause}",
                        "use only checkpoints this command wrote; delete or move this one "
                        "(a resume then starts from the previous checkpoint)") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise UserError(f"{path} is not an infomin-det pretrain checkpoint (no format tag {FORMAT!r})",
                        "resume only from checkpoints this command wrote")
    if ckpt.get("format_version") != FORMAT_VERSION:
        raise UserError(f"{path} has format_version {ckpt.get('format_version')}, expected {FORMAT_VERSION}",
                        "use the infomin-det version that wrote it")
    arch = ckpt.get("arch")
    names = {f.name for f in fields(ResNetArch)}
    if not isinstance(arch, dict) or not names <= set(arch) or not isinstance(ckpt.get("backbone"), dict) \
            or not isinstance(ckpt.get("state"), dict) or not isinstance(ckpt["state"].get("config") or {}, dict):
        raise UserError(f"{path} is damaged: its arch / backbone / state records are missing or malformed",
                        "use another checkpoint of the run (or retrain)")
    return ckpt


def arch_of_checkpoint(ckpt: dict[str, Any]) -> ResNetArch:
    return ResNetArch(**{f.name: ckpt["arch"][f.name] for f in fields(ResNetArch)})


# The settings that define the run a checkpoint belongs to (PretrainSpec field -> CLI flag): resuming
# with another value would splice two runs into one checkpoint (another objective, schedule, sample
# order or view distribution) that no record could describe. Free to change on resume: where data and
# output live, workers, device, logging, probes, checkpoint cadence and --max-steps (a stop, not the
# schedule, which follows --epochs).
SAME_RUN = {"batch_size": "--batch-size", "epochs": "--epochs", "base_lr": "--lr", "weight_decay": "--weight-decay",
            "warmup_epochs": "--warmup-epochs", "queue_size": "--queue-size", "negatives": "--negatives",
            "moco_momentum": "--moco-momentum", "temperature": "--temperature", "image_size": "--image-size",
            "augment": "--augment", "crop_min": "--crop-min", "jitter_strength": "--jitter-strength",
            "jigsaw": "--jigsaw", "seed": "--seed"}


def check_resumable(ckpt: dict[str, Any], arch: ResNetArch, path: str | Path, world: int,
                    config: dict[str, Any]) -> None:
    """Refuse to resume a run of another architecture, world size or :data:`SAME_RUN` setting into
    this one (``config``: this run's ``asdict(PretrainSpec)``); a setting the checkpoint does not
    record (an older checkpoint) is not compared."""
    theirs = {k: v for k, v in ckpt["arch"].items() if k != "name"}
    if theirs != asdict(arch):
        raise UserError(f"checkpoint {path} is for {ckpt['arch'].get('name', theirs)}, this run is {arch.name}",
                        "use a fresh --output-dir for a different architecture, or the same --arch")
    st = ckpt["state"]
    their_world, their_config = st.get("world_size"), st.get("config") or {}
    if their_world != world:
        raise UserError(f"checkpoint {path} was written by a run of {their_world} processes, this run has {world}: "
                        "the global batch, learning rate and sample order would change mid-run",
                        f"resume with {their_world} processes (--processes, or --nodes x --gpus-per-node), "
                        "or start a fresh --output-dir")
    recorded = [k for k in SAME_RUN if k in their_config]
    if any(_kind(their_config[k]) != _kind(config[k]) for k in recorded):
        raise UserError(f"{path} is damaged: its recorded settings are of the wrong types",
                        "use another checkpoint of the run, or start a fresh --output-dir")
    changed = [k for k in recorded if their_config[k] != config[k]]
    if changed:
        def said(values: dict[str, Any]) -> str:
            return ", ".join((SAME_RUN[k] if values[k] else f"no {SAME_RUN[k]}") if isinstance(values[k], bool)
                             else f"{SAME_RUN[k]} {values[k]}" for k in changed)
        raise UserError(f"checkpoint {path} was written with {said(their_config)}, this run has {said(config)}",
                        f"resume with {said(their_config)}, or start a fresh --output-dir")


def _kind(value: Any) -> str:
    """A setting's type as resuming compares it (an int and a float are both numbers)."""
    return "bool" if isinstance(value, bool) else "number" if isinstance(value, (int, float)) else type(value).__name__
