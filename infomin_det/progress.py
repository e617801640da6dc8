"""A run's progress as a file anyone can poll: ``progress.json`` in the run directory.

The run's main process writes it (fine-tuning: the hook :class:`infomin_det.engine.hooks.WriteProgress`;
pretraining: its step loop; the launcher's self-test), atomically, at most every ``every_s`` seconds
and always at the last step. ``infomin-det status`` shows it (step / total, ETA), and
``status --watch``, ``submit --wait`` and the demo show it live. The ETA is this attempt's own pace:
steps a resumed run inherited from its checkpoint do not make it look faster::

    {"step": 120, "total": 1000, "attempt_start": 1764660000.0, "attempt_first_step": 100,
     "updated": 1764660060.0}

A missing, garbled or inconsistent file reads as no progress (``None``), never as an error: it is a
display, not a record (results live in ``final_results.json`` / ``launch_result.json``).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from infomin_det.atomic import write_text_atomic

PROGRESS_FILE = "progress.json"
MAX_BYTES = 4096        # a record is ~150 bytes; anything larger is not one


@dataclass(frozen=True)
class Progress:
    step: int
    total: int
    eta_s: float | None      # None: no step finished in this attempt yet
    updated: float           # unix time of the write

    def text(self) -> str:
        """``step 120/1000 (12%), ETA 3m05s``."""
        pct = 100 * self.step // self.total if self.total else 0
        eta = f", ETA {fmt_duration(self.eta_s)}" if self.eta_s is not None and self.step < self.total else ""
        return f"step {self.step}/{self.total} ({pct}%){eta}"


def fmt_duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``2h07m``, ``3d04h``."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


class ProgressWriter:
    """``update(step)`` after each step; writes at most every ``every_s`` seconds, and at ``total``.
    A write that fails (disk full, directory gone) is dropped: progress must never stop a run."""

    def __init__(self, output_dir: str | Path, total: int, first_step: int = 0, every_s: float = 5.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.path = Path(output_dir) / PROGRESS_FILE
        self.total, self.first_step, self.every_s, self.clock = int(total), int(first_step), every_s, clock
        self.start = clock()
        self.last_write = -math.inf
        self.update(first_step, force=True)

    def update(self, step: int, force: bool = False) -> None:
        now = self.clock()
        if not (force or step >= self.total or now - self.last_write >= self.every_s):
            return
        self.last_write = now
        record = {"step": int(step), "total": self.total, "attempt_start": self.start,
                  "attempt_first_step": self.first_step, "updated": now}
        try:
            write_text_atomic(self.path, json.dumps(record) + "\n")
        except OSError:
            pass


def _int(x: object) -> int | None:
    return x if isinstance(x, int) and not isinstance(x, bool) and x >= 0 else None


def _time(x: object) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


def read_progress(output_dir: str | Path) -> Progress | None:
    """The run's last written progress, or None (no file, unreadable, or not a consistent record)."""
    path = Path(output_dir) / PROGRESS_FILE
    try:
        if not path.is_file():          # a FIFO or /dev/zero in its place is not read
            return None
        with open(path, "rb") as f:
            raw = f.read(MAX_BYTES + 1)
        if len(raw) > MAX_BYTES:
            return None
        d = json.loads(raw.decode("utf-8"))
    except (OSError, ValueError, UnicodeDecodeError, RecursionError):
        return None
    if not isinstance(d, dict):
        return None
    step, total, first = _int(d.get("step")), _int(d.get("total")), _int(d.get("attempt_first_step"))
    start, updated = _time(d.get("attempt_start")), _time(d.get("updated"))
    if None in (step, total, first, start, updated) or not first <= step <= total or total == 0 or updated < start:
        return None
    done_here = step - first
    eta = (total - step) * (updated - start) / done_here if done_here > 0 else None
    return Progress(step, total, eta, updated)
