"""GPU readiness of pretraining, checked without a GPU: the CUDA-only lines are tested through the
pure decisions that lead to them; distributed behaviour through real gloo processes on the CPU.

* local processes: one per visible GPU at most, each rank's GPU made current (``local_rank % n``);
* resume: every rank's own RNG state saved and restored, another world size or run-defining setting refused;
* the training step never reads the device (no per-step host syncs), the queue pointer is a
  Python int kept equal to the checkpointed buffer, ``normalize`` copies mean/std once per device;
* ``--cluster``: the launcher's executor options, ``cpus_per_task = workers + 1`` unless given.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch

from infomin_det.errors import UserError
from pretrain import device as devices
from pretrain.train import pretrain_worker, rank_rng_state, run_local
from test_pretrain import assert_same_state, tiny_spec, write_images


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return write_images(tmp_path_factory.mktemp("gpu_ready") / "train", n_per_class=12)


# ---------------------------------------------------------------------------------------------
# device decisions (pure)

def test_local_process_count_against_visible_gpus_and_cores(capsys):
    from infomin_det.dist import check_local_processes

    check_local_processes(2, "cuda", 2, 16)
    with pytest.raises(UserError, match="share one GPU"):
        check_local_processes(3, "cuda", 2, 16)   # two ranks would land on one GPU
    check_local_processes(2, "cpu", 0, 2)
    assert capsys.readouterr().err == ""
    check_local_processes(8, "cpu", 0, 2)        # gloo ranks standing in for 8 GPUs: slow, said so
    assert "warning: --processes 8 on 2 cores" in capsys.readouterr().err
    with pytest.raises(UserError, match="at most 8 here"):
        check_local_processes(9, "cpu", 0, 2)
    with pytest.raises(UserError, match="at most 64 here"):
        check_local_processes(10_000, "cpu", 0, 16)
    for bad in (0, -1, True, 1.5):
        with pytest.raises(UserError, match="--processes"):
            check_local_processes(bad, "cpu", 0, 2)


def test_each_local_rank_drives_its_own_gpu_with_cudnn_benchmark():
    assert [devices.cuda_setup("cuda", r, 4)[0] for r in range(4)] == [0, 1, 2, 3]
    assert devices.cuda_setup("cuda", 5, 4) == (1, True)        # a node-global rank still maps onto a GPU
    assert devices.cuda_setup("cpu", 3, 0) == (None, False)
    with pytest.raises(UserError):
        devices.cuda_setup("cuda", 0, 0)


def test_cpu_selection_leaves_cudnn_alone():
    before = torch.backends.cudnn.benchmark
    assert devices.select("cpu") == torch.device("cpu")
    assert torch.backends.cudnn.benchmark == before


def test_each_rank_gets_its_own_rng_entry():
    states = [{"torch": torch.tensor([r])} for r in range(3)]
    assert rank_rng_state(states, 2) is states[2]
    legacy = {"torch": torch.tensor([9])}                        # checkpoints of before: rank 0's only
    assert rank_rng_state(legacy, 1) is legacy
    with pytest.raises(UserError, match="rank 3"):
        rank_rng_state(states, 3)


# ---------------------------------------------------------------------------------------------
# resume across world sizes

def _rewrite(path: str, **state) -> None:
    ck = torch.load(path, weights_only=True)
    ck["state"].update(state)
    torch.save(ck, path)


def test_resume_with_another_world_size_or_batch_is_refused(images, tmp_path):
    r = pretrain_worker(tiny_spec(images, tmp_path / "run", max_steps=1))
    ck = torch.load(r["checkpoint"], weights_only=True)
    assert isinstance(ck["state"]["rng"], list) and len(ck["state"]["rng"]) == 1
    _rewrite(r["checkpoint"], world_size=2, rng=ck["state"]["rng"] * 2)  # as a 2-process run writes it
    with pytest.raises(UserError, match="2 processes, this run has 1"):
        pretrain_worker(tiny_spec(images, tmp_path / "run", max_steps=2))
    _rewrite(r["checkpoint"], world_size=1, rng=ck["state"]["rng"])
    with pytest.raises(UserError, match="--batch-size 8, this run has --batch-size 4"):
        pretrain_worker(tiny_spec(images, tmp_path / "run", max_steps=2, batch_size=4))
    assert pretrain_worker(tiny_spec(images, tmp_path / "run", max_steps=2))["step"] == 2


@pytest.mark.parametrize("change, words", [
    ({"base_lr": 0.3}, "--lr 0.03, this run has --lr 0.3"),
    ({"negatives": "batch"}, "--negatives queue, this run has --negatives batch"),
    ({"temperature": 0.2, "seed": 3}, "--temperature 0.15, --seed 0, this run has --temperature 0.2, --seed 3"),
    ({"epochs": 3}, "--epochs 2, this run has --epochs 3"),
    ({"augment": "mocov2"}, "--augment infomin, this run has --augment mocov2"),
    ({"jigsaw": True}, "no --jigsaw, this run has --jigsaw"),
])
def test_resume_with_another_objective_or_schedule_is_refused_and_writes_nothing(images, tmp_path, change, words):
    """Before: resuming with another --lr / --negatives / --temperature / ... silently continued the
    checkpoint under the new settings (one checkpoint, two runs, exit 0)."""
    run = tmp_path / "run"
    pretrain_worker(tiny_spec(images, run, max_steps=1))
    before = sorted(p.name for p in run.iterdir())
    with pytest.raises(UserError, match=words) as e:
        pretrain_worker(tiny_spec(images, run, max_steps=2, **change))
    assert "fresh --output-dir" in e.value.fix
    assert sorted(p.name for p in run.iterdir()) == before


def test_every_setting_a_resume_compares_is_named_by_its_own_cli_flag():
    """The refusal tells the user which flag to change back: each name must be the pretrain CLI's
    flag for that very field (a renamed flag would otherwise send them to one that does not exist)."""
    from dataclasses import fields

    from pretrain.checkpoint import SAME_RUN
    from pretrain.cli import add_arguments
    from pretrain.train import PretrainSpec

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    dest = {flag: a.dest for a in parser._actions for flag in a.option_strings}
    assert {field: dest.get(flag) for field, flag in SAME_RUN.items()} == {field: field for field in SAME_RUN}
    assert set(SAME_RUN) <= {f.name for f in fields(PretrainSpec)}


@pytest.mark.parametrize("config", ["seed", [1, 2], {"base_lr": "0.03"}, {"jigsaw": 0}])
def test_a_checkpoint_with_a_malformed_settings_record_is_refused_as_damaged(images, tmp_path, config):
    """Before: a string record crashed with a TypeError traceback; a list one resumed unchecked."""
    r = pretrain_worker(tiny_spec(images, tmp_path / "run", max_steps=1))
    _rewrite(r["checkpoint"], config=config)
    with pytest.raises(UserError, match="is damaged"):
        pretrain_worker(tiny_spec(images, tmp_path / "run", max_steps=2))


def test_resume_may_change_where_and_how_it_runs_and_when_it_stops(images, tmp_path):
    run = tmp_path / "run"
    pretrain_worker(tiny_spec(images, run, max_steps=1))
    r = pretrain_worker(tiny_spec(images, run, max_steps=2, checkpoint_every=1, keep_checkpoints=3, tensorboard=False,
                                  progress=False, device="cpu"))
    assert r["step"] == 2 and r["resumed_from"].endswith("checkpoint_00000001.pth")


def test_two_gloo_processes_resume_exactly_and_refuse_one(images, tmp_path):
    """Real processes: 3 steps straight == resuming its step-2 checkpoint for 1 step (every tensor of
    the state, both ranks' RNG states); that checkpoint then refuses a 1-process resume. (Before,
    the data loader drew from the RNG that shuffle-BN uses, so a 2-process resume was not exact.)"""
    import shutil
    straight = run_local(tiny_spec(images, tmp_path / "straight", batch_size=4, max_steps=3, checkpoint_every=1), 2)
    (tmp_path / "resumed").mkdir()
    shutil.copy(tmp_path / "straight" / "checkpoint_00000002.pth", tmp_path / "resumed")
    again = run_local(tiny_spec(images, tmp_path / "resumed", batch_size=4, max_steps=3, checkpoint_every=1), 2)
    assert again["resumed_from"].endswith("checkpoint_00000002.pth") and again["loss"] == straight["loss"]
    a, b = (torch.load(r["checkpoint"], weights_only=True) for r in (straight, again))
    assert len(a["state"]["rng"]) == 2 and a["state"]["world_size"] == 2
    assert_same_state(a, b)
    with pytest.raises(UserError, match="2 processes, this run has 1"):
        run_local(tiny_spec(images, tmp_path / "resumed", batch_size=4, max_steps=4), 1)


# ---------------------------------------------------------------------------------------------
# no host syncs in the hot path

HOST_READS = ("item", "__float__", "__int__", "__bool__", "__index__", "tolist")


@pytest.fixture
def host_reads(monkeypatch):
    """Counts every tensor -> Python conversion (each one a device sync on a GPU)."""
    count = {"n": 0}
    for name in HOST_READS:
        original = getattr(torch.Tensor, name)

        def counted(self, *a, _original=original, **k):
            count["n"] += 1
            return _original(self, *a, **k)
        monkeypatch.setattr(torch.Tensor, name, counted)
    return count


@pytest.mark.parametrize("augment_on", ["workers", "device"])
def test_training_steps_between_logs_read_nothing_from_the_device(images, tmp_path, host_reads, augment_on):
    """Steps 3..5 of an epoch add no tensor -> host conversion (before: 4 floats of the outputs, an
    int of the skipped count and one of the queue pointer per step); with ``--augment-on device``
    the batched augmentation plans its ops on the host."""
    reads = []
    for steps in (2, 5):
        host_reads["n"] = 0
        pretrain_worker(tiny_spec(images, tmp_path / f"run{steps}", max_steps=steps, epochs=1, jigsaw=True,
                                  batch_size=4, queue_size=16, augment_on=augment_on))
        reads.append(host_reads["n"])
    assert reads[0] == reads[1], reads


def test_linear_eval_steps_read_nothing_from_the_device(images, tmp_path, host_reads):
    """3 or 6 training and evaluation batches: the same reads (before: a float of the loss with the
    progress bar, an int of the skipped count and two of the top-1 / top-5 counts per batch)."""
    from pretrain.linear_eval import LinearEvalSpec, linear_eval
    ck = pretrain_worker(tiny_spec(images, tmp_path / "run", max_steps=1))["checkpoint"]
    bigger = write_images(tmp_path / "bigger", n_per_class=24)
    reads = []
    for folder in (images, bigger):
        host_reads["n"] = 0
        linear_eval(LinearEvalSpec(ck, str(folder), str(folder), epochs=1, batch_size=8, image_size=32,
                                   workers=0, progress=True))
        reads.append(host_reads["n"])
    assert reads[0] == reads[1], reads


def test_queue_pointer_follows_a_loaded_state():
    from pretrain.model import MoCo, arch_of
    torch.manual_seed(0)
    a, b = MoCo(arch_of("R-18"), dim=4, queue_size=8), MoCo(arch_of("R-18"), dim=4, queue_size=8)
    a.enqueue(torch.randn(2, 4))
    b.load_state_dict(a.state_dict())
    keys = torch.randn(2, 4)
    a.enqueue(keys)
    b.enqueue(keys)
    assert int(b.queue_ptr) == 4 and torch.equal(a.queue, b.queue)


def test_normalize_copies_its_statistics_once_per_device():
    from pretrain.augment import mean_std_on
    cpu = torch.device("cpu")
    assert mean_std_on(cpu)[0] is mean_std_on(cpu)[0]


# ---------------------------------------------------------------------------------------------
# --cluster: the launcher's options

def _parse(*argv: str) -> argparse.Namespace:
    from pretrain.cli import add_arguments
    parser = argparse.ArgumentParser(allow_abbrev=False)
    add_arguments(parser)
    return parser.parse_args(["data", "-o", "out", *argv])


def test_cluster_options_leave_a_cpu_for_the_training_process():
    from pretrain.cli import executor_request
    args = _parse("--cluster", "slurm", "--workers", "5")
    assert args.cluster == "slurm" and _parse().cluster is None      # no --cluster: run here
    opt = executor_request(args, 5, "slurm")
    assert opt.cpus == 6 and opt.world_size == 1
    assert executor_request(_parse("--cluster", "slurm", "--cpus-per-task", "3"), 5, "slurm").cpus == 3
    opt = executor_request(_parse("--cluster", "slurm", "--gpus-per-node", "8", "--nodes", "2", "--partition", "gpu",
                                  "--mem-gb", "200", "--qos", "high"), 4, "slurm")
    assert (opt.world_size, opt.cpus, opt.partition, opt.mem_gb, opt.qos) == (16, 5, "gpu", 200.0, "high")
    assert executor_request(_parse("--cluster", "local", "--processes", "2"), 0, "local").world_size == 2
    with pytest.raises(UserError, match="disagree"):
        executor_request(_parse("--cluster", "local", "--processes", "2", "--tasks-per-node", "1"), 0, "local")
