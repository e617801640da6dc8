"""Detectron2's weights format: writing it atomically, and reading it back safely as tensors or as metadata.

The file is a pickle of ``{META_KEY: WeightsMeta.to_dict(), "model": {name: np.ndarray}, "__author__":
str, "matching_heuristics": True}`` -- exactly what ``DetectionCheckpointer`` accepts as Detectron2-format
(it needs both "model" and "__author__", else it parses the file as Caffe2; it ignores our key). The
metadata comes first, so :func:`read_d2_meta` reads it from the first bytes of the file without the
tensors (``train`` / ``submit`` pre-flight read weights' metadata through it); files written before
that order, with the metadata after "model", are read in full. :func:`read_d2_pkl` is the reverse
helper (numpy -> torch) with an unpickler that admits numpy arrays and plain containers only, and it
refuses non-finite values. Output paths are checked by :mod:`infomin_det.convert.files`.
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
from infomin_det.convert.files import check_input, describe, os_error, show
from infomin_det.convert.resnet_keys import arch_problem
from infomin_det.convert.values import ANY, VARIANCE, check_tensors, role_of
from infomin_det.errors import UserError
from infomin_det.untrusted import (PICKLE_HEAD_LIMIT, PickleGlobalError, PickleLimitError, pickle_first_entry,
                                   pickle_load)
from infomin_det.weights_meta import META_KEY, WeightsMeta

AUTHOR = "infomin-det convert"


def write_d2_pkl(out: Path, model: Mapping[str, np.ndarray], meta: WeightsMeta) -> int:
    """Write atomically; returns the file size in bytes. No partial file is ever left behind.

    The metadata is the dict's first entry (pickle writes entries in order): :func:`read_d2_meta` stops there.
    """
    obj = {META_KEY: meta.to_dict(), "model": dict(model), "__author__": AUTHOR, "matching_heuristics": True}
    try:
        with atomic_write(out) as tmp:
            with open(tmp, "wb") as f:
                pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL)
    except OSError as e:
        raise os_error(e, out, f"cannot write {show(out)}") from None
    return out.stat().st_size


@dataclass
class D2Weights:
    """A Detectron2-format file read back: tensors by Detectron2 name, author, our metadata if any."""

    model: dict[str, torch.Tensor]
    author: str
    meta: WeightsMeta | None
    matching_heuristics: bool


_CONVERTIBLE = ("a torch.save archive", "a legacy (pre-1.6) torch.save file")
_FIX_RECREATE = "re-create it with infomin-det convert"


def converted_name(path: Path) -> str:
    """The .pkl name to suggest for converting ``path`` (``moco.pth.tar`` -> ``moco.pkl``)."""
    base = path.name
    while Path(base).suffix.lower() in (".tar", ".pth", ".pt", ".ckpt", ".bin", ".pkl") and Path(base).stem:
        base = Path(base).stem
    name = base + ".pkl"
    return show(path.with_name(name if name != path.name else base + "_d2.pkl"))


def _not_weights(path: Path, kind: str) -> UserError:
    if kind in _CONVERTIBLE:
        if path.suffix == ".pkl":
            cause = f"{show(path)} is {kind} named .pkl; Detectron2 pickle.loads every .pkl and cannot read it"
        else:
            cause = (f"{show(path)} is {kind} (a training checkpoint), not Detectron2 .pkl weights; "
                     "Detectron2 cannot use it as a pretrained backbone")
        return UserError(cause, f"convert it: infomin-det convert {show(path)} {converted_name(path)}")
    return UserError(f"{show(path)} is {kind}, not Detectron2 .pkl weights (a pickle written by infomin-det convert)",
                     "pass the .pkl written by infomin-det convert")


def read_d2_pkl(path: str | os.PathLike) -> D2Weights:
    """Load a Detectron2-format ``.pkl`` as torch tensors (the reverse of :func:`write_d2_pkl`).

    Refuses, with cause and fix, what Detectron2 would misread or what would train wrong: a file
    that is not a pickle (a torch.save archive, named .pkl or not, says so and how to convert it), a
    pickle without "model"/"__author__" (parsed as Caffe2 blobs), arbitrary pickled objects, an
    empty "model", entries that are not numeric arrays, non-finite values or a negative BN running
    variance (one isfinite pass), and malformed metadata.
    """
    path = check_input(path, "weights file", "check the path of the converted .pkl")
    try:
        with open(path, "rb") as f:
            kind = describe(path, f.read(512))
            if kind not in ("a plain pickle", "a text file", "a binary file of unknown format"):  # protocol 0 is text
                raise _not_weights(path, kind)
            f.seek(0)
            data = pickle_load(f)
    except UserError:
        raise
    except OSError as e:
        raise os_error(e, path, f"weights file {show(path)}") from None
    except Exception as e:  # noqa: BLE001 - untrusted bytes: any failure inside the unpickler means "not weights"
        if kind != "a plain pickle":
            raise _not_weights(path, kind) from None
        raise _damaged(path, e) from None
    if not isinstance(data, dict):
        raise UserError(f"{show(path)} holds a pickled {type(data).__name__}, not Detectron2 weights "
                        "(a dict with 'model' and '__author__')", _FIX_RECREATE)
    if "model" not in data or "__author__" not in data:
        raise UserError(f"{show(path)} lacks 'model'/'__author__': Detectron2 would parse it as a Caffe2 blob file",
                        _FIX_RECREATE)
    raw = data["model"]
    if not isinstance(raw, dict) or not raw:
        what = "is empty" if isinstance(raw, dict) else f"is a {type(raw).__name__}, not a dict of arrays"
        raise UserError(f"{show(path)}: its 'model' {what}; Detectron2 would load no weights at all", _FIX_RECREATE)
    model: dict[str, torch.Tensor] = {}
    for k, v in raw.items():
        if not isinstance(k, str):
            raise UserError(f"{show(path)}: 'model' has a key {show(repr(k))} that is not a name", _FIX_RECREATE)
        if not isinstance(v, (np.ndarray, np.generic)) or np.asarray(v).dtype.kind not in "biuf":
            what = f"{np.asarray(v).dtype} array" if isinstance(v, (np.ndarray, np.generic)) else type(v).__name__
            raise UserError(f"{show(path)}: 'model' entry {show(k)} is a {what}, not a numeric array", _FIX_RECREATE)
        model[k] = torch.from_numpy(np.asarray(v))
    check_tensors(((k, t, VARIANCE if role_of(k) == VARIANCE else ANY) for k, t in model.items()), show(path))
    meta = _meta(path, data[META_KEY]) if META_KEY in data else None
    return D2Weights(model, str(data["__author__"]), meta, bool(data.get("matching_heuristics", False)))


def _damaged(path: Path, e: BaseException) -> UserError:
    return UserError(f"{show(path)} is not a readable weights pickle (truncated or damaged: "
                     f"{type(e).__name__}: {str(e)[:120]})", _FIX_RECREATE)


def read_d2_meta(path: str | os.PathLike) -> WeightsMeta | None:
    """The metadata of a Detectron2-format ``.pkl`` without loading its tensors (None: it carries none).

    A file :func:`write_d2_pkl` wrote holds the metadata as its first entry, then "model": only that is read
    (:func:`~infomin_det.untrusted.pickle_first_entry`: a few KiB, never more than
    ``PICKLE_HEAD_LIMIT`` bytes, unpickled with the weights allow-list), then the file's last byte,
    which must be pickle's STOP: a file cut short is refused, as a full read would refuse it (unless
    it happens to end on a ``.`` byte). The tensors are not checked here (``read_d2_pkl`` and
    ``verify`` check them; training unpickles them through the same allow-list). Any other file -- an
    older conversion whose metadata follows "model", a file without metadata, not a pickle at all --
    is read in full by :func:`read_d2_pkl`, with every refusal it makes.
    """
    path = check_input(path, "weights file", "check the path of the converted .pkl")
    found, complete, d = False, False, None
    try:
        with open(path, "rb") as f:
            if describe(path, f.read(512)) == "a plain pickle":
                f.seek(0)
                found, d = pickle_first_entry(f, META_KEY, then="model")
                if found:
                    f.seek(-1, os.SEEK_END)
                    complete = f.read(1) == pickle.STOP
    except OSError as e:
        raise os_error(e, path, f"weights file {show(path)}") from None
    except PickleLimitError:
        raise UserError(f"{show(path)} has no readable infomin-det metadata: its {META_KEY} entry does not end "
                        f"within the first {PICKLE_HEAD_LIMIT // 2**20} MiB of the file (it takes a few KiB); "
                        "the file is damaged or was not written by infomin-det convert", _FIX_RECREATE) from None
    except PickleGlobalError as e:
        raise UserError(f"{show(path)}: its infomin-det metadata ({META_KEY}) is not plain data: {str(e)[:160]}",
                        _FIX_RECREATE) from None
    except Exception as e:  # noqa: BLE001 - untrusted bytes: EOFError (cut short), or any failure in the unpickler
        raise _damaged(path, e) from None
    if not found:
        return read_d2_pkl(path).meta
    if not complete:
        raise _damaged(path, EOFError("the file does not end where its pickle ends (cut short?)"))
    return _meta(path, d)


def _meta(path: Path, d: Any) -> WeightsMeta:
    try:
        meta = WeightsMeta.from_dict(d)
        bad = arch_problem(meta.arch)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        bad = f"{type(e).__name__}: {e}"
    if bad:
        raise UserError(f"{show(path)}: its infomin-det metadata ({META_KEY}) is malformed ({show(bad)})", _FIX_RECREATE)
    return meta
