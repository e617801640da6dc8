"""Shared fixtures: a tiny generated COCO-format set (train and val splits), one thread per test."""

import pytest
import torch

from infomin_det.data.tiny_coco import write_tiny_coco
from slurm_cluster import slurm_cluster  # noqa: F401  (session fixture: the loopback SLURM cluster)

torch.set_num_threads(1)


@pytest.hookimpl(tryfirst=True)   # before ``-m`` selects: ``make test`` runs ``-m "not slurm"``, then ``-m slurm``
def pytest_collection_modifyitems(config, items):
    """Every test of the loopback SLURM cluster is marked ``slurm`` (also where it only uses the
    fixture). Tests marked ``detectron2`` skip, saying so, where Detectron2 is not installed."""
    import importlib.util

    for item in items:
        if "slurm_cluster" in getattr(item, "fixturenames", ()) and "slurm" not in item.keywords:
            item.add_marker(pytest.mark.slurm)
    if importlib.util.find_spec("detectron2") is not None:
        return
    skip = pytest.mark.skip(reason="detectron2 is not installed (tests of the training path)")
    for item in items:
        if "detectron2" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_coco(tmp_path_factory):
    """{"train": (json, image_dir), "val": (json, image_dir)} -- 8 + 4 images of 128 px."""
    root = tmp_path_factory.mktemp("tiny_coco")
    return {"train": write_tiny_coco(root, 8, 128, seed=0, name="train"),
            "val": write_tiny_coco(root, 4, 128, seed=1, name="val")}
