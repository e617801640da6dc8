"""The one way this toolkit reads a file it did not just write: every checkpoint, weights file,
pickle and run record is untrusted input.

* :func:`torch_load` -- ``torch.load(weights_only=True)`` plus a small allowlist (``argparse.Namespace``
  and numpy scalars/dtypes, which MoCo / PyContrast / DINO checkpoints carry); ``trust_pickle=True``
  lifts it (explicit user choice only). Failures are :class:`UserError` with cause and fix.
* :func:`pickle_load` -- a restricted unpickler for Detectron2 / Caffe2 ``.pkl`` weights: numpy
  arrays and scalars and plain containers, nothing else (no code runs from a hostile pickle).
* :func:`pickle_first_entry` -- the value of a pickled dict's FIRST entry (a weights file's metadata),
  built by that same unpickler from a bounded prefix of the stream; nothing after it (and the next
  key) is read.
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
import pickletools
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


class PickleGlobalError(pickle.UnpicklingError):
    """A pickle names a global (a class or function) outside the allow-list."""


class RestrictedUnpickler(pickle.Unpickler):
    """Admits numpy arrays/scalars/dtypes and plain containers; refuses every other global."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _PICKLE_ALLOWED or (module == "numpy.dtypes" and name.endswith("DType")):
            return super().find_class(module, name)
        raise PickleGlobalError(f"global '{module}.{name}' is not allowed in a weights file")


def pickle_load(f: BinaryIO, encoding: str = "latin1") -> Any:
    """``pickle.load`` through :class:`RestrictedUnpickler` (raises ``pickle.UnpicklingError``)."""
    return RestrictedUnpickler(f if isinstance(f, io.BufferedIOBase) else io.BufferedReader(f),
                               encoding=encoding).load()


PICKLE_HEAD_LIMIT = 1 << 20
"""Most bytes :func:`pickle_first_entry` reads by default: a weights file's metadata is a few KiB."""
_MEMO_OPS = frozenset({"MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT"})
_STR_OPS = frozenset({"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE"})
_BATCH = 1000   # pickle's _BATCHSIZE: CPython writes a dict's items in SETITEMS batches of at most this many


class PickleLimitError(pickle.UnpicklingError):
    """A value did not end within the bytes its reader allowed itself."""


class _Capped:
    """A read-only view of ``f`` that hands out at most ``limit`` bytes and keeps what it handed out."""

    def __init__(self, f: BinaryIO, limit: int):
        self._f, self._left = f, limit
        self.data = bytearray()
        self.eof = self.capped = False   # a read came back short: the file ended / the limit cut it

    def _took(self, b: bytes, short: bool, cut: bool) -> bytes:
        self.data += b
        self._left -= len(b)
        self.eof |= short
        self.capped |= cut and not short
        return b

    def read(self, n: int = -1) -> bytes:
        want = self._left + 1 if n is None or n < 0 else n
        allowed = min(want, self._left)
        b = self._f.read(allowed)
        return self._took(b, len(b) < allowed, allowed < want)

    def readline(self) -> bytes:   # protocol-0 opcodes end their argument with a newline
        allowed = self._left
        b = self._f.readline(allowed)
        ended = b.endswith(b"\n")
        return self._took(b, not ended and len(b) < allowed, not ended and len(b) == allowed)

    def tell(self) -> int:
        return len(self.data)


def pickle_first_entry(f: BinaryIO, key: str, then: str | None = None,
                       limit: int = PICKLE_HEAD_LIMIT) -> tuple[bool, Any]:
    """``(True, value)`` of ``key`` if the pickle read from ``f`` (at its start) is a dict whose first
    entry is ``key`` (and whose second is keyed ``then``, if given) -- reading the stream only up to the
    end of that value and the next key, ``limit`` bytes at most.

    Both dicts must be laid out as CPython's pickler writes a dict of two or more items: EMPTY_DICT,
    then MARK ... SETITEMS batches of 1000 items but the last, which is shorter (the C pickler adds an
    empty one after 1000·k items). Anything else -- another first or second key, not a dict, a value
    dict with an item set alone (one item; the pure-Python pickler's last item, or its 1000·k items,
    which a reader cannot tell from the next entry) -- gives ``(False, None)``: only a full read can
    tell. The opcodes are scanned, not executed (``pickletools``); then the dict's opening and the
    value's bytes, alone, are unpickled by
    :class:`RestrictedUnpickler` (the same allow-list as every weights file). Raises ``EOFError`` when
    the stream ends inside the value, :class:`PickleLimitError` when the value does not end within
    ``limit`` bytes, :class:`PickleGlobalError` for a global outside the allow-list, and
    ``pickle.UnpicklingError`` (or what the unpickler raises) for bytes that are no pickle.
    """
    src = _Capped(f, limit)
    ops = pickletools.genops(src)

    def step() -> tuple[Any, Any, bytes]:
        while True:
            try:
                op, arg, pos = next(ops)
            except StopIteration:   # after STOP (handled below): nothing more
                raise pickle.UnpicklingError("the pickle ends inside the value") from None
            except ValueError as e:  # pickletools: short argument, unknown opcode, bad encoding
                if src.eof:
                    raise EOFError(f"the file ends inside the pickle ({e})") from None
                if src.capped:
                    raise PickleLimitError(f"'{key}' does not end within the first {limit} bytes") from None
                raise pickle.UnpicklingError(f"not a pickle stream: {e}") from None
            if op.name != "FRAME":   # framing only groups the bytes; the unpickler needs none of it
                return op, arg, bytes(src.data[pos:src.tell()])

    def past_memo(head: bytearray) -> tuple[Any, Any, bytes]:
        """The next op that is not a memo op; the memo ops' bytes go to ``head``."""
        op, arg, raw = step()
        while op.name in _MEMO_OPS:
            head += raw
            op, arg, raw = step()
        return op, arg, raw

    def opening() -> tuple[bytearray, bytes] | None:
        """The bytes up to the value (PROTO, the dict, its MARK, ``key``) and the value's first op."""
        head = bytearray()
        op, arg, raw = step()
        if op.name == "PROTO":
            head += raw
            op, arg, raw = step()
        if op.name != "EMPTY_DICT":
            return None
        head += raw
        op, arg, raw = past_memo(head)
        if op.name != "MARK":        # one entry only (SETITEM), or not a dict of entries at all
            return None
        head += raw
        op, arg, raw = step()
        if op.name not in _STR_OPS or arg != key:
            return None
        head += raw
        op, arg, raw = past_memo(head)
        return (head, raw) if op.name == "EMPTY_DICT" else None

    try:
        found = opening()
    except (EOFError, pickle.UnpicklingError):    # damaged before ``key``: the full read says how
        found = None
    if found is None:
        return False, None
    head, raw = found
    value = bytearray(raw)
    depth, marks = 1, []            # stack items the value has pushed; their depths at each open MARK
    while True:
        op, arg, raw = step()
        if op.name == "STOP":
            raise pickle.UnpicklingError("the pickle ends inside the value")
        if not marks and op.name not in _MEMO_OPS and op.name != "MARK":
            return False, None      # the value dict filled item by item, or gone: not the batched layout
        value += raw
        before, after = op.stack_before, op.stack_after
        if pickletools.markobject in before:
            at = marks.pop()            # (not empty: at the value's own level only MARK and memo ops pass)
            items = depth - at
            depth = at - before.index(pickletools.markobject)
            if not marks:       # closes a batch of the value dict itself
                if op.name != "SETITEMS" or depth != 0:
                    return False, None
                depth = 1
                if items < 2 * _BATCH:
                    break       # CPython's last batch: the value is complete
                continue
        else:
            depth -= len(before)
        if depth < (marks[-1] if marks else 0):
            return False, None  # pops below its MARK / what the value pushed: not laid out as expected
        if pickletools.markobject in after:
            marks.append(depth)
        else:
            depth += len(after)
    if then is not None:
        op, arg, raw = step()
        if op.name not in _STR_OPS or arg != then:
            return False, None
    mini = bytes(head + value) + pickle.SETITEMS + pickle.STOP     # {key: value}, memo indices as in f
    return True, RestrictedUnpickler(io.BytesIO(mini), encoding="latin1").load()[key]


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
