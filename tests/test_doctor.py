"""``infomin-det doctor``: real runs of ``python -m infomin_det doctor`` in subprocesses, on this machine
and against prepared surroundings: dataset trees under $DETECTRON2_DATASETS, fake ``sinfo`` / ``sbatch``
on PATH (answering, failing, hanging), fake torch / torchvision / detectron2 packages on PYTHONPATH
(too old, mismatched, broken builds). Groups that need no torch run with ``--only`` so that each test
takes a fraction of a second; the full run is tested too. The GPU path (no GPU here) is driven
in-process with torch.cuda's answers replaced.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ROW = re.compile(r"^(ok|warn|missing) +(\S+) +(.*)$")


class Report:
    def __init__(self, rc: int, out: str, err: str, seconds: float):
        self.rc, self.out, self.err, self.seconds = rc, out, err, seconds
        self.rows: dict[str, dict] = {}
        self.order: list[str] = []
        self.result = ""
        last = None
        for line in out.splitlines():
            m = ROW.match(line)
            if m:
                last = m[2]
                self.rows[last] = {"status": m[1], "value": m[3], "fix": ""}
                self.order.append(last)
            elif line.strip().startswith("fix: ") and last:
                self.rows[last]["fix"] = line.strip()[5:]
            elif line.startswith("result "):
                self.result = line
        assert "Traceback" not in out + err, out + err

    def __getitem__(self, name: str) -> dict:
        return self.rows[name]


def doctor(*args: str, env: dict | None = None, cwd: Path | None = None, timeout: float = 120) -> Report:
    full = {k: v for k, v in os.environ.items() if k not in ("DETECTRON2_DATASETS", "PYTHONPATH")}
    full["PYTHONPATH"] = str(ROOT)
    for k, v in (env or {}).items():
        if v is None:
            full.pop(k, None)
        else:
            full[k] = v
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "infomin_det", "doctor", *args], capture_output=True, text=True,
                       env=full, cwd=cwd or ROOT, timeout=timeout)
    return Report(r.returncode, r.stdout, r.stderr, time.monotonic() - t0)


def coco(root: Path) -> Path:
    """Detectron2's COCO 2017 layout with empty files (one image each)."""
    (root / "coco" / "annotations").mkdir(parents=True)
    for split in ("train2017", "val2017"):
        (root / "coco" / "annotations" / f"instances_{split}.json").write_text("")
        (root / "coco" / split).mkdir()
        (root / "coco" / split / "000000000001.jpg").write_bytes(b"")
    return root


def voc(root: Path) -> Path:
    for year, splits in (("VOC2007", ("trainval", "test")), ("VOC2012", ("trainval",))):
        for sub in ("Annotations", "ImageSets/Main", "JPEGImages"):
            (root / year / sub).mkdir(parents=True)
        for s in splits:
            (root / year / "ImageSets" / "Main" / f"{s}.txt").write_text("000001\n")
        (root / year / "JPEGImages" / "000001.jpg").write_bytes(b"")
    return root


DATASET_ROWS = ["coco_2017_train", "coco_2017_val", "voc_2007_trainval", "voc_2007_test", "voc_2012_trainval"]
ALL_ROWS = ["python", "torch", "torchvision", "cuda", "nccl", "gloo", "detectron2", "detectron2-ops",
            "pycocotools", "submitit", "datasets", *DATASET_ROWS, "slurm"]


# ---------------------------------------------------------------------------------------------
# the whole run on this machine (no GPU)

@pytest.fixture(scope="module")
def no_gpu():
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the no-GPU expectations do not apply")


@pytest.fixture(scope="module")
def full(no_gpu, tmp_path_factory):
    """The whole run, human and --json, with a fake COCO under $DETECTRON2_DATASETS."""
    env = {"DETECTRON2_DATASETS": str(coco(tmp_path_factory.mktemp("datasets")))}
    return doctor(env=env), doctor("--json", env=env)


def test_full_run_without_a_gpu_reports_cuda_missing_with_a_fix_and_exits_0(full):
    r = full[0]
    assert r.rc == 0, r.out + r.err
    assert r.order == ALL_ROWS, r.out
    for name in ("python", "torch", "torchvision", "gloo", "detectron2", "pycocotools", "submitit",
                 "datasets", "coco_2017_train", "coco_2017_val"):
        assert r[name]["status"] == "ok", (name, r.out)
    assert r["cuda"]["status"] == "missing" and "no GPU is visible" in r["cuda"]["value"]
    assert "GPU node" in r["cuda"]["fix"]
    assert r["voc_2007_test"]["status"] == "missing" and r["voc_2007_test"]["fix"]
    import detectron2
    import torch
    assert r["torch"]["value"] == f"{torch.__version__} at {Path(torch.__file__).parent} (>= 2.6: weights-only loading)"
    assert r["detectron2"]["value"].startswith(f"{detectron2.__version__} at {Path(detectron2.__file__).parent}")
    assert r["detectron2-ops"]["status"] in ("ok", "warn")
    if r["detectron2-ops"]["status"] == "warn":
        assert "COCOeval" in r["detectron2-ops"]["value"] and r["detectron2-ops"]["fix"]
    assert r.result.startswith("result  ok: nothing required is missing") and "cuda" in r.result
    assert r.seconds < 60, r.seconds


def test_full_json_matches_the_human_output(full):
    human, js = full
    data = json.loads(js.out)                     # stdout is exactly one JSON object
    assert js.rc == human.rc == 0 and data["ok"] is True
    assert [(c["name"], c["status"], c["value"]) for c in data["checks"]] == \
        [(n, human[n]["status"], human[n]["value"]) for n in human.order]
    assert all(c["fix"] for c in data["checks"] if c["status"] == "missing")


def test_require_gpu_makes_the_missing_gpu_an_error_and_json_says_the_same(no_gpu):
    human = doctor("--require-gpu", "--only", "python", "torch", "cuda", "distributed", "slurm")
    assert human.rc == 1, human.out + human.err
    assert "result  missing what is required: cuda (exit 1)" in human.result
    js = doctor("--require-gpu", "--json", "--only", "python", "torch", "cuda", "distributed", "slurm")
    assert js.rc == 1
    data = json.loads(js.out)
    assert data["ok"] is False
    assert [(c["name"], c["status"]) for c in data["checks"]] == [(n, human[n]["status"]) for n in human.order]
    by = {c["name"]: c for c in data["checks"]}
    assert by["cuda"]["required"] is True and by["cuda"]["fix"] == human["cuda"]["fix"]
    assert by["slurm"]["required"] is False and by["torch"]["required"] is True
    assert set(by["cuda"]) == {"name", "status", "value", "fix", "required"}


def test_cuda_visible_devices_empty_is_named(no_gpu):
    r = doctor("--only", "cuda", env={"CUDA_VISIBLE_DEVICES": ""})
    assert r["cuda"]["status"] == "missing" and "CUDA_VISIBLE_DEVICES=''" in r["cuda"]["value"], r.out


# ---------------------------------------------------------------------------------------------
# datasets under $DETECTRON2_DATASETS

def test_a_fake_coco_layout_is_found_and_voc_reported_missing(tmp_path):
    r = doctor("--only", "datasets", env={"DETECTRON2_DATASETS": str(coco(tmp_path))})
    assert r.rc == 0 and r.order == ["datasets", *DATASET_ROWS], r.out
    assert r["datasets"]["status"] == "ok" and str(tmp_path) in r["datasets"]["value"]
    assert r["coco_2017_train"] == {"status": "ok", "value": "found (coco/train2017/: 1 files)", "fix": ""}
    assert r["coco_2017_val"]["status"] == "ok"
    for name in ("voc_2007_trainval", "voc_2007_test", "voc_2012_trainval"):
        assert r[name]["status"] == "missing" and "VOC20" in r[name]["value"] and r[name]["fix"], r.out


def test_a_path_with_spaces_holding_coco_and_voc_is_found_in_full(tmp_path):
    root = voc(coco(tmp_path / "my data sets"))
    r = doctor("--only", "datasets", env={"DETECTRON2_DATASETS": str(root)})
    assert [r[n]["status"] for n in ["datasets", *DATASET_ROWS]] == ["ok"] * 6, r.out
    assert "my data sets" in r["datasets"]["value"]
    assert "result  ok: nothing required is missing" == r.result


def test_an_empty_dataset_dir_reports_each_set_missing_with_a_fix(tmp_path):
    r = doctor("--only", "datasets", env={"DETECTRON2_DATASETS": str(tmp_path)})
    assert r.rc == 0                               # datasets are never required
    assert r["datasets"]["status"] == "ok"
    for name in DATASET_ROWS:
        assert r[name]["status"] == "missing" and str(tmp_path) in r[name]["fix"], r.out
    assert "no coco/annotations/instances_train2017.json, coco/train2017/" in r["coco_2017_train"]["value"]
    assert "VOC2007/ImageSets/Main/test.txt" in r["voc_2007_test"]["value"]


@pytest.mark.parametrize("kind, said", [("file", "is not a folder"), ("absent", "does not exist")])
def test_a_file_or_a_nonexistent_path_is_reported_not_crashed_on(tmp_path, kind, said):
    target = tmp_path / "not here"
    if kind == "file":
        target.write_text("x")
    r = doctor("--only", "datasets", env={"DETECTRON2_DATASETS": str(target)})
    assert r.rc == 0
    assert r["datasets"]["status"] == "missing" and said in r["datasets"]["value"], r.out
    assert "DETECTRON2_DATASETS" in r["datasets"]["fix"]
    assert all(r[n]["status"] == "missing" for n in DATASET_ROWS)


def test_unset_means_datasets_in_the_working_directory(tmp_path):
    coco(tmp_path / "datasets")
    r = doctor("--only", "datasets", env={"DETECTRON2_DATASETS": None, "PYTHONPATH": str(ROOT)}, cwd=tmp_path)
    assert "DETECTRON2_DATASETS unset: ./datasets" in r["datasets"]["value"], r.out
    assert r["coco_2017_train"]["status"] == "ok"


def test_an_empty_image_folder_warns_and_a_large_one_is_counted_only_up_to_the_cap(tmp_path):
    root = coco(tmp_path)
    (root / "coco" / "val2017" / "000000000001.jpg").unlink()
    for i in range(1005):
        (root / "coco" / "train2017" / f"{i:012d}.jpg").write_bytes(b"")
    r = doctor("--only", "datasets", env={"DETECTRON2_DATASETS": str(root)})
    assert r["coco_2017_val"]["status"] == "warn" and "holds no files" in r["coco_2017_val"]["value"], r.out
    assert r["coco_2017_train"]["value"] == "found (coco/train2017/: 1000+ files)"


# ---------------------------------------------------------------------------------------------
# SLURM: sbatch / sinfo on PATH

def fake_bin(folder: Path, **scripts: str) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    for name, body in scripts.items():
        p = folder / name
        p.write_text("#!/bin/sh\n" + body + "\n")
        p.chmod(0o755)
    return str(folder)


def test_no_sbatch_on_path_is_missing_with_a_fix_and_not_required_by_default(tmp_path):
    env = {"PATH": fake_bin(tmp_path / "bin")}
    r = doctor("--only", "slurm", env=env)
    assert r.rc == 0 and r["slurm"]["status"] == "missing", r.out
    assert r["slurm"]["value"] == "no sbatch / sinfo on PATH" and "--cluster local" in r["slurm"]["fix"]
    assert doctor("--only", "slurm", "--require-slurm", env=env).rc == 1


def test_a_hanging_sinfo_is_reported_unreachable_within_the_timeout_and_killed(tmp_path):
    pids = tmp_path / "pids"
    path = fake_bin(tmp_path / "bin", sbatch="exit 0",
                    sinfo=f"echo $$ >> '{pids}'; sleep 60 & echo $! >> '{pids}'; wait")
    r = doctor("--only", "slurm", "--timeout", "1", env={"PATH": f"{path}{os.pathsep}/usr/bin{os.pathsep}/bin"})
    assert r.seconds < 10, r.seconds
    assert r["slurm"]["status"] == "missing" and "did not answer within 1 s" in r["slurm"]["value"], r.out
    assert "scontrol ping" in r["slurm"]["fix"]
    for pid in map(int, pids.read_text().split()):        # the script and its child are gone, not orphaned
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            pytest.fail(f"process {pid} of the hung sinfo is still running")


def test_a_failing_sinfo_reports_its_error(tmp_path):
    path = fake_bin(tmp_path / "bin", sbatch="exit 0",
                    sinfo="echo 'sinfo: error: slurm_load_partitions: Unable to contact slurm controller' >&2; exit 1")
    r = doctor("--only", "slurm", env={"PATH": path})
    assert r.rc == 0 and r["slurm"]["status"] == "missing", r.out
    assert "exited 1: sinfo: error: slurm_load_partitions: Unable to contact slurm controller" in r["slurm"]["value"]
    assert doctor("--only", "slurm", "--require-slurm", env={"PATH": path}).rc == 1


def test_an_answering_sinfo_lists_the_partitions_once_each(tmp_path):
    path = fake_bin(tmp_path / "bin", sbatch="exit 0", sinfo="printf 'gpu*\\ncpu\\ngpu*\\n'")
    r = doctor("--only", "slurm", "--require-slurm", env={"PATH": path, "SLURM_JOB_ID": "4242"})
    assert r.rc == 0 and r["slurm"]["status"] == "ok", r.out
    assert r["slurm"]["value"] == f"sbatch at {path}/sbatch; partitions: gpu*, cpu; inside job 4242"


def test_sbatch_without_sinfo_warns(tmp_path):
    r = doctor("--only", "slurm", env={"PATH": fake_bin(tmp_path / "bin", sbatch="exit 0")})
    assert r["slurm"]["status"] == "warn" and "no sinfo on PATH" in r["slurm"]["value"], r.out


@pytest.mark.slurm
def test_the_loopback_slurm_cluster_answers_with_its_partitions(slurm_cluster):
    r = doctor("--only", "slurm", "--require-slurm", env={"SLURM_CONF": str(slurm_cluster.conf)})
    assert r.rc == 0 and r["slurm"]["status"] == "ok", r.out
    parts = slurm_cluster.run("sinfo", "-h", "-o", "%P").split()
    assert parts and all(p in r["slurm"]["value"] for p in parts)


# ---------------------------------------------------------------------------------------------
# torch / torchvision / detectron2 that are too old, mismatched or broken (fake packages first on PYTHONPATH)

def fake_packages(folder: Path, **modules: str) -> str:
    """``{"torch": "__version__ = ..."}`` -> packages ``folder/torch/__init__.py``; dotted names nest."""
    for dotted, body in modules.items():
        p = folder.joinpath(*dotted.split("."))
        p.mkdir(parents=True, exist_ok=True)
        (p / "__init__.py").write_text(body)
    return f"{folder}{os.pathsep}{ROOT}"


def test_a_torch_older_than_2_6_is_missing_with_a_fix_and_exits_1(tmp_path):
    pp = fake_packages(tmp_path, torch="__version__ = '2.5.1+cu121'\n", torchvision="__version__ = '0.20.1'\n")
    r = doctor("--only", "torch", env={"PYTHONPATH": pp})
    assert r.rc == 1, r.out + r.err
    assert r["torch"]["status"] == "missing" and "2.5.1+cu121" in r["torch"]["value"], r.out
    assert "older than 2.6" in r["torch"]["value"] and "weights_only" in r["torch"]["value"]
    assert "make clean setup PYTHON=python3" in r["torch"]["fix"]
    assert r["torchvision"]["status"] == "missing" and "replace it together with torch" in r["torchvision"]["value"]
    assert r.result == "result  missing what is required: torch, torchvision (exit 1)"


def test_a_torchvision_of_another_torch_is_missing_with_the_one_to_install(tmp_path):
    pp = fake_packages(tmp_path, torch="__version__ = '2.6.0a0+git1234'\n", torchvision="__version__ = '0.20.1'\n")
    r = doctor("--only", "torchvision", env={"PYTHONPATH": pp})
    assert r.rc == 1 and r["torch"]["status"] == "ok", r.out      # a source build of 2.6 counts as 2.6
    assert r["torchvision"]["status"] == "missing"
    assert "0.20.1 is not the torchvision of torch 2.6.0a0+git1234 (that is 0.21.x)" in r["torchvision"]["value"]
    assert "torchvision==0.21.*" in r["torchvision"]["fix"]


def test_a_broken_detectron2_build_is_reported_not_raised(tmp_path):
    pp = fake_packages(tmp_path, torch="__version__ = '2.14.1'\n",
                       detectron2="raise RuntimeError('undefined symbol: _ZN2at4_ops5zeros4callE\\nmore')\n")
    r = doctor("--only", "detectron2", env={"PYTHONPATH": pp})
    assert r.rc == 1, r.out + r.err
    assert r["detectron2"] == {"status": "missing", "fix": r["detectron2"]["fix"],
                               "value": "not importable: RuntimeError: undefined symbol: _ZN2at4_ops5zeros4callE"}
    assert "build Detectron2 from source" in r["detectron2"]["fix"]


def test_a_detectron2_whose_dependencies_break_points_at_pip_check(tmp_path):
    """As on a base Python with antlr4 4.13 where omegaconf needs 4.9: detectron2 imports, its engine not."""
    pp = fake_packages(tmp_path, torch="__version__ = '2.14.1'\n", detectron2="__version__ = '0.7.2'\n",
                       **{"detectron2.engine": "raise Exception('Could not deserialize ATN with version 3 (expected 4).')\n"})
    r = doctor("--only", "detectron2", env={"PYTHONPATH": pp})
    assert r.rc == 1 and r["detectron2"]["status"] == "missing", r.out
    assert r["detectron2"]["value"].endswith("but detectron2.engine does not load: "
                                             "Exception: Could not deserialize ATN with version 3 (expected 4).")
    assert "pip check" in r["detectron2"]["fix"] and "requirements.lock" in r["detectron2"]["fix"]


def test_compiled_ops_that_do_not_load_are_a_warning_naming_the_error(tmp_path):
    pp = fake_packages(tmp_path, torch="__version__ = '2.14.1'\n", detectron2="__version__ = '0.6'\n",
                       **{"detectron2.engine": "", "detectron2._C": "raise ImportError('undefined symbol: _ZN3c10')\n"})
    r = doctor("--only", "detectron2", env={"PYTHONPATH": pp})
    assert r.rc == 0, r.out + r.err                # without its ops Detectron2 still runs
    assert r["detectron2"]["status"] == "ok" and r["detectron2"]["value"].startswith(f"0.6 at {tmp_path}")
    ops = r["detectron2-ops"]
    assert ops["status"] == "warn" and "does not load (ImportError: undefined symbol: _ZN3c10" in ops["value"], r.out
    assert "rebuild Detectron2 against this torch" in ops["fix"]


def test_no_torch_at_all(tmp_path):
    pp = fake_packages(tmp_path, torch="raise ModuleNotFoundError(\"No module named 'torch'\")\n")
    r = doctor("--only", "torch", "cuda", "distributed", "detectron2", env={"PYTHONPATH": pp})
    assert r.rc == 1
    assert r["torch"]["status"] == "missing" and "make setup PYTHON=$(which python)" in r["torch"]["fix"], r.out
    assert all(r[n]["status"] == "missing" and r[n]["value"] == "needs torch"
               for n in ("torchvision", "cuda", "nccl", "gloo", "detectron2"))


# ---------------------------------------------------------------------------------------------
# bad input, speed of the import, the GPU path in-process

@pytest.mark.parametrize("args, said", [(("--only", "bogus"), "--only bogus: no such group of checks"),
                                        (("--timeout", "0"), "--timeout 0 must be > 0")])
def test_bad_input_is_a_user_error(args, said):
    r = doctor(*args)
    assert r.rc == 2 and f"error: {said}" in r.err and "  fix: " in r.err, r.err


def test_the_gpu_path_with_two_gpus(monkeypatch, capsys):
    import torch

    from infomin_det import doctor as d

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: "NVIDIA H200")
    monkeypatch.setattr(torch.cuda.nccl, "version", lambda: (2, 21, 5))
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    monkeypatch.setattr(torch.distributed, "is_nccl_available", lambda: True)
    args = argparse.Namespace(json=False, require_gpu=True, require_slurm=False, only=["cuda", "distributed"],
                              timeout=5.0)
    assert d.main(args) == 0
    out = capsys.readouterr().out
    assert "ok      cuda  torch built with CUDA 12.4; 2 GPU(s): NVIDIA H200 x2" in out, out
    assert "ok      nccl  NCCL 2.21.5 (multi-GPU runs use it)" in out, out
    monkeypatch.setattr(torch.distributed, "is_nccl_available", lambda: False)
    assert d.main(args) == 1                       # --require-gpu: a torch without NCCL is an error
    assert "missing nccl" in capsys.readouterr().out
