"""``infomin-det doctor``: can this machine run the toolkit? One line per fact, ``ok`` / ``warn`` / ``missing``.

Owns the environment checks (Python, torch >= 2.6 and its torchvision, CUDA / GPUs, NCCL, gloo,
Detectron2 and its compiled ops, pycocotools, submitit, the standard datasets under
$DETECTRON2_DATASETS, SLURM), the supported-version rule ``make setup`` applies to a kept torch
(``doctor --only torch``), and what is *required*: exit 1 when a required check is ``missing``, else 0.
Required always: python, torch, torchvision, gloo, detectron2, pycocotools, submitit; with
``--require-gpu`` also cuda (and NCCL, which needs it); with ``--require-slurm`` slurm. Datasets and
Detectron2's compiled ops never fail the run (train refuses a missing dataset itself).

Nothing heavy is imported with this module: each check imports what it inspects, inside the check,
and reports any failure (ImportError, or any Exception from a broken build) as its value, never a
traceback. Subprocesses (``sinfo``) run with a timeout in their own process group.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from infomin_det.errors import UserError

PYTHON_MIN = (3, 10)
TORCH_MIN = (2, 6)          # torch.load(weights_only=True) by default; every checkpoint here is untrusted
SUBMITIT_MIN = (1, 5)
IMAGE_COUNT_CAP = 1000      # a dataset's image folder is counted up to this many entries, never listed whole
OK, WARN, MISSING = "ok", "warn", "missing"


@dataclass
class Check:
    name: str
    status: str             # ok | warn | missing
    value: str
    fix: str = ""
    required: bool = False


def release(version: str) -> tuple[int, ...]:
    """The release numbers a version starts with: ``2.6.0a0+git1a2b`` -> (2, 6, 0); () if none."""
    m = re.match(r"\d+(?:\.\d+)*", version.strip())
    return tuple(int(x) for x in m.group(0).split(".")) if m else ()


def torchvision_for(torch_version: str) -> str:
    """The torchvision minor line built for a torch 2.x release: 2.m pairs with 0.(m+15)."""
    r = release(torch_version)
    return f"0.{r[1] + 15}" if len(r) >= 2 and r[0] == 2 else ""


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".rstrip(": ")


@contextlib.contextmanager
def _quiet():
    """Imports of third-party libraries: warnings dropped and stray prints sent to stderr (so that
    ``--json`` keeps stdout to one JSON object)."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
        warnings.simplefilter("ignore")
        yield


_IMPORTED: dict[str, Any] = {}


def _import(name: str) -> tuple[Any, str]:
    """(module, "") or (None, "<the error's first line>"); each module is tried once per run."""
    if name not in _IMPORTED:
        try:
            with _quiet():
                _IMPORTED[name] = (importlib.import_module(name), "")
        except Exception as e:          # ImportError, or anything a broken build raises while loading
            _IMPORTED[name] = (None, _first_line(e))
    return _IMPORTED[name]


def _needs(what: str, *names: str) -> list[Check]:
    """Checks that cannot run because ``what`` is missing: each points at that line."""
    return [Check(n, MISSING, f"needs {what}", f"see the {what} line") for n in names]


def _dist_version(name: str) -> str:
    from importlib import metadata
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return ""


# ------------------------------------------------------------------------------------------------
# python, torch, torchvision

SETUP_FIX = ("on a fresh machine `make setup` (pinned torch 2.14.1); with your cluster's PyTorch module or "
             "conda env active: `make setup PYTHON=$(which python)` (docs/install.md)")


def check_python() -> list[Check]:
    v = ".".join(map(str, sys.version_info[:3]))
    where = sys.executable
    if sys.prefix != sys.base_prefix:
        cfg = Path(sys.prefix) / "pyvenv.cfg"
        system = "yes" if cfg.is_file() and re.search(r"^include-system-site-packages\s*=\s*true",
                                                      cfg.read_text(errors="replace"), re.M | re.I) else "no"
        where += f" (venv, system site-packages: {system})"
    if sys.version_info[:2] < PYTHON_MIN:
        return [Check("python", MISSING, f"{v} at {where} is older than {'.'.join(map(str, PYTHON_MIN))}",
                      "use Python >= 3.10 (a newer module / conda env), then `make setup PYTHON=$(which python)`")]
    return [Check("python", OK, f"{v} at {where}")]


def torch_problem(torch_version: str) -> str:
    """Why ``torch_version`` is outside the supported range, or ""."""
    r = release(torch_version)
    if r[:2] < TORCH_MIN:
        return (f"older than {'.'.join(map(str, TORCH_MIN))}: every checkpoint is read with weights_only=True, "
                "the safe loading torch makes the default from 2.6")
    return ""


def torchvision_problem(torch_version: str, tv_version: str) -> str:
    """Why ``tv_version`` does not pair with ``torch_version``, or ""."""
    want = torchvision_for(torch_version)
    have = ".".join(map(str, release(tv_version)[:2]))
    if want and have != want:
        return f"{tv_version} is not the torchvision of torch {torch_version} (that is {want}.x)"
    return ""


def check_torch() -> list[Check]:
    torch, err = _import("torch")
    if torch is None:
        hint = "installed but does not load" if _dist_version("torch") else "not installed"
        return [Check("torch", MISSING, f"{hint}: {err}", SETUP_FIX), *_needs("torch", "torchvision")]
    tv_pin = torchvision_for(torch.__version__)
    problem = torch_problem(torch.__version__)
    where = f"{torch.__version__} at {Path(torch.__file__).parent}"
    if problem:
        out = [Check("torch", MISSING, f"{where}: {problem}",
                     "install torch >= 2.6 with its torchvision into that Python (your site's newer PyTorch "
                     "module / conda env, or pip from the PyTorch index for your CUDA), or build the venv on a "
                     "Python without torch: `make clean setup PYTHON=python3` installs the pinned 2.14.1")]
    else:
        out = [Check("torch", OK, f"{where} (>= 2.6: weights-only loading)")]
    tv, err = _import("torchvision")
    fix_tv = (f"install torchvision {tv_pin}.x next to this torch: pip install --no-deps 'torchvision=={tv_pin}.*'"
              if tv_pin else "install the torchvision released with this torch next to it (pip install --no-deps)")
    if tv is None:
        out.append(Check("torchvision", MISSING, f"not importable: {err}", fix_tv))
        return out
    if out[0].status == MISSING:
        out.append(Check("torchvision", MISSING, f"{tv.__version__}: goes with that torch; replace it together with torch",
                         "see the torch line"))
        return out
    problem = torchvision_problem(torch.__version__, tv.__version__)
    if problem:
        out.append(Check("torchvision", MISSING, problem, fix_tv))
        return out
    try:                                    # its compiled ops: ROIAlign / NMS of every Detectron2 build
        with _quiet():
            tv.ops.nms(torch.zeros((1, 4)), torch.zeros(1), 0.5)
    except Exception as e:
        out.append(Check("torchvision", MISSING, f"{tv.__version__}: its compiled ops do not load ({_first_line(e)})",
                         fix_tv))
        return out
    out.append(Check("torchvision", OK, f"{tv.__version__} (pairs with torch {'.'.join(map(str, release(torch.__version__)[:2]))}; "
                                        "compiled ops load)"))
    return out


# ------------------------------------------------------------------------------------------------
# cuda, nccl, gloo

def _gpus(torch) -> tuple[int, list[str], str]:
    """(visible GPU count, names, warnings torch gave while looking)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        available = torch.cuda.is_available()
        count = torch.cuda.device_count() if available else 0
        names = [torch.cuda.get_device_name(i) for i in range(count)]
    said = "; ".join(sorted({str(w.message).strip().splitlines()[0] for w in caught if str(w.message).strip()}))
    return count, names, said


def check_cuda() -> list[Check]:
    torch, err = _import("torch")
    if torch is None:
        return _needs("torch", "cuda")
    built = torch.version.cuda
    if not built:
        hip = getattr(torch.version, "hip", None)
        return [Check("cuda", MISSING, f"this torch is a {'ROCm (HIP ' + hip + ')' if hip else 'CPU-only'} build",
                      "install a CUDA build of torch + torchvision (your site's PyTorch module, or the CUDA "
                      "wheels), then `make setup PYTHON=$(which python)`")]
    try:
        count, names, said = _gpus(torch)
    except Exception as e:
        count, names, said = 0, [], _first_line(e)
    if count:
        groups = {n: names.count(n) for n in names}
        listed = ", ".join(f"{n} x{k}" if k > 1 else n for n, k in groups.items())
        return [Check("cuda", OK, f"torch built with CUDA {built}; {count} GPU(s): {listed}")]
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    detail = f"CUDA_VISIBLE_DEVICES={visible!r}" if visible is not None else "torch.cuda.is_available() is False"
    return [Check("cuda", MISSING, f"torch built with CUDA {built}, but no GPU is visible ({detail}"
                                   + (f"; torch: {said}" if said else "") + ")",
                  "run on a GPU node (e.g. `srun --gres=gpu:1 infomin-det doctor --require-gpu`); there check "
                  "the driver with nvidia-smi and that CUDA_VISIBLE_DEVICES is not empty")]


def check_distributed() -> list[Check]:
    torch, err = _import("torch")
    if torch is None:
        return _needs("torch", "nccl", "gloo")
    dist, err = _import("torch.distributed")
    if dist is None or not dist.is_available():
        why = err or "torch.distributed.is_available() is False"
        fix = "use a torch built with distributed support (the PyPI and conda builds are)"
        return [Check("nccl", MISSING, why, fix), Check("gloo", MISSING, why, fix)]
    out = []
    if dist.is_nccl_available():
        try:
            v = torch.cuda.nccl.version()
            version = ".".join(map(str, v)) if isinstance(v, tuple) else str(v)
        except Exception as e:
            version = f"version unknown ({_first_line(e)})"
        try:
            gpus = _gpus(torch)[0]
        except Exception:
            gpus = 0
        if gpus:
            out.append(Check("nccl", OK, f"NCCL {version} (multi-GPU runs use it)"))
        else:
            out.append(Check("nccl", WARN, f"torch has NCCL {version}, unusable without a GPU (processes here use gloo)",
                             "see the cuda line"))
    else:
        out.append(Check("nccl", MISSING, "this torch has no NCCL (multi-GPU runs need it)",
                         "use a CUDA build of torch with NCCL (the PyPI CUDA wheels and conda's pytorch-cuda have it)"))
    if dist.is_gloo_available():
        out.append(Check("gloo", OK, "available (CPU processes; the launcher's local path)"))
    else:
        out.append(Check("gloo", MISSING, "this torch has no gloo backend",
                         "use a torch built with gloo (every PyPI / conda Linux build is)"))
    return out


# ------------------------------------------------------------------------------------------------
# detectron2 and its compiled ops

D2_FIX = ("`make setup` installs the PyPI redistribution sal-detectron2 (pure-Python use); on a GPU cluster build "
          "Detectron2 from source against this torch: pip install --no-build-isolation --no-deps -e <detectron2 checkout>")
OPS_MEANING = ("so Detectron2 runs its pure-Python paths (ROIAlign / NMS are torchvision's in every build): COCO "
               "evaluation uses pycocotools' official COCOeval (slower than the C++ one); deformable conv and "
               "rotated-box ops are unavailable (no protocol here uses them)")


def check_detectron2() -> list[Check]:
    torch, _ = _import("torch")
    if torch is None:
        return _needs("torch", "detectron2", "detectron2-ops")
    d2, err = _import("detectron2")
    if d2 is None:
        return [Check("detectron2", MISSING, f"not importable: {err}", D2_FIX), *_needs("detectron2", "detectron2-ops")]
    where = Path(d2.__file__).parent
    from importlib import metadata
    dists = []                              # the distribution that installed *this* copy, if any
    try:
        for name in metadata.packages_distributions().get("detectron2") or []:
            if Path(metadata.distribution(name).locate_file("detectron2")).resolve() == where.resolve():
                dists.append(name)
    except Exception:
        pass
    source = f" from {', '.join(dists)}" if dists else ""
    version = getattr(d2, "__version__", "?")
    engine, err = _import("detectron2.engine")           # what train builds on: models, data, evaluation
    if engine is None:
        out = [Check("detectron2", MISSING, f"{version} at {where}{source}, but detectron2.engine does not "
                                            f"load: {err}",
                     "one of its dependencies does not work: `python -m pip check` names version conflicts; install "
                     "the version requirements.lock pins (in a venv: pip install --no-deps NAME==VERSION)")]
    else:
        out = [Check("detectron2", OK, f"{version} at {where}{source}")]
    out.append(_check_ops(where))
    return out


def _check_ops(where: Path) -> Check:
    import importlib.util
    import sysconfig
    suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
    try:
        spec = importlib.util.find_spec("detectron2._C")
    except Exception:
        spec = None
    fix = ("optional: build Detectron2 from source against this torch (pip install --no-build-isolation --no-deps -e "
           "<detectron2 checkout>) for the fast COCO evaluation")
    if spec is None:
        others = sorted(p.name for p in where.glob("_C*.so"))
        found = (f"only {', '.join(others)}, not loadable by this Python ({suffix})" if others else "none")
        return Check("detectron2-ops", WARN, f"compiled ops (detectron2._C): {found}; {OPS_MEANING}", fix)
    C, err = _import("detectron2._C")
    if C is None:
        return Check("detectron2-ops", WARN, f"detectron2._C is there but does not load ({err}; built against another "
                                             f"torch?); {OPS_MEANING}",
                     "rebuild Detectron2 against this torch: pip install --no-build-isolation --no-deps -e "
                     "<detectron2 checkout> (after rm -rf build/ there)")
    facts = []
    for label, attr in (("CUDA", "get_cuda_version"), ("compiler", "get_compiler_version")):
        try:
            facts.append(f"{label} {getattr(C, attr)()}")
        except Exception:
            pass
    return Check("detectron2-ops", OK, "compiled ops load" + (f" ({', '.join(facts)})" if facts else ""))


# ------------------------------------------------------------------------------------------------
# pycocotools, submitit

def check_pycocotools() -> list[Check]:
    mod, err = _import("pycocotools.mask")               # the compiled RLE code
    if mod is None:
        return [Check("pycocotools", MISSING, f"not importable: {err}",
                      "pip install --no-deps pycocotools (the version in requirements.lock), or `make setup`")]
    return [Check("pycocotools", OK, _dist_version("pycocotools") or "importable")]


def check_submitit() -> list[Check]:
    mod, err = _import("submitit")
    fix = "pip install --no-deps 'submitit>=1.5' (the version in requirements.lock), or `make setup`"
    if mod is None:
        return [Check("submitit", MISSING, f"not importable: {err}", fix)]
    version = _dist_version("submitit") or getattr(mod, "__version__", "")
    if release(version)[:2] < SUBMITIT_MIN:
        return [Check("submitit", MISSING, f"{version} is older than 1.5", fix)]
    return [Check("submitit", OK, version)]


# ------------------------------------------------------------------------------------------------
# datasets: Detectron2's builtin layout under $DETECTRON2_DATASETS (default ./datasets)

# name -> (protocols that read it, [(relative path, is_file)], image folder)
DATASETS: dict[str, tuple[str, list[tuple[str, bool]], str]] = {
    "coco_2017_train": ("coco/*", [("coco/annotations/instances_train2017.json", True), ("coco/train2017", False)],
                        "coco/train2017"),
    "coco_2017_val": ("coco/*", [("coco/annotations/instances_val2017.json", True), ("coco/val2017", False)],
                      "coco/val2017"),
    "voc_2007_trainval": ("voc/*", [("VOC2007/ImageSets/Main/trainval.txt", True), ("VOC2007/Annotations", False),
                                    ("VOC2007/JPEGImages", False)], "VOC2007/JPEGImages"),
    "voc_2007_test": ("voc/*", [("VOC2007/ImageSets/Main/test.txt", True), ("VOC2007/Annotations", False),
                                ("VOC2007/JPEGImages", False)], "VOC2007/JPEGImages"),
    "voc_2012_trainval": ("voc/*", [("VOC2012/ImageSets/Main/trainval.txt", True), ("VOC2012/Annotations", False),
                                    ("VOC2012/JPEGImages", False)], "VOC2012/JPEGImages"),
}


def _count_files(folder: Path, cap: int = IMAGE_COUNT_CAP) -> str:
    n = 0
    with os.scandir(folder) as it:
        for entry in it:
            if entry.is_file():
                n += 1
                if n >= cap:
                    return f"{cap}+"
    return str(n)


def check_datasets() -> list[Check]:
    env = os.environ.get("DETECTRON2_DATASETS")
    root = Path(env if env else "datasets")
    said = f"DETECTRON2_DATASETS={env}" if env else "DETECTRON2_DATASETS unset: ./datasets"
    where = f"{said} ({root.absolute()})" if not root.is_absolute() or not env else said
    fix_root = ("set DETECTRON2_DATASETS to the folder holding Detectron2's layout (coco/..., VOC2007/, VOC2012/; "
                "docs/install.md), or train on your own COCO-format set with --dataset coco-json:...")
    if not root.exists():
        out = [Check("datasets", MISSING, f"{where} does not exist", fix_root)]
    elif not root.is_dir():
        out = [Check("datasets", MISSING, f"{where} is not a folder", fix_root)]
    else:
        out = [Check("datasets", OK, where)]
    for name, (protocols, needed, images) in DATASETS.items():
        absent = [f"{rel}{'' if is_file else '/'}" for rel, is_file in needed
                  if not ((root / rel).is_file() if is_file else (root / rel).is_dir())]
        if absent:
            out.append(Check(name, MISSING, f"no {', '.join(absent)} (the {protocols} protocols read it)",
                             f"put it under {root.absolute()} in Detectron2's layout, or set DETECTRON2_DATASETS"))
            continue
        try:
            n = _count_files(root / images)
        except OSError as e:
            out.append(Check(name, WARN, f"cannot read {images}/: {e.strerror}", "check its permissions"))
            continue
        if n == "0":
            out.append(Check(name, WARN, f"found, but {images}/ holds no files", "copy or link the images there"))
        else:
            out.append(Check(name, OK, f"found ({images}/: {n} files)"))
    return out


# ------------------------------------------------------------------------------------------------
# slurm

def _run(cmd: list[str], timeout: float) -> tuple[int | None, str, str]:
    """(exit status or None on timeout, stdout, stderr); the command runs in its own process group,
    killed whole on timeout (a hung ``sinfo`` script and its children alike)."""
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
        return p.returncode, out, err
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.pid, signal.SIGKILL)
        p.kill()
        p.communicate()
        return None, "", ""


def check_slurm(timeout: float) -> list[Check]:
    sbatch, sinfo = shutil.which("sbatch"), shutil.which("sinfo")
    local = "without SLURM, `infomin-det submit --cluster local` runs the same jobs on this machine"
    if not sbatch and not sinfo:
        return [Check("slurm", MISSING, "no sbatch / sinfo on PATH",
                      f"on a SLURM login node load the slurm module (or add its bin/ to PATH); {local}")]
    if not sinfo:
        return [Check("slurm", WARN, f"sbatch at {sbatch}, but no sinfo on PATH to ask for partitions",
                      "add SLURM's bin/ (with sinfo) to PATH")]
    job = f"; inside job {os.environ['SLURM_JOB_ID']}" if os.environ.get("SLURM_JOB_ID") else ""
    try:
        rc, out, err = _run([sinfo, "-h", "-o", "%P"], timeout)
    except OSError as e:
        return [Check("slurm", MISSING, f"{sinfo} cannot run: {e.strerror or e}", "fix or remove that sinfo on PATH")]
    fix = ("check the controller (`scontrol ping`), SLURM_CONF and that this is a login node of the cluster; "
           f"{local}")
    if rc is None:
        return [Check("slurm", MISSING, f"{sinfo} did not answer within {timeout:g} s (controller unreachable?)", fix)]
    if rc != 0:
        said = (err.strip() or out.strip()).splitlines()
        return [Check("slurm", MISSING, f"{sinfo} -h -o %P exited {rc}" + (f": {said[-1][:200]}" if said else ""), fix)]
    parts = list(dict.fromkeys(p.strip() for p in out.split() if p.strip()))
    if not sbatch:
        return [Check("slurm", MISSING, f"sinfo answers (partitions: {', '.join(parts) or 'none'}), but no sbatch on PATH",
                      "add SLURM's bin/ (with sbatch) to PATH")]
    shown = ", ".join(parts[:12]) + (f" (+{len(parts) - 12} more)" if len(parts) > 12 else "")
    if not parts:
        return [Check("slurm", WARN, f"sinfo answers but lists no partition{job}", "ask the admins which partition to use")]
    return [Check("slurm", OK, f"sbatch at {sbatch}; partitions: {shown}{job}")]


# ------------------------------------------------------------------------------------------------
# the command

GROUPS: dict[str, Callable[[argparse.Namespace], list[Check]]] = {
    "python": lambda a: check_python(),
    "torch": lambda a: check_torch(),            # torch + torchvision
    "cuda": lambda a: check_cuda(),
    "distributed": lambda a: check_distributed(),  # nccl + gloo
    "detectron2": lambda a: check_detectron2(),  # detectron2 + detectron2-ops
    "pycocotools": lambda a: check_pycocotools(),
    "submitit": lambda a: check_submitit(),
    "datasets": lambda a: check_datasets(),
    "slurm": lambda a: check_slurm(a.timeout),
}
# a check's name also selects its group
ALIASES = {"torchvision": "torch", "nccl": "distributed", "gloo": "distributed", "detectron2-ops": "detectron2",
           **{name: "datasets" for name in DATASETS}}
ALWAYS_REQUIRED = {"python", "torch", "torchvision", "gloo", "detectron2", "pycocotools", "submitit"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true",
                   help='one JSON object on stdout: {"checks": [{"name", "status", "value", "fix", "required"}], "ok"}')
    p.add_argument("--require-gpu", action="store_true", help="a missing GPU / CUDA is an error (exit 1)")
    p.add_argument("--require-slurm", action="store_true", help="an unreachable SLURM is an error (exit 1)")
    p.add_argument("--only", nargs="+", metavar="GROUP", default=None,
                   help=f"run only these groups of checks: {', '.join(GROUPS)}")
    p.add_argument("--timeout", type=float, default=5.0, metavar="S",
                   help="seconds `sinfo` may take before SLURM is reported unreachable (default 5)")


def required_names(args: argparse.Namespace) -> set[str]:
    names = set(ALWAYS_REQUIRED)
    if args.require_gpu:
        names |= {"cuda", "nccl"}
    if args.require_slurm:
        names.add("slurm")
    return names


def run_checks(args: argparse.Namespace) -> list[Check]:
    groups = [ALIASES.get(g, g) for g in (args.only or list(GROUPS))]
    unknown = [g for g in groups if g not in GROUPS]
    if unknown:
        raise UserError(f"--only {' '.join(unknown)}: no such group of checks", f"use some of: {', '.join(GROUPS)}")
    if not (0 < args.timeout <= 120):
        raise UserError(f"--timeout {args.timeout:g} must be > 0 and <= 120 seconds", "pass e.g. --timeout 5")
    required = required_names(args)
    checks: list[Check] = []
    for group in dict.fromkeys(groups):
        try:
            got = GROUPS[group](args)
        except Exception as e:          # a check that breaks is a finding, not a traceback
            got = [Check(group, MISSING, f"the check itself failed: {_first_line(e)}", "report this with the line above")]
        for c in got:
            c.required = c.name in required
        checks += got
    return checks


def format_human(checks: list[Check], ok: bool) -> str:
    width = max(len(c.name) for c in checks)
    lines = []
    for c in checks:
        lines.append(f"{c.status:<8}{c.name:<{width + 2}}{c.value}")
        if c.fix and c.status != OK:
            lines.append(f"{'':<{width + 10}}fix: {c.fix}")
    failed = [c.name for c in checks if c.required and c.status == MISSING]
    other = "; ".join(f"{', '.join(c.name for c in checks if not c.required and c.status == s)} {s}"
                      for s in (MISSING, WARN) if any(not c.required and c.status == s for c in checks))
    if ok:
        lines.append("result  ok: nothing required is missing" + (f" (not required here: {other})" if other else ""))
    else:
        lines.append(f"result  missing what is required: {', '.join(failed)} (exit 1)")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    checks = run_checks(args)
    ok = not any(c.required and c.status == MISSING for c in checks)
    if args.json:
        print(json.dumps({"checks": [asdict(c) for c in checks], "ok": ok}, indent=1))
    else:
        print(format_human(checks, ok))
    return 0 if ok else 1
