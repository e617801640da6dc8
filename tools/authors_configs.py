#!/usr/bin/env python
"""Rebuild ``transfer_configs/authors.json`` -- the authors' Detectron2 configs, merged -- from snapshots.

    git clone --bare https://github.com/HobbitLong/PyContrast pycontrast.git
    git clone --bare https://github.com/facebookresearch/moco moco.git
    python tools/authors_configs.py --pycontrast pycontrast.git --moco moco.git [--compare]

Reads the authors' yaml files at the pinned commits (``git show``; nothing of theirs is copied into
this project but the merged values), merges each published leaf over the installed Detectron2's
defaults and writes, atomically: ``sources`` (repo, commit, folder), ``defaults`` (every key of
``get_cfg()``, once) and per leaf ``values`` (the keys that differ from the defaults) and ``files``
(the leaf's ``_BASE_`` chain, leaf first). ``--compare`` also prints how MoCo's COCO R50-C4 configs
differ from PyContrast's, and how MoCo's later VOC configs differ from the pinned ones.
Needs the network only to clone; CI never runs it (the test reads the checked-in table).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from infomin_det.atomic import write_text_atomic
from infomin_det.errors import UserError
from infomin_det.protocols.authors import AUTHORS_JSON, flatten

# PyContrast HEAD (configs unchanged since 2020-06-14, d46ae80); MoCo's initial commit (2020-03-22),
# the VOC / COCO C4 configs as they stood when InfoMin ran (SyncBN; MoCo switched to naiveSyncBN in
# d00ef73, 2020-11-04, and deleted the folder in 8976944).
SOURCES = {
    "pycontrast": {"repo": "HobbitLong/PyContrast", "commit": "84f94eabec4f031194c543579476ae52ea647b90",
                   "dir": "pycontrast/detection/configs"},
    "moco": {"repo": "facebookresearch/moco", "commit": "90e244a23d135e8facca41f8aa47541cc30c61b2",
             "dir": "detection/configs"},
}
MOCO_LATEST = "34020351524e9869f76cbb81fadcdb77caa32f7b"  # last MoCo commit that still has the configs

# our protocol -> (source, the authors' file stem); family -> the authors' file suffix
STEMS = {
    **{f"coco/R50-FPN-{s}": ("pycontrast", f"R_50_FPN_{s}") for s in ("1x", "2x", "6x")},
    **{f"coco/R101-FPN-{s}": ("pycontrast", f"R_101_FPN_{s}") for s in ("1x", "2x", "6x")},
    **{f"coco/Cascade-R101-FPN-{s}": ("pycontrast", f"R_101_CasFPN_{s}") for s in ("1x", "2x", "6x")},
    **{f"coco/R50-C4-{s}": ("pycontrast", f"R_50_C4_{s}") for s in ("1x", "2x")},
    **{f"coco/R101-C4-{s}": ("pycontrast", f"R_101_C4_{s}") for s in ("1x", "2x")},
    **{f"coco/X101-FPN-{s}": ("pycontrast", f"X_101_FPN_{s}") for s in ("1x", "2x")},
    "coco/X152-FPN-1x": ("pycontrast", "X_152_FPN_1x"),
    "voc/R50-C4-24k": ("moco", "pascal_voc_R_50_C4_24k"),
}
SUFFIX = {"pycontrast": {"supervised": "", "ssl": "_infomin", "random": "_rand"},
          "moco": {"supervised": "", "ssl": "_moco"}}


def _git(git_dir: Path, *args: str) -> str:
    r = subprocess.run(["git", "--git-dir", str(git_dir), *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise UserError(f"git {' '.join(args)} in {git_dir} failed: {r.stderr.strip()}",
                        "pass a bare clone (or .git folder) that holds the pinned commit")
    return r.stdout


def extract(git_dir: Path, commit: str, folder: str, dest: Path) -> Path:
    """The yaml files of ``folder`` at ``commit`` written under ``dest``; returns that folder."""
    out = dest / commit[:7]
    out.mkdir(parents=True)
    names = _git(git_dir, "ls-tree", "--name-only", commit, f"{folder}/").split()
    for name in names:
        if name.endswith(".yaml"):
            (out / Path(name).name).write_text(_git(git_dir, "show", f"{commit}:{name}"))
    if not any(out.iterdir()):
        raise UserError(f"{git_dir} has no yaml under {folder} at {commit}", "check the snapshot")
    return out


def chain(path: Path) -> list[str]:
    files = []
    while True:
        files.append(path.name)
        base = (yaml.safe_load(path.read_text()) or {}).get("_BASE_")
        if not base:
            return files
        path = path.parent / base


def merged(path: Path) -> dict:
    from detectron2.config import get_cfg

    cfg = get_cfg()
    cfg.merge_from_file(str(path))
    return flatten(cfg)


def diff(a: dict, b: dict) -> dict:
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def build(dirs: dict[str, Path]) -> dict:
    import detectron2
    from detectron2.config import get_cfg

    defaults = flatten(get_cfg())
    leaves = {}
    for pid, (src, stem) in STEMS.items():
        for family, suffix in SUFFIX[src].items():
            path = dirs[src] / f"{stem}{suffix}.yaml"
            if not path.is_file():
                continue
            values = merged(path)
            leaves[f"{pid}.{family}"] = {"source": src, "files": chain(path),
                                         "values": {k: v for k, v in values.items() if defaults.get(k) != v}}
    return {
        "about": "The authors' Detectron2 configs merged over the defaults of detectron2 "
                 f"{detectron2.__version__}: a leaf's value of a key is leaves[leaf].values[key] if "
                 "present, else defaults[key]. Written by tools/authors_configs.py; see docs/protocols.md.",
        "detectron2": detectron2.__version__,
        "sources": SOURCES,
        "defaults": defaults,
        "leaves": leaves,
    }


def dump(table: dict) -> str:
    """JSON with one line per config key (values compact), so a diff of the table reads key by key."""
    def obj(d: dict, indent: str, depth: int) -> str:
        inner = indent + " "
        items = [f"{inner}{json.dumps(k)}: " + (obj(v, inner, depth - 1) if depth and isinstance(v, dict)
                                                 else json.dumps(v)) for k, v in sorted(d.items())]
        return "{\n" + ",\n".join(items) + f"\n{indent}}}"

    return obj(table, "", 4) + "\n"


def compare(moco: Path, dirs: dict[str, Path], tmp: Path) -> None:
    for fam, (m, p) in {"supervised": ("", ""), "ssl": ("_moco", "_infomin")}.items():
        d = diff(merged(dirs["moco"] / f"coco_R_50_C4_2x{m}.yaml"), merged(dirs["pycontrast"] / f"R_50_C4_2x{p}.yaml"))
        print(f"coco/R50-C4-2x.{fam}: MoCo@{SOURCES['moco']['commit'][:7]} vs PyContrast: {d or 'identical'}")
    later = extract(moco, MOCO_LATEST, SOURCES["moco"]["dir"], tmp)
    for fam, m in {"supervised": "", "ssl": "_moco"}.items():
        name = f"pascal_voc_R_50_C4_24k{m}.yaml"
        d = diff(merged(later / name), merged(dirs["moco"] / name))
        print(f"voc/R50-C4-24k.{fam}: MoCo@{MOCO_LATEST[:7]} vs @{SOURCES['moco']['commit'][:7]}: {d or 'identical'}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="authors_configs.py", description=__doc__.splitlines()[0])
    ap.add_argument("--pycontrast", type=Path, required=True, help="bare git dir of HobbitLong/PyContrast")
    ap.add_argument("--moco", type=Path, required=True, help="bare git dir of facebookresearch/moco")
    ap.add_argument("--out", type=Path, default=AUTHORS_JSON)
    ap.add_argument("--compare", action="store_true", help="print the MoCo-vs-PyContrast differences")
    args = ap.parse_args(argv)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            dirs = {name: extract(getattr(args, name), s["commit"], s["dir"], Path(tmp) / name)
                    for name, s in SOURCES.items()}
            table = build(dirs)
            if args.compare:
                compare(args.moco, dirs, Path(tmp) / "later")
        write_text_atomic(args.out, dump(table))
    except UserError as e:
        print(f"error: {e.cause}", file=sys.stderr)
        if e.fix:
            print(f"  fix: {e.fix}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: {len(table['leaves'])} leaves, {len(table['defaults'])} keys each")
    return 0


if __name__ == "__main__":
    sys.exit(main())
