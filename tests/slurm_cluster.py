"""Session fixture ``slurm_cluster``: the project's loopback SLURM (infomin_det/launch/slurm_local).

Started once per test session in ``${TMPDIR:-/tmp}/infomin-det-slurm-pytest-<port>`` on ports
16917-16920 (away from the default 6817 and from a developer's cluster on 16817; set
``INFOMIN_DET_TEST_SLURM_PORT`` to run two test sessions side by side) and stopped at session end
(stop.sh signals only the PIDs start.sh recorded). In CI (``CI=true``) a cluster that cannot start
fails the tests that need it; elsewhere they skip with the reason (not root, no apt-get).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import system_tools

import infomin_det.launch

SCRIPTS = Path(infomin_det.launch.__file__).parent / "slurm_local"
PORT_BASE = int(os.environ.get("INFOMIN_DET_TEST_SLURM_PORT", "16917"))


@dataclass(frozen=True)
class SlurmCluster:
    directory: Path
    conf: Path

    def run(self, *cmd: str) -> str:
        return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def unavailable(reason: str):
    system_tools.unavailable("SLURM test cluster", reason)


@pytest.fixture(scope="session")
def slurm_cluster():
    if os.geteuid() != 0:
        unavailable("the loopback cluster's daemons need root")
    if shutil.which("sbatch") is None and shutil.which("apt-get") is None:
        unavailable("SLURM is not installed and apt-get is not available to install it")
    directory = Path(tempfile.gettempdir()) / f"infomin-det-slurm-pytest-{PORT_BASE}"
    env = dict(os.environ, SLURM_PORT_BASE=str(PORT_BASE), SLURM_CPUS="8")
    # a fresh cluster per session: daemons left by a killed session are stopped and their state (job
    # state, spool, accounting db) wiped, so that a state dir corrupted by e.g. a full disk cannot wedge slurmd
    subprocess.run(["bash", str(SCRIPTS / "stop.sh"), str(directory)], capture_output=True, timeout=120)
    shutil.rmtree(directory, ignore_errors=True)
    proc = subprocess.run(["bash", str(SCRIPTS / "start.sh"), str(directory)], env=env,
                          capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        subprocess.run(["bash", str(SCRIPTS / "stop.sh"), str(directory)], capture_output=True)
        unavailable(f"start.sh exited {proc.returncode}: {proc.stderr.strip()[-2000:]}")
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(directory / "etc" / "slurm.conf")
    try:
        yield SlurmCluster(directory, directory / "etc" / "slurm.conf")
    finally:
        subprocess.run(["bash", str(SCRIPTS / "stop.sh"), str(directory)], capture_output=True, timeout=120)
        if old is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = old
