"""Reading Detectron2's evaluation results out of one output directory (DESIGN.md section 5).

Owns two readers, both pure stdlib:

* :func:`read_metrics_json` -- ``metrics.json`` JSON lines (bare ``NaN`` allowed), read **from the
  end**: the final result is the last record holding ``bbox/AP`` (so a resumed run's repeated
  iterations resolve to their last occurrence), and a run is finished only when that record is the
  final-evaluation line (eval keys only, no training scalars) with no training line after it.
  Only the tail back to that record is read and checked, so a 3 MB file costs one small read.
* :func:`read_copypaste` -- ``log.txt``'s ``copypaste:`` Task / header / values triples, for
  ``--eval-only`` runs that write nothing to metrics.json.

Metric values are percentages, keyed ``{dataset: {"bbox/AP": 40.6, ...}}`` with dataset ``""``
when Detectron2 wrote unprefixed keys (one test set). Per-class keys (``bbox/AP-person``) are dropped.
"""

from __future__ import annotations

import json
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


@dataclass
class MetricsFile:
    """What metrics.json says.

    final: the final evaluation (None when the run has not finished evaluating).
    last_iteration: iteration of the last complete record (-1 when the file has none).
    latest_eval: the most recent evaluation record of any kind (periodic included), and its iteration.
    restarted: training records follow the last evaluation record (a new attempt is running).
    warnings: tolerated damage (a truncated last line), always shown to the user.
    """

    final: Metrics | None = None
    final_iteration: int = -1
    last_iteration: int = -1
    latest_eval: Metrics | None = None
    latest_eval_iteration: int = -1
    empty: bool = False
    restarted: bool = False
    warnings: list[str] = field(default_factory=list)


def split_metrics(record: dict) -> Metrics:
    """``{"coco_val/bbox/AP": 40.1, "segm/AP50": 61.0, ...}`` -> ``{"coco_val": {"bbox/AP": 40.1}, "": {...}}``."""
    out: Metrics = {}
    for key, value in record.items():
        parts = key.rsplit("/", 2)
        if len(parts) < 2 or parts[-2] not in TASKS or "-" in parts[-1]:
            continue
        dataset = parts[0] if len(parts) == 3 else ""
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        out.setdefault(dataset, {})[f"{parts[-2]}/{parts[-1]}"] = float(value)
    return out


def _decode(line: bytes, path: Path, offset: int) -> dict:
    stripped = line.strip()
    bad = ParseError(f"{path}: the line at byte {offset} is not a JSON record: {stripped[:60]!r}",
                     "metrics.json must hold only Detectron2's JSON lines; restore it from the "
                     "run or delete the damaged line")
    if not (stripped.startswith(b"{") and stripped.endswith(b"}")):
        raise bad
    try:
        rec = json.loads(stripped)
    except ValueError:
        raise bad from None
    if not isinstance(rec, dict) or not isinstance(rec.get("iteration"), int):
        raise ParseError(f"{path}: the record at byte {offset} has no integer 'iteration'",
                         "metrics.json must hold only Detectron2's JSON lines")
    return rec


def read_metrics_json(path: str | os.PathLike) -> MetricsFile:
    """Parse ``metrics.json`` from its end; raise :class:`ParseError` on garbage in what is read."""
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
            if _scan(data, size - block, path, result):
                return result
            if block == size:
                return result
            block = min(size, block * 4)
            result.warnings.clear()
            result.last_iteration = -1


def _scan(data: bytes, start: int, path: Path, result: MetricsFile) -> bool:
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
        result.warnings.append(f"{path}: the last line (byte {pos}, {len(tail)} bytes) is truncated "
                               "and was ignored -- the run was stopped while writing it")
    training_after = False
    for i in range(len(lines) - 1, -1, -1):
        ln, off = lines[i], offsets[i]
        if not ln.strip():
            continue
        is_eval = _EVAL_MARK in ln
        if is_eval and i == 0 and start > 0:
            return False  # its predecessor is outside the block: read more
        if result.last_iteration < 0 or is_eval:
            rec = _decode(ln, path, off)
            if result.last_iteration < 0:
                result.last_iteration = rec["iteration"]
        if is_eval:
            metrics = split_metrics(rec)
            result.latest_eval, result.latest_eval_iteration = metrics, rec["iteration"]
            # the final evaluation is logged at MAX_ITER, after the last training record (MAX_ITER - 1);
            # an eval-only line of an earlier iteration (EVAL_PERIOD not a multiple of the writer
            # period) is a periodic evaluation
            before = _ITER.search(lines[i - 1]) if i > 0 else None
            is_final = not any(k in rec for k in _TRAINING_KEYS) and (
                before is None or int(before.group(1)) <= rec["iteration"])
            if is_final and not training_after:
                result.final, result.final_iteration = metrics, rec["iteration"]
            result.restarted = is_final and training_after
            return True
        if not (ln.lstrip().startswith(b"{") and ln.rstrip().endswith(b"}")):
            _decode(ln, path, off)  # raises with the byte offset
        training_after = True
    return start == 0


_COPY = re.compile(r"copypaste: (.*)$")
_EVAL_FOR = re.compile(r"Evaluation results for (\S+) in csv format:")


def read_copypaste(path: str | os.PathLike) -> Metrics | None:
    """The last evaluation printed in ``log.txt`` as ``copypaste:`` triples, or None if there is none.

    Each dataset's block starts at ``Evaluation results for <dataset> in csv format:``; a dataset
    seen again starts a new round (last round wins). One dataset -> key ``""`` (as metrics.json).
    """
    path = Path(path)
    raw = path.read_bytes()
    if b"copypaste:" not in raw:
        return None
    rounds: Metrics = {}
    dataset, task, header = "", None, None
    for line in raw.decode("utf-8", "replace").splitlines():
        m = _EVAL_FOR.search(line)
        if m:
            dataset = m.group(1)
            if dataset in rounds:
                rounds = {}
            continue
        m = _COPY.search(line)
        if not m:
            continue
        text = m.group(1).strip()
        if text.startswith("Task: "):
            task, header = text[6:].strip(), None
        elif task and header is None:
            header = text.split(",")
        elif task and header is not None:
            values = text.split(",")
            if len(values) != len(header):
                raise ParseError(f"{path}: copypaste values for task {task!r} have {len(values)} "
                                 f"fields, the header {len(header)}", "the log is damaged; re-run the evaluation")
            try:
                parsed = [float(v) for v in values]
            except ValueError:
                raise ParseError(f"{path}: copypaste values for task {task!r} are not numbers: {text[:60]!r}",
                                 "the log is damaged; re-run the evaluation") from None
            rounds.setdefault(dataset, {}).update({f"{task}/{h}": v for h, v in zip(header, parsed)})
            task, header = None, None
    if not rounds:
        return None
    if len(rounds) == 1:
        return {"": next(iter(rounds.values()))}
    return rounds
