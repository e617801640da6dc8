"""Installing next to a cluster's torch: ``tools/missing_requirements.py`` (which locked lines a Python
still lacks) and ``make setup PYTHON=...`` on a Python that already has torch, which must keep that
torch byte for byte and install only what is missing.

The selection script runs as `make setup` runs it, in a subprocess; its "installed" view is steered
with ``python -S`` (no site-packages at all: a Python without torch) plus ``PYTHONPATH`` pointing at
hand-written ``*.dist-info`` folders. The set-up tests build real venvs (docs/install.md); only the locked
setuptools is fetched (index or pip cache), the rest comes from a local wheel or is already there.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tools" / "missing_requirements.py"


def select(lock: str, tmp_path: Path, *flags: str, site: Path | None = None, isolated: bool = True):
    """Run the script on ``lock`` -> (exit status, printed lines, stderr). ``isolated``: ``python -S``
    sees no site-packages, only ``site`` (via PYTHONPATH) when given."""
    path = tmp_path / "requirements.lock"
    path.write_text(lock)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if site is not None:
        env["PYTHONPATH"] = str(site)
    cmd = [sys.executable, *(["-S"] if isolated else []), str(SCRIPT), *flags, str(path)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
    return r.returncode, r.stdout.splitlines(), r.stderr


def fake_site(folder: Path, *dists: tuple[str, str]) -> Path:
    """A folder of ``<name>-<version>.dist-info/METADATA``, as pip leaves them (the folder name is
    normalised with ``_``, the Name field as the author spelt it)."""
    for name, version in dists:
        info = folder / f"{name.replace('-', '_')}-{version}.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    return folder


def test_installed_distributions_are_skipped_whatever_their_version_and_the_rest_printed(tmp_path):
    site = fake_site(tmp_path / "site", ("Typing_Extensions", "4.0.0"), ("zope.interface", "6.0"), ("PyYAML", "5.1"))
    lock = ("# a comment line\n\n"
            "typing-extensions==4.16.0\n"      # installed as Typing_Extensions 4.0.0: skipped (any version)
            "Zope_Interface==7.0   # pinned\n"  # installed as zope.interface: skipped
            "pyyaml==6.0.4\n"                  # installed as PyYAML: skipped
            "rich==15.0.0\n"
            "Jinja2==3.1.6\n")
    rc, lines, err = select(lock, tmp_path, site=site)
    assert rc == 0, err
    assert lines == ["rich==15.0.0", "Jinja2==3.1.6"]


def test_the_torch_stack_is_never_printed_with_keep_torch_even_when_absent(tmp_path):
    lock = ("torch==2.14.1\ntorchvision==0.29.1\nTriton==3.8.0\nnvidia-cudnn-cu13==9.24.0.43\nnvidia_nccl_cu13==2.30.7\n"
            "cuda-bindings==13.5.0\ncuda.pathfinder==1.9.0\ntorchaudio==2.14.1\nnumpy==2.4.6\n")
    rc, everything, err = select(lock, tmp_path)            # python -S: nothing is installed at all
    assert rc == 0, err
    assert len(everything) == 9
    rc, kept, err = select(lock, tmp_path, "--keep-torch")
    assert rc == 0, err
    assert kept == ["numpy==2.4.6"]


def test_a_real_python_with_torch_needs_no_torch_line_and_the_real_lock_parses(tmp_path):
    """Not isolated: the interpreter running the tests (torch, detectron2's deps installed)."""
    lock = (ROOT / "requirements.lock").read_text() + "infomin-det-surely-absent==0.1\n"
    rc, lines, err = select(lock, tmp_path, isolated=False)
    assert rc == 0, err
    assert "infomin-det-surely-absent==0.1" in lines
    assert not [line for line in lines if line.lower().startswith(("torch", "nvidia", "cuda", "triton"))]


@pytest.mark.parametrize("line, said", [
    ("numpy>=2.0", "is not a pinned 'name==version' line"),
    ("numpy==2.4.6; python_version < '3.12'", "is not a pinned"),
    ("-r other.txt", "is not a pinned"),
    ("git+https://example.invalid/x.git", "is not a pinned"),
    ("numpy", "is not a pinned"),
    ("-numpy==1", "is not a pinned"),
    ("numpy==", "is not a pinned"),
    ("NumPy==1.0", "NumPy is locked twice (first on line 1)"),
])
def test_a_malformed_lock_line_is_refused_with_its_line_number(tmp_path, line, said):
    rc, lines, err = select(f"numpy==2.4.6\n{line}\n", tmp_path)
    assert rc == 2 and lines == []
    assert "requirements.lock:2:" in err and said in err and "  fix: " in err and "Traceback" not in err, err


def test_conflicts_from_pip_check_are_mended_with_the_locked_versions_only_where_that_helps(tmp_path):
    lock = "antlr4-python3-runtime==4.9.3\nnumpy==2.4.6\nomegaconf==2.3.1\nnvidia-nccl-cu13==2.30.7\n"
    pip_check = (  # as `pip check` words it in a venv on the base Python (system antlr4 4.13.2)
        "sal-detectron2 0.7.2 requires black, which is not installed.\n"
        "omegaconf 2.3.1 has requirement antlr4-python3-runtime==4.9.*, but you have antlr4-python3-runtime 4.13.2.\n"
        "sal-detectron2 0.7.2 has requirement numpy<2, but you have numpy 2.4.6.\n"
        "hydra-core 1.3.8 has requirement antlr4_python3_runtime==4.9.*, but you have antlr4-python3-runtime 4.13.2.\n"
        "torch 2.6.0 has requirement nvidia-nccl-cu13==2.21.5, but you have nvidia-nccl-cu13 2.20.0.\n")
    path = tmp_path / "requirements.lock"
    path.write_text(lock)
    for flags, want in ((["--keep-torch"], ["antlr4-python3-runtime==4.9.3"]),
                        ([], ["antlr4-python3-runtime==4.9.3", "nvidia-nccl-cu13==2.30.7"])):
        r = subprocess.run([sys.executable, "-S", str(SCRIPT), *flags, "--conflicts", str(path)], input=pip_check,
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert r.stdout.splitlines() == want      # numpy: the lock pins what is there already; black: not locked


def test_an_unreadable_lock_is_refused(tmp_path):
    r = subprocess.run([sys.executable, "-S", str(SCRIPT), str(tmp_path / "absent.lock")], capture_output=True, text=True)
    assert r.returncode == 2 and "cannot read" in r.stderr and "  fix: " in r.stderr, r.stderr


# ---------------------------------------------------------------------------------------------
# make setup on a "cluster Python": the base interpreter with torch (and the rest) in its user site
# (PYTHONUSERBASE; a venv made with --system-site-packages sees the user site too)

BASE_PYTHON = str(getattr(sys, "_base_executable", sys.executable))   # the interpreter this venv was built on
USER_SITE = Path("lib") / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
NOT_LINKED = ("pip", "setuptools", "pkg_resources", "_distutils_hack", "distutils-precedence.pth", "__editable__",
              "infomin_det", "__pycache__")   # the venv brings pip/setuptools; the package is installed by setup


@pytest.fixture
def scratch(tmp_path):
    """tmp_path, removed afterwards (venvs and hard-linked trees; unlinking leaves the originals alone)."""
    if not shutil.which("make"):
        pytest.skip("no make")
    yield tmp_path
    shutil.rmtree(tmp_path, ignore_errors=True)


def make_setup(root: Path, venv: Path, lock_extra: str = "", timeout: float = 600, **env: str) -> tuple[int, str]:
    """`make setup VENV=venv PYTHON=<base interpreter>` on a copy of what it reads (so that the editable
    install points into ``root``, not at this checkout; ``lock_extra`` is added to its lock) -> (exit
    status, output)."""
    repo = root / "repo"
    if not repo.exists():
        for rel in ("Makefile", "requirements.lock", "pyproject.toml", "README.md", "tools/missing_requirements.py"):
            (repo / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, repo / rel)
        for pkg in ("infomin_det", "pretrain", "transfer_configs"):
            shutil.copytree(ROOT / pkg, repo / pkg, ignore=shutil.ignore_patterns("__pycache__"))
        if lock_extra:
            with open(repo / "requirements.lock", "a") as f:
                f.write(lock_extra + "\n")
    r = subprocess.run(["make", "-C", str(repo), "setup", f"VENV={venv}", f"PYTHON={BASE_PYTHON}"],
                       env=_env(**env), capture_output=True, text=True, timeout=timeout)
    return r.returncode, r.stdout + r.stderr


def _env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if Path(p).resolve() != Path(sys.executable).parent.resolve())
    env.update(extra)
    return env


def _tree_digest(folder: Path) -> dict[str, str]:
    """sha256 of every file below ``folder`` (byte caches aside: Python may add those on import)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and "__pycache__" not in p.parts}


def _probe_wheel(folder: Path) -> str:
    """A tiny pure-Python wheel, so that the set-up has one locked package to install, offline."""
    name, version = "infomin_det_probe", "1.0"
    files = {"infomin_det_probe.py": b"VALUE = 42\n",
             f"{name}-{version}.dist-info/METADATA": b"Metadata-Version: 2.1\nName: infomin-det-probe\nVersion: 1.0\n",
             f"{name}-{version}.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\n"
                                                  b"Tag: py3-none-any\n"}
    record = "".join(f"{p},sha256={base64.urlsafe_b64encode(hashlib.sha256(b).digest()).rstrip(b'=').decode()},{len(b)}\n"
                     for p, b in files.items()) + f"{name}-{version}.dist-info/RECORD,,\n"
    folder.mkdir(parents=True)
    with zipfile.ZipFile(folder / f"{name}-{version}-py3-none-any.whl", "w") as z:
        for p, b in files.items():
            z.writestr(p, b)
        z.writestr(f"{name}-{version}.dist-info/RECORD", record)
    return f"infomin-det-probe=={version}"


def test_make_setup_on_a_python_with_torch_keeps_it_byte_for_byte_and_installs_only_what_is_missing(scratch):
    import torch

    source = Path(torch.__file__).resolve().parents[1]     # this venv's site-packages (torch, detectron2, ...)
    userbase = scratch / "cluster"
    user_site = userbase / USER_SITE
    user_site.mkdir(parents=True)
    entries = [str(p) for p in sorted(source.iterdir()) if not p.name.startswith(NOT_LINKED)]
    linked = subprocess.run(["cp", "-al", *entries, str(user_site)], capture_output=True, text=True)
    if linked.returncode != 0:
        pytest.skip(f"cannot hard-link site-packages into {scratch}: {linked.stderr.strip()[:200]}")
    probe = _probe_wheel(scratch / "wheels")
    kept = user_site / "torch"
    before = _tree_digest(kept)
    assert len(before) > 1000

    venv = scratch / "venv"
    env = {"PYTHONUSERBASE": str(userbase), "PIP_FIND_LINKS": str(scratch / "wheels")}
    rc, out = make_setup(scratch, venv, lock_extra=probe, **env)
    assert rc == 0, out
    assert "has torch: keeping it" in out and f"locked packages this Python lacks (--no-deps): {probe}" in out, out
    assert "ok      torch" in out and "ok      torchvision" in out, out
    assert "[setup] detectron2 present" in out and "[setup] ok: torch 2." in out, out
    assert "result  ok: nothing required is missing (not required here:" in out, out   # the doctor after install
    assert "include-system-site-packages = true" in (venv / "pyvenv.cfg").read_text()

    # the kept torch is the one imported, and not one of its files changed
    got = subprocess.run([str(venv / "bin" / "python"), "-c",
                          "import torch, torchvision, detectron2, infomin_det_probe, infomin_det; "
                          "print(torch.__file__); print(torchvision.__file__); print(detectron2.__file__); "
                          "print(infomin_det_probe.__file__); print(infomin_det.__file__)"],
                         env=_env(**env), cwd=scratch, capture_output=True, text=True, timeout=120)
    assert got.returncode == 0, got.stderr
    t, tv, d2, pr, pkg = map(Path, got.stdout.split())
    assert t.parent == kept and tv.is_relative_to(user_site) and d2.is_relative_to(user_site), got.stdout
    venv_site = next((venv / "lib").glob("python*/site-packages"))
    assert pr.is_relative_to(venv_site) and pkg.is_relative_to(scratch / "repo"), got.stdout
    assert _tree_digest(kept) == before

    # the venv's own site-packages got exactly: pip + setuptools (venv), the probe, this package
    own = sorted(p.name.split("-")[0].lower() for p in venv_site.glob("*.dist-info"))
    assert own == ["infomin_det", "infomin_det_probe", "pip", "setuptools"], own
    assert not [p for p in venv_site.iterdir() if p.name.startswith(("torch", "nvidia", "triton", "cuda"))]

    rc, again = make_setup(scratch, venv, **env)          # a second run only checks the stamp
    assert rc == 0 and "[setup]" not in again, again


def test_make_setup_refuses_a_kept_torch_older_than_2_6_and_leaves_it_alone(scratch):
    userbase = scratch / "cluster"
    for name, version in (("torch", "2.5.1+cu121"), ("torchvision", "0.20.1+cu121")):
        (userbase / USER_SITE / name).mkdir(parents=True)
        (userbase / USER_SITE / name / "__init__.py").write_text(f"__version__ = {version!r}\n")
    before = _tree_digest(userbase)
    venv = scratch / "venv"
    rc, out = make_setup(scratch, venv, PYTHONUSERBASE=str(userbase), PIP_NO_INDEX="1")
    assert rc != 0, out
    assert "has torch: keeping it" in out and "missing torch" in out and "older than 2.6" in out, out
    assert "fix: install torch >= 2.6" in out and "[setup] refused:" in out and "nothing was installed" in out, out
    assert "locked packages" not in out and "pinned packages" not in out, out
    assert not venv.exists()                       # the venv it had just made is gone; the torch is untouched
    assert _tree_digest(userbase) == before


def test_make_setup_on_a_python_without_torch_takes_the_fresh_path(scratch):
    """PIP_NO_INDEX stops it at the first download: far enough to see which way it went."""
    venv = scratch / "venv"
    rc, out = make_setup(scratch, venv, PYTHONNOUSERSITE="1", PIP_NO_INDEX="1", PIP_FIND_LINKS="")
    if "has torch: keeping it" in out:
        pytest.skip(f"{BASE_PYTHON} itself has torch")
    assert "[setup] pinned packages (requirements.lock)" in out and "kept torch" not in out, out
    assert "include-system-site-packages = false" in (venv / "pyvenv.cfg").read_text()
