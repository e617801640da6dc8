"""The run directory (``-o``): refused up front when unusable, and never left behind empty.

* :func:`check_writable` -- ``-o`` must be a directory or creatable as one, in a place where files
  can be written (not a file, not under a file, not ``/proc`` or a read-only mount); it probes with
  a temporary directory that it removes again, so a refusal leaves nothing behind;
* :func:`created` -- creates ``-o`` (and missing parents) for a block; if the block fails, the
  directories this call created are removed again as long as they are still empty.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

from infomin_det.errors import UserError

_FIX = "pass -o with a directory you can write to (it is created if missing)"


def _missing_chain(path: Path) -> list[Path]:
    """``path`` and its parents that do not exist yet, deepest first."""
    chain = []
    while not path.exists() and not path.is_symlink() and path.parent != path:
        chain.append(path)
        path = path.parent
    return chain


def check_writable(path: str | os.PathLike) -> Path:
    """``path`` as a Path if a run directory can live there; UserError (creating nothing) if not."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise UserError(f"output directory {p} is a file", _FIX)
    chain = _missing_chain(p)
    anchor = chain[-1].parent if chain else p
    if not anchor.is_dir():
        what = "a file" if anchor.exists() else "a broken link" if anchor.is_symlink() else "missing"
        raise UserError(f"output directory {p} cannot be created: {anchor} is {what}", _FIX)
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".infomin-write-probe-", dir=anchor))
    except OSError as e:
        raise UserError(f"output directory {p} cannot be created or written: {anchor}: "
                        f"{e.strerror or type(e).__name__}", _FIX) from None
    return p


@contextlib.contextmanager
def created(path: str | os.PathLike) -> Iterator[Path]:
    """Create ``path`` for the block; on an exception remove the directories made here if empty."""
    p = Path(path)
    chain = _missing_chain(p)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        _remove_empty(chain)
        raise UserError(f"cannot create output directory {p}: {e.strerror or type(e).__name__}", _FIX) from None
    try:
        yield p
    except BaseException:
        _remove_empty(chain)
        raise


def _remove_empty(chain: list[Path]) -> None:
    for d in chain:  # deepest first; stop at the first that is not empty (or already gone)
        try:
            d.rmdir()
        except FileNotFoundError:
            continue
        except OSError:
            break
