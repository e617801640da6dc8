"""``infomin-det pretrain --probe DIR``: does the run learn? The linear probe of the query encoder, during training.

Owns the probe *schedule and record* of a pretraining run; the classifier is the toolkit's one
probe on frozen features (:func:`pretrain.probe.linear_probe`, the view sweep's and Moving MNIST's).

* **folder** (:func:`probe_set`): ``DIR/train/<class>/*`` and ``DIR/val/<class>/*`` -- the layout
  :func:`infomin_det.data.labelled_set.build_labelled_set` writes (``manifest.json`` beside them is
  ignored). Refused (UserError) when ``DIR`` is missing, lacks ``train/`` or ``val/``, a split has
  no class layout, train has fewer than 2 classes, a val class has no train folder, or more than
  10 % of a split cannot be decoded. Val labels are train's class indices (train may have classes
  val lacks).
* **when** (:func:`due`): at step 0 (the random-init reference), every ``every`` steps and at the
  run's last step; a step already in ``probe.jsonl`` is not probed again (a resumed run continues
  the file). Rank 0 probes; every rank then meets in one ``dist.barrier`` at the same steps (the
  schedule is a pure function of the step), so the other ranks wait instead of timing out in the
  next collective and no rank can run ahead.
* **what** (:meth:`RunProbe.run`): the query encoder in eval mode (BN running statistics), no grad,
  the run's autocast dtype; every image of both splits resized so its short side is
  ``image_size / 0.875`` and centre-cropped to ``image_size`` (linear evaluation's val view,
  :func:`pretrain.linear_eval.val_view`), ImageNet-normalised (:func:`pretrain.augment.normalize`, as
  training), global-pooled features (512-d R-18/34, 2048-d deeper); then ``linear_probe`` (100 L-BFGS
  steps, weight decay 1e-3). No global RNG is drawn (the loader has its own generator), so a run with
  ``--probe`` trains exactly as one without.
* **record**: one stderr line ``probe step 200: val top-1 41.3% (train 63.0%; step 0: 22.8%)``, the
  TensorBoard scalars ``pretrain/probe_top1`` / ``pretrain/probe_train_top1`` (fractions) when
  TensorBoard is on, and a JSON line ``{"step", "val_top1", "train_top1", "n_train", "n_val",
  "seconds"}`` (fractions in [0, 1]) appended to ``<run>/probe.jsonl`` and fsynced. A torn last line
  (a crash mid-write) is ignored on reading and closed off before the next append.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from infomin_det.errors import UserError
from pretrain.augment import normalize
from pretrain.data import ImageList, SkipUnreadable, check_decodable, scan_folder
from pretrain.probe import ProbeResult, linear_probe
from pretrain.steplog import append_step, read_steps

PROBE_FILE = "probe.jsonl"
DEFAULT_EVERY = 200   # steps between probes (plus step 0 and the last step)
BATCH = 128           # images per forward pass of the probe
_FIX = ("pass --probe a labelled folder DIR/train/<class>/*.jpg + DIR/val/<class>/*.jpg "
        "(the layout of build_labelled_set)")


@dataclass(frozen=True)
class ProbeSet:
    """The probe's two splits; ``val.labels`` index ``train.classes``."""

    train: ImageList
    val: ImageList

    @property
    def classes(self) -> tuple[str, ...]:
        return self.train.classes


def probe_set(root: str | os.PathLike) -> ProbeSet:
    """The labelled folder ``root`` (see the module docstring), or UserError saying what is wrong."""
    path = Path(root)
    if not path.is_dir():
        raise UserError(f"--probe folder {path} {'is a file' if path.exists() else 'does not exist'}", _FIX)
    missing = [s for s in ("train", "val") if not (path / s).is_dir()]
    if missing:
        raise UserError(f"--probe folder {path} has no {' and no '.join(s + '/' for s in missing)} sub-folder", _FIX)
    train, val = scan_folder(path / "train"), scan_folder(path / "val")
    for split, images in (("train", train), ("val", val)):
        if not images.classes:
            raise UserError(f"--probe {path}/{split} has no class layout ({split}/<class>/<image>)", _FIX)
    if len(train.classes) < 2:
        raise UserError(f"--probe {path}/train has {len(train.classes)} class ({train.classes[0]}); a probe needs >= 2",
                        "add a second class folder under train/ and val/")
    unknown = sorted(set(val.classes) - set(train.classes))
    if unknown:
        raise UserError(f"--probe {path}/val has classes with no train/ folder: {', '.join(unknown[:5])}",
                        "give every val class a train/<class>/ folder (or remove it from val/)")
    check_decodable(train)
    check_decodable(val)
    index = {c: i for i, c in enumerate(train.classes)}
    val = dataclasses.replace(val, labels=tuple(index[val.classes[y]] for y in val.labels), classes=train.classes)
    return ProbeSet(train, val)


def due(step: int, every: int, stop_at: int) -> bool:
    """Whether the schedule probes at ``step`` (the same answer on every rank)."""
    return step == 0 or step % every == 0 or step == stop_at


@torch.no_grad()
def features(encoder: nn.Module, images: ImageList, image_size: int, device: torch.device,
             amp: torch.dtype | None = None, workers: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, C) float32 pooled features of ``encoder`` (put in eval mode, restored after) on the centre
    view of every image, and their (N,) labels, on the CPU."""
    from pretrain.linear_eval import val_view

    was_training = encoder.training
    encoder.eval()
    ds = SkipUnreadable(images, val_view(image_size), seed=0)
    loader = torch.utils.data.DataLoader(ds, batch_size=BATCH, num_workers=workers, pin_memory=device.type == "cuda",
                                         generator=torch.Generator().manual_seed(0))
    feats, labels = [], []
    try:
        for batch in loader:
            x = batch["image"].to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
                feats.append(encoder(normalize(x)).float().cpu())
            labels.append(batch["label"])
    finally:
        encoder.train(was_training)
    return torch.cat(feats), torch.cat(labels).long()


def probe_encoder(encoder: nn.Module, data: ProbeSet, image_size: int, device: torch.device,
                  amp: torch.dtype | None = None, workers: int = 0) -> ProbeResult:
    """The linear probe of ``encoder``'s frozen features on ``data`` (train split fitted, val scored)."""
    tx, ty = features(encoder, data.train, image_size, device, amp, workers)
    vx, vy = features(encoder, data.val, image_size, device, amp, workers)
    return linear_probe(tx, ty, vx, vy, len(data.classes))


class RunProbe:
    """Rank 0's probe of one run: the labelled set, the record file and the schedule."""

    def __init__(self, root: str, every: int, out_dir: Path, image_size: int, device: torch.device,
                 amp: torch.dtype | None, workers: int) -> None:
        self.data = probe_set(root)
        self.every, self.path = every, Path(out_dir) / PROBE_FILE
        self.image_size, self.device, self.amp, self.workers = image_size, device, amp, workers
        self.records = read_steps(self.path)

    def run(self, step: int, encoder: nn.Module, writer: Any = None, bar: Any = None) -> dict[str, Any] | None:
        """Probe ``encoder`` at ``step`` unless that step is recorded; returns the new record.
        ``writer``: the run's :class:`infomin_det.wandb_log.Scalars` (TensorBoard and/or W&B), or None."""
        if step in self.records:
            return None
        t0 = time.perf_counter()
        r = probe_encoder(encoder, self.data, self.image_size, self.device, self.amp, self.workers)
        rec = {"step": step, "val_top1": round(r.accuracy, 6), "train_top1": round(r.train_accuracy, 6),
               "n_train": r.n_train, "n_val": r.n_val, "seconds": round(time.perf_counter() - t0, 3)}
        append_step(self.path, rec)
        self.records[step] = rec
        if writer is not None:
            writer.log({"pretrain/probe_top1": r.accuracy, "pretrain/probe_train_top1": r.train_accuracy}, step)
            writer.flush()
        line = self.line(rec)
        if bar is not None:
            bar.write(line, file=sys.stderr)
        else:
            print(line, file=sys.stderr, flush=True)
        return rec

    def line(self, rec: dict[str, Any]) -> str:
        ref = self.records.get(0)
        tail = "random init" if rec["step"] == 0 else (f"step 0: {100 * ref['val_top1']:.1f}%" if ref else "no step 0")
        return (f"probe step {rec['step']}: val top-1 {100 * rec['val_top1']:.1f}% "
                f"(train {100 * rec['train_top1']:.1f}%; {tail})")
