"""The experiment's job registry: what was submitted, kept in ``<experiment>/launch/registry.json``.

One record per run (keyed by the run directory relative to the experiment directory): the spec's
plain fields (protocol, weights, seed, ...), facts about its inputs (``inputs``: e.g. the weights
file's sha256), output dir, worker, cluster, submitit folder, the command line that submitted it,
and every job id it has had (a re-submission appends). The file is replaced atomically on every
change, and intent is recorded *before* jobs are queued, so a crash at any point leaves a readable
registry that says what may have been submitted.

The registry is untrusted input: a truncated, binary, mistyped or unreadable file (or a directory in
its place) is a :class:`~infomin_det.errors.UserError` naming it, never a traceback.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from infomin_det.atomic import write_text_atomic
from infomin_det.errors import UserError
from infomin_det.untrusted import read_json

LAUNCH_DIR = "launch"
REGISTRY = "registry.json"
VERSION = 1
# spec fields a re-submission may change: the key already fixes the run directory
UNCOMPARED = ("output_dir",)
# job ids as each cluster writes them: SLURM 123 / 123_4, a local controller's PID, submitit's debug ids
_JOB_ID = {"slurm": re.compile(r"[0-9]+(_[0-9]+)?"), "local": re.compile(r"[0-9]+"),
           "debug": re.compile(r"[A-Za-z0-9_.-]+")}


@dataclass
class RunRecord:
    """One run as submitted. ``jobs``: ``[{"job_id": str | None, "cluster": str, "submitted": iso,
    "gpus": "CUDA_VISIBLE_DEVICES of a local job" (local jobs only)}]``."""

    key: str
    output_dir: str
    worker: str
    spec: dict[str, Any]
    command: list[str] = field(default_factory=list)
    submitit_folder: str = ""
    jobs: list[dict[str, Any]] = field(default_factory=list)
    inputs: dict[str, str] = field(default_factory=dict)

    @property
    def last_job(self) -> dict[str, Any] | None:
        return self.jobs[-1] if self.jobs else None

    def differences(self, worker: str, spec: Mapping[str, Any], inputs: Mapping[str, str]) -> list[str]:
        """``field: recorded -> now`` for every difference from a re-submission of the same run
        (the run directory is not compared; inputs only where both sides know them)."""
        diffs = [f"worker: {self.worker!r} -> {worker!r}"] if self.worker != worker else []
        for name in sorted(set(self.spec) | set(spec)):
            old, new = self.spec.get(name), spec.get(name)
            if name in UNCOMPARED or old == new:
                continue
            if name == "opts" and _pairs(old) is not None and _pairs(new) is not None:   # KEY VALUE overrides
                a, b = _pairs(old), _pairs(new)
                diffs += [f"override {k}: {a.get(k, '(none)')!r} -> {b.get(k, '(none)')!r}"
                          for k in dict.fromkeys([*a, *b]) if a.get(k) != b.get(k)] or [f"opts: {old!r} -> {new!r}"]
            else:
                diffs.append(f"{name}: {old!r} -> {new!r}")
        for name in sorted(set(self.inputs) & set(inputs)):
            if self.inputs[name] != inputs[name]:
                diffs.append(f"{name}: {self.inputs[name][:16]} -> {inputs[name][:16]}")
        return diffs


def _pairs(words: Any) -> dict[str, Any] | None:
    """``[KEY, VALUE, ...]`` as a dict (None if it is not such a list)."""
    if not isinstance(words, list) or len(words) % 2:
        return None
    return dict(zip(words[0::2], words[1::2]))


def spec_fields(spec: Any) -> dict[str, Any]:
    """The spec's plain fields for the record (``extra`` dropped; tuples as lists)."""
    if not dataclasses.is_dataclass(spec):
        return {"repr": repr(spec)}
    d = {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec) if f.name != "extra"}
    return json.loads(json.dumps(d, default=str))


def _record(key: Any, value: Any, path: Path) -> RunRecord:
    """A RunRecord from one registry entry, or a UserError saying which field of which run is wrong."""
    def bad(what: str) -> UserError:
        return UserError(f"job registry {path} is corrupted: run {str(key)[:80]!r} {what}",
                         f"restore {path} from a backup or move it away (run directories are untouched; "
                         "submitting again re-creates it)")

    if not isinstance(value, dict):
        raise bad(f"is a {type(value).__name__}, not an object")
    types = {"key": str, "output_dir": str, "worker": str, "spec": dict, "command": list,
             "submitit_folder": str, "jobs": list, "inputs": dict}
    required = ("key", "output_dir", "worker", "spec")
    for name in required:
        if name not in value:
            raise bad(f"has no {name!r}")
    for name, v in value.items():
        if name not in types:
            raise bad(f"has an unknown field {name!r}")
        if not isinstance(v, types[name]):
            raise bad(f"field {name!r} is a {type(v).__name__}, not a {types[name].__name__}")
    if value["key"] != key:
        raise bad(f"is filed under a different key ({value['key'][:80]!r})")
    if not all(isinstance(c, str) for c in value.get("command", [])):
        raise bad("has a non-string word in 'command'")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in value.get("inputs", {}).items()):
        raise bad("has a non-string entry in 'inputs'")
    for job in value.get("jobs", []):
        if not (isinstance(job, dict) and job.get("cluster") in _JOB_ID
                and (job.get("job_id") is None or (isinstance(job.get("job_id"), str)
                                                   and _JOB_ID[job["cluster"]].fullmatch(job["job_id"])))
                and isinstance(job.get("gpus", ""), str)):
            raise bad(f"has a malformed job entry {str(job)[:80]}")
    return RunRecord(**value)


class Registry:
    """Load / update / save the registry of one experiment directory."""

    def __init__(self, experiment_dir: str | Path) -> None:
        self.experiment_dir = Path(experiment_dir)
        self.path = self.experiment_dir / LAUNCH_DIR / REGISTRY
        self.runs: dict[str, RunRecord] = {}
        if self.exists():
            data = read_json(self.path, "job registry")
            if not isinstance(data, dict) or not isinstance(data.get("runs"), dict):
                raise UserError(f"job registry {self.path} is corrupted: not an object with a 'runs' object",
                                f"restore {self.path} from a backup or move it away (run directories are untouched)")
            if data.get("version") != VERSION:
                raise UserError(f"job registry {self.path} has version {data.get('version')!r}; this infomin-det "
                                f"reads version {VERSION}", "use the infomin-det that wrote it, or move it away")
            self.runs = {k: _record(k, v, self.path) for k, v in data["runs"].items()}

    def exists(self) -> bool:
        """Whether a registry is there (a directory or other non-file in its place is an error)."""
        try:
            st = self.path.stat()
        except (FileNotFoundError, NotADirectoryError):
            if self.path.parent.exists() and not self.path.parent.is_dir():
                raise UserError(f"{self.path.parent} is a file, not the experiment's launch directory",
                                "move it away; infomin-det keeps the job registry there") from None
            return False
        except OSError as e:
            raise UserError(f"cannot read the job registry {self.path}: {e.strerror}",
                            "check the permissions of the experiment directory") from None
        if not self.path.is_file():
            raise UserError(f"job registry {self.path} is not a file (mode {oct(st.st_mode)})",
                            "move it away; infomin-det writes the registry there")
        return True

    def key_for(self, output_dir: str | Path) -> str:
        out = Path(output_dir).resolve()
        try:
            rel = out.relative_to(self.experiment_dir.resolve()).as_posix()
        except ValueError:
            return out.as_posix()
        return out.name if rel == "." else rel      # a single run living in the experiment dir

    def save(self) -> None:
        data = {"version": VERSION, "runs": {k: dataclasses.asdict(r) for k, r in sorted(self.runs.items())}}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(self.path, json.dumps(data, indent=1) + "\n")
        except OSError as e:
            raise UserError(f"cannot write the job registry {self.path}: {e.strerror or e}",
                            "check that the experiment directory is writable (and not a file)") from None
