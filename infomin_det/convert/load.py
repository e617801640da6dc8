"""Reading a foreign checkpoint safely: file checks, format sniffing, ``weights_only`` loading.

Foreign checkpoints are untrusted pickles: they are loaded by :func:`infomin_det.untrusted.torch_load`
(``weights_only=True`` plus a minimal allowlist); anything else needs an explicit ``trust_pickle=True``.
Every failure is a :class:`~infomin_det.errors.UserError` with a one-line cause and fix.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from pathlib import Path
from typing import Any

from infomin_det.errors import UserError
from infomin_det.untrusted import torch_load

# The first bytes of a legacy (pre-1.6, non-zip) ``torch.save`` file: the pickled magic number.
_LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"
_ZIP_MAGIC = b"PK\x03\x04"


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file, read in 4 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sniff(path: Path) -> str:
    """'zip' (torch.save >= 1.6), 'legacy-torch', 'pickle' (plain pickle) or 'unknown'.

    Raises UserError for a missing path, a directory, an empty file or a truncated zip.
    """
    if not path.exists():
        raise UserError(f"{path}: no such file", "check the path of the source checkpoint")
    if path.is_dir():
        raise UserError(f"{path} is a directory, not a checkpoint file", "pass the checkpoint file itself")
    if path.stat().st_size == 0:
        raise UserError(f"{path} is empty (0 bytes)", "copy or download the checkpoint again")
    with open(path, "rb") as f:
        head = f.read(len(_LEGACY_TORCH_MAGIC))
    if head.startswith(_ZIP_MAGIC):
        if not zipfile.is_zipfile(path):
            raise UserError(f"{path} is a truncated or corrupt torch.save archive (no zip central directory)",
                            "copy or download the checkpoint again and compare its sha256")
        return "zip"
    if head == _LEGACY_TORCH_MAGIC:
        return "legacy-torch"
    if head[:1] == b"\x80" or head[:1] in (b"(", b"}", b"]"):
        return "pickle"
    return "unknown"


def load_checkpoint(path: str | os.PathLike, trust_pickle: bool = False) -> Any:
    """The unpickled checkpoint object (tensors memory-mapped where the format allows).

    ``trust_pickle`` lifts the allowlist (``weights_only=False``): only for files whose origin you trust.
    """
    path = Path(path)
    kind = sniff(path)
    if kind == "pickle":
        raise UserError(f"{path} is a plain pickle, not a torch checkpoint (Detectron2/caffe2 .pkl files "
                        "are already in Detectron2's format)",
                        "use it directly as MODEL.WEIGHTS, or convert the original .pth/.pth.tar instead")
    if kind == "unknown":
        raise UserError(f"{path} is not a checkpoint (neither a torch.save archive nor a pickle)",
                        "pass the .pth/.pth.tar/.ckpt file written by torch.save")
    return torch_load(path, trust_pickle=trust_pickle, mmap=kind == "zip")
