"""Detectron2's weights format: writing it atomically, and reading it back safely as tensors.

The file is a pickle of ``{"model": {name: np.ndarray}, "__author__": str, "matching_heuristics":
True, META_KEY: WeightsMeta.to_dict()}`` -- exactly what ``DetectionCheckpointer`` accepts as
Detectron2-format (it needs both "model" and "__author__", else it parses the file as Caffe2).
:func:`read_d2_pkl` is the reverse helper (numpy -> torch) with an unpickler that admits numpy
arrays and plain containers only.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from infomin_det.atomic import atomic_write
from infomin_det.errors import UserError
from infomin_det.untrusted import pickle_load
from infomin_det.weights_meta import META_KEY, WeightsMeta

AUTHOR = "infomin-det convert"


def check_output(out: str | os.PathLike, force: bool, src: str | os.PathLike | None = None) -> Path:
    """Refuse an output path we must not (or cannot) write, before any work is done."""
    out = Path(out)
    if out.suffix != ".pkl":
        raise UserError(f"output {out} does not end in .pkl; Detectron2 reads only .pkl files as its own "
                        "format (anything else is torch.load-ed without the name matching)",
                        f"name the output {out.with_suffix('.pkl').name}")
    if src is not None and Path(src).exists() and out.exists() and out.resolve() == Path(src).resolve():
        raise UserError(f"output {out} is the source file", "write the converted weights to a new file")
    if out.exists() and not force:
        raise UserError(f"output {out} exists", "pass --force to overwrite it, or choose another name")
    if out.is_dir():
        raise UserError(f"output {out} is a directory", "name a .pkl file")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise UserError(f"output directory {parent} does not exist", f"create it first: mkdir -p {parent}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"output directory {parent} is not writable", "choose a writable output directory")
    return out


def write_d2_pkl(out: Path, model: Mapping[str, np.ndarray], meta: WeightsMeta) -> int:
    """Write atomically; returns the file size in bytes. No partial file is ever left behind."""
    obj = {"model": dict(model), "__author__": AUTHOR, "matching_heuristics": True, META_KEY: meta.to_dict()}
    try:
        with atomic_write(out) as tmp:
            with open(tmp, "wb") as f:
                pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL)
    except PermissionError as e:
        raise UserError(f"cannot write {out}: {e.strerror}", "choose a writable output directory") from None
    except OSError as e:
        raise UserError(f"cannot write {out}: {e.strerror or e}", "free disk space or choose another directory") from None
    return out.stat().st_size


@dataclass
class D2Weights:
    """A Detectron2-format file read back: tensors by Detectron2 name, author, our metadata if any."""

    model: dict[str, torch.Tensor]
    author: str
    meta: WeightsMeta | None
    matching_heuristics: bool


def read_d2_pkl(path: str | os.PathLike) -> D2Weights:
    """Load a Detectron2-format ``.pkl`` as torch tensors (the reverse of :func:`write_d2_pkl`).

    Refuses, with cause and fix, what Detectron2 would misread: a torch.save archive named .pkl,
    a pickle without "model"/"__author__" (parsed as Caffe2 blobs), arbitrary pickled objects.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file", "check the path of the converted .pkl")
    with open(path, "rb") as f:
        head = f.read(4)
        if head == b"PK\x03\x04":
            raise UserError(f"{path} is a torch.save archive named .pkl; Detectron2 pickle.loads every .pkl "
                            "and cannot read it", f"convert it: infomin-det convert {path} {path.stem}_d2.pkl")
        f.seek(0)
        try:
            data = pickle_load(f)
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as e:
            raise UserError(f"{path} is not a readable weights pickle ({type(e).__name__}: {e})",
                            "re-create it with infomin-det convert") from None
    if not isinstance(data, dict) or "model" not in data or "__author__" not in data:
        raise UserError(f"{path} lacks 'model'/'__author__': Detectron2 would parse it as a Caffe2 blob file",
                        "re-create it with infomin-det convert")
    model = {}
    for k, v in data["model"].items():
        model[k] = torch.from_numpy(np.asarray(v))
    meta = WeightsMeta.from_dict(data[META_KEY]) if META_KEY in data else None
    return D2Weights(model, str(data["__author__"]), meta, bool(data.get("matching_heuristics", False)))
