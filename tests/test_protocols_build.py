"""Every protocol leaf and named variant builds its real Detectron2 model on CPU (full-width backbone,
reduced images).

Building, not training: proves each config is complete and consistent (heads registered, norms
resolvable, FPN / C4 / cascade wiring, class counts), and that the built model runs one forward pass
in eval mode. The ExtraNorm C4 head must be present in the built C4 models; the backbone norm is the
configured one (SyncBN as the authors; FrozenBN in the X-152 ``frozenbn`` variant).
"""

import pytest
import torch

from infomin_det.protocols import FAMILIES, config_path, get_protocol, list_protocols, variants

pytestmark = pytest.mark.detectron2  # builds Detectron2 configs / models

LEAVES = [(p.id, f, v) for p in list_protocols() for f in FAMILIES for v in ("", *variants(p.id, f))]


@pytest.mark.parametrize("pid,family,variant", LEAVES)
def test_leaf_builds_and_runs(pid, family, variant):
    from detectron2.config import get_cfg
    from detectron2.layers import FrozenBatchNorm2d
    from detectron2.modeling import build_model

    import infomin_det.engine.heads  # noqa: F401  registers Res5ROIHeadsExtraNorm

    cfg = get_cfg()
    cfg.merge_from_file(str(config_path(pid, family, variant)))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "INPUT.MIN_SIZE_TEST", 64, "INPUT.MAX_SIZE_TEST", 64,
                         "MODEL.RPN.POST_NMS_TOPK_TEST", 16, "MODEL.RPN.PRE_NMS_TOPK_TEST", 32])
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    proto = get_protocol(pid)
    names = {n for n, _ in model.named_modules()}
    stem_norm = type(model.backbone.bottom_up.stem.conv1.norm if hasattr(model.backbone, "bottom_up")
                     else model.backbone.stem.conv1.norm)
    assert stem_norm is (FrozenBatchNorm2d if variant == "frozenbn" else torch.nn.SyncBatchNorm)
    if proto.meta_arch in ("mask_c4", "faster_c4"):
        assert "roi_heads.res5.norm" in names
    else:
        assert any(n.startswith("backbone.fpn_lateral") for n in names)
    with torch.no_grad():
        out = model([{"image": torch.rand(3, 64, 64) * 255, "height": 64, "width": 64}])
    assert len(out) == 1 and "instances" in out[0]
    n_classes = 20 if proto.dataset == "voc" else 80
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == n_classes
