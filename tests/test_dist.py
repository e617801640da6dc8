"""``infomin_det.dist``: the decisions every multi-process path shares, and real gloo process groups.

CUDA-only lines are tested through the decision that leads to them (backend from the run's device,
the GPU of a local rank); the rendezvous, its port retry and the long wait for rank 0 run for real
in spawned processes on loopback.
"""

import datetime
import os
import socket
import time

import pytest
import torch
import torch.multiprocessing as mp

from infomin_det import dist
from infomin_det.errors import UserError


def test_backend_follows_the_runs_device_not_cuda_availability():
    assert dist.backend_for("cuda") == "nccl"
    assert dist.backend_for("cpu") == "gloo"       # MODEL.DEVICE cpu on a GPU node: never NCCL with CPU tensors


def test_device_resolution():
    assert dist.resolve_device("cpu") == "cpu"
    assert dist.resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(UserError, match="not one of"):
        dist.resolve_device("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="sees no CUDA device"):
            dist.resolve_device("cuda")


@pytest.mark.parametrize("local_rank,visible,gpu", [(0, 8, 0), (5, 8, 5), (3, 1, 0), (5, 4, 1)])
def test_gpu_of_a_local_rank(local_rank, visible, gpu):
    """One GPU per task (SLURM binding: 1 visible) and all GPUs visible both work."""
    assert dist.cuda_index(local_rank, visible) == gpu


def test_no_visible_gpu_is_an_error():
    with pytest.raises(UserError, match="none is visible"):
        dist.cuda_index(0, 0)


def test_rendezvous_ports_stay_below_the_ephemeral_range():
    ports = {dist.rendezvous_port(f"{j}_{a}", r, k) for j in range(50) for a in range(4) for r in range(3)
             for k in range(3)}
    assert all(20000 <= p < 32000 for p in ports) and len(ports) > 1500
    assert dist.rendezvous_port("7", 0) != dist.rendezvous_port("7", 1)       # a requeue gets another port


def _rank(rank, world, job_id, port_dir, sleep_main, result_dir):
    os.environ["INFOMIN_DET_DIST_TIMEOUT_S"] = "3"     # the loop's timeout, scaled down from 30 min
    dist.init_process_group(rank=rank, world=world, local_rank=rank, master="127.0.0.1", job_id=job_id,
                            attempt=0, device="cpu", port_dir=port_dir)
    import torch.distributed as tdist

    t = torch.tensor([rank + 1.0])
    tdist.all_reduce(t)
    if rank == 0:
        time.sleep(sleep_main)                          # rank 0 alone: a slow final COCOeval
    dist.wait_for_main()
    flag = dist.any_rank(rank == world - 1)
    (result_dir / f"rank{rank}").write_text(f"{t.item()} {flag}")
    dist.destroy()


def test_rendezvous_retries_a_busy_port_and_wait_for_main_outlasts_the_loop_timeout(tmp_path):
    job = "test-retry"
    busy = socket.socket()
    busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    busy.bind(("", dist.rendezvous_port(job, 0, 0)))   # the first candidate port is taken
    busy.listen()
    try:
        mp.start_processes(_rank, args=(2, job, tmp_path, 6.0, tmp_path), nprocs=2, start_method="spawn")
    finally:
        busy.close()
    assert (tmp_path / "rank0").read_text() == "3.0 True" and (tmp_path / "rank1").read_text() == "3.0 True"
    assert not list(tmp_path.glob(".rendezvous-*"))    # the port file is removed once everyone connected


def _plain_barrier(rank, port, out):
    import torch.distributed as tdist

    tdist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2,
                             timeout=datetime.timedelta(seconds=3))
    if rank == 0:
        time.sleep(6.0)
    try:
        tdist.barrier()
        (out / f"ok{rank}").write_text("")
    except RuntimeError:
        (out / f"timeout{rank}").write_text("")


def test_a_plain_barrier_with_the_loop_timeout_would_have_failed(tmp_path):
    """The control for the test above: the old wait (default group, its timeout) aborts rank 1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    try:
        mp.start_processes(_plain_barrier, args=(port, tmp_path), nprocs=2, start_method="spawn")
    except mp.ProcessException:
        pass
    assert (tmp_path / "timeout1").exists()
