"""Launcher mechanics without SLURM: option validation, GPU assignment, registry, refusals before
queueing, status of dead jobs, local/debug runs."""

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from infomin_det.cli import main as cli
from infomin_det.errors import UserError
from infomin_det.dist import rendezvous_port
from infomin_det.launch import DistributedTask, ExecutorOptions, Registry, experiment_status, submit_tasks
from infomin_det.launch.gpus import check_device_request, parse_nvidia_smi, plan_local_gpus, visible_gpus
from infomin_det.launch.registry import RunRecord
from infomin_det.launch.selftest import ToySpec

TOY = "infomin_det.launch.selftest:toy_worker"
REPO = Path(__file__).parents[1]


def toy(out, **kw):
    return DistributedTask(TOY, ToySpec(str(out), **kw))


@pytest.fixture(scope="module")
def dataset(tiny_coco):
    (tj, ti), (vj, vi) = tiny_coco["train"], tiny_coco["val"]
    return f"coco-json:{tj}:{ti}:{vj}:{vi}"


def submit_argv(root, ds, *extra, weights=("random",), protocol=("coco/R50-FPN-1x",), experiment="e"):
    return ["submit", "--experiment", experiment, "--root", str(root), "--protocol", *protocol,
            "--weights", *weights, "--dataset", ds, "--cluster", "local", *extra]


def wait_until(cond, timeout=60.0, what="condition"):
    end = time.time() + timeout
    while not cond():
        assert time.time() < end, f"timed out waiting for {what}"
        time.sleep(0.1)


# --- executor options ------------------------------------------------------------------------
def test_unknown_option_is_refused_with_the_nearest_name():
    with pytest.raises(UserError) as e:
        ExecutorOptions.from_mapping({"gpus_per_nod": 8})
    assert "gpus_per_nod" in e.value.cause and "gpus_per_node" in e.value.fix


@pytest.mark.parametrize("values, cluster, words", [
    ({"gpus_per_node": 8, "tasks_per_node": 4}, "slurm", "one task per GPU"),
    ({"timeout_min": 1, "signal_delay_s": 120}, "slurm", "signal_delay_s"),
    ({"nodes": 2}, "local", "needs SLURM"),
    ({"cpus_per_task": 0}, "slurm", "cpus_per_task"),
    ({"mem_gb": -1}, "slurm", "mem_gb"),
    ({"partition": "gpu; rm -rf /"}, "slurm", "partition"),
    ({"tasks_per_node": 2}, "debug", "debug"),
    ({"mem_gb": float("nan")}, "slurm", "mem_gb"),
    ({"mem_gb": float("inf")}, "slurm", "mem_gb"),
    ({"mem_gb": True}, "slurm", "mem_gb"),
    ({"timeout_min": 2**40}, "slurm", "timeout_min"),
    ({"array_parallelism": 0}, "slurm", "array_parallelism"),
    ({"nodes": "2"}, "slurm", "nodes"),
    ({"partition": "gpu\n"}, "slurm", "partition"),
    ({"partition": "gpu a"}, "slurm", "partition"),
    ({"partition": "--wrap=x"}, "slurm", "partition"),
    ({"comment": "it's"}, "slurm", "comment"),
    ({"comment": "a\tb"}, "slurm", "comment"),
    ({"tasks_per_node": 10_000}, "local", "local processes"),
    ({"slurm_extra": ("time=10",)}, "slurm", "--timeout-min"),              # owned: one way to set it
    ({"slurm_extra": ("gres=gpu:8",)}, "slurm", "--gpus-per-node"),
    ({"slurm_extra": ("reservation",)}, "slurm", "KEY=VALUE"),
    ({"slurm_extra": ("--reservation=x",)}, "slurm", "KEY=VALUE"),
    ({"slurm_extra": ("reservation=a b",)}, "slurm", "KEY=VALUE"),
    ({"slurm_extra": ("reservation=x", "reservation=y")}, "slurm", "more than once"),
    ({"slurm_extra": ["mail-type=END"]}, "local", "SLURM job option"),
    ({"setup": ("module load cuda\nrm -rf /",)}, "slurm", "one shell line"),
    ({"setup": ("  ",)}, "slurm", "one shell line"),
    ({"setup": "module load cuda"}, "slurm", "list of strings"),
    ({"setup": ("true",)}, "debug", "SLURM job option"),
    ({"job_name": "my job"}, "slurm", "plain name"),
    ({"job_name": "x"}, "local", "SLURM job option"),
])
def test_inconsistent_options_are_refused(values, cluster, words):
    with pytest.raises(UserError) as e:
        ExecutorOptions.from_mapping(values).validate(cluster)
    assert words in e.value.cause + e.value.fix


def test_gpu_jobs_get_cpus_memory_and_a_day_by_default():
    """Defaults fit a GPU fine-tuning job: 1 + 4 loader workers' CPUs per process, 16 GB per GPU, 24 h
    (the trainer checkpoints on the time-limit signal); CPU jobs keep 1 CPU and the cluster's memory."""
    flags = ExecutorOptions(gpus_per_node=4).sbatch_flags()
    assert "--cpus-per-task=5" in flags and "--mem=65536M" in flags and "--time=1440" in flags
    cpu = ExecutorOptions().sbatch_flags()
    assert "--cpus-per-task=1" in cpu and not any(f.startswith("--mem") for f in cpu)
    given = ExecutorOptions(gpus_per_node=2, cpus_per_task=10, mem_gb=100).submitit_parameters("slurm")
    assert given["cpus_per_task"] == 10 and given["mem"] == "102400MB"
    assert "--array=0-99%8" in ExecutorOptions(array_parallelism=8).sbatch_flags(array_size=100)


def test_options_map_to_sbatch_and_submitit_names():
    o = ExecutorOptions.from_mapping({"gpus_per_node": 4, "nodes": 2, "mem_gb": 1.5, "partition": "gpu",
                                      "qos": "high", "exclude": "n[1-3]"})
    assert o.world_size == 8 and o.ntasks_per_node == 4
    p = o.submitit_parameters("slurm")
    assert p["ntasks_per_node"] == 4 and p["gpus_per_node"] == 4 and p["mem"] == "1536MB"
    assert p["qos"] == "high" and p["exclude"] == "n[1-3]"
    assert "--partition=gpu" in o.sbatch_flags() and "--mem=1536M" in o.sbatch_flags()


def test_cli_refuses_bad_options_before_writing_anything(tmp_path, capsys):
    rc = cli(["submit", "--experiment", "e", "--root", str(tmp_path), "--protocol", "coco/R50-FPN-1x",
              "--weights", "random", "--cluster", "local", "--nodes", "2"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: nodes=2") and "  fix:" in err
    assert list(tmp_path.iterdir()) == []


def test_cli_refuses_missing_weights(tmp_path, capsys):
    rc = cli(["submit", "--experiment", "e", "--root", str(tmp_path), "--protocol", "coco/R50-FPN-1x",
              "--weights", str(tmp_path / "nope.pkl"), "--cluster", "local"])
    assert rc == 2 and "does not exist" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


# --- rendezvous ------------------------------------------------------------------------------
def test_rendezvous_port_is_seeded_by_job_and_attempt():
    ports = {rendezvous_port(f"{j}_{a}", r) for j in range(20) for a in range(5) for r in range(3)}
    assert all(20000 <= p < 40000 for p in ports)
    assert len(ports) > 280                                   # 300 jobs x attempts, few collisions
    assert rendezvous_port("123_4", 1) == rendezvous_port("123_4", 1)


# --- runs ------------------------------------------------------------------------------------
def test_local_two_process_job_all_reduces_and_resubmission_skips_it(tmp_path):
    exp = tmp_path / "exp"
    opts = ExecutorOptions(tasks_per_node=2, timeout_min=5, signal_delay_s=10)
    [r] = submit_tasks([toy(exp / "toy/seed0", max_iter=3)], exp, opts, cluster="local")
    assert r.action == "submitted"
    r.job.wait()
    [st] = experiment_status(exp)
    assert st.state == "done", st
    result = json.loads((exp / "toy/seed0/launch_result.json").read_text())["result"]
    assert result["world_size"] == 2 and result["rank_param_max_diff"] == 0.0
    lines = [json.loads(l) for l in (exp / "toy/seed0/metrics.json").read_text().splitlines()]
    assert [l["iteration"] for l in lines] == [0, 1, 2, 3]
    [again] = submit_tasks([toy(exp / "toy/seed0", max_iter=3)], exp, opts, cluster="local")
    assert again.action == "skipped-done"


def test_debug_failure_is_reported_with_its_cause_and_spares_the_others(tmp_path, capsys):
    exp = tmp_path / "exp"
    report = submit_tasks([toy(exp / "ok/seed0", max_iter=2), toy(exp / "bad/seed0", fail="no weights at /x.pkl")],
                          exp, cluster="debug")
    assert [r.action for r in report] == ["done", "failed"]
    states = {s.key: s for s in experiment_status(exp)}
    assert states["ok/seed0"].state == "done"
    assert states["bad/seed0"].state == "failed" and "no weights at /x.pkl" in states["bad/seed0"].cause
    assert cli(["status", str(exp)]) == 1       # the CLI's convention: 1 = some runs failed
    out = capsys.readouterr().out
    assert "1 done, 1 failed" in out and "FileNotFoundError: no weights at /x.pkl" in out


def test_registry_records_intent_so_a_crash_before_queueing_is_visible_and_redone(tmp_path):
    exp = tmp_path / "exp"
    reg = Registry(exp)
    task = toy(exp / "toy/seed0", max_iter=1)
    from infomin_det.launch.registry import RunRecord

    reg.runs["toy/seed0"] = RunRecord("toy/seed0", str(task.output_dir), TOY, {},
                                      jobs=[{"job_id": None, "cluster": "slurm", "submitted": "t"}])
    reg.save()                                       # what a crash between intent and sbatch leaves
    [st] = experiment_status(exp)
    assert st.state == "unsubmitted"
    [r] = submit_tasks([task], exp, cluster="debug")
    assert r.action == "done"
    rec = Registry(exp).runs["toy/seed0"]
    assert len(rec.jobs) == 2 and rec.jobs[-1]["job_id"] and rec.jobs[-1]["cluster"] == "debug"


def test_finished_run_is_not_retrained_on_resume(tmp_path):
    out = tmp_path / "r"
    submit_tasks([toy(out, max_iter=2)], tmp_path, cluster="debug")
    (out / "launch_result.json").unlink()            # forget the marker: the worker itself must not redo work
    submit_tasks([toy(out, max_iter=2)], tmp_path, cluster="debug")
    lines = [json.loads(l) for l in (out / "metrics.json").read_text().splitlines()]
    assert [l["iteration"] for l in lines] == [0, 1, 2]   # two iterations, one final line, no repeats


def test_status_without_a_registry_says_what_to_pass(tmp_path, capsys):
    assert cli(["status", "--root", str(tmp_path)]) == 2
    assert "no submitted experiments" in capsys.readouterr().err
    assert cli(["status", str(tmp_path / "nope")]) == 2
    assert "no job registry" in capsys.readouterr().err


def test_submission_hides_the_enclosing_job_but_keeps_the_cluster(monkeypatch):
    import os

    from infomin_det.launch.submit import submission_env

    monkeypatch.setenv("SLURM_CONF", "/etc/x/slurm.conf")
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setenv("RANK", "3")
    with submission_env():
        assert "SLURM_JOB_ID" not in os.environ and "RANK" not in os.environ
        assert os.environ["SLURM_CONF"] == "/etc/x/slurm.conf"
    assert os.environ["SLURM_JOB_ID"] == "77" and os.environ["RANK"] == "3"


def test_local_refuses_more_runs_than_it_may_start_at_once(tmp_path):
    tasks = [toy(tmp_path / f"r{i}") for i in range(3)]
    with pytest.raises(UserError) as e:
        submit_tasks(tasks, tmp_path, ExecutorOptions(array_parallelism=2), cluster="local")
    assert "3 local runs" in e.value.cause and not (tmp_path / "launch").exists()


def test_a_worker_that_cannot_be_found_is_refused_before_submission(tmp_path):
    with pytest.raises(UserError) as e:
        submit_tasks([DistributedTask("infomin_det.no_such_module:train", ToySpec(str(tmp_path / "r")))],
                     tmp_path, cluster="debug")
    assert "cannot be found" in e.value.cause and not (tmp_path / "launch").exists()


def test_a_failed_sbatch_leaves_the_runs_unsubmitted_for_a_retry(tmp_path, monkeypatch):
    """sbatch accepts --test-only but the real submission fails (controller went away)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text('#!/bin/sh\ncase "$*" in *--test-only*) exit 0;; esac\n'
                                    'echo "sbatch: error: Batch job submission failed: Socket timed out" >&2\nexit 1\n')
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    exp = tmp_path / "exp"
    with pytest.raises(UserError) as e:
        submit_tasks([toy(exp / "a"), toy(exp / "b")], exp, ExecutorOptions(timeout_min=5, signal_delay_s=10),
                     cluster="slurm")
    assert "submission of 2 of 2 runs failed" in e.value.cause and "unsubmitted" in e.value.fix
    assert [s.state for s in experiment_status(exp)] == ["unsubmitted", "unsubmitted"]


# --- GPUs: counted without CUDA, never a silent CPU fallback, each local job its own ------------------
SMI = """GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-aaaa)
GPU 1: NVIDIA H200 (UUID: GPU-bbbb)
  MIG 3g.71gb     Device  0: (UUID: MIG-b0)
  MIG 3g.71gb     Device  1: (UUID: MIG-b1)
GPU 2: NVIDIA H100 80GB HBM3 (UUID: GPU-cccc)
"""


def test_gpus_are_counted_from_cuda_visible_devices_or_nvidia_smi():
    assert parse_nvidia_smi(SMI) == ["GPU-aaaa", "MIG-b0", "MIG-b1", "GPU-cccc"]
    assert parse_nvidia_smi("No devices were found\n") == []
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "2,3"}) == ["2", "3"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "GPU-aaaa"}) == ["GPU-aaaa"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": ""}) == []          # hidden on purpose
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "0,-1,2"}) == ["0"]  # CUDA stops at an invalid entry


def test_concurrent_local_jobs_get_disjoint_gpus():
    assert plan_local_gpus(["auto"] * 3, 1, ["0", "1", "2", "3"]) == ["0", "1", "2"]
    assert plan_local_gpus(["cuda"] * 2, 2, ["0", "1", "2", "3"]) == ["0,1", "2,3"]
    assert plan_local_gpus(["auto"] * 2, 1, ["0", "1", "2", "3"], busy={"0", "2"}) == ["1", "3"]
    assert plan_local_gpus(["cpu"] * 3, 0, ["0", "1"]) == ["", "", ""]   # asked for: GPUs hidden
    assert plan_local_gpus(["auto"], 0, []) == [""]                       # no GPU here: auto is CPU
    with pytest.raises(UserError) as e:
        plan_local_gpus(["auto"] * 5, 1, ["0", "1", "2", "3"], busy={"3"})
    assert "5 local runs" in e.value.cause and "3 of the 4 GPUs are free" in e.value.cause
    assert "at most 3" in e.value.cause


@pytest.mark.parametrize("devices, gpus, cluster, visible, words", [
    (["auto"], 0, "local", ["0", "1"], "hides them"),          # submitit's default would hide every GPU
    (["cuda"], 0, "local", ["0"], "hides them"),
    (["auto"], 1, "local", [], "no GPU is visible"),
    (["cuda"], 0, "local", [], "--device cuda"),
    (["auto"], 0, "slurm", [], "--gpus-per-node 0"),
    (["cpu"], 2, "slurm", [], "idle"),
    (["gpu"], 1, "slurm", [], "not one of"),
])
def test_a_run_is_never_moved_to_the_cpu_unless_asked(devices, gpus, cluster, visible, words):
    with pytest.raises(UserError) as e:
        check_device_request(devices, gpus, cluster, visible)
    assert words in e.value.cause + e.value.fix


def test_submit_refuses_cpu_fallback_on_a_gpu_machine_before_writing(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    with pytest.raises(UserError) as e:
        submit_tasks([toy(tmp_path / "exp/r", device="auto")], tmp_path / "exp", cluster="local")
    assert "hides them" in e.value.cause and not (tmp_path / "exp").exists()
    with pytest.raises(UserError) as e:    # SLURM: no GPUs requested for a GPU run
        submit_tasks([toy(tmp_path / "exp/r", device="auto")], tmp_path / "exp", cluster="slurm")
    assert "--gpus-per-node 0" in e.value.cause and not (tmp_path / "exp").exists()


def test_each_local_job_sees_only_its_own_gpus(tmp_path, monkeypatch):
    """Real local jobs: the GPUs of the submitting environment are shared out one per job; a third
    run while both hold theirs is refused (nothing written for it)."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    exp = tmp_path / "exp"
    opts = ExecutorOptions(gpus_per_node=1, timeout_min=5, signal_delay_s=10)
    report = submit_tasks([toy(exp / f"r{i}", device="auto", max_iter=1) for i in range(2)],
                          exp, opts, cluster="local")
    with pytest.raises(UserError) as e:
        submit_tasks([toy(exp / "r2", device="auto")], exp, opts, cluster="local")
    assert "0 of the 2 GPUs are free" in e.value.cause and "r2" not in Registry(exp).runs
    for r in report:
        r.job.wait()
    seen = [json.loads((exp / f"r{i}/launch_result.json").read_text())["result"]["cuda_visible_devices"]
            for i in range(2)]
    assert seen == ["3", "5"]
    assert [Registry(exp).runs[f"r{i}"].jobs[-1]["gpus"] for i in range(2)] == ["3", "5"]


# --- submit refuses what train would refuse, before anything is written -----------------------------
@pytest.fixture
def nometa(tmp_path):
    import pickle

    path = tmp_path / "nometa.pkl"
    path.write_bytes(pickle.dumps({"weights": {}}))
    return path


REFUSALS = [
    ((), {"protocol": ("coco/R50-FPN-9x",)}, "unknown protocol"),
    (("--", "SOLVER.MAX_ITE", "3"), {}, "SOLVER.MAX_ITE"),
    (("--", "SOLVER.MAX_ITER", "abc"), {}, "'abc'"),
    (("--", "SOLVER.MAX_ITER"), {}, "KEY VALUE pairs"),
    (("--", "solver.max_iter", "3"), {}, "not a Detectron2 config key"),
    (("--", "SEED", "3"), {}, "--seeds"),
    (("--", "MODEL.WEIGHTS", "/x.pkl"), {}, "--weights NAME=PATH"),
    (("--", "SOLVER.MAX_ITER", "3", "--seeds", "1"), {}, "comes after the overrides"),
    (("--", "SOLVER.IMS_PER_BATCH", "3"), {"protocol": ("coco/R50-FPN-1x",)}, "IMS_PER_BATCH"),
    (("--", "SOLVER.MAX_ITER", "3", "SOLVER.MAX_ITER", "4"), {}, "more than once"),
    (("--", "MODEL.DEVICE", "cuda:1"), {}, "MODEL.DEVICE"),
    (("--dataset", "coco-json:/no/a.json:/no:/no/b.json:/no"), {}, "does not exist"),
    (("--dataset", "voc:/data"), {}, "not understood"),
    (("--seeds", "-1"), {}, "whole number"),
    (("--seeds", "0", "1", "0"), {}, "seed 0 is given more than once"),
    (("--seeds", "2147483648"), {}, "whole number"),
    (("--seeds", "9" * 5000), {}, "whole number"),
    (("--seeds", "1.5"), {}, "whole number"),
    (("--seeds", "\uff11"), {}, "whole number"),                 # a full-width digit int() would take
    (("--seeds", "0", "SOLVER.MAX_ITER", "3"), {}, "after '--'"),
    ((), {"weights": ("random", "SOLVER.MAX_ITER", "3")}, "after '--'"),
    (("--threads", "-1"), {}, "--threads"),
    ((), {"experiment": "../x"}, "not a plain name"),
    ((), {"experiment": ""}, "not a plain name"),
    ((), {"weights": ("a/b=random",)}, "not a plain name"),
    ((), {"weights": ("x=",)}, "names no weights"),
    ((), {"weights": ("s3://bucket/w.pkl",)}, "scheme"),
    ((), {"weights": ("{tmp}",)}, "not a file"),
    ((), {"weights": ("random={nometa}",)}, "kept for random init"),
    ((), {"weights": ("{nometa}",)}, "lacks 'model'"),           # weights that do not fit the config
    ((), {"weights": ("a=random", "a=random")}, "share the row name"),
    ((), {"protocol": ("coco/R50-FPN-1x", "coco/R50-FPN-1x")}, "more than once"),
    ((), {"protocol": ("coco/../../x",)}, "not a plain name"),
    (("--allow-mismatch", "pixel_std"), {}, "not a config key"),
    (("--family", "supervised", "--allow-mismatch", "all"), {}, "random-init"),   # would load MSRA weights
    (("--device", "cpu", "--gpus-per-node", "1"), {}, "idle"),
    (("--gpus-per-node", "1"), {}, "no GPU is visible"),
    (("--mem-gb", "nan"), {}, "mem_gb"),
    (("--mem-gb", "inf"), {}, "mem_gb"),
    (("--timeout-min", "99999999999"), {}, "timeout_min"),
    (("--array-parallelism", "0"), {}, "array_parallelism"),
    (("--cpus-per-task", "-3"), {}, "cpus_per_task"),
    (("--partition", "gpu a"), {}, "partition"),
    (("--comment", "it's"), {}, "comment"),
    (("--nodes", "2"), {}, "needs SLURM"),
]


@pytest.mark.parametrize("extra, over, words", REFUSALS, ids=[f"{i}-{r[2][:20]}" for i, r in enumerate(REFUSALS)])
def test_submit_refuses_before_anything_is_written(tmp_path, dataset, nometa, capsys, monkeypatch, extra, over, words):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")          # a machine without GPUs, whatever runs the test
    fill = {"tmp": str(tmp_path), "nometa": str(nometa)}
    over = {k: tuple(w.format(**fill) for w in v) if isinstance(v, tuple) else v for k, v in over.items()}
    root = tmp_path / "runs"
    rc = cli(submit_argv(root, dataset, *extra, **over))
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and "\n  fix: " in err and "Traceback" not in err, err
    assert words in err, err
    assert not root.exists()


def test_submit_refuses_a_root_that_is_a_file(tmp_path, dataset, capsys):
    (tmp_path / "f").write_text("x")
    assert cli(submit_argv(tmp_path / "f", dataset, "--device", "cpu")) == 2
    assert "is a file" in capsys.readouterr().err


def test_overrides_after_allow_mismatch_are_not_swallowed(dataset):
    """``--allow-mismatch`` used to take every following word (nargs='*'): the overrides vanished."""
    from infomin_det.launch import submit_cli

    parser = argparse.ArgumentParser(allow_abbrev=False)
    submit_cli.add_arguments(parser)
    args = parser.parse_args(["--experiment", "e", "--protocol", "coco/R50-FPN-1x", "--weights", "random",
                              "--allow-mismatch", "MODEL.PIXEL_STD", "SOLVER.MAX_ITER", "100"])
    [task] = submit_cli.build_tasks(args, threads=1)
    assert task.spec.opts == ("SOLVER.MAX_ITER", "100") and task.spec.allow_mismatch == ("MODEL.PIXEL_STD",)
    args = parser.parse_args(["--experiment", "e", "--protocol", "coco/R50-FPN-1x", "--weights", "random",
                              "--seeds", "0", "1", "--device", "cpu", "--", "SOLVER.MAX_ITER", "100"])
    tasks = submit_cli.build_tasks(args, threads=1)
    assert [t.spec.seed for t in tasks] == [0, 1] and all(t.spec.device == "cpu" for t in tasks)
    assert tasks[0].spec.opts == ("SOLVER.MAX_ITER", "100")
    args = parser.parse_args(["--experiment", "e", "--protocol", "coco/R50-FPN-1x", "--weights", "random",
                              "--", "MODEL.DEVICE", "cpu"])
    with pytest.raises(UserError, match="use --device"):       # one way to set the device, as in train
        submit_cli.build_tasks(args, threads=1)


def test_identical_checks_run_once_per_sweep(dataset):
    """5 seeds x 4 protocols: one check_spec per protocol, the seeds share it."""
    from infomin_det.engine.spec import TrainSpec
    from infomin_det.launch.submit_cli import check_specs

    protocols = ["coco/R50-FPN-1x", "coco/R50-FPN-2x", "coco/R50-C4-1x", "coco/R101-FPN-1x"]
    specs = [TrainSpec(p, "", f"/tmp/x/{p}/seed{s}", weights_name="random", seed=s, dataset=dataset)
             for p in protocols for s in range(5)]
    t0 = time.perf_counter()
    assert check_specs(specs) == 4
    print(f"20 runs checked with 4 checks in {time.perf_counter() - t0:.2f} s")
    with pytest.raises(UserError) as e:                     # the refusal names the run it is about
        check_specs(specs + [TrainSpec("coco/R50-FPN-1x", "", "/tmp/y", weights_name="random", dataset=dataset,
                                       opts=("SOLVER.BASE_LR", "fast"))])
    assert e.value.cause.startswith("run coco/R50-FPN-1x/random: ")


def test_submit_without_detectron2_says_what_to_install(tmp_path, dataset):
    """Without site-packages detectron2 really is absent: the checks cannot run, so nothing is queued."""
    proc = subprocess.run([sys.executable, "-S", "-m", "infomin_det", *submit_argv(tmp_path / "runs", dataset)],
                          cwd=REPO, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: detectron2 cannot be imported here") and "install detectron2" in proc.stderr
    assert not (tmp_path / "runs").exists()


# --- a broken registry is a clear error wherever it is read ------------------------------------------
def _write_registry(exp, data):
    (exp / "launch").mkdir(parents=True)
    path = exp / "launch" / "registry.json"
    if isinstance(data, bytes):
        path.write_bytes(data)
    elif data == "dir":
        path.mkdir()
    else:
        path.write_text(json.dumps(data))
    return path


GOOD = {"key": "r", "output_dir": "/tmp/r", "worker": TOY, "spec": {}, "jobs": []}
BROKEN = {
    "truncated": b'{"version": 1, "runs": {"r": {"key": "r", "outp',
    "binary": bytes(range(256)),
    "directory": "dir",
    "list": [1, 2, 3],
    "no-runs": {"version": 1},
    "version": {"version": 7, "runs": {}},
    "missing-field": {"version": 1, "runs": {"r": {"key": "r", "worker": TOY, "spec": {}}}},
    "wrong-type": {"version": 1, "runs": {"r": {**GOOD, "jobs": "12"}}},
    "bad-job": {"version": 1, "runs": {"r": {**GOOD, "jobs": [{"job_id": 12, "cluster": "slurm"}]}}},
    "unknown-field": {"version": 1, "runs": {"r": {**GOOD, "evil": 1}}},
    "bad-cluster": {"version": 1, "runs": {"r": {**GOOD, "jobs": [{"job_id": "1", "cluster": "weird"}]}}},
    "path-job-id": {"version": 1, "runs": {"r": {**GOOD, "jobs": [{"job_id": "../../x", "cluster": "slurm"}]}}},
    "wrong-key": {"version": 1, "runs": {"r": {**GOOD, "key": "other"}}},
    "record-not-object": {"version": 1, "runs": {"r": "x"}},
}


@pytest.mark.parametrize("kind", list(BROKEN))
def test_a_broken_registry_is_a_user_error_in_status_and_submit(tmp_path, capsys, kind):
    exp = tmp_path / "exp"
    path = _write_registry(exp, BROKEN[kind])
    assert cli(["status", str(exp)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "registry" in err and "Traceback" not in err, err
    assert cli(["status", "--root", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("error: ")
    with pytest.raises(UserError) as e:
        submit_tasks([toy(exp / "r")], exp, cluster="debug")
    assert str(path) in e.value.cause
    assert not (exp / "r").exists() and not (exp / "launch" / "submitit").exists()


def test_a_launch_path_that_is_a_file_is_a_user_error(tmp_path, capsys):
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "launch").write_text("x")
    with pytest.raises(UserError) as e:
        submit_tasks([toy(exp / "r")], exp, cluster="debug")
    assert "is a file" in e.value.cause
    assert cli(["status", str(exp)]) == 2 and "is a file" in capsys.readouterr().err


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_an_unreadable_registry_is_a_user_error(tmp_path):
    exp = tmp_path / "exp"
    path = _write_registry(exp, {"version": 1, "runs": {}})
    path.chmod(0)
    with pytest.raises(UserError) as e:
        experiment_status(exp)
    assert "unreadable" in e.value.cause


# --- re-submission with other settings ---------------------------------------------------------------
def test_resubmission_with_other_settings_is_refused_naming_them(tmp_path):
    exp = tmp_path / "exp"
    [first] = submit_tasks([toy(exp / "r", max_iter=1)], exp, cluster="debug", inputs=[{"weights_sha256": "a" * 64}])
    assert first.action == "done"
    before = (exp / "launch/registry.json").read_bytes()
    with pytest.raises(UserError) as e:
        submit_tasks([toy(exp / "r", max_iter=2)], exp, cluster="debug", inputs=[{"weights_sha256": "a" * 64}])
    assert "run r was submitted before with other settings" in e.value.cause and "max_iter: 1 -> 2" in e.value.cause
    assert str(exp / "r") in e.value.fix
    with pytest.raises(UserError) as e:                     # same spec, the weights file changed
        submit_tasks([toy(exp / "r", max_iter=1)], exp, cluster="debug", inputs=[{"weights_sha256": "b" * 64}])
    assert "weights_sha256" in e.value.cause
    assert (exp / "launch/registry.json").read_bytes() == before
    [same] = submit_tasks([toy(exp / "r", max_iter=1)], exp, cluster="debug", inputs=[{"weights_sha256": "a" * 64}])
    assert same.action == "skipped-done"
    import shutil

    shutil.rmtree(exp / "r")                                # the documented way to redo it with new settings
    [redo] = submit_tasks([toy(exp / "r", max_iter=2)], exp, cluster="debug")
    assert redo.action == "done" and Registry(exp).runs["r"].spec["max_iter"] == 2


def test_cli_resubmission_with_changed_overrides_is_refused(tmp_path, dataset, capsys, monkeypatch):
    """The real trainer as a local job: while it runs (or after), other overrides for the same run are
    refused with the field named; the same command skips it."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    root = tmp_path / "runs"
    tiny = ["--", "SOLVER.MAX_ITER", "1", "MODEL.RESNETS.DEPTH", "18", "MODEL.RESNETS.RES2_OUT_CHANNELS", "64",
            "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "96"]
    base = submit_argv(root, dataset, "--device", "cpu", "--timeout-min", "10", "--signal-delay-s", "30")
    assert cli([*base, *tiny]) == 0
    out = capsys.readouterr().out
    assert "coco/R50-FPN-1x/random/seed0  submitted" in out
    exp = root / "e"
    try:
        assert cli([*base, *tiny[:-1], "128"]) == 2
        err = capsys.readouterr().err
        assert "other settings: override INPUT.MAX_SIZE_TRAIN: '96' -> '128'" in err, err
        assert cli([*base, *tiny]) == 0
        assert "skipped-" in capsys.readouterr().out
    finally:
        pid = int(Registry(exp).runs["coco/R50-FPN-1x/random/seed0"].jobs[-1]["job_id"])
        try:
            os.kill(pid, signal.SIGTERM)                    # the controller forwards it to the task
        except ProcessLookupError:
            pass


# --- status never calls a dead job running -----------------------------------------------------------
def _record(exp, job_id, cluster, state="running", folder="", spec=None):
    reg = Registry(exp)
    out = exp / "r"
    out.mkdir(parents=True, exist_ok=True)
    (out / "launch_state.json").write_text(json.dumps({"state": state, "attempt": 0}))
    reg.runs["r"] = RunRecord("r", str(out), TOY, spec or {}, submitit_folder=folder or str(exp / "launch/submitit/%j"),
                              jobs=[{"job_id": job_id, "cluster": cluster, "submitted": "t"}])
    reg.save()


# what a user sees around a preemption, as SLURM and the run's own state file say it; the real
# requeue cycle is in test_slurm.py, where the few seconds the job waits are too short to poll for
@pytest.mark.parametrize("scheduler, written, attempt, shown", [
    ("PENDING", "requeued", 1, "requeued"),     # checkpointed, waiting to start again
    ("PENDING", "running", 1, "requeued"),      # node failure: requeued without a checkpoint() call
    ("PENDING", "running", 0, "pending"),       # never started
    ("REQUEUED", "running", 0, "requeued"),
    ("PREEMPTED", "running", 0, "requeued"),
    ("RUNNING", "requeued", 1, "requeued"),     # started again, not yet past its resume
    ("RUNNING", "running", 1, "running"),       # the next attempt trains
    ("TIMEOUT", "requeued", 1, "failed"),       # the limit hit and no requeue followed
])
def test_status_around_a_requeue(tmp_path, scheduler, written, attempt, shown):
    from infomin_det.launch.status import run_status

    _record(tmp_path, "4242", "slurm", state=written)
    (tmp_path / "r/launch_state.json").write_text(json.dumps({"state": written, "attempt": attempt}))
    st = run_status(Registry(tmp_path).runs["r"], {"4242": scheduler})
    assert (st.state, st.attempt, st.scheduler_state) == (shown, attempt, scheduler)


def test_a_reused_pid_is_not_taken_for_a_local_job(tmp_path):
    other = subprocess.Popen(["sleep", "30"])               # alive, but not a submitit controller
    try:
        _record(tmp_path, str(other.pid), "local")
        [st] = experiment_status(tmp_path)
        assert st.state == "failed" and st.scheduler_state == "EXITED"
    finally:
        other.kill()
        other.wait()


def test_a_local_job_killed_with_sigkill_is_failed_not_running(tmp_path):
    exp = tmp_path / "exp"
    [r] = submit_tasks([toy(exp / "r", max_iter=200, step_s=0.2)],
                       exp, ExecutorOptions(timeout_min=5, signal_delay_s=10), cluster="local")
    wait_until(lambda: (exp / "r/metrics.json").exists(), what="the job to train")
    assert [s.state for s in experiment_status(exp)] == ["running"]
    controller = int(r.job_id)
    children = subprocess.run(["pgrep", "-P", str(controller)], capture_output=True, text=True).stdout.split()
    for pid in [controller, *map(int, children)]:
        os.kill(pid, signal.SIGKILL)
    r.job._process.wait()                                   # reap it (a zombie is not running either)
    [st] = experiment_status(exp)
    assert json.loads((exp / "r/launch_state.json").read_text())["state"] == "running"
    assert st.state == "failed", st


def test_unreachable_scheduler_is_unknown_not_failed_or_running(tmp_path, monkeypatch):
    """sacct and squeue both fail (controller down): the run is 'unknown', and not resubmitted."""
    from infomin_det.launch.registry import spec_fields

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("sacct", "squeue"):
        (bin_dir / name).write_text("#!/bin/sh\necho 'slurm_load_jobs error: Unable to contact slurm controller "
                                    "(connect failure)' >&2\nexit 1\n")
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    _record(tmp_path, "12345", "slurm", spec=spec_fields(ToySpec(str(tmp_path / "r"))))
    [st] = experiment_status(tmp_path)
    assert st.state == "unknown" and "Unable to contact slurm controller" in st.cause
    with pytest.raises(UserError) as e:
        submit_tasks([toy(tmp_path / "r")], tmp_path, cluster="debug")
    assert "cannot tell whether run r is still queued or running" in e.value.cause


@pytest.mark.parametrize("content", ["[1, 2]", "{\"state\": 3, \"attempt\": \"x\"}", "\x00\x01", ""])
def test_a_garbled_state_file_does_not_break_status(tmp_path, content):
    _record(tmp_path, "99999999", "local")
    (tmp_path / "r/launch_state.json").write_text(content)
    [st] = experiment_status(tmp_path)
    assert st.state == "failed" and st.attempt == 0


def test_a_truncated_result_file_is_not_done(tmp_path):
    _record(tmp_path, "99999999", "local", state="done")
    (tmp_path / "r/launch_result.json").write_text('{"result": {"bbox/AP": 3')
    [st] = experiment_status(tmp_path)
    assert st.state == "failed" and "launch_result.json is unreadable" in st.cause


def test_status_refuses_nonsense_arguments(tmp_path, capsys):
    assert cli(["status", "--lines", "-1", str(tmp_path)]) == 2
    (tmp_path / "f").write_text("x")
    assert cli(["status", "--root", str(tmp_path / "f")]) == 2
    assert "is a file" in capsys.readouterr().err


def test_executor_arguments_can_default_to_no_cluster():
    from infomin_det.launch.submit_cli import add_executor_arguments, executor_options

    parser = argparse.ArgumentParser()
    add_executor_arguments(parser, cluster_default=None)
    args = parser.parse_args(["--gpus-per-node", "2"])
    assert args.cluster is None and executor_options(args).gpus_per_node == 2
    parser = argparse.ArgumentParser()
    add_executor_arguments(parser)
    assert parser.parse_args([]).cluster == "auto"
