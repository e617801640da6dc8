"""Multi-node DDP for real: ``infomin-det submit --nodes 2 --tasks-per-node 2`` on a two-node SLURM.

The fixture builds two machines on this one: each node is a network namespace with its own address
(``10.217.X.1`` and ``.2`` on a bridge that also carries the controller at ``.254``), its own host
name (UTS namespace) and its own ``/etc/hosts`` (a private bind mount: nothing is written to the
host's), running its own ``slurmd -N mn<i>``; slurmctld and munged are private to the fixture too
(Debian's slurm-wlm needs no ``--enable-multiple-slurmd`` for this: the nodes differ in host name,
address and port). A task on ``mn2`` reaches ``mn1`` only over the bridge, by the name SLURM gives
it, and a connection to its *own* address finds nothing there -- so a rendezvous on any host but
the first of the node list (``mn[1-2]``, compressed) cannot succeed (checked when the cluster starts).

The job trains the tiny Mask R-CNN (gloo, naiveSyncBN) through the real ``train_worker``, watched by
:func:`placed_train_worker`, which records where each process believes it sits. What would break if
global rank, local rank, world size or the master address were derived wrongly: two ranks 0 (a
rank from ``SLURM_LOCALID``), a world per node, ranks on ``mn2`` connecting to themselves -- each
hangs the rendezvous, which here times out in 2 minutes (``INFOMIN_DET_DIST_TIMEOUT_S``) and fails
the job; a wrong local rank / local group size is asserted directly.

Needs root and ``ip netns`` (skipped with the reason elsewhere; with ``CI=true`` a cluster that
cannot start fails the test, as the loopback cluster does).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from system_tools import unavailable

from infomin_det.engine.tiny import tiny

pytestmark = [pytest.mark.slurm, pytest.mark.detectron2]
pytest.importorskip("detectron2")

TESTS = Path(__file__).resolve().parent
PORT = int(os.environ.get("INFOMIN_DET_TEST_MULTINODE_PORT", "17317"))     # slurmctld; slurmd: PORT + 1
NET = f"10.217.{PORT % 250}"
NODES = ("mn1", "mn2")
BRIDGE = f"imn{PORT}br"
PROTOCOL = "coco/R50-FPN-1x"
ITERS = 3
OPTS = tiny("SOLVER.MAX_ITER", str(ITERS), "SOLVER.IMS_PER_BATCH", "4", "SOLVER.CHECKPOINT_PERIOD", "100",
            "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0")


def _unavailable(reason: str):
    unavailable("two-node SLURM cluster", reason)


def _netns(i: int) -> str:
    return f"infomin-mn-{PORT}-{i}"


def _sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=check)


def _remove_network() -> None:
    for i in (1, 2):
        _sh("ip", "link", "del", f"imn{PORT}v{i}", check=False)       # the peer goes with it
        _sh("ip", "netns", "del", _netns(i), check=False)
    _sh("ip", "link", "del", BRIDGE, check=False)


def _make_network() -> None:
    _remove_network()                       # what a killed session left
    _sh("ip", "link", "add", BRIDGE, "type", "bridge")
    _sh("ip", "addr", "add", f"{NET}.254/24", "dev", BRIDGE)
    _sh("ip", "link", "set", BRIDGE, "up")
    for i in (1, 2):
        ns, veth = _netns(i), f"imn{PORT}v{i}"
        _sh("ip", "netns", "add", ns)
        _sh("ip", "link", "add", veth, "type", "veth", "peer", "name", f"{veth}p")
        _sh("ip", "link", "set", f"{veth}p", "netns", ns)
        _sh("ip", "link", "set", veth, "master", BRIDGE)
        _sh("ip", "link", "set", veth, "up")
        _sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"{NET}.{i}/24", "dev", f"{veth}p")
        _sh("ip", "netns", "exec", ns, "ip", "link", "set", f"{veth}p", "up")
        _sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")


def _in_node(i: int | None, hostname: str, hosts: Path, *cmd: str) -> list[str]:
    """``cmd`` with host name ``hostname`` and ``hosts`` as /etc/hosts, in node ``i``'s network
    namespace (None: the host's, for the controller). nsenter, not ``ip netns exec``: that remounts
    /sys, hiding the cgroup mounts slurmd insists on."""
    inner = ["unshare", "-m", "-u", "sh", "-c", 'mount --bind "$0" /etc/hosts && hostname "$1" && shift && exec "$@"',
             str(hosts), hostname, *cmd]
    return inner if i is None else ["nsenter", f"--net=/run/netns/{_netns(i)}", *inner]


CONF = """ClusterName=infomin2n
SlurmctldHost=mnctl({net}.254)
SlurmctldPort={port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={sock},cred_expire=10
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool/%n
SlurmctldPidFile={d}/pids/slurmctld.own
SlurmdPidFile={d}/pids/slurmd-%n.own
SlurmctldLogFile={d}/log/slurmctld.log
SlurmdLogFile={d}/log/slurmd-%n.log
MailProg=/bin/true
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1,bf_interval=1
SlurmdParameters=config_overrides
ReturnToService=2
InactiveLimit=0
KillWait=5
MinJobAge=300
SlurmdTimeout=300
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
NodeName=mn1 NodeHostname=mn1 NodeAddr={net}.1 Port={port1} CPUs=2 RealMemory={mem} State=UNKNOWN
NodeName=mn2 NodeHostname=mn2 NodeAddr={net}.2 Port={port1} CPUs=2 RealMemory={mem} State=UNKNOWN
PartitionName=debug Nodes=mn[1-2] Default=YES MaxTime=INFINITE State=UP
"""

ISOLATION = """
import socket, subprocess, sys
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", 0)); srv.listen()               # on mn1, every address of mn1
port = srv.getsockname()[1]
def reach(host):
    code = f"import socket; socket.create_connection(({host!r}, {port}), timeout=5)"
    return subprocess.run(["nsenter", "--net=" + sys.argv[1], "unshare", "-m", "sh", "-c",
                           'mount --bind "$0" /etc/hosts && exec "$1" -c "$2"', sys.argv[2], sys.executable, code],
                          capture_output=True).returncode == 0
print(reach("mn1"), reach("mn2"))
"""


@dataclass(frozen=True)
class TwoNodeCluster:
    directory: Path
    conf: Path


def _starttime(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def _stop_recorded(d: Path) -> None:
    """Stop the daemons a killed earlier session recorded in ``d/pids/*.rec`` ("PID STARTTIME"; the
    start time guards against a reused PID) -- only those."""
    recs = [r.read_text().split() for r in (d / "pids").glob("*.rec")] if (d / "pids").is_dir() else []
    alive = [int(pid) for pid, st in recs if _starttime(int(pid)) == st]
    for pid in alive:
        os.kill(pid, signal.SIGTERM)
    end = time.monotonic() + 15
    while any(_starttime(pid) for pid in alive) and time.monotonic() < end:
        time.sleep(0.2)
    for pid in alive:
        if _starttime(pid):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def two_nodes(request):
    if os.geteuid() != 0:
        _unavailable("network namespaces and the daemons need root")
    for tool in ("ip", "nsenter", "unshare", "mount"):
        if shutil.which(tool) is None:
            _unavailable(f"{tool} is not installed")
    if any(shutil.which(t) is None for t in ("slurmctld", "slurmd", "munged", "mungekey", "sbatch")):
        request.getfixturevalue("slurm_cluster")   # start.sh installs the packages (or says why it cannot)
    d = Path(tempfile.gettempdir()) / f"infomin-det-slurm2n-pytest-{PORT}"
    procs: list[subprocess.Popen] = []
    env = dict(os.environ, SLURM_CONF=str(d / "etc" / "slurm.conf"))

    def stop():
        if procs:                           # this cluster's jobs (SLURM_CONF in env), then its daemons
            subprocess.run(["scancel", "--quiet", "-u", "root"], env=env, capture_output=True, timeout=60)
            time.sleep(1)
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in reversed(procs):
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        _remove_network()

    _stop_recorded(d)
    try:
        _make_network()
    except subprocess.CalledProcessError as e:
        _remove_network()
        _unavailable(f"cannot build the nodes' network ({' '.join(e.cmd)}): {e.stderr.strip()}")
    try:
        shutil.rmtree(d, ignore_errors=True)
        for sub in ("etc", "munge", "state", "spool", "log", "pids"):
            (d / sub).mkdir(parents=True)
        os.chmod(d / "munge", 0o755)
        hosts = d / "etc" / "hosts"
        hosts.write_text(f"127.0.0.1 localhost\n{NET}.254 mnctl\n{NET}.1 mn1\n{NET}.2 mn2\n")
        sock = d / "munge" / "socket"
        mem = int(int(Path("/proc/meminfo").read_text().split()[1]) / 1024 * 0.4)
        (d / "etc" / "slurm.conf").write_text(CONF.format(net=NET, port=PORT, port1=PORT + 1, sock=sock, d=d, mem=mem))
        _sh("mungekey", "--create", f"--keyfile={d / 'munge' / 'munge.key'}")

        def daemon(name, cmd):
            log = open(d / "log" / f"{name}.out", "ab")
            procs.append(subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, start_new_session=True))
            log.close()                     # nsenter / unshare / sh exec: the PID is the daemon's
            (d / "pids" / f"{name}.rec").write_text(f"{procs[-1].pid} {_starttime(procs[-1].pid)}\n")

        def ready(what, cmd, ok=lambda out: True, seconds=60):
            end = time.monotonic() + seconds
            while True:
                r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
                if r.returncode == 0 and ok(r.stdout):
                    return
                dead = [p.args for p in procs if p.poll() is not None]
                if dead or time.monotonic() > end:
                    logs = {f.name: f.read_text()[-800:] for f in (d / "log").glob("*.out")}
                    raise RuntimeError(f"{what} not ready (dead: {dead}): {r.stderr.strip()[-500:]} {logs}")
                time.sleep(0.3)

        daemon("munged", ["munged", "-F", f"--key-file={d / 'munge' / 'munge.key'}", f"--socket={sock}",
                          f"--pid-file={d / 'pids' / 'munged.own'}", f"--seed-file={d / 'munge' / 'seed'}",
                          f"--log-file={d / 'log' / 'munged.log'}"])
        ready("munged", ["sh", "-c", f"munge -n -S {sock} | unmunge -S {sock}"])
        daemon("slurmctld", _in_node(None, "mnctl", hosts, "slurmctld", "-D"))
        ready("slurmctld", ["scontrol", "ping"], lambda out: "UP" in out)
        for i, node in enumerate(NODES, 1):
            daemon(f"slurmd-{node}", _in_node(i, node, hosts, "slurmd", "-D", "-N", node))
        ready("both slurmd", ["sinfo", "-h", "-N", "-o", "%N %t"],
              lambda out: sorted(out.split()) == sorted(["idle", "idle", *NODES]))
        # the emulation has teeth: a listener on mn1 is reached from mn2 as "mn1", and "mn2" is not it
        iso = subprocess.run(["nsenter", f"--net=/run/netns/{_netns(1)}", sys.executable, "-c", ISOLATION,
                              f"/run/netns/{_netns(2)}", str(hosts)], capture_output=True, text=True, timeout=60)
        if iso.stdout.split() != ["True", "False"]:
            raise RuntimeError(f"the nodes' networks are not what they should be (mn2 -> mn1, mn2 -> mn2 "
                               f"reachable: {iso.stdout.strip()}, expected True False): {iso.stderr[-1000:]}")
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        stop()
        _unavailable(str(e)[-3000:])
    try:
        yield TwoNodeCluster(d, d / "etc" / "slurm.conf")
    finally:
        stop()
        shutil.rmtree(d, ignore_errors=True)


# ------------------------------------------------------------------------------------------------
# the job: the trainer's worker, watched

def placed_train_worker(spec):
    """``train_worker`` (the job's real work), after recording in ``place-rank<r>.json`` where this
    process sits by the launcher's derivation (``JobPlace.current()``), by torch.distributed and by
    Detectron2's local group, and what its node is called and where its host name points."""
    import torch.distributed as tdist
    from detectron2.utils import comm

    from infomin_det.engine.trainer import train_worker
    from infomin_det.launch.task import JobPlace

    place = JobPlace.current()
    host = socket.gethostname()
    facts = {"place": place.__dict__ | {"tasks_per_node": place.tasks_per_node}, "host": host,
             "address": socket.gethostbyname(host), "master_address": socket.gethostbyname(place.master),
             "dist_rank": tdist.get_rank(), "dist_world": tdist.get_world_size(),
             "d2_local_rank": comm.get_local_rank(), "d2_local_size": comm.get_local_size(),
             "slurm": {k: v for k, v in os.environ.items() if k.startswith("SLURM_")},
             "env_master": os.environ.get("MASTER_ADDR"), "spec": {"num_processes": spec.num_processes,
                                                                    "nodes": spec.nodes}}
    out = Path(spec.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"place-rank{place.global_rank}.json").write_text(json.dumps(facts, indent=1))
    return train_worker(spec)


placed_train_worker.detectron2_comm = True


def test_two_nodes_by_two_tasks_rendezvous_from_the_job_environment_and_train(two_nodes, tiny_coco, tmp_path,
                                                                             monkeypatch):
    from infomin_det.cli import main as cli
    from infomin_det.launch import experiment_status
    from infomin_det.launch import submit_cli

    (tj, ti), (vj, vi) = tiny_coco["train"], tiny_coco["val"]
    root = tmp_path / "runs"
    monkeypatch.setattr(submit_cli, "TRAIN_WORKER", "test_multinode:placed_train_worker")
    monkeypatch.setenv("SLURM_CONF", str(two_nodes.conf))
    # exported to the job (sbatch --export=ALL): the worker's module, and a rendezvous that cannot
    # complete fails the job in 2 minutes instead of 30
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH")) if p))
    monkeypatch.setenv("INFOMIN_DET_DIST_TIMEOUT_S", "120")
    monkeypatch.setenv("INFOMIN_DET_MAIN_WAIT_S", "300")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    t0 = time.monotonic()
    assert cli(["submit", "--experiment", "mn", "--root", str(root), "--protocol", PROTOCOL, "--weights", "random",
                "--seeds", "0", "--dataset", f"coco-json:{tj}:{ti}:{vj}:{vi}", "--cluster", "slurm",
                "--nodes", "2", "--tasks-per-node", "2", "--cpus-per-task", "1", "--device", "cpu",
                "--timeout-min", "10", "--", *OPTS]) == 0
    exp, out = root / "mn", root / "mn" / PROTOCOL / "random" / "seed0"
    end = time.monotonic() + 420
    while True:
        [st] = experiment_status(exp)
        if st.state in ("done", "failed"):
            break
        assert time.monotonic() < end, f"the job did not finish: {st}"
        time.sleep(1)
    logs = "\n".join(f"{f.name}: {f.read_text()[-1500:]}" for f in sorted((exp / "launch").rglob("*_log.err")))
    assert st.state == "done", f"{st}\n{logs}"
    print(f"2 nodes x 2 tasks: submitted, trained, evaluated in {time.monotonic() - t0:.1f} s")

    places = {r: json.loads((out / f"place-rank{r}.json").read_text()) for r in range(4)}
    where = {r: (f["host"], f["place"]["local_rank"]) for r, f in places.items()}
    assert where == {0: ("mn1", 0), 1: ("mn1", 1), 2: ("mn2", 0), 3: ("mn2", 1)}, where
    addresses = {f["host"]: f["address"] for f in places.values()}
    assert addresses == {"mn1": f"{NET}.1", "mn2": f"{NET}.2"}              # two machines, two addresses
    for r, f in places.items():
        p = f["place"]
        assert (p["global_rank"], f["dist_rank"]) == (r, r)
        assert (p["world_size"], f["dist_world"], p["num_nodes"], p["tasks_per_node"]) == (4, 4, 2, 2)
        assert p["master"] == "mn1" and f["master_address"] == f"{NET}.1" and f["env_master"] == "mn1"
        assert (f["d2_local_rank"], f["d2_local_size"]) == (p["local_rank"], 2)   # Detectron2's local group
        assert f["slurm"]["SLURM_JOB_NODELIST"] == "mn[1-2]"                   # the compressed form, parsed
        assert f["spec"] == {"num_processes": 2, "nodes": 2}
        assert p["job_id"] == st.job_id

    info = json.loads((out / "run.json").read_text())
    assert info["provenance"]["world_size"] == 4 and info["extra"]["world_size"] == 4
    assert "NORM: naiveSyncBN" in (out / "config.yaml").read_text()
    assert sorted(p.name for p in out.glob("log.txt.rank*")) == ["log.txt.rank1", "log.txt.rank2", "log.txt.rank3"]
    result = json.loads((out / "launch_result.json").read_text())
    assert result["world_size"] == 4 and result["host"] == "mn1"
    assert result["result"] == json.loads((out / "final_results.json").read_text())
    assert set(result["result"]) == {"bbox", "segm"}
    evals = [json.loads(l) for l in (out / "metrics.json").read_text().replace("NaN", "null").splitlines()
             if "bbox/AP" in l]
    assert [e["iteration"] for e in evals] == [ITERS]                        # one final evaluation
    assert (out / "last_checkpoint").read_text().strip() == "model_final.pth"
    assert not list(out.glob(".rendezvous-*"))                              # every rank connected
