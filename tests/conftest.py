"""Shared fixtures: a tiny generated COCO-format set (train and val splits), one thread per test."""

import pytest
import torch

from infomin_det.data.tiny_coco import write_tiny_coco
from slurm_cluster import slurm_cluster  # noqa: F401  (session fixture: the loopback SLURM cluster)

torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    """Tests marked ``detectron2`` skip, saying so, where Detectron2 is not installed. With
    ``pytest -n N --dist loadgroup`` (``make test``) every test of the loopback SLURM cluster runs in
    one worker: one cluster per session, as without workers."""
    import importlib.util

    if config.pluginmanager.hasplugin("xdist"):
        for item in items:
            if "slurm" in item.keywords or "slurm_cluster" in getattr(item, "fixturenames", ()):
                item.add_marker(pytest.mark.xdist_group("slurm"))
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
