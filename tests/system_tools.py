"""System tools the tests need (a SLURM cluster, a LaTeX engine): missing in CI is a failure, elsewhere a skip.

``unavailable(what, reason)`` fails under ``CI=true`` (CI installs everything itself, so a missing
tool there is a defect) and skips with the reason elsewhere. ``apt_installed(exe, packages)``
installs Debian packages for ``exe`` when it is missing and the tests run as root with apt-get.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest


def unavailable(what: str, reason: str):
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{what} unavailable in CI: {reason}", pytrace=False)
    pytest.skip(f"{what} unavailable: {reason}")


def apt_installed(exe: str, packages: list[str], what: str) -> str:
    """The path of ``exe``, installing ``packages`` (no recommends) first where it is missing."""
    if shutil.which(exe) is None:
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            unavailable(what, f"{exe} is not installed and cannot be (needs root and apt-get): "
                              f"apt-get install {' '.join(packages)}")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        proc = subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages], env=env,
                              capture_output=True, text=True, timeout=900)
        if proc.returncode != 0 and "apt-get update" in proc.stderr + proc.stdout:
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, timeout=600)
            proc = subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages], env=env,
                                  capture_output=True, text=True, timeout=900)
        if proc.returncode != 0 or shutil.which(exe) is None:
            unavailable(what, f"apt-get install {' '.join(packages)} exited {proc.returncode}: "
                              f"{(proc.stderr or proc.stdout).strip()[-1500:]}")
    return shutil.which(exe)
