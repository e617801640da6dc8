"""Finding runs and reading one run directory into a :class:`Run` (status + metrics + identity).

A run directory is any directory holding ``metrics.json``, ``log.txt``, ``run.json`` or
``launch_state.json`` (Detectron2's OUTPUT_DIR, plus our records). :func:`find_runs` walks the
given paths recursively -- into run directories too (a run nested in another is a run), following
symlinks once each (loops cut), skipping hidden directories (in-flight temporaries), at most
:data:`MAX_DIRS` directories -- and, for an experiment directory with a job registry
(``launch/registry.json``), adds the registered runs that have no directory yet as ``pending``.

Identity: :mod:`infomin_det.report.identity` (run.json, layout and config.yaml must agree).
Status (:func:`load_run`), first match wins:

1. ``failed`` -- the identity is refused; ``launch_state.json`` says ``failed``; log.txt shows a
   crash in the last attempt; metrics.json / log.txt / final_results.json are damaged or disagree.
2. ``done`` -- metrics.json's final evaluation (see :mod:`parse`), cross-checked against log.txt's
   final ``copypaste:`` round and ``final_results.json`` when present; or, without one, log.txt's
   final round (an ``--eval-only`` run, or a finished training whose final record was lost).
3. ``in-progress`` -- anything else that is not broken (the reason says how far it got).

Finally :func:`mark_duplicates` fails every run of a repeated (table, row, seed), and runs with
bit-identical results in one table: the same run given twice is never averaged as two seeds.
"""

from __future__ import annotations

import json
import math
import os
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path

from infomin_det.errors import UserError
from infomin_det.launch.registry import LAUNCH_DIR, REGISTRY
from infomin_det.launch.task import STATE_FILE
from infomin_det.rundir import FINAL_RESULTS
from infomin_det.report.identity import MAX_RECORD, UNKNOWN_DATASET, Dataset, identify
from infomin_det.report.parse import Metrics, ParseError, read_log, read_metrics_json, short, split_metrics

RUN_FILES = ("metrics.json", "log.txt", "run.json")
RUN_MARKERS = RUN_FILES + (STATE_FILE,)
DEFAULT_ROOT = "runs"
MAX_DIRS = 100_000
MAX_REGISTRY = 1 << 28

DONE, IN_PROGRESS, FAILED, PENDING = "done", "in-progress", "failed", "pending"
_COPYPASTE_TOL = 5e-5 + 1e-9   # log.txt prints 4 decimals


@dataclass
class Run:
    """One fine-tuning run as the report sees it.

    status: ``done`` (final metrics present) | ``in-progress`` (not finished; ``reason`` says how far)
    | ``failed`` (cannot be reported; ``reason`` + ``fix``) | ``pending`` (registered, no directory yet).
    metrics: ``{dataset: {"bbox/AP": 40.6, ...}}`` in percent, only for ``done`` runs.
    dataset: what it trained/tested on; modified: config.yaml's deviations from the protocol.
    identity_from: where the identity and results were read.
    """

    path: Path
    status: str
    protocol: str = ""
    weights: str = ""
    seed: int | None = None
    family: str = ""
    variant: str = ""
    experiment: str = ""
    dataset: Dataset = UNKNOWN_DATASET
    modified: tuple[str, ...] = ()
    batch: int | None = None
    metrics: Metrics = field(default_factory=dict)
    reason: str = ""
    fix: str = ""
    identity_from: str = ""
    last_iteration: int = -1
    warnings: list[str] = field(default_factory=list)

    def fail(self, reason: str, fix: str) -> None:
        self.status, self.reason, self.fix, self.metrics = FAILED, reason, fix, {}


def find_runs(paths: list[str | os.PathLike]) -> list[Run]:
    """All runs under ``paths`` (run dirs, experiment dirs, or experiment names under ``./runs``).

    Raises :class:`UserError` for a path that does not exist, is a file other than a run file, holds
    no run at all, or is too large a tree; and for a corrupt job registry.
    """
    dirs: set[Path] = set()
    pending: dict[Path, Run] = {}
    for p in paths:
        top = resolve_path(p)
        found = set(_run_dirs(top, p))
        registered = _registry_pending(top, found | dirs) if top.is_dir() else []
        if not found and not registered:
            raise UserError(f"no runs under {p}: no directory there holds {', '.join(RUN_MARKERS)}",
                            "point at a run directory (Detectron2 OUTPUT_DIR) or an experiment directory")
        dirs |= found
        pending.update((r.path, r) for r in registered)
    from tqdm import tqdm

    progress = tqdm(sorted(dirs), desc="reading runs", unit="run", leave=False,
                    disable=len(dirs) < 200 or not sys.stderr.isatty())
    runs = [_load_dir(d) for d in progress] + [pending[k] for k in sorted(pending) if k not in dirs]
    mark_duplicates(runs)
    return runs


def resolve_path(p: str | os.PathLike) -> Path:
    """A run/experiment path as given (or ``./runs/<name>``), resolved; a run file -> its directory."""
    path = Path(p)
    if not str(p).strip():
        raise UserError("an empty path was given", "give a run directory, an experiment directory, or an experiment name")
    if not path.exists():
        alt = Path(DEFAULT_ROOT) / path
        if not path.is_absolute() and alt.is_dir():
            path = alt
        elif path.is_symlink():
            raise UserError(f"{p} is a broken symlink or a symlink loop", "point at the real directory")
        else:
            raise UserError(f"{p} does not exist (neither as a path nor as an experiment under ./{DEFAULT_ROOT})",
                            "give a run directory, an experiment directory, or an experiment name")
    try:
        path = path.resolve(strict=True)
    except (OSError, RuntimeError) as e:
        raise UserError(f"{p} cannot be resolved ({e})", "point at the real directory") from None
    if path.is_file():
        if path.name not in RUN_MARKERS:
            raise UserError(f"{p} is a file, not a run or experiment directory",
                            f"give its directory, or one of a run's own files ({', '.join(RUN_MARKERS)})")
        return path.parent
    if not path.is_dir():
        raise UserError(f"{p} is neither a directory nor a file (a device or pipe?)", "give a run or experiment directory")
    return path


def _run_dirs(top: Path, given: str | os.PathLike):
    seen: set[tuple[int, int]] = set()
    linked: set[str] = set()
    errors: list[OSError] = []
    visited = 0
    for dirpath, dirnames, filenames in os.walk(top, followlinks=True, onerror=errors.append):
        visited += 1
        if visited > MAX_DIRS:
            raise UserError(f"more than {MAX_DIRS} directories under {given}: not an experiment directory?",
                            "point at an experiment directory or at run directories")
        try:
            st = os.stat(dirpath)
        except OSError:
            dirnames[:] = []
            continue
        if (st.st_dev, st.st_ino) in seen:  # reached again through a symlink (or a loop)
            dirnames[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirnames[:] = sorted(n for n in dirnames if not n.startswith("."))
        via_link = dirpath in linked
        for n in dirnames:  # paths below a followed symlink are resolved; the others already are
            child = os.path.join(dirpath, n)
            if via_link or os.path.islink(child):
                linked.add(child)
        if any(f in filenames for f in RUN_MARKERS):
            yield Path(dirpath).resolve() if via_link else Path(dirpath)
    unreadable = [e for e in errors if not isinstance(e, FileNotFoundError)]
    if unreadable:
        e = unreadable[0]
        raise UserError(f"cannot read {e.filename} ({e.strerror}): runs in it would be missing from the table",
                        "fix its permissions, or point at the directories you can read")


def _registry_pending(top: Path, known: set[Path]) -> list[Run]:
    """Registered runs of the experiment at ``top`` whose directory has no results files yet."""
    reg = top / LAUNCH_DIR / REGISTRY
    if not reg.exists():
        return []
    fix = "restore it or move it away; the report then walks the directories"
    if not reg.is_file() or reg.stat().st_size > MAX_REGISTRY:
        raise UserError(f"job registry {reg} is not a registry file", fix)
    from infomin_det.launch.registry import Registry

    try:
        records = Registry(top).runs
    except UserError as e:
        raise UserError(e.cause, fix) from None
    except (OSError, ValueError, TypeError, AttributeError, KeyError, RecursionError) as e:
        raise UserError(f"job registry {reg} is unreadable ({type(e).__name__}: {str(e)[:120]})", fix) from None
    out = []
    for key, rec in records.items():
        spec, jobs = rec.spec, rec.jobs
        ok = (isinstance(rec.output_dir, str) and isinstance(spec, dict) and isinstance(jobs, list)
              and all(isinstance(j, dict) for j in jobs) and isinstance(spec.get("protocol", ""), str)
              and isinstance(spec.get("weights_name", ""), str) and isinstance(spec.get("experiment", ""), str)
              and (spec.get("seed") is None or (isinstance(spec["seed"], int) and not isinstance(spec["seed"], bool))))
        if not ok:
            raise UserError(f"job registry {reg}: run {short(key)} has fields of the wrong type", fix)
        try:
            d = Path(rec.output_dir or top / key).resolve()
        except (OSError, RuntimeError, ValueError):
            raise UserError(f"job registry {reg}: run {short(key)} has an unusable output_dir", fix) from None
        if d in known or any((d / f).exists() for f in RUN_MARKERS):
            continue
        job = jobs[-1].get("job_id") if jobs else None
        out.append(Run(d, PENDING, protocol=spec.get("protocol", ""), weights=spec.get("weights_name", ""),
                       seed=spec.get("seed"), variant=str(spec.get("variant") or ""),
                       experiment=spec.get("experiment", ""), identity_from="registry",
                       reason=f"submitted (job {str(job)[:40]}), no output yet"))
    return out


def _read_state(d: Path) -> dict | None:
    path = d / STATE_FILE
    if not path.exists():
        return None
    fix = f"the launcher writes it; delete {path} if the run was since re-run outside the launcher"
    try:
        if not path.is_file() or path.stat().st_size > MAX_RECORD:
            raise ParseError(f"{path} is not a launch record", fix)
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ParseError(f"{path} is unreadable ({type(e).__name__})", fix) from None
    if not isinstance(state, dict) or state.get("state") not in ("running", "requeued", "failed", "done"):
        raise ParseError(f"{path} holds no launch state (running / requeued / failed / done)", fix)
    return state


def load_run(d: str | os.PathLike) -> Run:
    """Read one run directory. Never raises for a damaged run: it becomes ``failed`` with a reason."""
    return _load_dir(Path(d).resolve())


def _load_dir(d: Path) -> Run:
    run = Run(d, FAILED)
    try:
        _load(run)
    except ParseError as e:
        run.fail(e.cause, e.fix)
    return run


def _own_file(d: Path, name: str) -> Path | None:
    """``d/name`` if it is a regular file inside ``d`` (a symlink out of the run is refused)."""
    path = d / name
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise ParseError(f"{path} cannot be read ({e.strerror})", "restore the file") from None
    if stat.S_ISLNK(st.st_mode):
        try:
            real = path.resolve(strict=True)
        except (OSError, RuntimeError):
            raise ParseError(f"{path} is a broken symlink or a symlink loop", "restore the file") from None
        if not real.is_relative_to(d):
            raise ParseError(f"{path} is a symlink to {real}, outside the run directory",
                             "copy the file into the run (a run's files must be its own), or remove the link")
        st = os.stat(real)
    if not stat.S_ISREG(st.st_mode):
        raise ParseError(f"{path} is not a regular file", "restore the file")
    return path


def _load(run: Run) -> None:
    d = run.path
    state_error = None
    try:
        state = _read_state(d)
    except ParseError as e:
        state, state_error = None, e
    try:
        ident = identify(d)
    except ParseError:
        if state and state["state"] == "failed":  # the job's own error says more (often: no files at all)
            state_error = None
        else:
            raise
        ident = None
    if ident is not None:
        run.protocol, run.weights, run.seed, run.family = ident.protocol, ident.weights, ident.seed, ident.family
        run.variant, run.experiment, run.dataset, run.modified = ident.variant, ident.experiment, ident.dataset, ident.modified
        run.batch = ident.batch
        run.identity_from = ident.sources
    if state_error is not None:
        raise state_error
    if state and state["state"] == "failed":
        raise ParseError(f"{d}: the job failed (launch_state.json, job {str(state.get('job_id'))[:40]}, attempt "
                         f"{str(state.get('attempt'))[:10]}): {str(state.get('error') or 'no error recorded')[:300]}",
                         "see `infomin-det status` for the job's log; fix the cause and resubmit (the run "
                         "resumes from its last checkpoint)")
    files = {n: _own_file(d, n) for n in ("metrics.json", "log.txt", "last_checkpoint", FINAL_RESULTS)}
    log = read_log(files["log.txt"]) if files["log.txt"] else None
    if log and log.crash:
        at = f" at iteration {log.last_iteration}" if log.trained else ""
        raise ParseError(f"{d}: crashed{at}: {log.crash} (log.txt)",
                         f"see {d / 'log.txt'}; fix the cause and run the same command again (it resumes "
                         "from the last checkpoint)")
    max_iter = ident.max_iter if ident else None
    finished = _finished(files["last_checkpoint"])
    mf = read_metrics_json(files["metrics.json"], max_iter) if files["metrics.json"] else None
    if mf is not None:
        run.warnings += mf.warnings
        run.last_iteration = mf.last_iteration
    final = mf.final if mf is not None else None
    if final is not None and max_iter is None and not finished:
        final = None
        run.status, run.reason = IN_PROGRESS, (
            f"the evaluation at iteration {mf.final_iteration} may be periodic: neither config.yaml "
            "(SOLVER.MAX_ITER) nor last_checkpoint (model_final.pth) says training finished")
        return
    from_log = log is not None and log.results is not None and (not log.trained or finished) and not (
        mf is not None and mf.restarted)
    if final is not None:
        if log is not None and log.results is not None and log.trained:
            _cross_check(d, final, "metrics.json", log.results, "log.txt's final copypaste", _COPYPASTE_TOL)
        if files[FINAL_RESULTS]:
            _cross_check(d, final, "metrics.json", _final_results(files[FINAL_RESULTS]), FINAL_RESULTS, 1e-9)
        run.status, run.metrics = DONE, final
        return
    if from_log:
        run.status, run.metrics = DONE, log.results
        run.identity_from += "; results from log.txt copypaste" + ("" if log.trained else " (eval-only)")
        return
    _not_done(run, mf, finished, state)


def _not_done(run: Run, mf, finished: bool, state: dict | None) -> None:
    d = run.path
    eval_only = "re-run the evaluation: infomin-det train ... --eval-only (its results go to log.txt)"
    if state and state["state"] == "done":
        raise ParseError(f"{d}: the job finished (launch_state.json: done) but there is no final evaluation "
                         "in metrics.json or log.txt", eval_only)
    if mf is None or mf.empty or mf.last_iteration < 0:
        what = "metrics.json is empty" if mf is not None else "there is no metrics.json"
        if finished:
            raise ParseError(f"{d}: training finished (last_checkpoint: model_final.pth) but {what} and "
                             "log.txt has no final copypaste results", eval_only)
        if not (d / "log.txt").is_file() and not state:
            raise ParseError(f"{d}: {what} and there is no log.txt",
                             "the run never logged anything; re-run it or delete the directory")
        run.status, run.reason = IN_PROGRESS, "no metrics written yet" + (
            f" (job {str(state.get('job_id'))[:40]} {state['state']})" if state else "")
        return
    run.status = IN_PROGRESS
    if mf.restarted:
        run.reason = f"training restarted after a final evaluation; now at iteration {mf.last_iteration}"
    elif finished and mf.truncated:
        raise ParseError(f"{d}: training finished but the last line of metrics.json (the final "
                         "evaluation record) is truncated", eval_only)
    elif finished:
        run.reason = ("training finished (model_final.pth); no final evaluation in metrics.json yet "
                      "-- still evaluating, or the evaluation crashed (see log.txt)")
    elif mf.latest_eval is not None:
        ap = next(iter(mf.latest_eval.values()), {}).get("bbox/AP", float("nan"))
        run.reason = (f"at iteration {mf.last_iteration}; latest evaluation at {mf.latest_eval_iteration}"
                      f" (bbox/AP {ap:.1f}) is not final")
    else:
        run.reason = f"at iteration {mf.last_iteration}, no evaluation yet"
    if state and state["state"] == "requeued":
        run.reason += " (requeued: preempted or timed out, resumes when the job restarts)"


def _finished(path: Path | None) -> bool:
    try:
        return path is not None and path.read_text(errors="replace")[:256].strip() == "model_final.pth"
    except OSError:
        return False


def _final_results(path: Path) -> Metrics:
    """The trainer's ``final_results.json`` (Detectron2's nested results dict), flattened and checked."""
    try:
        if path.stat().st_size > MAX_RECORD:
            raise ValueError("too large")
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ParseError(f"{path} is unreadable ({type(e).__name__})", "delete it; metrics.json holds the same") from None
    flat: dict = {}

    def walk(prefix: str, node: object) -> None:
        if isinstance(node, dict) and prefix.count("/") < 3:
            for k, v in node.items():
                walk(f"{prefix}/{k}" if prefix else str(k), v)
        else:
            flat[prefix] = node

    walk("", raw)
    return split_metrics(flat, str(path))


def _cross_check(d: Path, a: Metrics, a_name: str, b: Metrics, b_name: str, tol: float) -> None:
    for ds, values in a.items():
        for key, va in values.items():
            vb = b.get(ds, {}).get(key)
            if vb is None:
                continue
            same = (math.isnan(va) and math.isnan(vb)) or (not math.isnan(va) and not math.isnan(vb)
                                                             and abs(va - vb) <= tol)
            if not same:
                name = f"{ds}/{key}" if ds else key
                raise ParseError(f"{d}: {a_name} and {b_name} disagree on {name} ({va!r} vs {vb!r})",
                                 "one of them is from another evaluation (an --eval-only re-run, or a copied "
                                 "file): keep the run's own files only, or re-run the evaluation")


def table_key(r: Run) -> tuple:
    """What one table holds: protocol, its modifications, dataset, batch where it is not the paper's
    (the metrics' eval set is added later)."""
    return (r.protocol, r.modified, r.dataset.key, r.batch)


def row_key(r: Run) -> tuple[str, str, str]:
    """What one row averages: weights name, variant, family."""
    return (r.weights, r.variant, r.family)


def mark_duplicates(runs: list[Run]) -> None:
    """Fail the runs that repeat a (table, row, seed), or whose results equal another run's in a table."""
    groups: dict[tuple, list[Run]] = {}
    for r in runs:
        if r.status == DONE and r.seed is not None:
            groups.setdefault((table_key(r), row_key(r), r.seed), []).append(r)
    for (_, (weights, variant, _), seed), rs in groups.items():
        if len(rs) > 1:
            where = ", ".join(str(r.path) for r in rs)
            for r in rs:
                r.fail(f"{r.path}: seed {seed} of {weights}{f' [{variant}]' if variant else ''} under {r.protocol} "
                       f"is given by {len(rs)} directories ({where})",
                       "the same run twice, or runs of several experiments: give one experiment, or "
                       "move the copies away")
    same: dict[tuple, list[Run]] = {}
    for r in runs:
        if r.status != DONE:
            continue
        values = tuple(sorted((ds, k, v) for ds, m in r.metrics.items() for k, v in m.items()
                              if not math.isnan(v)))
        if sum(1 for *_, v in values if v != 0.0) >= 3:
            same.setdefault((table_key(r), values), []).append(r)
    for rs in same.values():
        if len(rs) > 1:
            where = ", ".join(str(r.path) for r in rs)
            for r in rs:
                r.fail(f"{r.path}: its results are identical, to every digit, to another run's ({where})",
                       "the same run copied under another name or seed: keep one")

