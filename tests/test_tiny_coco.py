import json

from pycocotools.coco import COCO

from infomin_det.data.tiny_coco import write_tiny_coco


def test_tiny_coco_is_valid_coco_and_deterministic(tmp_path):
    j1, d1 = write_tiny_coco(tmp_path / "a", 3, 64, seed=5)
    j2, _ = write_tiny_coco(tmp_path / "b", 3, 64, seed=5)
    assert json.loads(j1.read_text()) == json.loads(j2.read_text())
    coco = COCO(str(j1))
    assert len(coco.getImgIds()) == 3 and len(coco.getAnnIds()) >= 3
    for ann in coco.loadAnns(coco.getAnnIds()):
        m = coco.annToMask(ann)
        assert m.sum() == ann["area"] > 0
        x, y, w, h = ann["bbox"]
        ys, xs = m.nonzero()
        assert (xs.min(), ys.min()) == (x, y) and (xs.max() + 1, ys.max() + 1) == (x + w, y + h)
    assert sorted(p.name for p in d1.iterdir()) == ["000000.jpg", "000001.jpg", "000002.jpg"]
