"""Finding runs and reading one run directory into a :class:`Run` (status + metrics + identity).

A run directory is any directory holding ``metrics.json``, ``log.txt`` or ``run.json``
(Detectron2's OUTPUT_DIR, plus our ``run.json``). :func:`find_runs` walks the given paths
recursively and, for an experiment directory with a job registry (``launch/registry.json``), adds
the registered runs that have no directory yet as ``pending``.

Identity (protocol, weights row name, seed) comes from ``run.json``; without it, from the directory
layout ``.../<protocol>/<weights>/seed<k>`` and then from ``config.yaml``; a run whose protocol
cannot be told is ``failed`` with the missing file/field named -- never guessed.
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from infomin_det.errors import UserError
from infomin_det.protocols import list_protocols
from infomin_det.report.parse import Metrics, ParseError, read_copypaste, read_metrics_json

RUN_FILES = ("metrics.json", "log.txt", "run.json")
REGISTRY = Path("launch") / "registry.json"
DEFAULT_ROOT = "runs"

PROTOCOLS = frozenset(p.id for p in list_protocols())  # ids of transfer_configs/<id>.<family>.yaml
_SCHEDULES = {90000: "1x", 180000: "2x", 540000: "6x"}
_SEED_DIR = re.compile(r"^seed(\d+)$")

DONE, IN_PROGRESS, FAILED, PENDING = "done", "in-progress", "failed", "pending"


@dataclass
class Run:
    """One fine-tuning run as the report sees it.

    status: ``done`` (final metrics present) | ``in-progress`` (not finished; ``reason`` says how far)
    | ``failed`` (cannot be read; ``reason`` + ``fix``) | ``pending`` (registered, no directory yet).
    metrics: ``{dataset: {"bbox/AP": 40.6, ...}}`` in percent, only for ``done`` runs.
    identity_from: where protocol / weights / seed were read (``run.json``, ``directory``, ``config.yaml``).
    """

    path: Path
    status: str
    protocol: str = ""
    weights: str = ""
    seed: int | None = None
    family: str = ""
    experiment: str = ""
    metrics: Metrics = field(default_factory=dict)
    reason: str = ""
    fix: str = ""
    identity_from: str = ""
    last_iteration: int = -1
    warnings: list[str] = field(default_factory=list)


def find_runs(paths: list[str | os.PathLike]) -> list[Run]:
    """All runs under ``paths`` (run dirs, experiment dirs, or experiment names under ``./runs``).

    Raises :class:`UserError` for a path that does not exist or holds no run at all.
    """
    dirs: set[Path] = set()
    pending: dict[Path, Run] = {}
    for p in paths:
        top = _resolve(p)
        found = {Path(d).resolve() for d in _run_dirs(top)}
        registered = _registry_pending(top, found | dirs)
        if not found and not registered:
            raise UserError(f"no runs under {p}: no directory there holds metrics.json, log.txt or run.json",
                            "point at a run directory (Detectron2 OUTPUT_DIR) or an experiment directory")
        dirs |= found
        pending.update((r.path, r) for r in registered)
    from tqdm import tqdm

    progress = tqdm(sorted(dirs), desc="reading runs", unit="run", leave=False,
                    disable=len(dirs) < 200 or not sys.stderr.isatty())
    return [load_run(d) for d in progress] + [pending[k] for k in sorted(pending) if k not in dirs]


def _resolve(p: str | os.PathLike) -> Path:
    path = Path(p)
    if path.exists():
        return path
    alt = Path(DEFAULT_ROOT) / path
    if not path.is_absolute() and alt.is_dir():
        return alt
    raise UserError(f"{p} does not exist (neither as a path nor as an experiment under ./{DEFAULT_ROOT})",
                    "give a run directory, an experiment directory, or an experiment name")


def _run_dirs(top: Path):
    if top.is_file():
        top = top.parent
    for dirpath, dirnames, filenames in os.walk(top):
        if any(f in filenames for f in RUN_FILES):
            dirnames[:] = []
            yield dirpath
        else:
            dirnames.sort()


def _registry_pending(top: Path, known: set[Path]) -> list[Run]:
    """Registered runs of the experiment at ``top`` whose directory has no results files yet."""
    reg = top / REGISTRY
    if not reg.is_file():
        return []
    try:
        records = json.loads(reg.read_text())["runs"]
        out = []
        for key, rec in records.items():
            d = Path(rec.get("output_dir") or top / key).resolve()
            if d in known or any((d / f).exists() for f in RUN_FILES):
                continue
            spec = rec.get("spec", {})
            jobs = rec.get("jobs") or [{}]
            out.append(Run(d, PENDING, protocol=spec.get("protocol", ""),
                           weights=spec.get("weights_name", ""), seed=spec.get("seed"),
                           experiment=spec.get("experiment", ""), identity_from="registry",
                           reason=f"submitted (job {jobs[-1].get('job_id')}), no output yet"))
        return out
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise UserError(f"job registry {reg} is unreadable: {e}",
                        "restore it or move it away; the report then walks the directories") from None


def load_run(d: str | os.PathLike) -> Run:
    """Read one run directory. Never raises for a damaged run: it becomes ``failed`` with a reason."""
    run = Run(Path(d), FAILED)
    try:
        _identify(run)
        _read_results(run)
    except ParseError as e:
        run.status, run.reason, run.fix, run.metrics = FAILED, e.cause, e.fix, {}
    return run


def _identify(run: Run) -> None:
    d = run.path
    if (d / "run.json").is_file():
        try:
            info = json.loads((d / "run.json").read_text())
            run.protocol, run.weights = str(info["protocol"]), str(info["weights_name"])
            run.seed, run.family = int(info["seed"]), str(info.get("family", ""))
            run.experiment, run.identity_from = str(info.get("experiment", "")), "run.json"
            return
        except (ValueError, KeyError, TypeError) as e:
            raise ParseError(f"{d / 'run.json'} is unreadable ({type(e).__name__}: {e})",
                             "restore run.json (the trainer writes it) or delete it to fall back to "
                             "the directory layout and config.yaml") from None
    parts = d.resolve().parts
    m = _SEED_DIR.match(parts[-1]) if parts else None
    if m and len(parts) >= 4 and "/".join(parts[-4:-2]) in PROTOCOLS:
        run.protocol, run.weights, run.seed = "/".join(parts[-4:-2]), parts[-2], int(m.group(1))
        run.experiment = parts[-5] if len(parts) >= 5 else ""
        run.identity_from = "directory (no run.json)"
        return
    _identify_from_config(run)


def _identify_from_config(run: Run) -> None:
    cfg_path = run.path / "config.yaml"
    why = "no run.json, the directory is not <protocol>/<weights>/seed<k>"
    fix = "write run.json (infomin-det train does) or lay the run out as <protocol>/<weights>/seed<k>"
    if not cfg_path.is_file():
        raise ParseError(f"{run.path}: cannot tell the protocol: {why}, and config.yaml is missing", fix)
    import yaml  # only for runs without run.json

    try:
        cfg = yaml.load(cfg_path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        model, solver = cfg["MODEL"], cfg["SOLVER"]
        depth, groups = model["RESNETS"]["DEPTH"], model["RESNETS"]["NUM_GROUPS"]
        backbone, heads = model["BACKBONE"]["NAME"], model["ROI_HEADS"]["NAME"]
        max_iter, test_sets = solver["MAX_ITER"], cfg["DATASETS"]["TEST"]
    except (yaml.YAMLError, KeyError, TypeError) as e:
        raise ParseError(f"{cfg_path}: not a Detectron2 config ({type(e).__name__}: {e})", fix) from None
    voc = any("voc" in str(t).lower() for t in test_sets)
    arch = {(50, 1): "R50", (101, 1): "R101", (101, 32): "X101", (152, 32): "X152"}.get((depth, groups), "")
    kind = ("Cascade-" if "Cascade" in heads else "") + arch + ("-FPN" if "fpn" in backbone.lower() else "-C4")
    sched = ("24k" if max_iter == 24000 else "") if voc else _SCHEDULES.get(max_iter, "")
    protocol = f"{'voc' if voc else 'coco'}/{kind}-{sched}"
    if not arch or not sched or protocol not in PROTOCOLS:
        raise ParseError(f"{run.path}: cannot tell the protocol: {why}, and config.yaml "
                         f"(RESNETS.DEPTH={depth}, NUM_GROUPS={groups}, BACKBONE.NAME={backbone}, "
                         f"ROI_HEADS.NAME={heads}, SOLVER.MAX_ITER={max_iter}) matches none of the paper's", fix)
    weights = str(model.get("WEIGHTS") or "")
    run.protocol = protocol
    run.weights = Path(weights).stem if weights else "random"
    seed = cfg.get("SEED", -1)
    run.seed = seed if isinstance(seed, int) and seed >= 0 else None
    run.identity_from = "config.yaml (no run.json)"


def _read_results(run: Run) -> None:
    d = run.path
    mf = read_metrics_json(d / "metrics.json") if (d / "metrics.json").is_file() else None
    if mf is not None:
        run.warnings += mf.warnings
        run.last_iteration = mf.last_iteration
        if mf.final is not None:
            run.status, run.metrics = DONE, mf.final
            return
    copy = read_copypaste(d / "log.txt") if (d / "log.txt").is_file() else None
    if copy is not None and (mf is None or mf.empty or mf.last_iteration < 0):
        run.status, run.metrics = DONE, copy  # an --eval-only run
        run.identity_from += "; results from log.txt copypaste (eval-only)"
        return
    finished = _finished(d)
    if mf is None or mf.empty or mf.last_iteration < 0:
        what = "metrics.json is empty" if mf is not None else "there is no metrics.json"
        if finished:
            raise ParseError(f"{d}: training finished (last_checkpoint: model_final.pth) but {what} and "
                             "log.txt has no copypaste results",
                             "re-run the evaluation: infomin-det train ... --eval-only (writes log.txt)")
        if not (d / "log.txt").is_file():
            raise ParseError(f"{d}: {what} and there is no log.txt",
                             "the run never logged anything; re-run it or delete the directory")
        run.status, run.reason = IN_PROGRESS, "no metrics written yet"
        return
    run.status = IN_PROGRESS
    if mf.restarted:
        run.reason = (f"training restarted after a final evaluation; now at iteration {mf.last_iteration}")
    elif finished and mf.warnings:
        raise ParseError(f"{d}: training finished but the last line of metrics.json (the final "
                         "evaluation record) is truncated",
                         "re-run the evaluation: infomin-det train ... --eval-only (writes log.txt)")
    elif finished:
        run.reason = ("training finished (model_final.pth); no final evaluation in metrics.json yet "
                      "-- still evaluating, or the evaluation crashed (see log.txt)")
    elif mf.latest_eval is not None:
        ap = next(iter(mf.latest_eval.values()), {}).get("bbox/AP", float("nan"))
        run.reason = (f"at iteration {mf.last_iteration}; latest evaluation at {mf.latest_eval_iteration}"
                      f" (bbox/AP {ap:.1f}) is not final")
    else:
        run.reason = f"at iteration {mf.last_iteration}, no evaluation yet"


def _finished(d: Path) -> bool:
    try:
        return (d / "last_checkpoint").read_text().strip() == "model_final.pth"
    except OSError:
        return False
