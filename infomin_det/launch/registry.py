"""The experiment's job registry: what was submitted, kept in ``<experiment>/launch/registry.json``.

One record per run (keyed by the run directory relative to the experiment directory): the spec's
plain fields (protocol, weights, seed, ...), output dir, worker, cluster, submitit folder, the
command line that submitted it, and every job id it has had (a re-submission appends). The file is
replaced atomically on every change, and intent is recorded *before* jobs are queued, so a crash at
any point leaves a readable registry that says what may have been submitted.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infomin_det.atomic import write_text_atomic
from infomin_det.errors import UserError

LAUNCH_DIR = "launch"
REGISTRY = "registry.json"
VERSION = 1


@dataclass
class RunRecord:
    """One run as submitted. ``jobs``: ``[{"job_id": str | None, "cluster": str, "submitted": iso}]``."""

    key: str
    output_dir: str
    worker: str
    spec: dict[str, Any]
    command: list[str] = field(default_factory=list)
    submitit_folder: str = ""
    jobs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def last_job(self) -> dict[str, Any] | None:
        return self.jobs[-1] if self.jobs else None


def spec_fields(spec: Any) -> dict[str, Any]:
    """The spec's plain fields for the record (``extra`` dropped; tuples as lists)."""
    if not dataclasses.is_dataclass(spec):
        return {"repr": repr(spec)}
    d = {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec) if f.name != "extra"}
    return json.loads(json.dumps(d, default=str))


class Registry:
    """Load / update / save the registry of one experiment directory."""

    def __init__(self, experiment_dir: str | Path) -> None:
        self.experiment_dir = Path(experiment_dir)
        self.path = self.experiment_dir / LAUNCH_DIR / REGISTRY
        self.runs: dict[str, RunRecord] = {}
        if self.path.exists():
            try:
                data = json.loads(self.path.read_text())
                self.runs = {k: RunRecord(**v) for k, v in data["runs"].items()}
            except (ValueError, KeyError, TypeError) as e:
                raise UserError(f"job registry {self.path} is unreadable: {e}",
                                "restore it or move it away (run directories are untouched)") from e

    def exists(self) -> bool:
        return self.path.exists()

    def key_for(self, output_dir: str | Path) -> str:
        out = Path(output_dir).resolve()
        try:
            rel = out.relative_to(self.experiment_dir.resolve()).as_posix()
        except ValueError:
            return out.as_posix()
        return out.name if rel == "." else rel      # a single run living in the experiment dir

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = {"version": VERSION, "runs": {k: dataclasses.asdict(r) for k, r in sorted(self.runs.items())}}
        write_text_atomic(self.path, json.dumps(data, indent=1) + "\n")
