"""Launcher mechanics without SLURM: option validation, rendezvous ports, registry, local/debug runs."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from infomin_det.cli import main as cli
from infomin_det.errors import UserError
from infomin_det.launch import DistributedTask, ExecutorOptions, Registry, experiment_status, rendezvous_port, submit_tasks
from infomin_det.launch.selftest import ToySpec

TOY = "infomin_det.launch.selftest:toy_worker"


def toy(out, **kw):
    return DistributedTask(TOY, ToySpec(str(out), **kw))


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
])
def test_inconsistent_options_are_refused(values, cluster, words):
    with pytest.raises(UserError) as e:
        ExecutorOptions.from_mapping(values).validate(cluster)
    assert words in e.value.cause + e.value.fix


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


def test_importing_launch_pulls_in_neither_torch_nor_detectron2():
    code = ("import sys, infomin_det.launch, infomin_det.launch.submit_cli, infomin_det.launch.status_cli;"
            "bad = [m for m in ('torch', 'detectron2') if m in sys.modules]; print(bad); sys.exit(bool(bad))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


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
    assert cli(["status", str(exp)]) == 0
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
    assert "submission of 2 runs failed" in e.value.cause and "unsubmitted" in e.value.fix
    assert [s.state for s in experiment_status(exp)] == ["unsubmitted", "unsubmitted"]
