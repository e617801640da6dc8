"""The rules every ``infomin-det`` command keeps (docs/cli.md): pipes, exit codes, versions, missing
packages, tables that are never cut when piped, numbers without float noise."""

import csv
import io
import json
import subprocess
import sys

import pytest

from infomin_det import __version__
from infomin_det.report.synthetic import write_run

CLI = [sys.executable, "-m", "infomin_det"]


def run(*args, stdin=None, env=None):
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=120, env=env)


@pytest.mark.parametrize("args", [["--help"], ["protocols"], ["protocols", "--json"], ["report", "--paper", "T3"],
                                  ["report", "--paper", "T3", "--format", "json"], ["report", "--paper", "T1"],
                                  ["reproduce", "--help"]])
def test_a_closed_pipe_ends_the_command_quietly(args):
    """``infomin-det ... | head -1``: no BrokenPipeError traceback, exit 0 (the reader has what it wanted)."""
    p = subprocess.run(f"{' '.join(CLI)} {' '.join(args)} | head -c 1 >/dev/null; echo \"rc=${{PIPESTATUS[0]}}\"",
                       shell=True, executable="/bin/bash", capture_output=True, text=True, timeout=120)
    assert p.stdout.strip() == "rc=0" and "Traceback" not in p.stderr and "BrokenPipe" not in p.stderr, p.stderr


def test_exit_codes_and_version():
    bare = run()
    assert bare.returncode == 2 and "usage: infomin-det <command>" in bare.stderr and bare.stdout == ""
    assert run("--help").returncode == 0
    for flag in ("--version", "-V"):
        v = run(flag)
        assert v.returncode == 0 and v.stdout == f"infomin-det {__version__}\n"
    unknown = run("frobnicate")
    assert unknown.returncode == 2 and "unknown command 'frobnicate'" in unknown.stderr
    assert run("report", "--no-such-flag").returncode == 2       # argparse's own usage errors: 2 too


def test_version_has_one_source():
    import tomllib
    from pathlib import Path

    meta = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    assert "version" not in meta["project"] and "version" in meta["project"]["dynamic"]
    assert meta["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "infomin_det.__version__"}


def test_a_missing_detectron2_is_said_with_what_to_install(tmp_path):
    code = ("import sys; sys.modules['detectron2'] = None\n"      # import detectron2 -> ModuleNotFoundError
            "from infomin_det.cli import main; sys.exit(main(sys.argv[1:]))")
    p = subprocess.run([sys.executable, "-c", code, "train", "--protocol", "coco/R50-FPN-1x", "--weights", "none"],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "error: infomin-det train needs detectron2" in p.stderr and "fix: install Detectron2" in p.stderr


def test_piped_tables_keep_every_identifier_whole():
    p = subprocess.run(f"{' '.join(CLI)} protocols | cat", shell=True, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0
    assert "coco/Cascade-R101-FPN-6x" in p.stdout and "Cascade Mask R-CNN FPN" in p.stdout and "…" not in p.stdout
    t = subprocess.run(f"{' '.join(CLI)} report --paper T9 | cat", shell=True, capture_output=True, text=True,
                       timeout=120).stdout
    assert "coco/Cascade-R101-FPN-1x" in t and "…" not in t


def test_csv_and_json_numbers_carry_no_float_noise(tmp_path):
    # 45.6 - 38.7 is 6.900000000000006 in binary floating point
    p = "coco/R50-FPN-1x"
    write_run(tmp_path / "e" / p / "a/seed0", p, "a", 0, {"bbox/AP": 38.7}, max_iter=40)
    write_run(tmp_path / "e" / p / "b/seed0", p, "b", 0, {"bbox/AP": 45.6}, max_iter=40)
    out = run("report", tmp_path / "e", "--baseline", "a", "--format", "csv").stdout
    rows = {(r["label"], r["metric"]): r for r in csv.DictReader(io.StringIO(out))}
    assert rows[("b", "bbox/AP")]["gap"] == "6.9" and rows[("b", "bbox/AP")]["mean"] == "45.6"
    doc = json.loads(run("report", tmp_path / "e", "--baseline", "a", "--format", "json").stdout)
    row = next(r for r in doc["tables"][0]["rows"] if r["label"] == "b")
    assert row["gaps"]["bbox/AP"] == 6.9 and row["source"] == "runs"


def test_any_row_of_a_paper_table_can_be_the_baseline():
    md = run("report", "--paper", "T3a", "--baseline", "paper:random", "--format", "markdown")
    assert md.returncode == 0, md.stderr
    assert "-- gaps to random init" in md.stdout
    assert "| random init | paper T3a | - | 32.8 |" in md.stdout
    assert "| InfoMin Aug. | paper T3a | - | **40.6 (↑7.8)** |" in md.stdout      # 40.6 - 32.8
    assert "-- gaps to supervised" in run("report", "--paper", "T3a", "--format", "markdown").stdout
    bad = run("report", "--paper", "T3a", "--baseline", "simclr")
    assert bad.returncode == 2 and "no row 'simclr'" in bad.stderr and "random, supervised" in bad.stderr
    assert run("report", "--paper", "T1", "--baseline", "x").returncode == 2


def test_bash_completion_offers_commands_options_protocols_and_tables(tmp_path):
    script = run("completion", "bash")
    assert script.returncode == 0 and "complete -o filenames -F _infomin_det infomin-det" in script.stdout
    (tmp_path / "c.sh").write_text(script.stdout)
    probe = r'''source "$1"; shift
    t() { COMP_WORDS=("$@"); COMP_CWORD=$((${#COMP_WORDS[@]}-1)); COMPREPLY=(); _infomin_det; echo "${COMPREPLY[*]}"; }
    t infomin-det re; t infomin-det train --protocol coco/Cascade-R101-FPN-; t infomin-det reproduce T9
    t infomin-det report --format l; t infomin-det submit --dry; t infomin-det report --paper T11; t infomin-det doc'''
    p = subprocess.run(["bash", "-c", probe, "probe", str(tmp_path / "c.sh")], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == [
        "reproduce report", "coco/Cascade-R101-FPN-1x coco/Cascade-R101-FPN-2x coco/Cascade-R101-FPN-6x",
        "T9 T9a T9b T9c", "latex", "--dry-run", "T11 T11a", "doctor"]
    zsh = run("completion", "zsh")
    assert zsh.stdout.startswith("autoload -U +X bashcompinit && bashcompinit\n")
    assert run("completion", "fish").returncode == 2
