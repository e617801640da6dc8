"""Up-front check of a ``--dataset coco-json:...`` set, before any run directory is written.

Owns the ``coco-json:<train.json>:<train_images>:<val.json>:<val_images>`` syntax
(:func:`parse_spec`), the rules a COCO instances file must satisfy to train and be evaluated as the
user means it, and the :class:`DatasetSummary` recorded in ``run.json``. Detectron2 and pycocotools
accept many broken files and then crash late or -- worse -- silently train or evaluate on something
else (annotations of a duplicate image id dropped, invalid polygons' whole instances dropped, an RLE
shorter than its image decoded from uninitialised memory, a val set without ``area`` failing after
training). :func:`check_dataset` refuses the first bad record instead: ``UserError`` naming the
file, the record (index and id), the field and its value, and a fix.

Also refused: train and val category lists that differ (class indices would mean different things)
and val images that are also train images. Masks are fully checked (compressed RLE decoded, in
batch) only when the protocol uses them (``need_masks``); a box-only run never decodes one.

Paths in the spec are separated by ``:``; a path that contains ``:`` cannot be written there (no
escape syntax): link it to a name without one. File names are checked lexically (no ``..``, not
absolute; symlinks inside the image root are the user's own layout). Image files are looked up with
one directory listing per image directory (no per-file stat, no image opened: Detectron2 checks
each image's size against width/height when it loads it, and fails loudly).

No detectron2 import here; numpy only for the batched RLE check.
"""

from __future__ import annotations

import math
import os
import posixpath
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from infomin_det.errors import UserError
from infomin_det.untrusted import read_json

SPEC_FORMAT = "coco-json:<train.json>:<train_images>:<val.json>:<val_images>"
#: a box may stick out of its image by this many pixels plus this fraction of the side (rounding)
BOX_TOLERANCE_PX = 1.0
BOX_TOLERANCE_FRAC = 0.01
_NUM = (int, float)  # exact types (json gives int, float, bool): bool is not a number here
_ID = (int, str)
_SPLITS = ("train", "val")


@dataclass(frozen=True)
class CocoJsonSpec:
    """The four paths of a ``coco-json:`` dataset spec."""

    train_json: str
    train_images: str
    val_json: str
    val_images: str

    def split(self, name: str) -> tuple[str, str]:
        return (self.train_json, self.train_images) if name == "train" else (self.val_json, self.val_images)


@dataclass(frozen=True)
class SplitSummary:
    """One split as checked. mask_format: ``polygon``, ``rle``, ``polygon+rle`` or ``""`` (no masks);
    has_masks: every annotation has a segmentation."""

    json: str
    image_root: str
    images: int
    annotations: int
    crowd: int
    categories: int
    has_masks: bool
    mask_format: str


@dataclass(frozen=True)
class DatasetSummary:
    """Both splits; ``classes``: category names in id order (= the model's class indices)."""

    train: SplitSummary
    val: SplitSummary
    classes: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_spec(text: str) -> CocoJsonSpec:
    """``coco-json:<train.json>:<train_images>:<val.json>:<val_images>`` -> :class:`CocoJsonSpec`."""
    if not isinstance(text, str) or not text.startswith("coco-json:"):
        raise UserError(f"dataset {text!r} is not understood (only coco-json:... datasets are known)",
                        f"use --dataset {SPEC_FORMAT}")
    parts = text.split(":")[1:]
    if len(parts) != 4:
        raise UserError(f"dataset {text!r} has {len(parts)} ':'-separated paths after coco-json:, not 4",
                        f"use {SPEC_FORMAT}; a path containing ':' cannot be written there -- make a "
                        "symlink to it whose path has no ':' (ln -s 'a:b' a_b) and pass that")
    names = ("train.json", "train_images", "val.json", "val_images")
    for name, part in zip(names, parts):
        if not part.strip():
            raise UserError(f"dataset {text!r}: the <{name}> path is empty", f"use {SPEC_FORMAT}")
        if part != part.strip():
            raise UserError(f"dataset {text!r}: the <{name}> path {part!r} starts or ends with whitespace",
                            "remove the spaces (paths are taken literally)")
    return CocoJsonSpec(*parts)


def _path_fix(path: str) -> str:
    if path.startswith("~"):
        return "'~' is not expanded inside --dataset; write the full path (e.g. $HOME/...)"
    return f"check the path (relative paths are taken from the current directory, {os.getcwd()})"


def _load(split: str, json_path: str, image_root: str) -> dict[str, list]:
    p, root = Path(json_path), Path(image_root)
    if not p.is_file():
        what = "is a directory, not a file" if p.is_dir() else "does not exist"
        raise UserError(f"{split} annotation file {p} {what}", _path_fix(json_path))
    if not root.is_dir():
        what = "is a file, not a directory" if root.exists() else "does not exist"
        raise UserError(f"{split} image directory {root} {what}", _path_fix(image_root))
    try:
        data = read_json(p, f"{split} annotation file")
    except UserError as e:
        raise UserError(e.cause, "pass a COCO instances json (the file may be truncated or not JSON)") from None
    except RecursionError:  # read_json lets json's nesting limit through
        raise UserError(f"{split} annotation file {p} nests JSON deeper than Python can parse",
                        "pass a COCO instances json") from None
    if not isinstance(data, dict):
        raise UserError(f"{p}: the top level is a JSON {type(data).__name__}, not an object",
                        'a COCO instances json is {"images": [...], "annotations": [...], "categories": [...]}')
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise UserError(f"{p}: no {key!r} list (keys: {sorted(data)[:8]})",
                            'a COCO instances json is {"images": [...], "annotations": [...], "categories": [...]}')
        if not isinstance(data[key], list):
            raise UserError(f"{p}: {key!r} is a JSON {type(data[key]).__name__}, not a list",
                            f"write {key!r} as a list of objects")
    return data


def _fail(p: str, kind: str, i: int, rec: Any, what: str, fix: str) -> UserError:
    rid = f" (id {rec.get('id')!r})" if isinstance(rec, dict) and "id" in rec else ""
    return UserError(f"{p}: {kind}[{i}]{rid}: {what}", fix)


def _categories(p: str, cats: list) -> dict[int, str]:
    if not cats:
        raise UserError(f"{p}: 'categories' is empty", 'list the classes: "categories": [{"id": 1, "name": "..."}]')
    out: dict[int, str] = {}
    names: dict[str, int] = {}
    for i, c in enumerate(cats):
        if not isinstance(c, dict):
            raise _fail(p, "categories", i, c, f"is a {type(c).__name__}, not an object", '{"id": 1, "name": "..."}')
        cid, name = c.get("id"), c.get("name")
        if type(cid) is not int:
            raise _fail(p, "categories", i, c, f"id {cid!r} is not an integer", "give every category an integer id")
        if type(name) is not str or not name.strip():
            raise _fail(p, "categories", i, c, f"name {name!r} is not a non-empty string", "name every category")
        if cid in out:
            raise _fail(p, "categories", i, c, f"id {cid} is also used by category {out[cid]!r}",
                        "give every category its own id")
        if name in names:
            raise _fail(p, "categories", i, c, f"name {name!r} is also category id {names[name]}",
                        "give every category its own name (merge the two, or rename one)")
        out[cid], names[name] = name, cid
    return out


def _images(p: str, imgs: list) -> dict[Any, tuple]:
    """id -> (index, normalised file_name, width, height, box limits x_min, y_min, x_max, y_max)."""
    if not imgs:
        raise UserError(f"{p}: 'images' is empty", "list the images the annotations refer to")
    out: dict[Any, tuple] = {}
    files: dict[str, int] = {}
    id_type = None
    for i, im in enumerate(imgs):
        if not isinstance(im, dict):
            raise _fail(p, "images", i, im, f"is a {type(im).__name__}, not an object",
                        '{"id": 1, "file_name": "a.jpg", "width": 640, "height": 480}')
        iid, name, w, h = im.get("id"), im.get("file_name"), im.get("width"), im.get("height")
        if type(iid) not in _ID:
            raise _fail(p, "images", i, im, f"id {iid!r} is not an integer or string", "give every image an id")
        if id_type is None:
            id_type = type(iid)
        elif type(iid) is not id_type:
            raise _fail(p, "images", i, im, f"id {iid!r} is a {type(iid).__name__} but earlier ids are "
                        f"{id_type.__name__}s (Detectron2 sorts the ids)", "use one id type for all images")
        if iid in out:
            raise _fail(p, "images", i, im, f"id {iid!r} is also images[{out[iid][0]}] (pycocotools would keep "
                        "only the last one and attach both images' annotations to it)", "give every image its own id")
        for field, v in (("width", w), ("height", h)):
            if type(v) is not int or not 0 < v < 2**31:
                raise _fail(p, "images", i, im, f"{field} {v!r:.40} is not a positive integer (pixels)",
                            "write each image's pixel width and height")
        if type(name) is not str or not name.strip():
            raise _fail(p, "images", i, im, f"file_name {name!r} is not a non-empty string",
                        "give the image's path relative to the image directory")
        norm = posixpath.normpath(name)
        if name.startswith("/") or "\x00" in name or ".." in norm.split("/") or norm == ".":
            raise _fail(p, "images", i, im, f"file_name {name!r} is not a path inside the image directory",
                        "write file names relative to the image directory, without '..' or a leading '/'")
        if norm in files:
            raise _fail(p, "images", i, im, f"file_name {name!r} is also images[{files[norm]}]",
                        "list every image once")
        files[norm] = i
        tw, th = BOX_TOLERANCE_PX + BOX_TOLERANCE_FRAC * w, BOX_TOLERANCE_PX + BOX_TOLERANCE_FRAC * h
        out[iid] = (i, norm, w, h, -tw, -th, w + tw, h + th)
    return out


def _number(v: Any) -> bool:
    return type(v) in _NUM and math.isfinite(v)


def _check_segmentation(p: str, i: int, a: dict, segm: Any, w: int, h: int, rle_strings: list) -> str:
    """'' (none), 'polygon' or 'rle'; compressed RLE strings are queued in ``rle_strings``."""
    if segm is None or segm == []:
        return ""
    if isinstance(segm, list):
        for j, poly in enumerate(segm):
            if type(poly) is not list:
                raise _fail(p, "annotations", i, a, f"segmentation[{j}] is {poly!r:.40}, not a polygon (a list of numbers)",
                            "write polygons as [[x1, y1, x2, y2, x3, y3, ...], ...]")
            if len(poly) < 6 or len(poly) % 2:
                raise _fail(p, "annotations", i, a, f"segmentation[{j}] has {len(poly)} coordinates (a polygon "
                            "needs an even number, at least 6; Detectron2 would drop the whole instance)",
                            "fix or remove the degenerate polygon")
            try:
                s = sum(poly)
            except TypeError:
                s = None
            if type(s) not in _NUM or not math.isfinite(s):
                bad = next((v for v in poly if not _number(v)), s)
                raise _fail(p, "annotations", i, a, f"segmentation[{j}] has the coordinate {bad!r}",
                            "polygon coordinates must be finite numbers (pixels)")
        return "polygon"
    if isinstance(segm, dict):
        size, counts = segm.get("size"), segm.get("counts")
        if size != [h, w] or type(size[0]) is not int or type(size[1]) is not int:
            raise _fail(p, "annotations", i, a, f"RLE size {size!r} is not the image's [height, width], [{h}, {w}]",
                        "encode the mask at the image's size (pycocotools.mask.encode of an H x W array)")
        if isinstance(counts, list):
            try:
                total = sum(counts)
                ok = type(total) is int and (not counts or min(counts) >= 0)
            except TypeError:
                ok = False
            if not ok:
                raise _fail(p, "annotations", i, a, "RLE counts are not non-negative integers",
                            "write uncompressed RLE counts as a list of run lengths")
            if total != h * w:
                raise _fail(p, "annotations", i, a, f"RLE counts sum to {total}, not height x width = {h * w}",
                            "re-encode the mask at the image's size")
        elif isinstance(counts, str):
            rle_strings.append((i, counts, h * w))
        else:
            raise _fail(p, "annotations", i, a, f"RLE counts {counts!r:.40} are neither a list nor a string",
                        "use pycocotools.mask.encode, and decode 'counts' bytes to ascii before json.dump")
        return "rle"
    raise _fail(p, "annotations", i, a, f"segmentation {segm!r:.60} is neither a polygon list nor an RLE object",
                "write polygons [[x, y, ...]] or RLE {'size': [h, w], 'counts': ...}")


def _annotations(p: str, split: str, anns: list, images: dict, cat_ids: dict, need_masks: bool
                 ) -> tuple[int, int, set[str]]:
    """(annotations with masks, crowd annotations, mask kinds)."""
    if not anns:
        what = ("nothing to train on" if split == "train" else "AP would be undefined -- every metric NaN")
        raise UserError(f"{p}: 'annotations' is empty ({what})", f"pass a {split} file with annotations")
    seen: dict[Any, int] = {}
    rle_strings: list[tuple[int, str, int]] = []
    kinds: set[str] = set()
    n_masks = n_crowd = 0
    pixel_boxes = False  # some box reaches beyond 1.5 (else they look normalised)
    crowd_default = None if split == "val" else 0
    isfinite = math.isfinite
    try:
        for i, a in enumerate(anns):
            if type(a) is not dict:
                raise _fail(p, "annotations", i, a, f"is a {type(a).__name__}, not an object",
                            "every annotation is an object")
            aid = a.get("id")
            if type(aid) not in _ID:
                raise _fail(p, "annotations", i, a, f"id {aid!r} is not an integer or string",
                            "give every annotation a unique id")
            if aid in seen:
                raise _fail(p, "annotations", i, a, f"id {aid!r} is also annotations[{seen[aid]}]",
                            "give every annotation its own id (Detectron2 asserts they are unique)")
            seen[aid] = i
            img = images.get(a.get("image_id")) if type(a.get("image_id")) in _ID else None
            if img is None:
                raise _fail(p, "annotations", i, a, f"image_id {a.get('image_id')!r} is not the id of any image",
                            "every annotation must refer to an entry of 'images' (pycocotools would drop it)")
            _, _, w, h, xlo, ylo, xhi, yhi = img
            cid = a.get("category_id")
            if type(cid) is not int or cid not in cat_ids:
                raise _fail(p, "annotations", i, a, f"category_id {cid!r} is not the id of any category "
                            f"(ids: {sorted(cat_ids)[:10]})", "fix the category_id or add the category")
            bbox = a.get("bbox")
            if type(bbox) is not list or len(bbox) != 4:
                x = y = bw = bh = None
            else:
                x, y, bw, bh = bbox
            if type(x) not in _NUM or type(y) not in _NUM or type(bw) not in _NUM or type(bh) not in _NUM:
                raise _fail(p, "annotations", i, a, f"bbox {bbox!r:.60} is not 4 numbers [x, y, width, height]",
                            "write COCO boxes as [x, y, width, height] in pixels")
            if not isfinite(x + y + bw + bh):
                raise _fail(p, "annotations", i, a, f"bbox {bbox!r} is not finite", "fix the box (NaN/Infinity)")
            if bw <= 0 or bh <= 0:
                raise _fail(p, "annotations", i, a, f"bbox {bbox!r} has zero or negative width/height "
                            "(Detectron2 silently drops such boxes)",
                            "remove the annotation or fix the box; COCO boxes are [x, y, width, height], not x2, y2")
            if x < xlo or y < ylo or x + bw > xhi or y + bh > yhi:
                raise _fail(p, "annotations", i, a, f"bbox {bbox!r} lies outside its image ({w} x {h} px, "
                            f"images[{img[0]}] {img[1]!r}) by more than {BOX_TOLERANCE_PX:g} px + "
                            f"{BOX_TOLERANCE_FRAC:.0%}", "boxes are [x, y, width, height] in pixels of that image; "
                            "check the image's width/height and the box format")
            if not pixel_boxes and (x + bw > 1.5 or y + bh > 1.5):
                pixel_boxes = True
            crowd = a.get("iscrowd", crowd_default)
            if type(crowd) is not int or crowd not in (0, 1):
                what = "missing (pycocotools' evaluation needs it)" if crowd is None else f"{crowd!r}, not 0 or 1"
                raise _fail(p, "annotations", i, a, f"iscrowd is {what}",
                            'write "iscrowd": 0 (or 1 for a crowd region)')
            n_crowd += crowd
            if a.get("ignore", 0) != 0:
                raise _fail(p, "annotations", i, a, f"ignore is {a['ignore']!r} (Detectron2 does not support it)",
                            'drop the "ignore" field, or mark the region "iscrowd": 1')
            area = a.get("area")
            if area is None and split == "val":
                raise _fail(p, "annotations", i, a, "has no area (pycocotools' evaluation needs it)",
                            'write "area": the mask area in pixels (or width * height of the box)')
            if area is not None and (type(area) not in _NUM or not isfinite(area) or area < 0):
                raise _fail(p, "annotations", i, a, f"area {area!r} is not a finite non-negative number",
                            "write the mask area in pixels (pycocotools ignores ground truth outside its area ranges)")
            kind = _check_segmentation(p, i, a, a.get("segmentation"), w, h, rle_strings)
            if kind:
                kinds.add(kind)
                n_masks += 1
            elif need_masks:
                raise _fail(p, "annotations", i, a, "has no segmentation, but the protocol trains and evaluates masks",
                            "use a box-only protocol (voc/...), or give every annotation a polygon or RLE mask")
    except OverflowError:  # an integer beyond float range in a box, area or polygon
        raise _fail(p, "annotations", i, a, "holds a number too large for a pixel coordinate or area",
                    "write coordinates and areas in pixels") from None
    if n_crowd == len(anns):
        raise UserError(f"{p}: all {len(anns)} annotations are crowd regions (iscrowd 1); Detectron2 trains "
                        "and evaluates on none of them", "mark the object annotations iscrowd 0")
    side = max(min(w, h) for _, _, w, h, *_ in images.values())
    if not pixel_boxes and side > 16:
        raise UserError(f"{p}: every box lies within [0, 1.5] although the images are up to {side} px: the boxes "
                        "look normalised to [0, 1]", "write boxes in pixels, [x, y, width, height]")
    if need_masks:  # a box-only run never decodes a mask
        _check_rle_strings(p, anns, rle_strings)
    return n_masks, n_crowd, kinds


def rle_totals(strings: list[str]) -> list[int]:
    """Pixel count (sum of all runs) of each compressed COCO RLE string, or -1 where it is not one.

    pycocotools' format: characters from '0' (6 bits each: 5 value bits, a continue bit; the sign bit
    0x10 on a number's last character), counts from the third on stored as deltas to the count two
    back. Decoded here in batch with numpy (pycocotools would decode a string too short for its
    size from uninitialised memory).
    """
    import numpy as np

    n = len(strings)
    lens = np.fromiter(map(len, strings), np.int64, n)
    joined = "".join(strings)
    if not n or not lens.all() or not joined.isascii():
        return _rle_subset(strings, [bool(s) and s.isascii() for s in strings])
    v = np.frombuffer(joined.encode("ascii"), np.uint8) - np.uint8(48)  # wraps below '0' to >= 208
    ends = np.cumsum(lens)
    end = (v & 32) == 0
    bad = np.flatnonzero(v >= 64)
    if bad.size or not end[ends - 1].all():
        good = end[ends - 1].copy()
        good[np.searchsorted(ends, bad, side="right")] = False
        return _rle_subset(strings, good.tolist())
    e = np.flatnonzero(end)
    starts = np.empty_like(e)
    starts[0], starts[1:] = 0, e[:-1] + 1
    nlen = e - starts + 1
    k_per = np.diff(np.cumsum(end)[ends - 1], prepend=0)  # numbers per string
    sid = np.repeat(np.arange(n), k_per)
    longest = int(nlen.max())
    if longest > 7:  # > 35 bits: not a pixel count
        good = np.ones(n, bool)
        good[sid[nlen > 7]] = False
        return _rle_subset(strings, good.tolist())
    x = (v[starts] & 31).astype(np.int64)
    for k in range(1, longest):
        sel = np.flatnonzero(nlen > k)
        x[sel] |= (v[starts[sel] + k] & 31).astype(np.int64) << (5 * k)
    neg = (v[e] & 16) != 0
    x[neg] -= np.left_shift(1, 5 * nlen[neg])
    first = np.cumsum(k_per) - k_per
    m = np.arange(x.size) - np.repeat(first, k_per)
    totals = x[first].copy()  # m == 0
    ok = np.ones(n, bool)
    for chain in ((m & 1) == 1, (m >= 2) & ((m & 1) == 0)):  # counts m = 1, 3, .. and m = 2, 4, ..
        xc, sc = x[chain], sid[chain]
        if not xc.size:
            continue
        cs = np.cumsum(xc)
        f = np.flatnonzero(np.r_[True, sc[1:] != sc[:-1]])
        cnts = cs - np.repeat(cs[f] - xc[f], np.diff(np.r_[f, xc.size]))
        ok[sc[cnts < 0]] = False
        totals[sc[f]] += np.add.reduceat(cnts, f)
    totals[~ok] = -1
    return totals.tolist()


def _rle_subset(strings: list[str], good: list[bool]) -> list[int]:
    """:func:`rle_totals` of the ``good`` strings, -1 for the others."""
    out = [-1] * len(strings)
    idx = [i for i, g in enumerate(good) if g]
    for i, t in zip(idx, rle_totals([strings[i] for i in idx]) if idx else []):
        out[i] = t
    return out


def _check_rle_strings(p: str, anns: list, queued: list[tuple[int, str, int]], batch: int = 1_000_000) -> None:
    """Decode the queued (index, counts, height x width) in batches of about ``batch`` characters."""
    b = 0
    while b < len(queued):
        size, stop = 0, b
        while stop < len(queued) and (size < batch or stop == b):
            size += len(queued[stop][1])
            stop += 1
        part, b = queued[b:stop], stop
        for (i, s, hw), total in zip(part, rle_totals([s for _, s, _ in part])):
            if total != hw:
                what = (f"decodes to {total} pixels, not height x width = {hw}" if total >= 0
                        else "is not a valid compressed RLE string")
                raise _fail(p, "annotations", i, anns[i], f"RLE counts {s!r:.40} {what} (pycocotools would "
                            "decode it into a wrong mask)", "re-encode the mask with pycocotools.mask.encode "
                            "of an H x W array of the image's size")


def _missing_files(p: str, root: str, images: dict) -> None:
    by_dir: dict[str, list[tuple[int, str]]] = {}
    for i, norm, *_ in images.values():
        d, name = posixpath.split(norm)
        by_dir.setdefault(d, []).append((i, name))
    missing: list[tuple[int, str]] = []
    for d, entries in by_dir.items():
        try:
            with os.scandir(os.path.join(root, d) if d else root) as it:
                present = {e.name for e in it if e.is_file()}
        except (FileNotFoundError, NotADirectoryError):
            present = set()
        except OSError as e:
            raise UserError(f"{p}: cannot list image directory {os.path.join(root, d)} ({e.strerror})",
                            "check its permissions") from None
        missing += [(i, posixpath.join(d, name)) for i, name in entries if name not in present]
    if missing:
        i, name = min(missing)
        raise UserError(f"{p}: {len(missing)} of {len(images)} image files are missing under {root} (first: "
                        f"images[{i}] file_name {name!r})", "point <images> at the directory the file names "
                        "are relative to, or copy the missing images")


def check_split(split: str, json_path: str, image_root: str, need_masks: bool = False
                ) -> tuple[SplitSummary, dict[int, str], set[str]]:
    """(summary, categories id -> name, normalised image paths relative to the image root's realpath)."""
    data = _load(split, json_path, image_root)
    cats = _categories(json_path, data["categories"])
    images = _images(json_path, data["images"])
    n_masks, n_crowd, kinds = _annotations(json_path, split, data["annotations"], images, cats, need_masks)
    _missing_files(json_path, image_root, images)
    real = os.path.realpath(image_root)
    files = {posixpath.join(real, norm) for _, norm, *_ in images.values()}
    summary = SplitSummary(json_path, image_root, len(images), len(data["annotations"]), n_crowd, len(cats),
                           n_masks == len(data["annotations"]), "+".join(sorted(kinds, key=("polygon", "rle").index)))
    return summary, cats, files


def _same_categories(spec: CocoJsonSpec, train: dict[int, str], val: dict[int, str]) -> None:
    for cid in sorted(set(train) | set(val)):
        a, b = train.get(cid), val.get(cid)
        if a != b:
            what = (f"category id {cid} is {a!r} in train but {b!r} in val" if a and b else
                    f"category id {cid} ({a or b!r}) is only in {'train' if a else 'val'}")
            raise UserError(f"{spec.train_json} and {spec.val_json} list different categories: {what} (the model's "
                            "class indices would mean different things in training and evaluation)",
                            "use the same 'categories' list (ids and names) in both files")


_CACHE: dict[tuple, DatasetSummary] = {}


def check_dataset(text: str, need_masks: bool = False) -> DatasetSummary:
    """Check both splits of a ``coco-json:`` spec; :class:`DatasetSummary` or ``UserError``.

    need_masks: the protocol trains masks (Mask R-CNN): every annotation needs a segmentation.
    Cached per process on the two files' size and mtime (``submit`` checks many specs).
    """
    spec = parse_spec(text)
    try:
        stamp = tuple((s.st_size, s.st_mtime_ns, s.st_ino) for s in (os.stat(spec.train_json), os.stat(spec.val_json)))
    except OSError:
        stamp = None
    key = (text, need_masks, stamp, os.getcwd())
    if stamp is not None and key in _CACHE:
        return _CACHE[key]
    (train, train_cats, train_files), (val, val_cats, val_files) = (
        check_split(split, *spec.split(split), need_masks=need_masks) for split in _SPLITS)
    _same_categories(spec, train_cats, val_cats)
    shared = train_files & val_files
    if shared:
        raise UserError(f"{len(shared)} of the {val.images} val images are also train images (e.g. {min(shared)}): "
                        "the evaluation would measure memorisation", "use disjoint train and val sets")
    summary = DatasetSummary(train, val, tuple(train_cats[c] for c in sorted(train_cats)))
    if stamp is not None:
        _CACHE[key] = summary
    return summary
