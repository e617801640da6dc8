"""train_worker on real Detectron2, one tiny run per meta-architecture, read back by the report.

Mask FPN, Mask C4 (with the registered Res5ROIHeadsExtraNorm), Cascade (R-101 protocol shrunk to
DEPTH 50 for speed) and Faster C4 (the VOC protocol, run here on the tiny COCO-json set: COCO
evaluator, no masks): 2 iterations, random init, 96-128 px, then pycocotools evaluation.
"""

import json

import pytest
import torch

from infomin_det.engine.spec import TrainSpec
from infomin_det.engine.tiny import tiny

pytestmark = pytest.mark.detectron2
trainer = pytest.importorskip("infomin_det.engine.trainer")

TINY = tiny("MODEL.RESNETS.DEPTH", "50", "SOLVER.MAX_ITER", "2", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0")


def coco_json(tiny_coco):
    (tj, ti), (vj, vi) = tiny_coco["train"], tiny_coco["val"]
    return f"coco-json:{tj}:{ti}:{vj}:{vi}"


def metrics_lines(out):
    return [json.loads(l) for l in (out / "metrics.json").read_text().replace("NaN", "null").splitlines()]


CASES = [  # protocol, ROI heads class, masks
    ("coco/R50-FPN-1x", "StandardROIHeads", True),
    ("coco/R50-C4-1x", "Res5ROIHeadsExtraNorm", True),
    ("coco/Cascade-R101-FPN-1x", "CascadeROIHeads", True),
    ("voc/R50-C4-24k", "Res5ROIHeadsExtraNorm", False),
]


@pytest.mark.parametrize("protocol,heads,masks", CASES, ids=[c[0] for c in CASES])
def test_each_meta_architecture_trains_and_evaluates(tmp_path, tiny_coco, protocol, heads, masks):
    from infomin_det.progress import read_progress
    from infomin_det.report.runs import load_run

    out = tmp_path / "run"
    spec = TrainSpec(protocol=protocol, weights="", output_dir=str(out), weights_name="random",
                     seed=3, experiment="t", opts=tuple(TINY), dataset=coco_json(tiny_coco))
    results = trainer.train_worker(spec)
    cfg_text = (out / "config.yaml").read_text()
    assert f"NAME: {heads}" in cfg_text and "DEVICE: cpu" in cfg_text
    assert (out / "last_checkpoint").read_text() == "model_final.pth"
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    state = torch.load(out / "model_final.pth", map_location="cpu", weights_only=False)["model"]
    if "C4" in protocol:  # the extra norm after res5 is really in the model
        assert "roi_heads.res5.norm.weight" in state and "roi_heads.res5.norm.running_var" in state
    assert any(k.startswith("roi_heads.mask_head") for k in state) == masks
    # pycocotools evaluation with detections (score threshold 0): real numbers, not NaN
    assert set(results) == ({"bbox", "segm"} if masks else {"bbox"})
    assert 0.0 <= results["bbox"]["AP"] <= 100.0
    final = metrics_lines(out)[-1]
    assert final["iteration"] == 2 and "total_loss" not in final
    shown = read_progress(out)                               # what `status` showed while it ran
    assert (shown.step, shown.total) == (2, 2)
    run = load_run(out)
    assert run.status == "done", run.reason
    assert (run.protocol, run.weights, run.seed, run.family) == (protocol, "random", 3, "random")
    assert run.metrics[""]["bbox/AP"] == pytest.approx(results["bbox"]["AP"])
    assert ("segm/AP" in run.metrics[""]) == masks
