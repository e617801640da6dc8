"""Layout of one fine-tuning run on disk, and the ``run.json`` that says what the run is.

    <root>/<experiment>/<protocol>/<weights_name>/seed<k>/     (Detectron2 OUTPUT_DIR)
        run.json        RunInfo below (written by the trainer before training starts)
        config.yaml     merged Detectron2 config
        metrics.json    Detectron2 JSON lines (eval results; see report/)
        log.txt, last_checkpoint, model_*.pth

``protocol`` contains a slash (``coco/R50-FPN-1x``), so it spans two directory levels. The trainer
writes run.json; the launcher, status and report read it. No torch or detectron2 here.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from infomin_det.atomic import write_text_atomic
from infomin_det.errors import UserError

RUN_JSON = "run.json"
FINAL_RESULTS = "final_results.json"       # the final evaluation's results (the trainer writes it)
CUSTOM_PREFIX = "custom-"    # the variant of a run trained from a user's config file: custom-<file stem>
RANDOM_INIT = "random"       # weights name (row) of runs from no pretrained weights; also its --weights spelling
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


@dataclass
class RunInfo:
    """What a run is: protocol id, weight family (ssl | supervised | random), weights row name, seed.

    variant: the protocol variant ("" = the authors' leaf). dataset: what it trained and tested on --
    ``{"id": str, "paper": bool, "train": [names], "test": [names], "files": {role: {"path", "sha256"}}}``
    where ``paper`` is true only for the paper's own sets (COCO 2017, VOC 07+12 -> VOC 07 test) and
    ``id`` is a short label for tables. provenance: ``{"weights_sha256", "infomin_det", "git_commit",
    "torch", "detectron2", "world_size", "config_sha256"}`` so that a number can be traced.
    """

    experiment: str
    protocol: str
    family: str
    weights_name: str
    weights_path: str
    seed: int
    paper_table: str = ""
    command: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    variant: str = ""
    dataset: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)

    def write(self, out_dir: str | Path) -> None:
        write_text_atomic(Path(out_dir) / RUN_JSON, json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def read(cls, out_dir: str | Path) -> "RunInfo":
        d = json.loads((Path(out_dir) / RUN_JSON).read_text())
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})


def is_random_init(weights: str) -> bool:
    """Whether ``--weights`` asks for no pretrained weights: ``random`` (every command), or the
    older spellings ``none`` and ``''``. Internally such a run's weights are ``''``."""
    return weights in ("", "none", RANDOM_INIT)


def weights_name_of(weights: str) -> str:
    """The default row name of ``weights``: ``random`` for random init, else the file's stem."""
    return RANDOM_INIT if is_random_init(weights) else Path(weights).stem


def custom_variant(config_file: str) -> str:
    """The row suffix of runs trained from the user's ``config_file`` (``my.yaml`` -> ``custom-my``)."""
    return check_name("config file", CUSTOM_PREFIX + Path(config_file).stem)


def check_name(kind: str, name: str) -> str:
    """Refuse names that would escape or clutter the run tree (used for experiment/weights names)."""
    if not _NAME_RE.match(name):
        raise UserError(f"{kind} name {name!r} is not a plain name",
                        "use letters, digits, '.', '_', '+', '-' only (no slashes or spaces)")
    return name


def run_dir(root: str | Path, experiment: str, protocol: str, weights_name: str, seed: int,
            variant: str = "") -> Path:
    """``<root>/<experiment>/<protocol>/<weights_name>[+<variant>]/seed<seed>`` (a protocol variant
    is its own row, so its runs get their own directories)."""
    check_name("experiment", experiment)
    check_name("weights", weights_name)
    if variant:
        check_name("variant", variant)
    parts = protocol.split("/")
    for p in parts:
        check_name("protocol part", p)
    return Path(root, experiment, *parts, f"{weights_name}+{variant}" if variant else weights_name, f"seed{seed}")
