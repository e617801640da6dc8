"""The one way this toolkit reads a file it did not just write: every checkpoint, weights file,
pickle and run record is untrusted input.

* :func:`torch_load` -- ``torch.load(weights_only=True)`` plus a small allowlist (``argparse.Namespace``
  and numpy scalars/dtypes, which MoCo / PyContrast / DINO checkpoints carry); ``trust_pickle=True``
  lifts it (explicit user choice only). Failures are :class:`UserError` with cause and fix.
* :func:`pickle_load` -- a restricted unpickler for Detectron2 / Caffe2 ``.pkl`` weights: numpy
  arrays and scalars and plain containers, nothing else (no code runs from a hostile pickle).
* :func:`child_path` -- a name read from a file (``last_checkpoint``, a registry entry) resolved
  inside the directory it belongs to, or refused: no ``..``, no absolute path, no symlink out.
* :func:`read_json` -- a JSON record as a dict, or a UserError naming the file.

No detectron2 here; torch and numpy are imported only by the functions that need them.
"""

from __future__ import annotations

import io
import json
import os
import pickle
from pathlib import Path
from typing import Any, BinaryIO

from infomin_det.errors import UserError


# ---------------------------------------------------------------------------------------------
# paths

def child_path(directory: str | os.PathLike, name: str, what: str = "file") -> Path:
    """``directory/name`` if ``name`` is a plain file name whose resolved path stays in ``directory``."""
    directory = Path(directory)
    name = name.strip()
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\x00" in name:
        raise UserError(f"{what} name {name!r} (read from {directory}) is not a plain file name in that directory",
                        f"restore the file, or delete it to start over in {directory}")
    path = directory / name
    try:
        inside = path.resolve().is_relative_to(directory.resolve())
    except (OSError, RuntimeError):  # symlink loop
        inside = False
    if not inside:
        raise UserError(f"{what} {path} points outside {directory} (a symlink out of the run directory)",
                        "remove the link; files a run reads must live in its own directory")
    return path


def read_json(path: str | os.PathLike, what: str = "record") -> Any:
    """The JSON value in ``path``; UserError (with the file named) if it is missing or not JSON."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{what} {path} does not exist", "check the path") from None
    except RecursionError:
        raise UserError(f"{what} {path} nests JSON deeper than Python's parser can follow",
                        "it is not a record this toolkit wrote: restore it, or move it away") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise UserError(f"{what} {path} is unreadable ({type(e).__name__}: {e})",
                        "restore it from a backup, or move it away") from None


# ---------------------------------------------------------------------------------------------
# pickles of numpy arrays (Detectron2 / Caffe2 weights)

_PICKLE_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("collections", "OrderedDict"), ("_codecs", "encode"),
}


class RestrictedUnpickler(pickle.Unpickler):
    """Admits numpy arrays/scalars/dtypes and plain containers; refuses every other global."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _PICKLE_ALLOWED or (module == "numpy.dtypes" and name.endswith("DType")):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed in a weights file")


def pickle_load(f: BinaryIO, encoding: str = "latin1") -> Any:
    """``pickle.load`` through :class:`RestrictedUnpickler` (raises ``pickle.UnpicklingError``)."""
    return RestrictedUnpickler(f if isinstance(f, io.BufferedIOBase) else io.BufferedReader(f),
                               encoding=encoding).load()


# ---------------------------------------------------------------------------------------------
# torch.save archives

def allowlist() -> list[Any]:
    """Globals a foreign checkpoint may reference beyond tensors: args namespaces, numpy scalars."""
    import argparse

    import numpy as np
    from numpy._core import multiarray  # numpy >= 2

    allowed: list[Any] = [argparse.Namespace, np.dtype,
                          (multiarray.scalar, "numpy.core.multiarray.scalar"), multiarray.scalar]
    for name in dir(np.dtypes):
        cls = getattr(np.dtypes, name)
        if isinstance(cls, type) and issubclass(cls, np.dtype):
            allowed.append(cls)
    return allowed


def torch_load(path: str | os.PathLike, trust_pickle: bool = False, mmap: bool = False) -> Any:
    """``torch.load`` of an untrusted file onto the CPU: weights-only with :func:`allowlist`.

    UserError for a file that pickles anything else (unless ``trust_pickle``) or cannot be read.
    """
    import warnings

    import torch

    path = Path(path)
    try:
        with warnings.catch_warnings():    # torch's sparse-invariant note would precede our error: line
            warnings.filterwarnings("ignore", message=".*sparse tensor invariants.*")
            return _torch_load(path, trust_pickle, mmap)
    except pickle.UnpicklingError as e:
        if trust_pickle:
            raise UserError(f"{path} cannot be unpickled: {first_line(e)}",
                            "copy or download the checkpoint again") from None
        try:
            allowed = {a[1] if isinstance(a, tuple) else f"{a.__module__}.{a.__qualname__}" for a in allowlist()}
            unsafe = [g for g in torch.serialization.get_unsafe_globals_in_checkpoint(path) if g not in allowed]
        except Exception:  # noqa: BLE001 - legacy files cannot be scanned; the message still helps
            unsafe = []
        what = ", ".join(unsafe[:5]) if unsafe else first_line(e)
        raise UserError(f"{path} pickles objects outside the weights-only allowlist: {what}",
                        "if you trust the file's origin, re-run with --trust-pickle") from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError) as e:
        raise UserError(f"{path} cannot be read as a torch checkpoint ({first_line(e)})",
                        "copy or download the checkpoint again and compare its sha256") from None


def _torch_load(path: Path, trust_pickle: bool, mmap: bool) -> Any:
    import torch

    if trust_pickle:
        return torch.load(path, map_location="cpu", weights_only=False, mmap=mmap)
    with torch.serialization.safe_globals(allowlist()):
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)


def first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".strip()
