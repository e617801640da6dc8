"""Executor options: what a job asks of the scheduler, validated before anything is submitted.

``ExecutorOptions`` is a small frozen dataclass in submitit's vocabulary (``timeout_min``,
``gpus_per_node``, ``slurm_*``). ``from_mapping`` refuses unknown keys (with the nearest valid
name), ``validate`` refuses inconsistent values, and :func:`check_against_slurm` asks the real
scheduler (``sbatch --test-only``: partition, account, qos, constraint, GPUs, memory, array size)
-- all before the first job is queued. :func:`add_executor_arguments` gives a CLI one flag per field
(``submit``, ``reproduce`` and ``pretrain`` share it); :func:`executor_options` reads them back.
No torch or detectron2 here.

Defaults fit a GPU fine-tuning job: a 24 h limit (the trainer checkpoints on the preemption /
time-limit signal and the job is requeued, so a long limit loses nothing), and for GPU jobs
``GPU_TASK_CPUS`` CPUs per process (the training process plus Detectron2's 4 data-loader workers)
and ``GPU_MEM_GB`` GB of memory per GPU, unless given.
"""

from __future__ import annotations

import argparse
import difflib
import math
import os
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

from infomin_det.errors import UserError

CLUSTERS = ("auto", "slurm", "local", "debug")
_SLURM_WORD = re.compile(r"[A-Za-z0-9_.,:\[\]|&*+=/@][A-Za-z0-9_.,:\-\[\]|&*+=/@]*")  # fullmatch: no spaces/quotes/leading -
INT_MAX = 2**31 - 1          # SLURM's counters are 32-bit
GPU_TASK_CPUS = 5            # per GPU process: the trainer + Detectron2's default 4 loader workers
GPU_MEM_GB = 16              # per GPU, when --mem-gb is not given
_LISTS = ("setup", "slurm_extra")
_SLURM_ONLY = ("job_name", "setup", "slurm_extra")
_SLURM_KEY = re.compile(r"[a-z][a-z0-9_-]*")
# sbatch options the launcher sets from its own fields (or needs for requeue / signals / logs)
_OWNED_SBATCH = {"nodes": "--nodes", "ntasks-per-node": "--tasks-per-node", "ntasks": "--tasks-per-node",
                 "cpus-per-task": "--cpus-per-task", "gpus-per-node": "--gpus-per-node", "gpus": "--gpus-per-node",
                 "gres": "--gpus-per-node", "time": "--timeout-min", "mem": "--mem-gb", "mem-per-cpu": "--mem-gb",
                 "mem-per-gpu": "--mem-gb", "partition": "--partition", "constraint": "--constraint",
                 "account": "--account", "qos": "--qos", "comment": "--comment", "exclude": "--exclude",
                 "array": "--array-parallelism", "job-name": "--job-name", "signal": "--signal-delay-s",
                 "requeue": "--max-requeues", "output": "(the launcher's log files)", "error": "(the launcher's log files)",
                 "open-mode": "(the launcher's log files)", "wrap": "(the launcher's job script)"}


@dataclass(frozen=True)
class ExecutorOptions:
    """Scheduler request for every job of one submission.

    One task per GPU: ``tasks_per_node`` defaults to ``gpus_per_node`` (1 without GPUs) and must
    equal it when GPUs are requested. ``cpus_per_task`` / ``mem_gb`` (per machine) ``None``: the
    GPU-job defaults above (1 CPU and the cluster's default memory without GPUs; see :attr:`cpus`,
    :attr:`memory_gb`). ``timeout_min`` and ``signal_delay_s`` are in minutes and
    seconds; the preemption/timeout signal (USR2) arrives ``signal_delay_s`` before the kill.
    ``max_requeues`` bounds timeout requeues (submitit's ``max_num_timeout``); ``array_parallelism``
    caps how many array elements run at once (``--array=0-N%cap``). SLURM only: ``job_name`` (default:
    the caller's), ``setup`` (shell lines the job script runs before the job, e.g. ``module load
    cuda/12.1``), ``slurm_extra`` (``KEY=VALUE`` sbatch options no other field covers, e.g.
    ``reservation=x``, ``mail-type=END``; submitit's additional parameters).
    """

    partition: str | None = None
    nodes: int = 1
    gpus_per_node: int = 0
    tasks_per_node: int | None = None
    cpus_per_task: int | None = None
    mem_gb: float | None = None
    timeout_min: int = 1440
    constraint: str | None = None
    account: str | None = None
    qos: str | None = None
    comment: str | None = None
    exclude: str | None = None
    signal_delay_s: int = 120
    max_requeues: int = 3
    array_parallelism: int = 64
    job_name: str | None = None
    setup: tuple[str, ...] = ()
    slurm_extra: tuple[str, ...] = ()

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> "ExecutorOptions":
        """Build from a dict (config file, API call); unknown keys are refused, not ignored."""
        known = [f.name for f in fields(cls)]
        values = {k: (tuple(v) if k in _LISTS and isinstance(v, list) else v) for k, v in values.items()}
        for key in values:
            if key not in known:
                near = difflib.get_close_matches(key, known, n=1)
                hint = f"did you mean {near[0]!r}? " if near else ""
                raise UserError(f"unknown executor option {key!r}",
                                f"{hint}valid options: {', '.join(known)}")
        return cls(**dict(values)).validate()

    @property
    def ntasks_per_node(self) -> int:
        return self.tasks_per_node if self.tasks_per_node is not None else max(1, self.gpus_per_node)

    @property
    def world_size(self) -> int:
        return self.nodes * self.ntasks_per_node

    @property
    def cpus(self) -> int:
        """CPUs per task: as given, else ``GPU_TASK_CPUS`` for GPU jobs and 1 without GPUs."""
        if self.cpus_per_task is not None:
            return self.cpus_per_task
        return GPU_TASK_CPUS if self.gpus_per_node else 1

    @property
    def memory_gb(self) -> float | None:
        """Memory per machine: as given, else ``GPU_MEM_GB`` per GPU; None: the cluster's default."""
        if self.mem_gb is not None:
            return self.mem_gb
        return GPU_MEM_GB * self.gpus_per_node if self.gpus_per_node else None

    def validate(self, cluster: str = "slurm") -> "ExecutorOptions":
        """Refuse values that are wrong on their own or together; returns self."""
        def positive(name: str, minimum: int = 1) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not minimum <= v <= INT_MAX:
                raise UserError(f"executor option {name}={v!r} must be an integer in [{minimum}, {INT_MAX}]",
                                f"pass --{name.replace('_', '-')} N with N >= {minimum}")

        for name in ("nodes", "timeout_min", "array_parallelism"):
            positive(name)
        for name in ("gpus_per_node", "signal_delay_s", "max_requeues"):
            positive(name, 0)
        if self.cpus_per_task is not None:
            positive("cpus_per_task")
        if self.tasks_per_node is not None:
            positive("tasks_per_node")
            if self.gpus_per_node and self.tasks_per_node != self.gpus_per_node:
                raise UserError(
                    f"tasks_per_node={self.tasks_per_node} but gpus_per_node={self.gpus_per_node}",
                    "training runs one task per GPU: drop --tasks-per-node or make it equal")
        if self.mem_gb is not None and not (isinstance(self.mem_gb, (int, float)) and not isinstance(self.mem_gb, bool)
                                            and math.isfinite(self.mem_gb) and 0 < self.mem_gb * 1024 < INT_MAX):
            raise UserError(f"executor option mem_gb={self.mem_gb!r} must be a positive number of GB "
                            f"(below {INT_MAX // 1024})", "pass --mem-gb with a value in GB, e.g. 64")
        if self.signal_delay_s >= self.timeout_min * 60:
            raise UserError(
                f"signal_delay_s={self.signal_delay_s} is not shorter than the time limit "
                f"({self.timeout_min} min = {self.timeout_min * 60} s): the job would be signalled "
                "before it starts working",
                "raise --timeout-min or lower --signal-delay-s")
        for name in ("partition", "constraint", "account", "qos", "exclude"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, str) or not _SLURM_WORD.fullmatch(v)):
                raise UserError(f"executor option {name}={v!r} is not a SLURM name or expression",
                                "no spaces, quotes, newlines or leading '-' (e.g. --partition gpu)")
        if self.comment is not None and (not isinstance(self.comment, str)
                                         or any(c in "'\"\\" or ord(c) < 32 for c in self.comment)):
            raise UserError(f"executor option comment={self.comment!r} has a quote, backslash or control character",
                            "use one plain line")
        self._validate_slurm_only()
        if cluster not in CLUSTERS:
            raise UserError(f"unknown cluster {cluster!r}", f"use one of {', '.join(CLUSTERS)}")
        if cluster in ("local", "debug"):
            given = [n for n in _SLURM_ONLY if getattr(self, n)]
            if given:
                flag = "--" + given[0].replace("_", "-")
                raise UserError(f"{flag} is a SLURM job option, but cluster {cluster!r} has no job script",
                                f"use --cluster slurm, or drop {flag}")
            if self.nodes != 1:
                raise UserError(f"nodes={self.nodes} needs SLURM; cluster {cluster!r} has one node",
                                "use --cluster slurm or --nodes 1")
            cores = os.cpu_count() or 1
            if not self.gpus_per_node and self.ntasks_per_node > cores:
                raise UserError(f"tasks_per_node={self.ntasks_per_node} local processes on {cores} cores",
                                f"pass --tasks-per-node {cores} or fewer, or use SLURM")
            if cluster == "debug" and self.world_size != 1:
                raise UserError("cluster 'debug' runs one process in this Python",
                                "use --cluster local for several processes")
        return self

    def _validate_slurm_only(self) -> None:
        if self.job_name is not None and (not isinstance(self.job_name, str) or not _SLURM_WORD.fullmatch(self.job_name)):
            raise UserError(f"executor option job_name={self.job_name!r} is not a plain name",
                            "letters, digits, '.', '_', '-' (no spaces or quotes)")
        for name in _LISTS:
            v = getattr(self, name)
            if not isinstance(v, tuple) or not all(isinstance(x, str) for x in v):
                raise UserError(f"executor option {name}={v!r} must be a list of strings", f"repeat --{name.replace('_', '-')}")
        for line in self.setup:
            if not line.strip() or len(line) > 1000 or any(c in line for c in "\n\r\0"):
                raise UserError(f"--setup {line[:60]!r} is not one shell line",
                                "give one non-empty line per --setup (e.g. --setup 'module load cuda/12.1')")
        keys = [kv.partition("=")[0] for kv in self.slurm_extra]
        for kv, key in zip(self.slurm_extra, keys):
            _, sep, value = kv.partition("=")
            if not sep or not _SLURM_KEY.fullmatch(key) or not value or not _SLURM_WORD.fullmatch(value):
                raise UserError(f"--slurm-extra {kv[:80]!r} is not KEY=VALUE (an sbatch option without '--')",
                                "e.g. --slurm-extra reservation=myres --slurm-extra mail-type=END")
            if key.replace("_", "-") in _OWNED_SBATCH:
                raise UserError(f"--slurm-extra {key} is set by infomin-det itself",
                                f"use its own flag ({_OWNED_SBATCH[key.replace('_', '-')]}) instead")
        dup = next((k for k in keys if keys.count(k) > 1), None)
        if dup:
            raise UserError(f"--slurm-extra {dup} is given more than once", "give each key once")

    @property
    def additional_parameters(self) -> dict[str, str]:
        """``slurm_extra`` as submitit's ``additional_parameters`` (it writes ``#SBATCH --key=value``)."""
        return {k.replace("-", "_"): v for k, _, v in (kv.partition("=") for kv in self.slurm_extra)}

    # --- submitit ----------------------------------------------------------------------------
    def submitit_parameters(self, cluster: str) -> dict[str, Any]:
        """Keyword arguments for the submitit executor of ``cluster`` (its native names)."""
        if cluster == "local":
            return {"tasks_per_node": self.ntasks_per_node, "gpus_per_node": self.gpus_per_node,
                    "timeout_min": self.timeout_min, "signal_delay_s": self.signal_delay_s}
        if cluster != "slurm":
            return {}
        params: dict[str, Any] = {
            "nodes": self.nodes, "ntasks_per_node": self.ntasks_per_node,
            "cpus_per_task": self.cpus, "time": self.timeout_min,
            "signal_delay_s": self.signal_delay_s, "array_parallelism": self.array_parallelism,
        }
        if self.gpus_per_node:
            params["gpus_per_node"] = self.gpus_per_node
        if self.memory_gb is not None:
            params["mem"] = f"{int(self.memory_gb * 1024)}MB"
        for name in ("partition", "constraint", "account", "qos", "comment", "exclude"):
            v = getattr(self, name)
            if v is not None:
                params[name] = v
        if self.setup:
            params["setup"] = list(self.setup)
        if self.slurm_extra:
            params["additional_parameters"] = self.additional_parameters
        return params

    def sbatch_flags(self, array_size: int = 1) -> list[str]:
        """The request as ``sbatch`` flags (for ``--test-only``); ``array_size`` > 1 adds ``--array``."""
        flags = [f"--nodes={self.nodes}", f"--ntasks-per-node={self.ntasks_per_node}",
                 f"--cpus-per-task={self.cpus}", f"--time={self.timeout_min}"]
        if array_size > 1:
            flags.append(f"--array=0-{array_size - 1}%{min(self.array_parallelism, array_size)}")
        if self.gpus_per_node:
            flags.append(f"--gpus-per-node={self.gpus_per_node}")
        if self.memory_gb is not None:
            flags.append(f"--mem={int(self.memory_gb * 1024)}M")
        for name in ("partition", "constraint", "account", "qos", "exclude"):
            v = getattr(self, name)
            if v is not None:
                flags.append(f"--{name}={v}")
        flags += [f"--{k.replace('_', '-')}={v}" for k, _, v in (kv.partition("=") for kv in self.slurm_extra)]
        return flags

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_against_slurm(options: ExecutorOptions, array_size: int = 1) -> None:
    """Ask the scheduler whether it would accept the request (``sbatch --test-only``, queues nothing)."""
    sbatch = shutil.which("sbatch")
    if sbatch is None:
        raise UserError("--cluster slurm but no sbatch on PATH", "run on a SLURM login node or use --cluster local")
    flags = options.sbatch_flags(array_size)
    try:
        proc = subprocess.run([sbatch, "--test-only", *flags, "--wrap", "true"],
                              capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise UserError(f"cannot ask SLURM whether it accepts the job request: {e}",
                        "check that the SLURM controller is reachable (sinfo), then submit again") from None
    if proc.returncode != 0:
        lines = [l.strip() for l in (proc.stderr + proc.stdout).splitlines() if l.strip()]
        reason = lines[0] if lines else f"sbatch exited {proc.returncode}"
        hint = "fix the executor options (sinfo lists partitions and time limits; sacctmgr show qos/assoc)"
        if any(w in reason.lower() for w in ("contact slurm controller", "resolve_ctls", "unknown host",
                                             "connection refused", "could not establish a configuration")):
            hint = "the SLURM controller cannot be reached: check SLURM_CONF and that `sinfo` answers, then submit again"
        elif "gres" in reason.lower() or "generic resource" in reason.lower():
            hint = ("the partition has no such GPUs (sinfo -o '%P %G' lists its gres): pick a GPU --partition, "
                    "or run on CPUs on purpose with --gpus-per-node 0 --device cpu")
        elif "array" in reason.lower():
            hint = (f"{array_size} runs exceed the cluster's job-array limit (scontrol show config | grep "
                    "MaxArraySize): submit fewer runs per command")
        elif "time limit" in reason.lower():
            hint = "lower --timeout-min to the partition's limit (sinfo -o '%P %l')"
        raise UserError(f"SLURM refuses the job request ({' '.join(flags)}): {reason}", hint)


def resolve_cluster(cluster: str) -> str:
    """``auto`` -> ``slurm`` when ``sbatch`` is on PATH, else ``local``."""
    if cluster not in CLUSTERS:
        raise UserError(f"unknown cluster {cluster!r}", f"use one of {', '.join(CLUSTERS)}")
    if cluster == "auto":
        return "slurm" if shutil.which("sbatch") else "local"
    return cluster


# --- the executor flags of every launching CLI (submit, reproduce, pretrain) -------------------------
_HELP = {
    "partition": "SLURM partition", "nodes": "machines per run (multi-node DDP)",
    "gpus_per_node": "GPUs per machine, one process per GPU; with 0, SLURM jobs and local jobs on a machine "
    "with GPUs need --device cpu (never a silent CPU run)", "tasks_per_node": "processes per machine "
    "(default: gpus-per-node, or 1; CPU runs may use more, with gloo)",
    "cpus_per_task": f"CPUs per process (default: {GPU_TASK_CPUS} with GPUs -- the process and Detectron2's 4 "
    "data-loader workers -- else 1)",
    "mem_gb": f"memory per machine in GB (default: {GPU_MEM_GB} per GPU; without GPUs the cluster's default)",
    "timeout_min": "time limit in minutes; runs checkpoint on the time-limit signal and are requeued",
    "constraint": "SLURM --constraint",
    "account": "SLURM --account", "qos": "SLURM --qos", "comment": "SLURM --comment",
    "exclude": "nodes to avoid (SLURM --exclude)",
    "signal_delay_s": "USR2 this many seconds before the time limit (>= checkpoint time)",
    "max_requeues": "requeues allowed after time-outs", "array_parallelism": "array elements running at once",
    "job_name": "SLURM job name (default: infomin-<experiment>)",
    "setup": "a shell line the SLURM job script runs first, e.g. 'module load cuda/12.1' (repeat the flag)",
    "slurm_extra": "an sbatch option KEY=VALUE the other flags do not cover, e.g. reservation=x (repeat the flag)",
}


class _AppendTuple(argparse.Action):
    """``append`` into a tuple (the dataclass default ``()`` stays a tuple, equal to it when not given)."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, tuple(getattr(namespace, self.dest) or ()) + (values,))


def add_executor_arguments(parser: argparse.ArgumentParser, *, cluster_default: str | None = "auto") -> None:
    """One flag per :class:`ExecutorOptions` field, and ``--cluster`` (also used by the pretrain CLI).

    ``cluster_default``: what ``--cluster`` is when not given; ``None`` means "no scheduler: run in
    this process" (``args.cluster`` stays None)."""
    g = parser.add_argument_group("executor (validated before submission)")
    defaults = ExecutorOptions()
    for f in fields(ExecutorOptions):
        default = getattr(defaults, f.name)
        if isinstance(default, tuple):
            g.add_argument(f"--{f.name.replace('_', '-')}", dest=f"ex_{f.name}", action=_AppendTuple, default=default,
                           metavar="LINE" if f.name == "setup" else "KEY=VALUE", help=_HELP[f.name])
            continue
        kind = {"int": int, "float": float}.get(str(f.type).split(" ")[0], str)
        shown = "" if default is None else f" (default: {default})"
        g.add_argument(f"--{f.name.replace('_', '-')}", dest=f"ex_{f.name}", type=kind, default=default,
                       metavar={int: "N", float: "GB"}.get(kind, "NAME"), help=f"{_HELP.get(f.name, f.name)}{shown}")
    if cluster_default is not None and cluster_default not in CLUSTERS:
        raise ValueError(f"cluster_default {cluster_default!r} is not one of {CLUSTERS}")
    g.add_argument("--cluster", choices=CLUSTERS, default=cluster_default,
                   help="auto: SLURM when sbatch is on PATH, else local processes; local: submitit's local "
                        "processes; debug: in this process"
                        + (f" (default: {cluster_default})" if cluster_default else
                           " (default: run here, without a scheduler)"))


def executor_options(args: argparse.Namespace) -> ExecutorOptions:
    """The validated :class:`ExecutorOptions` of flags added by :func:`add_executor_arguments`."""
    return ExecutorOptions.from_mapping({f.name: getattr(args, f"ex_{f.name}") for f in fields(ExecutorOptions)})
