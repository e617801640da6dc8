"""Range checks for the numbers pretraining, linear evaluation and the supervised baseline take.

Each check raises one :class:`UserError` naming the command-line flag, the value and the valid
range, so every spec refuses a bad number before any process starts or any file is written.
"""

from __future__ import annotations

import math

from infomin_det.errors import UserError

MIN_IMAGE_SIZE = 32      # a ResNet downsamples 32x: smaller inputs have no spatial extent left
MAX_IMAGE_SIZE = 1024    # the paper trains at 224; beyond this a batch no longer fits in memory
MAX_SEED = 2**31 - 1
MAX_WORKERS = 256
MAX_QUEUE = 2**20        # 128 x 2^20 float32 keys = 512 MiB on every GPU


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def integer(name: str, value: object, lo: int, hi: int | None = None, why: str = "") -> None:
    """``lo <= value <= hi`` for an int (bools refused)."""
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= lo and (hi is None or value <= hi)
    if not ok:
        rng = f">= {lo}" if hi is None else f"in {lo}..{hi}"
        raise UserError(f"{flag(name)} {value!r} must be an integer {rng}{f' ({why})' if why else ''}",
                        f"pass {flag(name)} with a value {rng}")


def number(name: str, value: object, lo: float, hi: float = math.inf, *, lo_open: bool = False,
           hi_open: bool = False, hint: str = "") -> None:
    """A finite float in [lo, hi] (``lo_open`` / ``hi_open``: that end excluded); NaN / inf refused."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value > lo if lo_open else value >= lo) and (value < hi if hi_open else value <= hi)
    if not ok:
        left, right = "(" if lo_open else "[", ")" if hi_open or hi == math.inf else "]"
        rng = f"{left}{lo:g}, {'inf' if hi == math.inf else f'{hi:g}'}{right}"
        raise UserError(f"{flag(name)} {value!r} must be a finite number in {rng}",
                        f"pass {flag(name)} in {rng}{f' ({hint})' if hint else ''}")


def image_size(value: object) -> None:
    integer("image_size", value, MIN_IMAGE_SIZE, MAX_IMAGE_SIZE, "pixels per side; the paper uses 224")


def seed(value: object) -> None:
    integer("seed", value, 0, MAX_SEED)


def workers(value: object) -> None:
    integer("workers", value, 0, MAX_WORKERS, "data-loading processes; 0 loads in the training process")


def threads(value: object, local: bool) -> None:
    """Torch threads per process; on this machine (``local``) at most its CPU count."""
    from infomin_det.dist import cores

    n = cores()
    integer("threads", value, 1, n if local else None,
            "torch threads per process" + (f"; this machine has {n} cores" if local else ""))
