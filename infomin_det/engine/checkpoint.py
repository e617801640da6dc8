"""Checkpoints of a fine-tuning run: written atomically, read only as data, only from the run directory.

* :class:`AtomicCheckpointer` -- Detectron2's ``DetectionCheckpointer`` whose ``.pth`` and
  ``last_checkpoint`` are each written to a temporary file and renamed (a kill at any moment leaves
  the previous checkpoint intact); ``last_checkpoint`` must name a plain file inside the run directory
  (``../x.pth`` or a symlink out is refused); leftovers of a save that was killed are removed.
* :func:`guard_detectron2_pickles` -- Detectron2 reads every ``.pkl`` (MODEL.WEIGHTS, model-zoo and
  Caffe2 files) with plain ``pickle.load``, so a hostile ``.pkl`` runs code. Importing this module
  points the ``pickle`` that ``detectron2.checkpoint.detection_checkpoint`` uses at
  :func:`infomin_det.untrusted.pickle_load` (numpy arrays and plain containers only). ``.pth``
  files go through fvcore's ``torch.load``, weights-only by default since torch 2.6 (required).
"""

from __future__ import annotations

import os
import pickle
import types
from pathlib import Path

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.checkpoint import detection_checkpoint as _d2ck

from infomin_det import faults
from infomin_det.atomic import atomic_write, write_text_atomic
from infomin_det.errors import UserError
from infomin_det.untrusted import child_path, first_line, pickle_load

LAST = "last_checkpoint"


def guard_detectron2_pickles() -> None:
    """Make Detectron2's checkpointer unpickle ``.pkl`` files with the restricted unpickler."""
    if getattr(_d2ck.pickle, "restricted", False):
        return
    shim = types.SimpleNamespace(**{k: getattr(pickle, k) for k in dir(pickle) if not k.startswith("__")})
    shim.load = pickle_load
    shim.restricted = True
    _d2ck.pickle = shim


guard_detectron2_pickles()


class AtomicCheckpointer(DetectionCheckpointer):
    """``DetectionCheckpointer`` whose files never exist half-written; records the load's key report."""

    def save(self, name: str, **kwargs) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict(), **{k: v.state_dict() for k, v in self.checkpointables.items()}}
        data.update(kwargs)
        basename = f"{name}.pth"
        self.logger.info("Saving checkpoint to %s", os.path.join(self.save_dir, basename))
        with atomic_write(os.path.join(self.save_dir, basename)) as tmp:
            torch.save(data, tmp)
            faults.point("save")
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        write_text_atomic(os.path.join(self.save_dir, LAST), last_filename_basename)

    def get_checkpoint_file(self) -> str:
        """The file ``last_checkpoint`` names -- a plain name inside the run directory, or refused."""
        try:
            name = Path(self.save_dir, LAST).read_text()
        except OSError:
            return ""
        path = child_path(self.save_dir, name, what="checkpoint")
        if not path.is_file():
            raise UserError(f"{Path(self.save_dir, LAST)} names {name.strip()!r}, which is not in {self.save_dir}",
                            f"restore that checkpoint, or point {LAST} at another model_*.pth of the run")
        return str(path)

    def remove_partial_saves(self) -> list[str]:
        """Delete the temporary files of saves that were killed (``.model_*.pth.*.tmp``)."""
        removed = []
        for p in Path(self.save_dir).glob(".*.tmp"):
            if p.name.startswith((".model_", f".{LAST}.")):
                p.unlink(missing_ok=True)
                removed.append(p.name)
        return removed

    def _load_file(self, filename: str):
        """fvcore's documented override point: Detectron2's reading of ``filename``, as data only;
        a file that is not plain data (or not a checkpoint) is a UserError naming it."""
        try:
            return super()._load_file(filename)
        except (pickle.UnpicklingError, EOFError, RuntimeError, ValueError, KeyError, TypeError) as e:
            raise UserError(f"{filename} cannot be read as weights/checkpoint data ({first_line(e)})",
                            "replace that file; to resume from an earlier model_*.pth of the run, write "
                            "its name into last_checkpoint") from None

    def _load_model(self, checkpoint):
        self.incompatible = super()._load_model(checkpoint)
        return self.incompatible
