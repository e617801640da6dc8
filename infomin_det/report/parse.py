"""Reading Detectron2's evaluation results out of one output directory.

Owns the readers of what Detectron2 writes, all pure stdlib and all reading **from the end** of the
file (a 90k-iteration run's metrics.json is 3-4 MB, its log.txt 1-2 MB; the answer is in the tail):

* :func:`read_metrics_json` -- ``metrics.json`` JSON lines. The final result is the last record
  holding ``bbox/AP`` at iteration ``>= MAX_ITER - 1`` (a periodic evaluation is logged at
  ``k * EVAL_PERIOD - 1 < MAX_ITER - 1``); without a known MAX_ITER, the last record holding eval
  keys only and no training record after it (the caller then also asks for ``model_final.pth``).
  A resumed run's repeated iterations resolve to their last occurrence.
* :func:`read_log` -- ``log.txt``: the last iteration line, Detectron2's crash marker
  (``Exception during training:`` from ``TrainerBase.train``, or a traceback after the last
  iteration line), and the ``copypaste:`` Task / header / values triples logged after the last
  iteration line (the final evaluation, or an ``--eval-only`` run's).

Values (:func:`check_value`): metric values are percentages in [0, 100] or NaN. Detectron2 writes a
bare ``NaN`` when the model made no predictions (every metric) and for APs/APm/APl when COCOeval
gives -1 (no ground truth of that size). Strings, null, booleans, +-Infinity, nested values or
numbers outside [0, 100] in a summary key are a :class:`ParseError` naming the file, place and key.
Metrics are keyed ``{dataset: {"bbox/AP": 40.6, ...}}`` with dataset ``""`` when Detectron2 wrote
unprefixed keys (one test set). Per-class keys (``bbox/AP-person``) are dropped unread.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

TASKS = ("bbox", "segm", "keypoints")
_TRAINING_KEYS = ("total_loss", "lr")
_EVAL_MARK = b'bbox/AP"'
_TAIL = 1 << 14
_ITER = re.compile(rb'"iteration": (\d+)')

Metrics = dict[str, dict[str, float]]


class ParseError(Exception):
    """A results file that cannot be read honestly. ``cause`` names the file and place; ``fix`` what to do."""

    def __init__(self, cause: str, fix: str) -> None:
        super().__init__(cause)
        self.cause, self.fix = cause, fix


def short(value: object, limit: int = 60) -> str:
    """``repr`` of a value read from a file, cut to ``limit`` characters (never walks a huge nest)."""
    if isinstance(value, (dict, list, tuple)):
        return f"a {type(value).__name__} of {len(value)} items"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_value(key: str, value: object, where: str) -> float:
    """A metric value as float (NaN kept); ParseError for anything that is not a percentage or NaN."""
    fix = "the file is damaged or was not written by Detectron2; restore it or re-run the evaluation"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ParseError(f"{where}: {key} is {short(value)}, not a number", fix)
    v = float(value)
    if math.isnan(v):
        return v
    if math.isinf(v) or not 0.0 <= v <= 100.0:
        raise ParseError(f"{where}: {key} is {short(value)}, not a percentage in [0, 100] (or NaN)", fix)
    return v


def _json_constant(name: str) -> float:
    # bare NaN is Detectron2's; +-Infinity is kept here and refused by check_value with its key named
    return float(name.replace("Infinity", "inf"))


@dataclass
class MetricsFile:
    """What metrics.json says.

    final: the final evaluation (None when the run has not finished evaluating).
    last_iteration: iteration of the last complete record (-1 when the file has none).
    latest_eval: the most recent evaluation record of any kind (periodic included), and its iteration.
    restarted: training records of earlier iterations follow the last final evaluation (a new attempt).
    warnings: tolerated damage (a truncated last line), always shown to the user.
    """

    final: Metrics | None = None
    final_iteration: int = -1
    last_iteration: int = -1
    latest_eval: Metrics | None = None
    latest_eval_iteration: int = -1
    empty: bool = False
    restarted: bool = False
    truncated: bool = False
    warnings: list[str] = field(default_factory=list)


def split_metrics(record: dict, where: str = "record") -> Metrics:
    """``{"coco_val/bbox/AP": 40.1, "segm/AP50": 61.0, ...}`` -> ``{"coco_val": {"bbox/AP": 40.1}, "": {...}}``."""
    out: Metrics = {}
    for key, value in record.items():
        parts = key.rsplit("/", 2)
        if len(parts) < 2 or parts[-2] not in TASKS or "-" in parts[-1]:
            continue
        dataset = parts[0] if len(parts) == 3 else ""
        out.setdefault(dataset, {})[f"{parts[-2]}/{parts[-1]}"] = check_value(key, value, where)
    return out


def _decode(line: bytes, path: Path, offset: int) -> dict:
    stripped = line.strip()
    bad = ParseError(f"{path}: the line at byte {offset} is not a JSON record: {stripped[:60]!r}",
                     "metrics.json must hold only Detectron2's JSON lines; restore it from the "
                     "run or delete the damaged line")
    if not (stripped.startswith(b"{") and stripped.endswith(b"}")):
        raise bad
    try:
        rec = json.loads(stripped, parse_constant=_json_constant)
    except (ValueError, RecursionError):
        raise bad from None
    it = rec.get("iteration") if isinstance(rec, dict) else None
    if isinstance(it, bool) or not isinstance(it, int) or it < 0:
        raise ParseError(f"{path}: the record at byte {offset} has no non-negative integer 'iteration' "
                         f"({short(it)})", "metrics.json must hold only Detectron2's JSON lines")
    return rec


def read_metrics_json(path: str | os.PathLike, max_iter: int | None = None) -> MetricsFile:
    """Parse ``metrics.json`` from its end; raise :class:`ParseError` on garbage in what is read.

    ``max_iter``: the run's SOLVER.MAX_ITER (from config.yaml), which tells the final evaluation
    from a periodic one; None when unknown (see the module docstring).
    """
    path = Path(path)
    size = path.stat().st_size
    result = MetricsFile()
    if size == 0:
        result.empty = True
        return result
    block = min(size, _TAIL)
    with open(path, "rb") as f:
        while True:
            f.seek(size - block)
            data = f.read(block)
            if _scan(data, size - block, path, result, max_iter):
                return result
            if block == size:
                return result
            block = min(size, block * 4)
            result.warnings.clear()
            result.last_iteration = -1
            result.truncated = False


def _scan(data: bytes, start: int, path: Path, result: MetricsFile, max_iter: int | None) -> bool:
    """Walk the lines of ``data`` (which begins at byte ``start``) backwards. True when decided."""
    lines = data.split(b"\n")
    ends_complete = data.endswith(b"\n")
    tail = lines.pop()  # after the last newline: b"" when the file ends with one
    offsets, pos = [], start
    for ln in lines:
        offsets.append(pos)
        pos += len(ln) + 1
    if start > 0:  # the first piece began before the block: incomplete, skip it
        lines, offsets = lines[1:], offsets[1:]
    if not ends_complete and tail.strip():
        result.truncated = True
        result.warnings.append(f"{path}: the last line (byte {pos}, {len(tail)} bytes) is truncated "
                               "and was ignored -- the run was stopped while writing it")
    training_after = False   # a training record follows (heuristic without max_iter)
    went_back = False        # a record of an iteration < max_iter - 1 follows (a new attempt)
    for i in range(len(lines) - 1, -1, -1):
        ln, off = lines[i], offsets[i]
        if not ln.strip():
            continue
        is_eval = _EVAL_MARK in ln
        if is_eval and i == 0 and start > 0:
            return False  # its predecessor is outside the block: read more
        if not (ln.lstrip().startswith(b"{") and ln.rstrip().endswith(b"}")):
            _decode(ln, path, off)  # raises with the byte offset
        if result.last_iteration < 0 or is_eval:
            rec = _decode(ln, path, off)
            if result.last_iteration < 0:
                result.last_iteration = rec["iteration"]
        if not is_eval:
            training_after = True
            if max_iter is not None:
                m = _ITER.search(ln)
                if m is None or int(m.group(1)) < max_iter - 1:
                    went_back = True
            continue
        metrics = split_metrics(rec, f"{path}: the record at byte {off}")
        result.latest_eval, result.latest_eval_iteration = metrics, rec["iteration"]
        if max_iter is not None:
            is_final = rec["iteration"] >= max_iter - 1
            after = went_back
        else:
            # the final evaluation is logged at MAX_ITER, after the last training record (MAX_ITER - 1);
            # an eval-only line of an earlier iteration (EVAL_PERIOD not a multiple of the writer
            # period) is a periodic evaluation
            before = _ITER.search(lines[i - 1]) if i > 0 else None
            is_final = not any(k in rec for k in _TRAINING_KEYS) and (
                before is None or int(before.group(1)) <= rec["iteration"])
            after = training_after
        if is_final and not after:
            result.final, result.final_iteration = metrics, rec["iteration"]
        result.restarted = is_final and after
        return True
    return start == 0


# ---------------------------------------------------------------------------------------------
# log.txt

_COPY = re.compile(r"copypaste: (.*)$")
_EVAL_FOR = re.compile(r"Evaluation results for (\S+) in csv format:")
_NUMBER = re.compile(r"^(nan|\d+(\.\d+)?)$")
_HEADER = re.compile(r"^[A-Za-z0-9]+$")
_ITER_LINE = re.compile(rb" iter: (\d+) ")
_START = b"Starting training from iteration "
_D2_CRASH = b"Exception during training:"
_TRACEBACK = b"Traceback (most recent call last):"
_LOG_LINE = re.compile(rb"^\[\d\d/\d\d \d\d:\d\d:\d\d")
LOG_MARGIN = 1 << 15   # bytes before the last iteration line searched for the crash marker
LOG_CAP = 1 << 26      # a log without iteration lines is read back at most this far


@dataclass
class LogTail:
    """What the end of log.txt says.

    results: the last complete ``copypaste:`` round after the last iteration line (the whole log
        when it has no iteration lines: an ``--eval-only`` run), else None.
    trained: the log has iteration lines; last_iteration: the last one's number (-1 without).
    crash: the exception that ended the last attempt (``"RuntimeError: CUDA out of memory"``), or "".
    """

    results: Metrics | None = None
    trained: bool = False
    last_iteration: int = -1
    crash: str = ""


def read_log(path: str | os.PathLike) -> LogTail:
    """Read ``log.txt`` from its end (see :class:`LogTail`); ParseError for damaged copypaste lines."""
    path = Path(path)
    size = path.stat().st_size
    out = LogTail()
    if size == 0:
        return out
    block = min(size, _TAIL * 4)
    with open(path, "rb") as f:
        while True:
            f.seek(size - block)
            data = f.read(block)
            it_pos, it = _last_iteration_line(data, skip_first=block < size)
            if it_pos >= 0 and (it_pos >= LOG_MARGIN or block == size):
                break
            if block == size or (it_pos < 0 and block >= LOG_CAP):
                break
            block = min(size, block * 4)
    if it_pos >= 0:
        out.trained, out.last_iteration = True, it
        after = data[data.find(b"\n", it_pos) + 1:] if data.find(b"\n", it_pos) >= 0 else b""
    else:
        after = data if block == size else data[data.find(b"\n") + 1:]
    # Detectron2's marker counts when no attempt started after it (after it, TrainerBase's finally
    # still logs "Total training time" and one more iteration line); any other traceback counts
    # when it follows the last iteration line
    start = data.rfind(_START)
    crash = data.rfind(_D2_CRASH)
    if crash < start:
        tb = data.rfind(_TRACEBACK)
        crash = tb if tb > max(it_pos, start) else -1
    if crash >= 0:
        out.crash = _exception_line(data[crash:])
    out.results = _copypaste(after.decode("utf-8", "replace"), path)
    return out


def _last_iteration_line(data: bytes, skip_first: bool) -> tuple[int, int]:
    """(byte offset of the start of the last ``iter: N`` line in ``data``, N), or (-1, -1)."""
    first_nl = data.find(b"\n") if skip_first else -1
    end = len(data)
    while True:
        pos = data.rfind(b" iter: ", 0, end)
        if pos < 0 or pos <= first_nl:
            return -1, -1
        line_start = data.rfind(b"\n", 0, pos) + 1
        line_end = data.find(b"\n", pos)
        line = data[line_start: line_end if line_end >= 0 else len(data)]
        m = _ITER_LINE.search(line + b" ")
        if m and b" INFO: " in line:
            return line_start, int(m.group(1))
        end = pos


def _exception_line(text: bytes) -> str:
    """The ``Type: message`` line that ends the (last) traceback in ``text``."""
    lines = text.decode("utf-8", "replace").splitlines()[1:]
    cause = ""
    for ln in lines:
        if _LOG_LINE.match(ln.encode()):
            break
        s = ln.rstrip()
        if not s or s[0].isspace() or s.startswith(("Traceback", "During handling", "The above exception")):
            continue
        cause = s
    return (cause or "an exception (see log.txt)")[:200]


def _copypaste(text: str, path: Path) -> Metrics | None:
    """The last evaluation printed as ``copypaste:`` triples in ``text``, or None if there is none.

    Each dataset's block starts at ``Evaluation results for <dataset> in csv format:``; a dataset
    seen again starts a new round (last round wins). One dataset -> key ``""`` (as metrics.json).
    """
    if "copypaste:" not in text:
        return None
    fix = "the log is damaged; re-run the evaluation (infomin-det train ... --eval-only)"
    rounds: Metrics = {}
    dataset, task, header = "", None, None
    for line in text.splitlines():
        if "copypaste: " not in line and " in csv format:" not in line:
            continue
        m = _EVAL_FOR.search(line)
        if m:
            dataset = m.group(1)
            if dataset in rounds:
                rounds = {}
            continue
        m = _COPY.search(line)
        if not m:
            continue
        body = m.group(1).strip()
        if body.startswith("Task: "):
            task, header = body[6:].strip(), None
        elif task and header is None:
            header = body.split(",")
            if not all(_HEADER.match(h) for h in header) or len(set(header)) != len(header):
                raise ParseError(f"{path}: copypaste header for task {task!r} is not a list of metric "
                                 f"names: {body[:60]!r}", fix)
        elif task and header is not None:
            values = body.split(",")
            if len(values) != len(header):
                raise ParseError(f"{path}: copypaste values for task {task!r} have {len(values)} "
                                 f"fields, the header {len(header)}", fix)
            bad = next((v for v in values if not _NUMBER.match(v.strip())), None)
            if bad is not None:
                raise ParseError(f"{path}: copypaste value {bad.strip()[:30]!r} for task {task!r} is not "
                                 "a number (Detectron2 prints 4 decimals, or nan)", fix)
            if task in TASKS:
                where = f"{path}: copypaste for task {task}"
                rounds.setdefault(dataset, {}).update(
                    {f"{task}/{h}": check_value(f"{task}/{h}", float(v), where) for h, v in zip(header, values)})
            task, header = None, None
    if not rounds:
        return None
    if len(rounds) == 1:
        return {"": next(iter(rounds.values()))}
    return rounds
