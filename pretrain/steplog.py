"""Step-keyed JSON-lines logs of a pretraining run: ``metrics.jsonl`` (the pretext task) and ``probe.jsonl``.

One record per line, each a JSON object with an integer ``"step"``. Appending fsyncs the line and
first closes a torn last line (a crash mid-write), reading skips torn or foreign lines, and a resumed
run drops the records of the steps it is about to redo (:func:`truncate_after`, temp file + rename),
so a log never holds two records of one step nor a record of a step the checkpoint does not hold.
A log that is not a regular file is refused when the run opens it (:func:`read_steps`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from infomin_det.atomic import write_text_atomic
from infomin_det.errors import UserError


def read_steps(path: Path) -> dict[int, dict[str, Any]]:
    """The records of ``path`` by step (a missing file is empty; a torn or foreign line is skipped).
    Anything but a regular file in its place (a directory, a FIFO, a symlink that could lead writes
    out of the run directory) is refused before a run writes to it."""
    out: dict[int, dict[str, Any]] = {}
    if os.path.lexists(path) and (path.is_symlink() or not path.is_file()):
        raise UserError(f"{path} is not a regular file (a directory, link or device is in its place)",
                        f"remove {path}; the run writes a fresh log")
    if not path.is_file():
        return out
    for line in path.read_text(errors="replace").splitlines():
        try:
            rec = json.loads(line)
            out[int(rec["step"])] = rec
        except (ValueError, KeyError, TypeError):
            continue
    return out


def append_step(path: Path, rec: dict[str, Any]) -> None:
    """Append one JSON line and fsync it (after closing a torn last line, if any)."""
    with open(path, "ab+") as f:
        f.seek(0, os.SEEK_END)
        torn = False
        if f.tell():
            f.seek(-1, os.SEEK_END)
            torn = f.read(1) != b"\n"
        f.write((b"\n" if torn else b"") + (json.dumps(rec) + "\n").encode())
        f.flush()
        os.fsync(f.fileno())


def truncate_after(path: Path, step: int) -> None:
    """Keep only the records of steps <= ``step`` (atomically; nothing to do if none is later)."""
    records = read_steps(path)
    if any(s > step for s in records):
        write_text_atomic(path, "".join(json.dumps(r) + "\n" for s, r in sorted(records.items()) if s <= step))
