"""The launcher against a real SLURM (the project's loopback cluster): arrays, 2-rank gloo jobs,
USR2 preemption -> requeue -> resume, failure reporting, validation before submission, and status
of jobs that died without saying so (SIGKILL, purged, completed without a result).

Uses the launcher's own tiny DDP task (``infomin_det.launch.selftest``); ``test_slurm_train.py``
runs the real Detectron2 trainer through the same path. Everything is submitted up front (one
module fixture) so the jobs run concurrently and the module takes about as long as its slowest job.
"""

import json
import subprocess
import time

import pytest

from infomin_det.cli import main as cli
from infomin_det.errors import UserError
from infomin_det.launch import DistributedTask, ExecutorOptions, experiment_status, submit_tasks
from infomin_det.launch.selftest import ToySpec

pytestmark = pytest.mark.slurm
TOY = "infomin_det.launch.selftest:toy_worker"
OPTS = ExecutorOptions(timeout_min=5, signal_delay_s=30)


def toy(out, **kw):
    return DistributedTask(TOY, ToySpec(str(out), **kw))


def wait_for(exp, done, timeout=180):
    """Poll ``experiment_status(exp)`` until ``done(states)``; returns {key: RunStatus}."""
    end = time.time() + timeout
    while True:
        states = {s.key: s for s in experiment_status(exp)}
        if done(states):
            return states
        if time.time() > end:
            pytest.fail(f"timed out waiting on {exp}: {states}")
        time.sleep(0.5)


def metrics(out):
    return [json.loads(l) for l in (out / "metrics.json").read_text().splitlines()]


@pytest.fixture(scope="module")
def jobs(slurm_cluster, tmp_path_factory):
    root = tmp_path_factory.mktemp("slurm_runs")
    exps = {name: root / name for name in ("array", "ddp", "preempt", "killed")}
    array = submit_tasks([toy(exps["array"] / "toy/seed0", max_iter=3), toy(exps["array"] / "toy/seed1", max_iter=3),
                          toy(exps["array"] / "toy/bad", fail="weights file /nonexistent/w.pkl not found")],
                         exps["array"], OPTS, cluster="slurm")
    ddp = submit_tasks([DistributedTask(TOY + "_d2", ToySpec(str(exps["ddp"] / "toy/seed0"), max_iter=3))], exps["ddp"],
                       ExecutorOptions(tasks_per_node=2, timeout_min=5, signal_delay_s=30), cluster="slurm")
    preempt = submit_tasks([toy(exps["preempt"] / "toy/usr2", max_iter=8, step_s=1.0),
                            toy(exps["preempt"] / "toy/requeue", max_iter=12, step_s=1.0)], exps["preempt"], OPTS,
                           cluster="slurm")
    killed = submit_tasks([toy(exps["killed"] / "toy/kill9", max_iter=300, step_s=0.5)], exps["killed"], OPTS,
                          cluster="slurm")
    # a tiny 2-rank InfoMin pretraining, submitted by `infomin-det pretrain --cluster slurm`
    from test_pretrain import write_images

    data = write_images(root / "imgs", n_per_class=8)
    assert cli(["pretrain", str(data), "-o", str(root / "pretrain"), "--arch", "R-18", "--epochs", "1",
                "--batch-size", "4", "--queue-size", "256", "--image-size", "32", "--workers", "0",
                "--no-tensorboard", "--cluster", "slurm", "--processes", "2", "--timeout-min", "5", "--device", "cpu",
                "--json"]) == 0
    _interrupt(slurm_cluster, exps["preempt"], *preempt)      # here, whichever test comes first
    return {"exps": exps, "array": array, "ddp": ddp, "preempt": preempt, "killed": killed,
            "pretrain": root / "pretrain"}


def _interrupt(slurm_cluster, exp, usr2, requeue):
    """Once both runs have trained 2 iterations: USR2 (preemption) to one, ``scontrol requeue`` (what a
    node failure does: the original pickle is replayed, no checkpoint() call) to the other."""
    end = time.time() + 120
    for key in ("usr2", "requeue"):
        out = exp / "toy" / key
        while not ((out / "metrics.json").exists() and len(metrics(out)) >= 2):
            assert time.time() < end, f"{key} job never trained"
            time.sleep(0.2)
    slurm_cluster.run("scancel", "--signal=USR2", usr2.job_id)
    slurm_cluster.run("scontrol", "requeue", requeue.job_id)


@pytest.fixture(scope="module")
def interrupted(jobs, slurm_cluster):
    """The two interrupted runs, once they have finished: their status and SLURM's record of them."""
    exp = jobs["exps"]["preempt"]
    usr2, requeue = jobs["preempt"]
    states = wait_for(exp, lambda s: all(st.state in ("done", "failed") for st in s.values()))
    # the scheduler's own record of each attempt (a requeued job keeps its id; --duplicates lists both;
    # the second may still be RUNNING for a moment after the result is written)
    history = {key: slurm_cluster.run("sacct", "--duplicates", "-X", "-n", "-P", "-o", "State", "-j", sub.job_id).split()
               for key, sub in (("toy/usr2", usr2), ("toy/requeue", requeue))}
    return states, history


def test_usr2_preemption_requeues_and_resumes_without_losing_or_repeating_work(jobs, interrupted):
    states, history = interrupted
    assert history["toy/usr2"][0] == "REQUEUED" and len(history["toy/usr2"]) == 2, history  # requeued once, by SLURM
    assert states["toy/usr2"].state == "done" and states["toy/usr2"].attempt == 1
    lines = metrics(jobs["exps"]["preempt"] / "toy/usr2")
    trained = [l["iteration"] for l in lines if "attempt" in l]
    assert sorted(trained) == list(range(8))                 # every iteration exactly once
    assert {l["attempt"] for l in lines if "attempt" in l} == {0, 1}
    assert [l for l in lines if "final_loss" in l] == [lines[-1]] and lines[-1]["iteration"] == 8


def test_scontrol_requeue_replays_the_original_pickle_and_resumes_from_disk(jobs, interrupted):
    states, history = interrupted
    assert history["toy/requeue"][0] == "REQUEUED" and len(history["toy/requeue"]) == 2, history
    assert states["toy/requeue"].state == "done" and states["toy/requeue"].attempt == 1
    lines = metrics(jobs["exps"]["preempt"] / "toy/requeue")
    trained = [l["iteration"] for l in lines if "attempt" in l]
    assert set(trained) == set(range(12))                    # nothing lost
    assert 1 in {l["attempt"] for l in lines if "attempt" in l}
    resumed = json.loads((jobs["exps"]["preempt"] / "toy/requeue/launch_result.json").read_text())["result"]
    assert resumed["resumed_from"] >= 2                      # from the checkpoint, not from scratch
    assert [l for l in lines if "final_loss" in l] == [lines[-1]]


def test_pretraining_goes_through_the_same_launcher(jobs):
    pretrain_run = jobs["pretrain"]
    states = wait_for(pretrain_run, lambda s: all(r.state in ("done", "failed") for r in s.values()))
    [st] = states.values()
    assert st.state == "done", st
    assert st.job_id.isdigit()                               # a real SLURM job id
    result = json.loads((pretrain_run / "launch_result.json").read_text())
    assert result["world_size"] == 2 and result["result"]["world_size"] == 2


def test_array_of_two_seeds_finishes_and_status_says_done(jobs, capsys):
    exp = jobs["exps"]["array"]
    ids = [r.job_id for r in jobs["array"]]
    assert len({i.split("_")[0] for i in ids}) == 1 and [i.split("_")[1] for i in ids] == ["0", "1", "2"]
    states = wait_for(exp, lambda s: s["toy/seed0"].state == "done" and s["toy/seed1"].state == "done")
    for seed in (0, 1):
        assert metrics(exp / f"toy/seed{seed}")[-1]["iteration"] == 3
    assert cli(["status", str(exp), "--json"]) == 1      # toy/bad of this array failed: 1
    shown = {r["key"]: r for r in json.loads(capsys.readouterr().out)[str(exp)]}
    assert shown["toy/seed0"]["state"] == shown["toy/seed1"]["state"] == "done"
    assert shown["toy/seed1"]["job_id"] == states["toy/seed1"].job_id == ids[1]


def test_failed_job_is_reported_with_its_cause_and_spares_the_array(jobs, capsys):
    exp = jobs["exps"]["array"]
    states = wait_for(exp, lambda s: all(r.state in ("done", "failed") for r in s.values()))
    bad = states["toy/bad"]
    assert bad.state == "failed" and bad.scheduler_state == "FAILED"
    assert "FileNotFoundError: weights file /nonexistent/w.pkl not found" in bad.cause
    assert any("FileNotFoundError" in l for l in bad.log_tail)
    assert states["toy/seed0"].state == states["toy/seed1"].state == "done"
    cli(["status", str(exp)])
    out = capsys.readouterr().out
    assert "2 done, 1 failed" in out and "| " in out

    # re-submitting the experiment skips the finished runs and submits only the failed one again
    same = [toy(exp / "toy/seed0", max_iter=3), toy(exp / "toy/seed1", max_iter=3),
            toy(exp / "toy/bad", fail="weights file /nonexistent/w.pkl not found")]
    with pytest.raises(UserError) as e:                     # ... but not with other settings in its directory
        submit_tasks([*same[:2], toy(exp / "toy/bad", fail="still missing")], exp, OPTS, cluster="slurm")
    assert "run toy/bad was submitted before with other settings: fail:" in e.value.cause
    again = submit_tasks(same, exp, OPTS, cluster="slurm")
    assert [r.action for r in again] == ["skipped-done", "skipped-done", "submitted"]
    assert again[2].job_id != bad.job_id
    wait_for(exp, lambda s: s["toy/bad"].state == "failed" and s["toy/bad"].job_id == again[2].job_id)


def test_two_task_job_runs_ddp_over_gloo(jobs):
    exp = jobs["exps"]["ddp"]
    wait_for(exp, lambda s: s["toy/seed0"].state in ("done", "failed"))
    result = json.loads((exp / "toy/seed0/launch_result.json").read_text())
    assert result["world_size"] == 2
    assert result["result"]["world_size"] == 2 and result["result"]["rank_param_max_diff"] == 0.0
    assert result["result"]["d2_local_size"] == 2            # Detectron2's local process group exists


def test_a_job_killed_with_sigkill_is_failed_although_its_state_file_says_running(jobs, slurm_cluster):
    exp = jobs["exps"]["killed"]
    [job] = jobs["killed"]
    out = exp / "toy/kill9"
    wait_for(exp, lambda s: (out / "metrics.json").exists() and s["toy/kill9"].state == "running")
    slurm_cluster.run("scancel", "--signal=KILL", job.job_id)
    states = wait_for(exp, lambda s: s["toy/kill9"].state != "running", timeout=60)
    assert json.loads((out / "launch_state.json").read_text())["state"] == "running"   # nobody wrote the end
    assert states["toy/kill9"].state == "failed" and states["toy/kill9"].scheduler_state in ("FAILED", "CANCELLED")


def _fake_record(exp, job_id, state):
    from infomin_det.launch import Registry
    from infomin_det.launch.registry import RunRecord

    out = exp / "r"
    out.mkdir(parents=True)
    (out / "launch_state.json").write_text(json.dumps({"state": state, "attempt": 1}))
    reg = Registry(exp)
    reg.runs["r"] = RunRecord("r", str(out), TOY, {}, submitit_folder=str(exp / "launch/submitit/%j"),
                              jobs=[{"job_id": job_id, "cluster": "slurm", "submitted": "t"}])
    reg.save()


def test_a_job_the_scheduler_does_not_know_is_failed_whatever_its_state_file_says(slurm_cluster, tmp_path):
    _fake_record(tmp_path, "987654", "requeued")           # purged long ago; it had been preempted once
    [st] = experiment_status(tmp_path)
    assert st.state == "failed" and "no record of job 987654" in st.cause and "requeued" in st.cause


def test_a_job_that_completed_without_a_result_is_failed(slurm_cluster, tmp_path):
    job_id = slurm_cluster.run("sbatch", "--parsable", f"--output={tmp_path}/job.out", "--wrap", "true").strip().split(";")[0]
    end = time.time() + 60
    while "COMPLETED" not in slurm_cluster.run("sacct", "-X", "-n", "-P", "-o", "State", "-j", job_id):
        assert time.time() < end, "the job never completed"
        time.sleep(0.5)
    _fake_record(tmp_path, job_id, "running")
    [st] = experiment_status(tmp_path)
    assert st.state == "failed" and st.cause == "job completed without writing a result"


@pytest.fixture(scope="module")
def ds(tiny_coco):
    (tj, ti), (vj, vi) = tiny_coco["train"], tiny_coco["val"]
    return f"coco-json:{tj}:{ti}:{vj}:{vi}"


def test_setup_lines_job_name_and_extra_sbatch_options_reach_the_job(slurm_cluster, tmp_path):
    exp, marker = tmp_path / "e", tmp_path / "setup ran"
    opts = ExecutorOptions(timeout_min=5, signal_delay_s=30, job_name="t3a-check", setup=(f"touch '{marker}'",),
                           slurm_extra=("mail-type=NONE",))
    [sub] = submit_tasks([toy(exp / "toy/seed0", max_iter=2)], exp, opts, cluster="slurm")
    wait_for(exp, lambda st: st["toy/seed0"].state == "done")
    assert marker.exists()                                          # the setup line ran in the job
    script = next((exp / "launch/submitit").rglob(f"{sub.job_id}_submission.sh")).read_text()
    assert "#SBATCH --job-name=t3a-check" in script and "#SBATCH --mail-type=NONE" in script
    # an extra option is asked of the scheduler too (sbatch --test-only) before anything is queued
    with pytest.raises(UserError, match="SLURM refuses the job request"):
        submit_tasks([toy(tmp_path / "f/toy/seed0", max_iter=2)], tmp_path / "f",
                     ExecutorOptions(timeout_min=5, signal_delay_s=30, slurm_extra=("reservation=nope",)), cluster="slurm")
    assert not (tmp_path / "f").exists()


@pytest.mark.parametrize("flags, words", [
    (["--device", "cpu", "--partition", "no-such-partition"], "invalid partition"),
    (["--gpus-per-node", "1"], "gres"),
    (["--device", "cpu", "--timeout-min", "1"], "signal_delay_s"),
    ([], "--gpus-per-node 0"),                                 # a GPU run without GPUs: refused, not CPU
    (["--device", "cpu", "--seeds", *map(str, range(1002))], "MaxArraySize"),   # the cluster's array limit
])
def test_bad_executor_options_are_refused_before_submission(slurm_cluster, tmp_path, capsys, ds, flags, words):
    rc = cli(["submit", "--experiment", "e", "--root", str(tmp_path), "--protocol", "coco/R50-FPN-1x",
              "--weights", "random", "--dataset", ds, "--cluster", "slurm", *flags])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and "  fix: " in err and words.lower() in err.lower(), err
    assert not (tmp_path / "e").exists()
    # slurmctld keeps every job it accepted in memory for MinJobAge (>= 300 s): none may point into tmp_path
    queued = slurm_cluster.run("scontrol", "show", "jobs", "--oneliner")
    assert str(tmp_path) not in queued


def test_submit_slurm_tool_defaults_to_slurm_and_refuses_before_queueing(slurm_cluster, tmp_path):
    import sys
    from pathlib import Path

    tool = Path(__file__).parents[1] / "tools" / "submit_slurm.py"
    proc = subprocess.run([sys.executable, str(tool), "--experiment", "e", "--root", str(tmp_path),
                           "--protocol", "coco/R50-FPN-1x", "--weights", "random", "--qos", "bad qos"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.startswith("error: executor option qos='bad qos'")
    assert not (tmp_path / "e").exists()
