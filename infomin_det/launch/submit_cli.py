"""``infomin-det submit``: protocols x weights x seeds of fine-tuning as one job array.

Builds one :class:`~infomin_det.engine.spec.TrainSpec` per (protocol, weights, seed) with the run
directory ``<root>/<experiment>/<protocol>/<weights>/seed<k>``, wraps each in a
:class:`~infomin_det.launch.task.DistributedTask` running ``infomin_det.engine.trainer:train_worker``
and hands them to :func:`~infomin_det.launch.submit.submit_tasks`.

Everything ``train`` would refuse is refused here, before anything is written or queued: the
arguments themselves (seeds, weights, overrides -- which go after ``--``, so that ``--weights`` /
``--seeds`` cannot swallow them), then :func:`infomin_det.engine.config.check_spec` for every
distinct (protocol, weights, overrides, dataset, ...) of the sweep (seeds share one check), then the
executor options and devices (``submit_tasks``; on SLURM, the scheduler itself).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import sys
from pathlib import Path
from typing import Any, Sequence

from infomin_det import wandb_log
from infomin_det.dist import DEVICES
from infomin_det.engine.spec import TOOLKIT_KEYS
from infomin_det.errors import UserError
from infomin_det.launch.options import INT_MAX, ExecutorOptions, add_executor_arguments, executor_options
from infomin_det.filehash import sha256_file
from infomin_det.launch.submit import submit_tasks
from infomin_det.launch.status_cli import add_watch, check_watch
from infomin_det.launch.task import DistributedTask
from infomin_det.rundir import RANDOM_INIT, is_random_init

TRAIN_WORKER = "infomin_det.engine.trainer:train_worker"
URL_SCHEMES = ("detectron2://", "catalog://", "http://", "https://")
CONFIG_KEY = re.compile(r"[A-Z][A-Z0-9_]*(\.[A-Z0-9_]+)*")      # SEED, SOLVER.MAX_ITER
DOTTED_KEY = re.compile(r"[A-Z][A-Z0-9_]*(\.[A-Z0-9_]+)+")      # an override swallowed by --weights / --seeds
# overrides that would contradict what the run directory / registry says the run is
# submit's flags for keys train refuses as overrides (engine.spec.TOOLKIT_KEYS owns the list)
_SUBMIT_FLAGS = {"OUTPUT_DIR": "--root / --experiment", "SEED": "--seeds", "MODEL.WEIGHTS": "--weights NAME=PATH"}

def add_submit_flags(parser: argparse.ArgumentParser) -> None:
    """--dry-run, --json, --wait, --wandb: shared by ``submit`` and ``reproduce``."""
    parser.add_argument("--dry-run", action="store_true",
                        help="check everything (runs, weights vs config, datasets, executor options, the "
                             "scheduler's --test-only), print the plan with GPU-hours, queue and write nothing")
    parser.add_argument("--json", action="store_true",
                        help="print the plan and what happened to each run as one JSON object (the text to stderr)")
    add_watch(parser, "--wait", "after submitting, show the runs' progress until they end (as status --watch; "
                                "Ctrl-C stops watching, not the jobs)")
    wandb_log.add_argument(parser)


def wait_for_runs(args: argparse.Namespace, experiment_dir: Path, code: int) -> int:
    """``--wait``: watch the experiment until its runs end (text to stderr under --json); else ``code``."""
    if not args.wait or args.dry_run:
        return code
    from infomin_det.launch.status_cli import watch

    return max(code, watch([experiment_dir], args.every, stream=sys.stderr if args.json else None))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (parser.description or "") + (
        ". Detectron2 KEY VALUE overrides go last, after '--': ... --seeds 0 1 -- SOLVER.MAX_ITER 1000")
    parser.add_argument("--experiment", required=True, help="experiment name (a directory under --root)")
    parser.add_argument("--root", default="runs", help="root of the run tree (default: runs)")
    parser.add_argument("--protocol", nargs="+", required=True, metavar="P",
                        help="protocol ids, e.g. coco/R50-FPN-1x (see infomin-det protocols)")
    parser.add_argument("--weights", nargs="+", required=True, metavar="W",
                        help="converted .pkl files, NAME=PATH to name the row, detectron2:// URLs, or "
                             f"'{RANDOM_INIT}' for random init")
    parser.add_argument("--seeds", nargs="+", default=["0"], metavar="K", help="seeds, whole numbers >= 0 (default: 0)")
    parser.add_argument("--dataset", default="",
                        help="coco-json:<train.json>:<train_images>:<val.json>:<val_images> (default: the "
                             "protocol's datasets under $DETECTRON2_DATASETS)")
    parser.add_argument("--variant", default="",
                        help="a named variant of the protocol leaves for every run (see docs/protocols.md; "
                             "default: the authors' leaves); its runs go to <weights>+<variant>/")
    parser.add_argument("--config-file", default="", metavar="FILE.yaml",
                        help="your Detectron2 YAML instead of the protocols' leaves (a custom variant: rows "
                             "<weights>+custom-<stem>, never compared with the paper)")
    parser.add_argument("--family", choices=("ssl", "supervised"), default=None,
                        help="weight family of weights without metadata (default: from their metadata)")
    parser.add_argument("--allow-mismatch", action="append", default=[], metavar="KEY",
                        help="accept a weights/config disagreement on KEY ('all' for every key); repeat the flag")
    parser.add_argument("--device", choices=DEVICES, default="auto",
                        help="auto: the job's GPUs (refused where the job would have none); cuda: the same, and "
                             "the job fails without one; cpu: train on CPUs on purpose (--gpus-per-node 0)")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads per process (default: --cpus-per-task for CPU runs, 1 with GPUs)")
    add_submit_flags(parser)
    add_executor_arguments(parser)
    parser.add_argument("opts", nargs=argparse.REMAINDER,
                        help="'--' then Detectron2 KEY VALUE overrides, applied last")


def _override_hint(item: str, flag: str) -> None:
    if DOTTED_KEY.fullmatch(item) and not Path(item).exists():
        raise UserError(f"{flag} got {item!r}, which looks like a Detectron2 override key",
                        f"put overrides last, after '--': ... {flag} ... -- {item} VALUE")


def parse_seeds(items: Sequence[str]) -> list[int]:
    """Whole numbers in [0, 2**31 - 1], each once (Detectron2 draws a random seed for a negative one)."""
    seeds = []
    for item in items:
        _override_hint(item, "--seeds")
        if not re.fullmatch(r"[0-9]{1,10}", item) or int(item) > INT_MAX:
            raise UserError(f"seed {item[:40]!r} is not a whole number from 0 to {INT_MAX}",
                            "pass --seeds 0 1 2 (Detectron2 would draw a random seed for a negative one)")
        seeds.append(int(item))
    dup = sorted({s for s in seeds if seeds.count(s) > 1}) if len(set(seeds)) != len(seeds) else []
    if dup:
        raise UserError(f"seed {dup[0]} is given more than once", "give each seed once")
    return seeds


def parse_weights(items: list[str]) -> list[tuple[str, str]]:
    """``[(weights_name, weights)]``; ``random`` -> ("random", ""); a local file must be readable."""
    from infomin_det.rundir import check_name

    out = []
    for item in items:
        _override_hint(item, "--weights")
        name, sep, value = item.partition("=")
        if not sep or Path(item).is_file():     # a path that itself contains '='
            name, value = "", item
        if not value:
            raise UserError(f"--weights {item!r} names no weights", f"NAME=PATH, a .pkl path or '{RANDOM_INIT}'")
        if is_random_init(value):
            out.append((check_name("weights", name or RANDOM_INIT), ""))
            continue
        if name == RANDOM_INIT:
            raise UserError(f"--weights {item!r}: the row name {RANDOM_INIT!r} is kept for random init",
                            "give these weights another NAME")
        if "://" in value:
            if not value.startswith(URL_SCHEMES):
                raise UserError(f"weights URL {value!r} has a scheme Detectron2 cannot load",
                                f"use {', '.join(URL_SCHEMES)} or a local .pkl")
        else:
            p = Path(value)
            if not p.exists():
                raise UserError(f"weights file {value} does not exist",
                                f"give a converted .pkl (infomin-det convert), a detectron2:// URL or '{RANDOM_INIT}'")
            if not p.is_file():
                raise UserError(f"weights {value} is not a file", "give the converted .pkl file itself")
            if not os.access(p, os.R_OK):
                raise UserError(f"weights file {value} is not readable", "check its permissions")
            value = str(p.resolve())
        out.append((check_name("weights", name or Path(value.split("://")[-1]).stem), value))
    names = [n for n, _ in out]
    if len(set(names)) != len(names):
        raise UserError(f"two weights share the row name in {names}", "name them: --weights NAME=PATH ...")
    return out


def parse_overrides(words: Sequence[str], device: str) -> tuple[tuple[str, ...], str]:
    """(the ``KEY VALUE`` overrides, the device): keys checked; the device is ``--device`` (an
    ``MODEL.DEVICE`` override is refused, as ``train`` refuses it: one way to set it)."""
    owned = {k: _SUBMIT_FLAGS.get(k, flag) for k, flag in TOOLKIT_KEYS.items()}
    opts = tuple(words[1:] if words[:1] == ["--"] else words)
    if len(opts) % 2:
        raise UserError(f"overrides must be KEY VALUE pairs, got {len(opts)} words: {' '.join(opts)[:120]}",
                        "e.g. -- SOLVER.MAX_ITER 100 SOLVER.BASE_LR 0.01")
    keys = opts[0::2]
    for key, value in zip(keys, opts[1::2]):
        if key.startswith("-"):
            raise UserError(f"option {key} comes after the overrides, so it would be read as a config key",
                            "put every --option before '--' and the KEY VALUE overrides after it")
        if not CONFIG_KEY.fullmatch(key):
            raise UserError(f"override key {key!r} is not a Detectron2 config key", "keys look like SOLVER.MAX_ITER")
        if key in owned:
            raise UserError(f"override {key} would contradict the run's directory and record",
                            f"use {owned[key]} instead")
    dup = next((k for k in keys if keys.count(k) > 1), None)
    if dup:
        raise UserError(f"override {dup} is given more than once", "give each key once")
    return opts, device


def _absolute_dataset(dataset: str) -> str:
    """``coco-json:`` paths made absolute (the job may start elsewhere); other values as given."""
    parts = dataset.split(":")
    if len(parts) == 5 and parts[0] == "coco-json" and all(parts[1:]):
        return ":".join(["coco-json", *(str(Path(p).resolve()) for p in parts[1:])])
    return dataset


def run_inputs(specs: Sequence[Any]) -> list[dict[str, str]]:
    """Per spec, what the run reads beyond its spec, recorded so that a re-submission with other files
    is refused: the weights file's sha256 (each file hashed once) and, for the standard datasets,
    ``$DETECTRON2_DATASETS``."""
    digests: dict[str, str] = {}
    out = []
    for spec in specs:
        facts = {}
        if spec.weights and "://" not in spec.weights:
            if spec.weights not in digests:
                try:
                    digests[spec.weights] = sha256_file(spec.weights)
                except OSError as e:
                    raise UserError(f"cannot read weights file {spec.weights}: {e.strerror}", "check the file") from None
            facts["weights_sha256"] = digests[spec.weights]
        if spec.config_file and Path(spec.config_file).is_file():
            facts["config_file_sha256"] = sha256_file(spec.config_file)
        if not spec.dataset:
            facts["detectron2_datasets"] = str(Path(os.environ.get("DETECTRON2_DATASETS", "datasets")).resolve())
        out.append(facts)
    return out


def check_specs(specs: Sequence[Any]) -> int:
    """``check_spec`` once per distinct check (specs differing only in seed / run directory / name share
    one); returns how many checks ran. Needs detectron2 in this process."""
    try:
        import detectron2  # noqa: F401
    except ImportError as e:
        raise UserError(f"detectron2 cannot be imported here ({e}), so the runs cannot be checked before "
                        "they are queued", "install detectron2 in the environment you submit from "
                        "(see docs/train.md), the same one the jobs use") from None
    from infomin_det.engine.config import check_spec

    done: set = set()
    for spec in specs:
        key = dataclasses.replace(spec, seed=0, output_dir="", weights_name="", experiment="")
        if key in done:
            continue
        done.add(key)
        label = f"{spec.protocol}/{spec.weights_name}"
        try:
            # the device is the job's, not this machine's: the checks' outcome does not depend on it
            check_spec(dataclasses.replace(spec, device="cpu"))
        except UserError as e:
            raise UserError(f"run {label}: {e.cause}", e.fix) from None
        except (AssertionError, KeyError, ValueError, TypeError) as e:   # Detectron2's own refusals
            text = (str(e).strip().splitlines() or [type(e).__name__])[0].strip("'\"")
            raise UserError(f"run {label}: Detectron2 refuses the config: {text}",
                            "fix the overrides after '--' (infomin-det train with the same arguments "
                            "shows the same refusal)") from None
    return len(done)


def build_tasks(args: argparse.Namespace, threads: int, options: ExecutorOptions | None = None) -> list[DistributedTask]:
    """One task per (protocol, weights, seed); every argument checked, nothing written."""
    from infomin_det.engine.spec import TrainSpec
    from infomin_det.rundir import check_name, custom_variant, run_dir

    check_name("experiment", args.experiment)
    options = options or ExecutorOptions()
    for p in args.protocol:
        _override_hint(p, "--protocol")
    if len(set(args.protocol)) != len(args.protocol):
        raise UserError("a protocol is given more than once", "give each protocol once")
    seeds = parse_seeds(args.seeds)
    weights = parse_weights(args.weights)
    opts, device = parse_overrides(args.opts, args.device)
    for key in args.allow_mismatch:
        if key != "all" and not CONFIG_KEY.fullmatch(key):
            raise UserError(f"--allow-mismatch {key!r} is not a config key", "e.g. --allow-mismatch MODEL.PIXEL_STD, or 'all'")
    if args.family and any(not w for _, w in weights):
        raise UserError(f"--family {args.family} with random-init weights: the leaf of that family would load its "
                        "own weights into the row named random", "submit the random rows without --family")
    dataset = _absolute_dataset(args.dataset)
    config_file = str(Path(args.config_file).resolve()) if args.config_file else ""
    if config_file and args.variant:
        raise UserError(f"--config-file and --variant {args.variant} both say what to train", "give one of them")
    variant = custom_variant(config_file) if config_file else args.variant
    tasks = []
    for protocol in args.protocol:
        for name, w in weights:
            for seed in seeds:
                out = run_dir(args.root, args.experiment, protocol, name, seed, variant).resolve()
                spec = TrainSpec(protocol=protocol, weights=w, output_dir=str(out), weights_name=name,
                                 seed=seed, experiment=args.experiment, opts=opts, dataset=dataset,
                                 allow_mismatch=tuple(args.allow_mismatch), family=args.family or "",
                                 variant=args.variant, config_file=config_file,
                                 device=device, num_processes=options.ntasks_per_node, nodes=options.nodes,
                                 extra={"wandb": args.wandb})
                tasks.append(DistributedTask(TRAIN_WORKER, spec, threads=threads,
                                             label=f"{protocol}/{name}/seed{seed}"))
    return tasks


def _check_root(root: str) -> None:
    p = Path(root)
    if p.exists() and not p.is_dir():
        raise UserError(f"--root {root} is a file", "pass a directory (it is created if missing)")


def print_report(report, experiment_dir: Path, cluster: str, dry_run: bool = False) -> None:
    width = max(len(r.key) for r in report)
    for r in report:
        extra = f"  {r.error}" if r.error else ""
        print(f"  {r.key:<{width}}  {r.action:<14}  {r.job_id}{extra}")
    counts = {a: sum(r.action == a for r in report) for a in dict.fromkeys(r.action for r in report)}
    summary = f"{len(report)} runs ({', '.join(f'{n} {a}' for a, n in counts.items())}) on cluster {cluster}"
    if dry_run:
        print(f"{summary}; dry run: every check passed, nothing was queued or written")
    else:
        print(f"{summary}; follow with: infomin-det status {experiment_dir}")


def check_threads(threads: int, options: ExecutorOptions, cluster: str) -> int:
    """``--threads`` checked against the request; 0 -> the default (the CPUs per task on CPU, 1 with GPUs)."""
    if threads < 0 or threads > 4096:
        raise UserError(f"--threads {threads} is out of range", "pass 0 (the default) or a positive count")
    if cluster == "slurm" and threads > options.cpus:
        raise UserError(f"--threads {threads} exceeds the {options.cpus} CPUs per process requested",
                        "raise --cpus-per-task or lower --threads")
    return threads or (1 if options.gpus_per_node else options.cpus)


def submit_planned(tasks: Sequence[DistributedTask], root: str, experiment: str, options: ExecutorOptions,
                   cluster: str, dry_run: bool, as_json: bool = False) -> int:
    """The one submission path of ``submit`` and ``reproduce``: pre-flight every run, print the plan,
    then (unless ``dry_run``) queue one array. ``as_json``: the text goes to stderr and one JSON
    object (``{"experiment", "cluster", "dry_run", "plan": [...], "runs": [...]}``) to stdout.
    Exit status: 0, or 1 when a run failed to submit."""
    import contextlib
    import json

    from infomin_det.launch.plan import plan_rows, render

    check_specs([t.spec for t in tasks])
    rows = plan_rows([t.spec for t in tasks], options.gpus_per_node, options.nodes)
    exp = Path(root, experiment)
    with contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext():
        # the plan first: it is what a dry run is for, even where the scheduler then refuses the request
        print(render(rows, options.timeout_min, options.max_requeues), flush=True)
        report = submit_tasks(tasks, exp, options, cluster=cluster, command=sys.argv,
                              job_name=f"infomin-{experiment}",
                              inputs=run_inputs([t.spec for t in tasks]), dry_run=dry_run)
        print_report(report, exp, cluster, dry_run)
    if as_json:
        print(json.dumps({"experiment": str(exp.resolve()), "cluster": cluster, "dry_run": dry_run,
                          "plan": [r.to_dict(options.timeout_min) for r in rows],
                          "runs": [{"key": r.key, "action": r.action, "job_id": r.job_id, "output_dir": r.output_dir,
                                    "error": r.error} for r in report]}, indent=1))
    return 1 if any(r.action == "failed" for r in report) else 0


def submission_request(args: argparse.Namespace) -> tuple[ExecutorOptions, str, int]:
    """(executor options, cluster, threads per process) of ``submit`` / ``reproduce`` flags, validated."""
    from infomin_det.launch.options import resolve_cluster

    options = executor_options(args)
    cluster = resolve_cluster(args.cluster)
    options.validate(cluster)
    _check_root(args.root)
    return options, cluster, check_threads(args.threads, options, cluster)


def main(args: argparse.Namespace) -> int:
    check_watch(args.every)
    options, cluster, threads = submission_request(args)
    tasks = build_tasks(args, threads=threads, options=options)
    code = submit_planned(tasks, args.root, args.experiment, options, cluster, args.dry_run, args.json)
    return wait_for_runs(args, Path(args.root, args.experiment), code)
