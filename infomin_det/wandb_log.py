"""Optional Weights & Biases logging: ``--wandb PROJECT`` on ``train``, ``submit``, ``reproduce`` and
``pretrain``. Off unless asked for; ``wandb`` is never a requirement of the toolkit (asking for it
where it is not installed is refused before anything runs or is submitted).

* The W&B run lives in the run directory (``RUN/wandb/``: offline runs, logs) and its id in
  ``RUN/wandb_run_id``, so a resumed or requeued job continues the *same* W&B run.
* Scalars are logged against the run's own step (``iteration`` for fine-tuning, ``step`` for
  pretraining) through ``define_metric``, not W&B's internal step: a resumed run redoes the steps
  after its last checkpoint, and W&B drops rows whose internal step goes backwards.
* Only rank 0 logs. Online or offline is W&B's own choice (``WANDB_MODE=offline``, then
  ``wandb sync RUN/wandb/offline-run-*``); ``WANDB_ENTITY`` and the API key are read by W&B itself.

No detectron2 import (``pretrain/`` uses this module).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import secrets
import stat
from pathlib import Path
from typing import Any, Mapping

from infomin_det.atomic import write_text_atomic
from infomin_det.errors import UserError

#: the file in a run directory that holds its W&B run id
ID_FILE = "wandb_run_id"
_ID = re.compile(r"[a-z0-9]{8,64}")
_PROJECT_BAD = set("/\\#?%:") | {chr(c) for c in range(32)}
PROJECT_MAX = 128   # W&B's limit on project names


def add_argument(parser: argparse._ActionsContainer) -> None:
    """The one ``--wandb PROJECT`` flag (every command that trains declares it through this)."""
    parser.add_argument("--wandb", default="", metavar="PROJECT",
                        help="also log scalars to this Weights & Biases project (needs `pip install wandb`; "
                             "off by default; WANDB_MODE=offline keeps the W&B run in RUN/wandb/ only)")


def check(project: str) -> None:
    """Refuse a malformed project name, or ``--wandb`` where wandb cannot be imported ('' passes)."""
    if not isinstance(project, str):
        raise UserError(f"--wandb {project!r} is not a project name", "pass --wandb PROJECT (or leave it out)")
    if not project:
        return
    if len(project) > PROJECT_MAX or set(project) & _PROJECT_BAD or project != project.strip():
        raise UserError(f"--wandb {project[:60]!r} is not a W&B project name (at most {PROJECT_MAX} characters, "
                        "none of / \\ # ? % : or control characters, no surrounding spaces)",
                        "pass a plain project name, e.g. --wandb infomin-det")
    if importlib.util.find_spec("wandb") is None:
        raise UserError("--wandb needs the wandb package, which this Python cannot import",
                        "pip install wandb (the versions tested: pip install --no-deps -r requirements-wandb.lock), "
                        "or leave out --wandb")


def _stored_id(run_dir: Path) -> str:
    """The W&B run id kept in ``run_dir`` ('' if none); anything but a short id in a regular file is refused."""
    path = run_dir / ID_FILE
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return ""
    if not stat.S_ISREG(st.st_mode) or st.st_size > 256:
        raise UserError(f"{path} is not the W&B run id this toolkit writes (a {'regular file over 256 bytes' if stat.S_ISREG(st.st_mode) else 'directory, link or special file'})",
                        f"remove {path} (the next start opens a new W&B run)")
    text = path.read_text(errors="replace").strip()
    if not _ID.fullmatch(text):
        raise UserError(f"{path} holds {text[:40]!r}, not a W&B run id (8-64 lowercase letters or digits)",
                        f"remove {path} (the next start opens a new W&B run)")
    return text


class WandbScalars:
    """One W&B run for one run directory; ``log(values, step)`` writes one row."""

    def __init__(self, project: str, run_dir: str | os.PathLike, name: str, step_key: str,
                 config: Mapping[str, Any]) -> None:
        import wandb

        run_dir = Path(run_dir)
        stored = _stored_id(run_dir)
        run_id = stored or secrets.token_hex(8)
        try:
            self.run = wandb.init(project=project, name=name, id=run_id, resume="allow", dir=str(run_dir),
                                  config=dict(config), settings=wandb.Settings(console="off", silent=True))
        except Exception as e:  # wandb's own errors: no API key, no network in online mode, ...
            raise UserError(f"W&B could not start run {run_id} in project {project!r} ({type(e).__name__}: {e})",
                            "run `wandb login`, or set WANDB_MODE=offline (then `wandb sync` the run's wandb/ "
                            "folder), or leave out --wandb") from None
        if not stored:     # kept once W&B has started: a failed start leaves nothing behind
            write_text_atomic(run_dir / ID_FILE, run_id + "\n")
        self.step_key = step_key
        self.run.define_metric(step_key)
        self.run.define_metric("*", step_metric=step_key)

    def log(self, values: Mapping[str, float], step: int) -> None:
        self.run.log({self.step_key: int(step), **{k: float(v) for k, v in values.items()}})

    def flush(self) -> None:   # W&B streams by itself
        pass

    def close(self) -> None:   # once (Detectron2 closes its writers after training; the worker again on a crash)
        if self.run is not None:
            self.run.finish()
            self.run = None


class Scalars:
    """Fan-out of ``log`` / ``flush`` / ``close`` to several writers (TensorBoard's, :class:`WandbScalars`)."""

    def __init__(self, *writers: Any) -> None:
        self.writers = [w for w in writers if w is not None]

    def log(self, values: Mapping[str, float], step: int) -> None:
        """``values`` at ``step``: one W&B row, one TensorBoard scalar each."""
        for w in self.writers:
            if isinstance(w, WandbScalars):
                w.log(values, step)
            else:
                for tag, value in values.items():
                    w.add_scalar(tag, value, step)

    def flush(self) -> None:
        for w in self.writers:
            w.flush()

    def close(self) -> None:
        for w in self.writers:
            w.close()
