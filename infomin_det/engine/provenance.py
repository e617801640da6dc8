"""What a run's numbers can be traced to, for ``run.json``: the dataset, the weights' sha256, the code
and library versions, the world size and a hash of the full merged config.

``dataset["paper"]`` is true only when the run trains and tests on the protocol's own builtin sets
(COCO 2017 / VOC 07+12 -> VOC 07 test, as the leaf config names them): the report compares with the
paper's numbers only then.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path
from typing import Any

import infomin_det
from infomin_det.filehash import sha256_file


def git_commit() -> str:
    """``<commit>`` (``+dirty`` if the checkout has changes) of the infomin-det source, or ""."""
    src = Path(infomin_det.__file__).resolve().parent.parent
    if not (src / ".git").exists():
        return ""
    try:
        head = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(src), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    return head + ("+dirty" if dirty and head else "")


def versions() -> dict[str, str]:
    import torch

    try:
        import detectron2
        d2 = detectron2.__version__
    except ImportError:
        d2 = ""
    return {"infomin_det": infomin_det.__version__, "git_commit": git_commit(), "torch": torch.__version__,
            "cuda": str(torch.version.cuda or ""), "detectron2": d2}


def dataset_record(cfg: Any, leaf_cfg: Any, coco_json: str) -> dict[str, Any]:
    """``run.json["dataset"]`` of a run whose merged config is ``cfg`` (``leaf_cfg``: the protocol leaf
    before any override; ``coco_json``: the ``--dataset`` spec or "")."""
    train, test = list(cfg.DATASETS.TRAIN), list(cfg.DATASETS.TEST)
    files: dict[str, dict[str, str]] = {}
    if coco_json:
        _, tj, ti, vj, vi = coco_json.split(":")      # dataset_check refused any other form
        for role, path in (("train_json", tj), ("train_images", ti), ("val_json", vj), ("val_images", vi)):
            files[role] = {"path": str(Path(path).resolve())}
            if role.endswith("json"):
                files[role]["sha256"] = sha256_file(path)
        ident = f"coco-json:{Path(vj).name}@{files['val_json']['sha256'][:8]}"
        paper = False
        from infomin_det.engine.dataset_check import check_dataset

        summary = check_dataset(coco_json, need_masks=bool(cfg.MODEL.MASK_ON)).to_dict()   # cached: checked already
        counts = {split: {k: summary[split][k] for k in ("images", "annotations", "crowd", "categories", "mask_format")}
                  for split in ("train", "val")}
        return {"id": ident, "paper": paper, "train": train, "test": test, "files": files,
                "classes": list(summary["classes"]), "counts": counts}
    else:
        ident = "+".join(test)
        paper = train == list(leaf_cfg.DATASETS.TRAIN) and test == list(leaf_cfg.DATASETS.TEST)
    return {"id": ident, "paper": paper, "train": train, "test": test, "files": files}


def config_sha256(cfg_dump: str) -> str:
    return hashlib.sha256(cfg_dump.encode()).hexdigest()
