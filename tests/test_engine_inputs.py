"""``train`` refuses a broken ``--dataset coco-json:...`` set and bad ``KEY VALUE`` overrides up front.

Every refusal names the bad record (file, index/id, field, value) or key; through the CLI it is exit 2
with ``error:`` / ``fix:`` and no traceback, and no run directory is left. Real files (the session's
tiny generated COCO set, copied and broken one field at a time), real Detectron2 configs; no model
is built.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import numpy as np
import pytest

from infomin_det.engine.dataset_check import check_dataset, parse_spec, rle_totals
from infomin_det.errors import UserError

pytestmark = pytest.mark.detectron2  # builds Detectron2 configs / models

PROTOCOL = "coco/R50-FPN-1x"  # Mask R-CNN: masks required


def _load(path) -> dict:
    return json.loads(Path(path).read_text())


@pytest.fixture
def make(tiny_coco, tmp_path):
    """make(train=fn, val=fn, train_images=dir) -> a coco-json spec whose split(s) are the tiny set after
    ``fn(data)`` (``fn`` edits in place; a str it returns is written verbatim instead), each in a new file."""
    made = []

    def build(train=None, val=None, train_images=None) -> str:
        parts = []
        for split, fn in (("train", train), ("val", val)):
            js, imgs = tiny_coco[split]
            if fn is not None:
                data = _load(js)
                out = fn(data)
                made.append(js)
                js = tmp_path / f"{split}{len(made)}.json"
                js.write_text(out if isinstance(out, str) else json.dumps(data))
            parts += [str(js), str(train_images if split == "train" and train_images else imgs)]
        return "coco-json:" + ":".join(parts)
    return build


def at(section, i, **kv):
    return lambda d: d[section][i].update(kv)


def drop(section, i, key):
    return lambda d: d[section][i].pop(key) and None


def polygon(i, poly):
    return at("annotations", i, segmentation=poly)


def everywhere(**kv):
    def edit(d):
        for a in d["annotations"]:
            a.update(kv)
    return edit


def rename_images(*indices):
    def edit(d):
        for i in indices:
            d["images"][i]["file_name"] = f"gone{i}.jpg"
    return edit


def drop_all(key):
    def edit(d):
        for a in d["annotations"]:
            a.pop(key)
    return edit


def truncate_rle(d):
    seg = d["annotations"][2]["segmentation"]
    seg["counts"] = seg["counts"][: len(seg["counts"]) // 2]


# (id, split, edit, pattern the cause must match) -- each one hostile input
RECORD_CASES = [
    ("not-json", "train", lambda d: '{"images": [', r"train annotation file .*train\d\.json is unreadable"),
    ("binary", "train", lambda d: "\x00\xff\x13garbage", r"train\d\.json is unreadable"),
    ("top-list", "train", lambda d: json.dumps([d]), r"train\d\.json: the top level is a JSON list"),
    ("no-annotations-key", "train", lambda d: d.pop("annotations") and None, r"train\d\.json: no 'annotations' list"),
    ("images-dict", "train", lambda d: d.update(images={}), r"train\d\.json: 'images' is a JSON dict, not a list"),
    ("no-images", "train", lambda d: d.update(images=[]), r"train\d\.json: 'images' is empty"),
    ("no-train-annotations", "train", lambda d: d.update(annotations=[]), r"train\d\.json: 'annotations' is empty"),
    ("no-val-annotations", "val", lambda d: d.update(annotations=[]), r"val\d\.json: 'annotations' is empty.*NaN"),
    ("no-categories", "train", lambda d: d.update(categories=[]), r"train\d\.json: 'categories' is empty"),
    ("cat-id-str", "train", at("categories", 1, id="2"), r"categories\[1\] \(id '2'\): id '2' is not an integer"),
    ("cat-id-dup", "train", at("categories", 1, id=1), r"categories\[1\] \(id 1\): id 1 is also used by category 'ellipse'"),
    ("cat-name-dup", "train", at("categories", 1, name="ellipse"), r"categories\[1\] \(id 2\): name 'ellipse' is also"),
    ("cat-name-empty", "train", at("categories", 0, name=" "), r"categories\[0\] \(id 1\): name ' ' is not"),
    ("img-not-dict", "train", lambda d: d["images"].__setitem__(3, "000003.jpg"), r"images\[3\]: is a str"),
    ("img-id-dup", "train", at("images", 4, id=1), r"images\[4\] \(id 1\): id 1 is also images\[0\]"),
    ("img-id-mixed", "train", at("images", 2, id="3"), r"images\[2\] \(id '3'\): id '3' is a str but earlier ids are int"),
    ("img-id-none", "train", at("images", 2, id=None), r"images\[2\] \(id None\): id None is not"),
    ("img-no-file", "train", drop("images", 5, "file_name"), r"images\[5\] \(id 6\): file_name None"),
    ("img-no-width", "train", drop("images", 1, "width"), r"images\[1\] \(id 2\): width None is not a positive integer"),
    ("img-zero-height", "train", at("images", 1, height=0), r"images\[1\] \(id 2\): height 0 is not"),
    ("img-neg-width", "train", at("images", 1, width=-128), r"images\[1\] \(id 2\): width -128 is not"),
    ("img-float-width", "train", at("images", 1, width=128.5), r"images\[1\] \(id 2\): width 128\.5 is not"),
    ("img-str-width", "train", at("images", 1, width="128"), r"images\[1\] \(id 2\): width '128' is not"),
    ("file-dotdot", "train", at("images", 2, file_name="../val/000002.jpg"),
     r"images\[2\] \(id 3\): file_name '\.\./val/000002\.jpg' is not a path inside the image directory"),
    ("file-absolute", "train", at("images", 2, file_name="/etc/passwd"), r"images\[2\] \(id 3\): file_name '/etc/passwd'"),
    ("file-dotdot-deep", "train", at("images", 2, file_name="a/../../x.jpg"), r"images\[2\] \(id 3\): file_name 'a/\.\./\.\./x"),
    ("file-nul", "train", at("images", 2, file_name="a\x00.jpg"), r"images\[2\] \(id 3\): file_name"),
    ("file-dup", "train", at("images", 6, file_name="000001.jpg"), r"images\[6\] \(id 7\): file_name '000001\.jpg' is also images\[1\]"),
    ("file-missing", "train", rename_images(2, 5),
     r"train\d\.json: 2 of 8 image files are missing under .*\(first: images\[2\] file_name 'gone2\.jpg'\)"),
    ("file-missing-subdir", "train", at("images", 7, file_name="sub/000007.jpg"),
     r"1 of 8 image files are missing .*images\[7\] file_name 'sub/000007\.jpg'"),
    ("ann-not-dict", "train", lambda d: d["annotations"].__setitem__(4, [1, 2]), r"annotations\[4\]: is a list"),
    ("ann-cat-unknown", "train", at("annotations", 3, category_id=7),
     r"train\d\.json: annotations\[3\] \(id 4\): category_id 7 is not the id of any category"),
    ("ann-id-dup", "train", at("annotations", 5, id=2), r"annotations\[5\] \(id 2\): id 2 is also annotations\[1\]"),
    ("ann-id-missing", "train", drop("annotations", 5, "id"), r"annotations\[5\]: id None is not"),
    ("ann-img-unknown", "train", at("annotations", 6, image_id=99), r"annotations\[6\] \(id 7\): image_id 99 is not the id"),
    ("ann-img-str", "train", at("annotations", 6, image_id="1"), r"annotations\[6\] \(id 7\): image_id '1' is not the id"),
    ("bbox-neg-w", "train", at("annotations", 0, bbox=[9.0, 44.0, -5.0, 56.0]),
     r"annotations\[0\] \(id 1\): bbox \[9\.0, 44\.0, -5\.0, 56\.0\] has zero or negative width"),
    ("bbox-zero", "train", at("annotations", 0, bbox=[9.0, 44.0, 0.0, 0.0]), r"annotations\[0\] \(id 1\): bbox .* has zero"),
    ("bbox-nan", "train", at("annotations", 1, bbox=[9.0, math.nan, 5.0, 5.0]), r"annotations\[1\] \(id 2\): bbox \[9\.0, nan.*not finite"),
    ("bbox-inf", "train", at("annotations", 1, bbox=[9.0, 1.0, math.inf, 5.0]), r"annotations\[1\] \(id 2\): bbox .*inf.*not finite"),
    ("bbox-str", "train", at("annotations", 1, bbox=[9.0, "1", 5.0, 5.0]), r"annotations\[1\] \(id 2\): bbox \[9\.0, '1'.* is not 4 numbers"),
    ("bbox-bool", "train", at("annotations", 1, bbox=[True, 1, 5, 5]), r"annotations\[1\] \(id 2\): bbox \[True.* is not 4 numbers"),
    ("bbox-3", "train", at("annotations", 1, bbox=[9.0, 1.0, 5.0]), r"annotations\[1\] \(id 2\): bbox \[9\.0, 1\.0, 5\.0\] is not 4"),
    ("bbox-missing", "train", drop("annotations", 1, "bbox"), r"annotations\[1\] \(id 2\): bbox None is not 4"),
    ("bbox-outside", "train", at("annotations", 2, bbox=[100.0, 10.0, 40.0, 10.0]),
     r"annotations\[2\] \(id 3\): bbox \[100\.0, 10\.0, 40\.0, 10\.0\] lies outside its image \(128 x 128 px"),
    ("bbox-negative-x", "train", at("annotations", 2, bbox=[-10.0, 10.0, 40.0, 10.0]), r"annotations\[2\] \(id 3\): .* lies outside"),
    ("bbox-normalised", "train", everywhere(bbox=[0.1, 0.1, 0.5, 0.5]),
     r"train\d\.json: every box lies within \[0, 1\.5\].*normalised"),
    ("iscrowd-2", "train", at("annotations", 8, iscrowd=2), r"annotations\[8\] \(id 9\): iscrowd is 2, not 0 or 1"),
    ("iscrowd-bool", "train", at("annotations", 8, iscrowd=True), r"annotations\[8\] \(id 9\): iscrowd is True"),
    ("iscrowd-missing-val", "val", drop("annotations", 3, "iscrowd"), r"val\d\.json: annotations\[3\] \(id 4\): iscrowd is missing"),
    ("all-crowd", "train", everywhere(iscrowd=1), r"train\d\.json: all 12 annotations are crowd regions"),
    ("area-missing-val", "val", drop("annotations", 2, "area"), r"val\d\.json: annotations\[2\] \(id 3\): has no area"),
    ("area-negative", "train", at("annotations", 2, area=-1.0), r"annotations\[2\] \(id 3\): area -1\.0 is not"),
    ("area-nan", "val", at("annotations", 2, area=math.nan), r"val\d\.json: annotations\[2\] \(id 3\): area nan is not"),
    ("ignore-1", "train", at("annotations", 2, ignore=1), r"annotations\[2\] \(id 3\): ignore is 1"),
    ("poly-short", "train", polygon(3, [[10, 10, 20, 20]]), r"annotations\[3\] \(id 4\): segmentation\[0\] has 4 coordinates"),
    ("poly-odd", "train", polygon(3, [[10, 10, 20, 20, 30, 30, 40]]), r"annotations\[3\] \(id 4\): segmentation\[0\] has 7 coordinates"),
    ("poly-second-bad", "train", polygon(3, [[10, 10, 20, 20, 30, 10], []]), r"annotations\[3\] \(id 4\): segmentation\[1\] has 0"),
    ("poly-str", "train", polygon(3, [[10, 10, 20, "x", 30, 10]]), r"annotations\[3\] \(id 4\): segmentation\[0\] has the coordinate 'x'"),
    ("poly-nan", "train", polygon(3, [[10, 10, 20, math.nan, 30, 10]]), r"segmentation\[0\] has the coordinate nan"),
    ("poly-none", "train", polygon(3, [[10, 10, 20, None, 30, 10]]), r"segmentation\[0\] has the coordinate None"),
    ("poly-flat", "train", polygon(3, [10, 10, 20, 20, 30, 10]), r"annotations\[3\] \(id 4\): segmentation\[0\] is 10, not a polygon"),
    ("seg-str", "train", polygon(3, "polygon"), r"annotations\[3\] \(id 4\): segmentation 'polygon' is neither"),
    ("rle-size", "train", lambda d: d["annotations"][1]["segmentation"].update(size=[64, 64]),
     r"annotations\[1\] \(id 2\): RLE size \[64, 64\] is not the image's \[height, width\], \[128, 128\]"),
    ("rle-size-missing", "train", lambda d: d["annotations"][1]["segmentation"].pop("size") and None, r"annotations\[1\] \(id 2\): RLE size None"),
    ("rle-truncated", "train", truncate_rle, r"annotations\[2\] \(id 3\): RLE counts .* decodes to \d+ pixels, not height x width = 16384"),
    ("rle-garbage", "train", lambda d: d["annotations"][2]["segmentation"].update(counts="\x01\x02 ~~"),
     r"annotations\[2\] \(id 3\): RLE counts .* is not a valid compressed RLE string"),
    ("rle-empty", "train", lambda d: d["annotations"][2]["segmentation"].update(counts=""), r"annotations\[2\] \(id 3\): RLE counts '' is not"),
    ("rle-list-sum", "train", lambda d: d["annotations"][2]["segmentation"].update(counts=[100, 50]),
     r"annotations\[2\] \(id 3\): RLE counts sum to 150, not height x width = 16384"),
    ("rle-list-neg", "train", lambda d: d["annotations"][2]["segmentation"].update(counts=[16385, -1]), r"RLE counts are not non-negative"),
    ("rle-counts-none", "train", lambda d: d["annotations"][2]["segmentation"].update(counts=None), r"RLE counts None are neither"),
    ("masks-missing", "train", drop("annotations", 4, "segmentation"),
     r"annotations\[4\] \(id 5\): has no segmentation, but the protocol trains and evaluates masks"),
    ("masks-empty-val", "val", at("annotations", 1, segmentation=[]), r"val\d\.json: annotations\[1\] \(id 2\): has no segmentation"),
    ("deep-nesting", "train", lambda d: "[" * 200_000 + "]" * 200_000, r"train\d\.json nests JSON deeper"),
    ("img-huge-width", "train", at("images", 1, width=10**40), r"images\[1\] \(id 2\): width 1000000000000"),
    ("bbox-huge-int", "train", at("annotations", 1, bbox=[0, 0, 10**400, 5]),
     r"annotations\[1\] \(id 2\): holds a number too large"),
    ("area-huge-int", "val", at("annotations", 1, area=10**400), r"annotations\[1\] \(id 2\): holds a number too large"),
    ("poly-huge-int", "train", polygon(3, [[10, 10, 20, 10**400, 30, 10]]), r"annotations\[3\] \(id 4\): holds a number"),
    ("cats-differ-name", "val", at("categories", 1, name="square"),
     r"list different categories: category id 2 is 'box' in train but 'square' in val"),
    ("cats-differ-id", "val", lambda d: d["categories"].append({"id": 3, "name": "blob"}),
     r"list different categories: category id 3 \('blob'\) is only in val"),
]


@pytest.mark.parametrize("split,edit,pattern", [c[1:] for c in RECORD_CASES], ids=[c[0] for c in RECORD_CASES])
def test_each_bad_record_is_refused_by_name(make, split, edit, pattern):
    spec = make(**{split: edit})
    with pytest.raises(UserError) as e:
        check_dataset(spec, need_masks=True)
    assert re.search(pattern, e.value.cause), e.value.cause
    assert e.value.fix


SPEC_CASES = [  # (spec template; {t}/{ti}/{v}/{vi} are the tiny set's paths, pattern)
    ("coco-json:{t}:{ti}:{v}", r"has 3 ':'-separated paths after coco-json:, not 4"),
    ("coco-json:{t}:{ti}:{v}:{vi}:x", r"has 5 ':'-separated paths"),
    ("coco-json:{t}:{ti}::{vi}", r"the <val\.json> path is empty"),
    ("coco-json: :{ti}:{v}:{vi}", r"the <train\.json> path is empty"),
    ("coco-json:{t} :{ti}:{v}:{vi}", r"the <train\.json> path .* starts or ends with whitespace"),
    ("coco:{t}:{ti}:{v}:{vi}", r"is not understood"),
    ("COCO-JSON:{t}:{ti}:{v}:{vi}", r"is not understood"),
    ("coco-json:/nonexistent/train.json:{ti}:{v}:{vi}", r"train annotation file /nonexistent/train\.json does not exist"),
    ("coco-json:~/train.json:{ti}:{v}:{vi}", r"train annotation file ~/train\.json does not exist"),
    ("coco-json:{ti}:{ti}:{v}:{vi}", r"train annotation file .* is a directory"),
    ("coco-json:{t}:{ti}:{v}:/nonexistent/val", r"val image directory /nonexistent/val does not exist"),
    ("coco-json:{t}:{t}:{v}:{vi}", r"train image directory .*train\.json is a file"),
    ("coco-json:{t}:{ti}:{t}:{ti}", r"8 of the 8 val images are also train images"),
]


@pytest.mark.parametrize("template,pattern", SPEC_CASES, ids=[f"spec{i}" for i in range(len(SPEC_CASES))])
def test_bad_spec_or_paths_are_refused(tiny_coco, template, pattern):
    (t, ti), (v, vi) = tiny_coco["train"], tiny_coco["val"]
    with pytest.raises(UserError) as e:
        check_dataset(template.format(t=t, ti=ti, v=v, vi=vi))
    assert re.search(pattern, e.value.cause), e.value.cause
    if "~" in template:
        assert "'~' is not expanded" in e.value.fix


def test_colon_in_a_path_is_refused_with_the_symlink_fix():
    with pytest.raises(UserError) as e:
        parse_spec("coco-json:/data/run:1/train.json:/data/img:/data/val.json:/data/vimg")
    assert "5 ':'-separated paths" in e.value.cause and "ln -s" in e.value.fix


def test_the_tiny_set_passes_with_its_summary(tiny_coco, make):
    s = check_dataset(make())
    assert (s.train.images, s.train.annotations, s.val.images, s.val.annotations) == (8, 12, 4, 6)
    assert (s.train.has_masks, s.train.mask_format, s.classes) == (True, "rle", ("ellipse", "box"))
    assert s.to_dict()["val"]["categories"] == 2


def test_polygons_subdirectories_and_box_only_sets_pass(tiny_coco, tmp_path, make):
    import shutil

    root = tmp_path / "images"
    shutil.copytree(tiny_coco["train"][1], root / "part")  # file names with a subdirectory

    def polys(d):
        d["annotations"][0]["segmentation"] = [[10.0, 50.0, 60.0, 50.0, 60.0, 90.0], [20, 60, 30, 60, 30, 70]]
        for im in d["images"]:
            im["file_name"] = "part/./" + im["file_name"]
    s = check_dataset(make(train=polys, train_images=root), need_masks=True)
    assert (s.train.mask_format, s.train.has_masks, s.train.images) == ("polygon+rle", True, 8)
    with pytest.raises(UserError, match=r"8 of 8 image files are missing .*images\[0\] file_name 'part/000000\.jpg'"):
        check_dataset(make(train=polys))  # the same names under the plain root

    box_only = make(train=everywhere(segmentation=[]), val=drop_all("segmentation"))
    s = check_dataset(box_only, need_masks=False)
    assert (s.train.has_masks, s.train.mask_format, s.val.mask_format) == (False, "", "")
    with pytest.raises(UserError, match=r"annotations\[0\] \(id 1\): has no segmentation"):
        check_dataset(box_only, need_masks=True)
    assert check_dataset(make(train=truncate_rle), need_masks=False).train.mask_format == "rle"  # never decoded


def test_rle_totals_match_pycocotools_encodings():
    from pycocotools import mask as mask_util

    rng = np.random.default_rng(0)
    strings, sizes = [], []
    for k in range(200):
        h, w = (int(v) for v in rng.integers(1, 200, 2))
        m = [rng.random((h, w)) < rng.random(), np.ones((h, w), bool), np.zeros((h, w), bool)][k % 3]
        strings.append(mask_util.encode(np.asfortranarray(m.astype(np.uint8)))["counts"].decode("ascii"))
        sizes.append(h * w)
    big = np.zeros((3000, 4000), np.uint8)
    big[7:2990, 1:3999] = 1  # counts > 2**20: several characters per number, negative deltas
    strings.append(mask_util.encode(np.asfortranarray(big))["counts"].decode("ascii"))
    sizes.append(3000 * 4000)
    assert rle_totals(strings) == sizes
    s = strings[0]
    bad = [s[:-1], s[: len(s) // 2], "", "é", "\x7f", "o" * 9]
    totals = rle_totals(bad + strings)
    assert totals[len(bad):] == sizes and all(t != sizes[0] for t in totals[:len(bad)])


# ---------------------------------------------------------------------------------------------
# overrides

@pytest.fixture(scope="module")
def leaf():
    from infomin_det.engine.config import leaf_config

    return lambda: leaf_config(PROTOCOL, "random")


OVERRIDE_CASES = [  # (opts, pattern in cause, pattern in fix)
    (["SOLVER.MAX_ITERS", "10"], r"override SOLVER\.MAX_ITERS '10': no such config key \(did you mean SOLVER\.MAX_ITER", r"SOLVER\.MAX_ITER"),
    (["solver.max_iter", "10"], r"solver\.max_iter '10': no such config key \(did you mean SOLVER\.MAX_ITER", r"SOLVER\.MAX_ITER"),
    (["SOLVER.MAX_ITER.X", "1"], r"SOLVER\.MAX_ITER\.X '1': no such config key", r""),
    (["", "1"], r"override  '1': no such config key \(no similar key exists\)", r"Detectron2 config key"),
    (["NOT_A_KEY_AT_ALL", "1"], r"no such config key \(no similar key exists\)", r""),
    (["SOLVER", "1"], r"override SOLVER is a group of keys", r"SOLVER\."),
    (["SOLVER.MAX_ITER", "abc"], r"SOLVER\.MAX_ITER 'abc': expected an int \(the config has 90000\), got a string 'abc'", r"SOLVER\.MAX_ITER 90000"),
    (["SOLVER.MAX_ITER", "None"], r"SOLVER\.MAX_ITER 'None': expected an int .*got None", r""),
    (["SOLVER.MAX_ITER", "[1, 2]"], r"SOLVER\.MAX_ITER '\[1, 2\]': expected an int .*got a list of ints \[1, 2\]", r""),
    (["SOLVER.MAX_ITER", "1.5"], r"expected an int .*got a float 1\.5", r""),
    (["SOLVER.MAX_ITER", "10**9"], r"expected an int .*got a string '10\*\*9'", r""),
    (["SOLVER.MAX_ITER", ""], r"expected an int .*got a string ''", r""),
    (["SOLVER.BASE_LR", "1e-3x"], r"SOLVER\.BASE_LR '1e-3x': expected a float", r"SOLVER\.BASE_LR 0\.02"),
    (["SOLVER.BASE_LR", float("nan")], r"SOLVER\.BASE_LR nan: expected a float", r""),
    (["SOLVER.BASE_LR", "True"], r"expected a float .*got a bool", r""),
    (["MODEL.MASK_ON", "1"], r"MODEL\.MASK_ON '1': expected a bool", r"MODEL\.MASK_ON True or MODEL\.MASK_ON False"),
    (["MODEL.MASK_ON", "true"], r"MODEL\.MASK_ON 'true': expected a bool .*got a string 'true'", r"True or"),
    (["MODEL.RESNETS.NORM", "5"], r"MODEL\.RESNETS\.NORM '5': expected a string", r""),
    (["MODEL.RESNETS.NORM", "None"], r"MODEL\.RESNETS\.NORM 'None': expected a string .*got None", r""),
    (["SOLVER.STEPS", "('a',)"], r"SOLVER\.STEPS \"\('a',\)\": expected a tuple of ints .*got a tuple of strings", r"SOLVER\.STEPS \"\("),
    (["INPUT.MIN_SIZE_TRAIN", "96"], r"INPUT\.MIN_SIZE_TRAIN '96': expected a tuple of ints", r"\"\(640, 672"),
    (["MODEL.PIXEL_MEAN", "[1, 2, 'x']"], r"MODEL\.PIXEL_MEAN .*expected a list of floats", r""),
    (["MODEL.ANCHOR_GENERATOR.SIZES", "[[32], ['a']]"], r"expected a list of lists of ints", r""),
    (["MODEL.RESNETS.DEPTH", "{'a': 1}"], r"expected an int .*got a dict", r""),
    (["SOLVER.MAX_ITER"], r"must be KEY VALUE pairs, but 3 items were given: 'SOLVER\.MAX_ITER' has no value", r"value after every key"),
    (["SOLVER.MAX_ITER", "1", "SOLVER.BASE_LR"], r"5 items were given: 'SOLVER\.BASE_LR' has no value", r""),
    (["SOLVER.MAX_ITER", "1", "SOLVER.MAX_ITER", "2"], r"override SOLVER\.MAX_ITER is given twice", r"once"),
    (["OUTPUT_DIR", "/tmp/x"], r"override OUTPUT_DIR is set by the toolkit", r"--output-dir"),
    (["SEED", "3"], r"override SEED is set by the toolkit", r"--seed"),
    (["MODEL.DEVICE", "cpu"], r"override MODEL\.DEVICE is set by the toolkit", r"--device"),
    (["MODEL.WEIGHTS", "w.pkl"], r"override MODEL\.WEIGHTS is set by the toolkit", r"--weights"),
    (["SOLVER.MAX_ITER", "1", "--seed", "3"], r"option '--seed' comes after the KEY VALUE overrides", r"before the overrides"),
    (["--output-dir", "x"], r"option '--output-dir' comes after", r""),
    ([5, "1"], r"override key 5 is not a string", r""),
]


@pytest.mark.parametrize("opts,cause,fix", OVERRIDE_CASES, ids=[" ".join(map(str, c[0])) or "empty" for c in OVERRIDE_CASES])
def test_each_bad_override_is_refused_by_name(leaf, opts, cause, fix):
    from infomin_det.engine.overrides import apply_overrides

    cfg = leaf()
    before = cfg.dump()
    with pytest.raises(UserError) as e:
        apply_overrides(cfg, ["SOLVER.CHECKPOINT_PERIOD", "7", *opts])
    assert re.search(cause, e.value.cause), e.value.cause
    assert re.search(fix, e.value.fix), e.value.fix
    assert cfg.dump() == before  # nothing merged, not even the good first pair


@pytest.mark.parametrize("key", ["DATASETS.TRAIN", "DATASETS.TEST"])
def test_dataset_splits_are_refused_with_a_dataset_only(leaf, key):
    from infomin_det.engine.overrides import apply_overrides

    with pytest.raises(UserError, match=f"override {re.escape(key)} is set by the toolkit") as e:
        apply_overrides(leaf(), [key, "('coco_2017_val',)"], custom_dataset=True)
    assert "--dataset" in e.value.fix
    apply_overrides(leaf(), [key, "('coco_2017_val',)"])  # the protocol's standard sets: the user's call


def test_class_count_and_mask_format_overrides_must_agree_with_the_set(make):
    from infomin_det.engine.config import build_config

    with pytest.raises(UserError, match=r"override MODEL\.ROI_HEADS\.NUM_CLASSES 3 contradicts the 2 categories"):
        build_config(_spec(make(), ["MODEL.ROI_HEADS.NUM_CLASSES", "3"]))
    with pytest.raises(UserError, match=r"override INPUT\.MASK_FORMAT polygon cannot read the RLE masks"):
        build_config(_spec(make(), ["INPUT.MASK_FORMAT", "polygon"]))
    cfg, _, _ = build_config(_spec(make(), ["MODEL.ROI_HEADS.NUM_CLASSES", "2", "INPUT.MASK_FORMAT", "bitmask"]))
    assert (cfg.MODEL.ROI_HEADS.NUM_CLASSES, cfg.INPUT.MASK_FORMAT) == (2, "bitmask")  # as the demo passes them


def test_good_overrides_merge_with_yacs_types(leaf):
    from infomin_det.engine.overrides import apply_overrides

    cfg = leaf()
    apply_overrides(cfg, ["SOLVER.BASE_LR", "1", "INPUT.MIN_SIZE_TRAIN", "(96,)", "SOLVER.STEPS", "[10, 20]",
                          "MODEL.RESNETS.NORM", "FrozenBN", "MODEL.PIXEL_MEAN", "[1, 2, 3.5]", "MODEL.MASK_ON", "False",
                          "SOLVER.MAX_ITER", 5, "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS", "[[1, 2]]",
                          "SOLVER.WEIGHT_DECAY_BIAS", "0.0", "SOLVER.CLIP_GRADIENTS.NORM_TYPE", "1e999"])
    assert cfg.SOLVER.BASE_LR == 1.0 and type(cfg.SOLVER.BASE_LR) is float
    assert cfg.INPUT.MIN_SIZE_TRAIN == (96,) and cfg.SOLVER.STEPS == (10, 20)
    assert (cfg.MODEL.RESNETS.NORM, cfg.MODEL.PIXEL_MEAN, cfg.MODEL.MASK_ON, cfg.SOLVER.MAX_ITER) == ("FrozenBN", [1, 2, 3.5], False, 5)
    assert cfg.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS == [[1, 2]] and cfg.SOLVER.WEIGHT_DECAY_BIAS == 0.0
    assert cfg.SOLVER.CLIP_GRADIENTS.NORM_TYPE == math.inf
    apply_overrides(cfg, [])


# ---------------------------------------------------------------------------------------------
# wired into build_config and the CLI

def _spec(dataset, opts=(), protocol=PROTOCOL):
    from infomin_det.engine.spec import TrainSpec

    return TrainSpec(protocol, "none", "/nonexistent/out", dataset=dataset, opts=tuple(opts), device="cpu")


def test_build_config_registers_the_checked_set(make):
    from infomin_det.engine.config import build_config

    cfg, _, _ = build_config(_spec(make(), ["MODEL.RPN.BATCH_SIZE_PER_IMAGE", "32"]))
    assert (cfg.MODEL.ROI_HEADS.NUM_CLASSES, cfg.INPUT.MASK_FORMAT, cfg.MODEL.RPN.BATCH_SIZE_PER_IMAGE) == (2, "bitmask", 32)
    assert re.fullmatch(r"infomin_train_[0-9a-f]{12}", cfg.DATASETS.TRAIN[0])
    again, _, _ = build_config(_spec(make()))
    assert again.DATASETS == cfg.DATASETS  # names from the absolute paths, not Python's salted hash()


def test_box_only_set_needs_a_box_protocol_or_mask_on_false(make):
    from infomin_det.engine.config import build_config

    ds = make(train=lambda d: [a.pop("segmentation") for a in d["annotations"]])
    with pytest.raises(UserError, match=r"annotations\[0\] \(id 1\): has no segmentation"):
        build_config(_spec(ds))
    build_config(_spec(ds, ["MODEL.MASK_ON", "False"]))  # the override is applied before the check
    cfg, _, _ = build_config(_spec(ds, ["MODEL.RESNETS.DEPTH", "50"], protocol="voc/R50-C4-24k"))
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == 2


def test_standard_sets_missing_name_the_exact_path(monkeypatch, tmp_path):
    from detectron2.data import MetadataCatalog

    from infomin_det.engine.config import check_standard_datasets, leaf_config

    cfg = leaf_config(PROTOCOL, "random")
    js = MetadataCatalog.get("coco_2017_train").json_file
    if Path(js).exists():
        pytest.skip("COCO is installed here")
    with pytest.raises(UserError) as e:
        check_standard_datasets(cfg)
    assert f"dataset coco_2017_train: {os.path.abspath(js)} (file) does not exist" in e.value.cause
    assert "coco/annotations/instances_{train,val}2017.json" in e.value.fix
    cfg.DATASETS.TRAIN = ("coco_2017_trian",)
    with pytest.raises(UserError, match=r"'coco_2017_trian' is not a registered Detectron2 dataset \(did you mean coco_2017_train"):
        check_standard_datasets(cfg)
    voc = MetadataCatalog.get("voc_2007_trainval").dirname
    if Path(voc).is_absolute():
        pytest.skip("DETECTRON2_DATASETS was absolute at import")
    monkeypatch.chdir(tmp_path)  # VOC2007/ there but without ImageSets/Main/trainval.txt
    (tmp_path / voc / "Annotations").mkdir(parents=True)
    cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = ("voc_2007_trainval",), ()
    with pytest.raises(UserError) as e:
        check_standard_datasets(cfg)
    assert f"{Path.cwd() / voc / 'ImageSets' / 'Main' / 'trainval.txt'} (file) does not exist" in e.value.cause


CLI_CASES = [  # (extra argv, with the good dataset?, pattern in stderr)
    (["--dataset", "coco-json:/nonexistent/t.json:/x:/v.json:/y"], False, r"train annotation file /nonexistent/t\.json does not exist"),
    (["BAD_BBOX"], False, r"annotations\[0\] \(id 1\): bbox \[9\.0, 44\.0, -5\.0, 56\.0\]"),
    (["SOLVER.MAX_ITERS", "2"], True, r"did you mean SOLVER\.MAX_ITER"),
    (["SOLVER.MAX_ITER", "abc"], True, r"SOLVER\.MAX_ITER 'abc': expected an int"),
    (["MODEL.DEVICE", "cpu"], True, r"override MODEL\.DEVICE is set by the toolkit"),
    (["SOLVER.MAX_ITER", "2", "--seed", "3"], True, r"option '--seed' comes after"),
    (["SOLVER.MAX_ITER"], True, r"must be KEY VALUE pairs, but 1 item was given"),
    (["--", "OUTPUT_DIR", "x"], True, r"override OUTPUT_DIR is set by the toolkit"),
    (["SOLVER.AMP.ENABLED", "True"], True, r"SOLVER\.AMP\.ENABLED is true but the run is on the CPU"),
    (["--weights", "/dev/zero"], True, r"weights /dev/zero is not a regular file"),             # not "does not exist"
    (["--weights", "/proc/self/status"], True, r"is on a virtual filesystem \(like /proc or /sys\)"),  # not "empty"
    (["--weights", "/nonexistent/w.pkl"], True, r"weights file /nonexistent/w\.pkl does not exist"),
    ([], False, r"dataset coco_2017_train: .*instances_train2017\.json \(file\) does not exist"),
]


@pytest.mark.parametrize("extra,good,pattern", CLI_CASES, ids=[f"cli{i}" for i in range(len(CLI_CASES))])
def test_cli_refusals_exit_2_and_leave_no_run_directory(make, tmp_path, capsys, extra, good, pattern):
    from detectron2.data import MetadataCatalog

    from infomin_det.cli import main

    if not extra and Path(MetadataCatalog.get("coco_2017_train").json_file).exists():
        pytest.skip("COCO is installed here")
    if extra == ["BAD_BBOX"]:
        extra = ["--dataset", make(train=at("annotations", 0, bbox=[9.0, 44.0, -5.0, 56.0]))]
    root = tmp_path / "runs"
    root.mkdir()
    argv = ["train", "--protocol", PROTOCOL, "--weights", "none", "--root", str(root), "--device", "cpu"]
    rc = main(argv + (["--dataset", make()] if good else []) + extra)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert re.search(r"^error: .*" + pattern, err, re.M), err
    assert re.search(r"^  fix: \S", err, re.M) and "Traceback" not in err
    assert list(root.iterdir()) == []


@pytest.mark.parametrize("spelling", ["random", "none", ""])
def test_every_spelling_of_random_init_is_one_run(spelling):
    """``--weights random`` (as submit spells it), ``none`` or '' (older): no weights, row ``random``."""
    import argparse

    from infomin_det.engine.cli import add_arguments, spec_from_args

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    spec = spec_from_args(parser.parse_args(["--protocol", "coco/R50-FPN-1x", "--weights", spelling]))
    assert (spec.weights, spec.weights_name) == ("", "random")
