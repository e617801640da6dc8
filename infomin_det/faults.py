"""Named points where a test can interrupt a run, to prove that every interruption resumes exactly.

``INFOMIN_DET_FAULT=<site>:<n>:<ACTION>`` acts the ``n``-th time the process passes ``point(site)``:
ACTION is a signal name (``INT``, ``KILL``, ``USR2``, ...: the process sends it to itself) or
``PAUSE<seconds>`` (write ``<site> <n>`` to the file ``$INFOMIN_DET_FAULT_MARK``, then sleep: time
for a test to signal the job from outside, e.g. ``scancel --signal=USR2``). Faults act only in a
job's first attempt (not after a SLURM requeue). Sites: ``step`` (before an iteration), ``save`` (a
checkpoint written to its temporary file, not yet renamed), ``eval`` (an evaluation computed, not yet
recorded). Unset -- always, outside tests -- ``point`` costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal
import time

_ENV = "INFOMIN_DET_FAULT"
_seen: dict[str, int] = {}


def point(site: str) -> None:
    spec = os.environ.get(_ENV)
    if not spec or os.environ.get("SLURM_RESTART_COUNT", "0") not in ("", "0"):
        return
    want, _, rest = spec.partition(":")
    if want != site:
        return
    n, _, action = rest.partition(":")
    _seen[site] = _seen.get(site, 0) + 1
    if _seen[site] != int(n):
        return
    if action.upper().startswith("PAUSE"):
        mark = os.environ.get(f"{_ENV}_MARK")
        if mark:
            with open(mark, "w") as f:
                f.write(f"{site} {n}\n")
        time.sleep(float(action[len("PAUSE"):] or 10))
        return
    os.kill(os.getpid(), getattr(signal, f"SIG{action.upper().removeprefix('SIG')}"))
