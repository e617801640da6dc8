"""A 2-process gloo pretraining run (shuffle-BN across ranks) trains, and its checkpoint converts."""

from __future__ import annotations

import pickle

import pytest
import torch

from pretrain.train import run_local
from test_pretrain import tiny_spec, write_images


@pytest.mark.detectron2
def test_two_process_gloo_run_trains_converts_and_verifies(tmp_path):
    pytest.importorskip("detectron2")
    data = write_images(tmp_path / "imgs", n_per_class=8)
    spec = tiny_spec(data, tmp_path / "run", batch_size=4, epochs=1, jigsaw=True)
    r = run_local(spec, 2)
    assert r["world_size"] == 2 and r["step"] == 2 and r["loss"] > 0
    ck = torch.load(r["checkpoint"], map_location="cpu", weights_only=True)
    assert ck["state"]["world_size"] == 2
    # keys from both ranks went into the queue: 2 steps x 2 ranks x 4 = 16 columns written
    assert int(ck["state"]["model"]["queue_ptr"]) == 16

    from infomin_det.convert.converter import convert
    out = convert(r["checkpoint"], tmp_path / "r18.pkl")
    with open(out.out, "rb") as f:
        d2 = pickle.load(f)
    assert "res2.0.conv1.weight" in d2["model"] and "stem.conv1.weight" in d2["model"]
    assert (d2["model"]["stem.conv1.weight"] == ck["backbone"]["conv1.weight"].numpy()).all()

    from infomin_det.convert.verify import verify
    v = verify(out.out, r["checkpoint"])
    assert v.passed, v.render()
    assert v.matched_groups == v.expected_groups and not v.missing_keys


def test_cluster_local_goes_through_the_launcher(tmp_path, capsys):
    import json
    import time

    from infomin_det.cli import main as cli_main

    data = write_images(tmp_path / "imgs", n_per_class=8)
    run = tmp_path / "run"
    rc = cli_main(["pretrain", str(data), "-o", str(run), "--arch", "R-18", "--epochs", "1", "--batch-size", "4",
                   "--queue-size", "256", "--image-size", "32", "--workers", "0", "--no-tensorboard",
                   "--cluster", "local", "--processes", "2", "--json"])
    assert rc == 0 and json.loads(capsys.readouterr().out)["action"] == "submitted"
    result = run / "launch_result.json"
    deadline = time.monotonic() + 120
    while not result.exists() and time.monotonic() < deadline:
        state = json.loads((run / "launch_state.json").read_text()) if (run / "launch_state.json").exists() else {}
        assert state.get("state") != "failed", state
        time.sleep(0.5)
    r = json.loads(result.read_text())["result"]
    assert r["world_size"] == 2 and r["step"] == 2
    assert torch.load(r["checkpoint"], weights_only=True)["format"] == "infomin-det/pretrain"


def _two_ranks(fn, tmp_path) -> None:
    """Run ``fn(rank, port, out_dir)`` in 2 spawned processes on a free loopback port."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(fn, args=(port, str(tmp_path)), nprocs=2, start_method="spawn")


def _shuffle_bn_rank(rank: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist
    import torch.nn.functional as F

    from pretrain.model import MoCo, arch_of

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        torch.manual_seed(0)                       # same weights on both ranks
        m = MoCo(arch_of("R-18"), queue_size=8)
        m.encoder_k.eval()                         # BN from running stats: the shuffle must not change a key
        x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(10 + rank))
        with torch.no_grad():
            got = m._keys(x)
            want = F.normalize(m.head_k(m.encoder_k(x)), dim=1)
        torch.save({"got": got, "want": want}, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_shuffle_bn_returns_each_rank_its_own_keys(tmp_path):
    _two_ranks(_shuffle_bn_rank, tmp_path)
    for rank in range(2):
        r = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert torch.allclose(r["got"], r["want"], atol=1e-5), rank


def _batch_negatives_rank(rank: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist

    from pretrain.model import MoCo, arch_of

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        torch.manual_seed(0)                       # same weights on both ranks
        m = MoCo(arch_of("R-18"), queue_size=8, momentum=0.0, negatives="batch")
        m.eval()                                   # BN from running stats: each key equals its query
        imgs = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(rank))
        out = m(torch.stack([imgs, imgs], 1))
        torch.save({k: v.detach() for k, v in out.items()}, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_batch_negatives_find_each_ranks_own_keys_among_the_gathered_ones(tmp_path):
    _two_ranks(_batch_negatives_rank, tmp_path)
    for rank in range(2):   # the own key of rank r's query i sits at column r * 4 + i of the 8 gathered keys
        r = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert float(r["acc"]) == 1.0 and float(r["acc_batch"]) == 1.0, (rank, r)
