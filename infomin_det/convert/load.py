"""Reading a foreign checkpoint safely: file checks, format sniffing, integrity, ``weights_only`` loading.

Foreign checkpoints are untrusted pickles: they are loaded by :func:`infomin_det.untrusted.torch_load`
(``weights_only=True`` plus a minimal allowlist); anything else needs an explicit ``trust_pickle=True``.
A torch.save archive is a zip whose members carry a CRC-32: every member is checked before loading
(torch does not check them, so flipped bytes would otherwise load as wrong weights).
Every failure is a :class:`~infomin_det.errors.UserError` with a one-line cause and fix.
"""

from __future__ import annotations

import os
import re
import zipfile
from pathlib import Path
from typing import Any

from infomin_det.convert.files import check_input, describe, os_error, show
from infomin_det.errors import UserError
from infomin_det.untrusted import torch_load

_FIX_COPY = "copy or download the checkpoint again and compare its sha256"


def check_source(path: str | os.PathLike) -> Path:
    """``path`` if it is a readable, non-empty regular file (see :func:`files.check_input`)."""
    return check_input(path, "source checkpoint", "check the path of the source checkpoint")


def sniff(path: Path) -> str:
    """'zip' (torch.save >= 1.6), 'legacy-torch', 'pickle' (plain pickle) or UserError saying what it is.

    Also refuses a path that is not a readable regular file, and a damaged zip (truncated, or a
    member whose bytes fail its CRC-32).
    """
    path = check_source(path)
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError as e:
        raise os_error(e, path, f"source checkpoint {show(path)}") from None
    kind = describe(path, head)
    if kind == "a torch.save archive":
        _check_crc(path)
        return "zip"
    if kind == "a legacy (pre-1.6) torch.save file":
        return "legacy-torch"
    if kind == "a plain pickle":
        return "pickle"
    if kind.startswith("a truncated or corrupt zip"):
        raise UserError(f"{show(path)} is a truncated or corrupt torch.save archive (no zip central directory)", _FIX_COPY)
    raise UserError(f"{show(path)} is {kind}, not a checkpoint written by torch.save",
                    "pass the .pth/.pth.tar/.ckpt file written by torch.save")


def _check_crc(path: Path) -> None:
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as e:
        raise UserError(f"{show(path)} is a damaged torch.save archive ({type(e).__name__}: {e})", _FIX_COPY) from None
    if bad is not None:
        raise UserError(f"{show(path)} is a corrupt torch.save archive: member {show(bad)} fails its CRC-32 check",
                        _FIX_COPY)


def load_checkpoint(path: str | os.PathLike, trust_pickle: bool = False) -> Any:
    """The unpickled checkpoint object (tensors memory-mapped where the format allows).

    ``trust_pickle`` lifts the allowlist (``weights_only=False``): only for files whose origin you trust.
    """
    path = Path(path)
    kind = sniff(path)
    if kind == "pickle":
        raise UserError(f"{show(path)} is a plain pickle, not a torch checkpoint (Detectron2/caffe2 .pkl files "
                        "are already in Detectron2's format)",
                        "use it directly as MODEL.WEIGHTS, or convert the original .pth/.pth.tar instead")
    try:
        return torch_load(path, trust_pickle=trust_pickle, mmap=kind == "zip")
    except UserError as e:
        m = re.search(r"failed locating file (\S+): file not found", e.cause)
        if m:
            raise UserError(f"{show(path)} is an incomplete torch.save archive: member {m.group(1)} is missing",
                            _FIX_COPY) from None
        raise
