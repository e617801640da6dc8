"""What a run is -- protocol, weights row, seed, family, variant, dataset -- and the proof that the
run's own records agree about it.

Three sources, each optional, all read when present:

* ``run.json`` (:class:`infomin_det.rundir.RunInfo`, written by the trainer): protocol, weights_name,
  seed, family, variant, weights_path, dataset;
* the directory layout ``.../<protocol>/<weights>/seed<k>`` (protocol = one of the toolkit's ids;
  a directory named ``seed<k>`` states the seed even outside that layout);
* ``config.yaml`` (Detectron2's merged config): SEED, MODEL.WEIGHTS, DATASETS.TRAIN/TEST and the
  fields that define a protocol (RESNETS.DEPTH / NUM_GROUPS, BACKBONE.NAME, ROI_HEADS.NAME, MASK_ON,
  SOLVER.MAX_ITER).

Rules (:func:`identify`):

1. Two sources stating the same thing must agree -- protocol (run.json vs layout), weights name
   (run.json vs layout), seed (run.json vs ``seed<k>`` vs SEED >= 0), weights file (run.json
   weights_path vs MODEL.WEIGHTS; family ``random`` / a row named ``random`` vs weights loaded),
   datasets (run.json dataset.train/test vs DATASETS). Otherwise :class:`ParseError` naming every
   disagreeing field and both values: the run is refused, never tabulated.
2. config.yaml's protocol-defining fields that differ from the stated protocol's make the run
   ``modified`` (``("RESNETS.DEPTH=18 (protocol: 50)", ...)``): it is tabulated only with runs
   modified the same way, under a title that says so, and never compared with the paper.
3. The dataset (:class:`Dataset`) is the paper's only when run.json says ``"paper": true`` or,
   without that field, when config.yaml's DATASETS are the protocol's builtin sets (COCO
   ``coco_2017_train`` -> ``coco_2017_val``; VOC ``voc_2007_trainval + voc_2012_trainval`` ->
   ``voc_2007_test``); run.json claiming the paper's dataset with other set names is a disagreement.
   Without either source the dataset is unknown (and the paper baseline is refused).

Without run.json and layout the protocol is the one whose defining fields config.yaml matches
exactly, or the run fails with the fields it saw. config.yaml is read fast (:func:`read_config`).
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from infomin_det.errors import UserError
from infomin_det.protocols import FAMILIES, REFERENCE_BATCH, Protocol, list_protocols
from infomin_det.report.parse import ParseError, short
from infomin_det.rundir import CUSTOM_PREFIX, RANDOM_INIT, RUN_JSON, RunInfo, check_name, is_random_init

PROTOCOLS: dict[str, Protocol] = {p.id: p for p in list_protocols()}
_SEED_DIR = re.compile(r"^seed(\d+)$")
_ARCH = {"R-50": (50, 1), "R-101": (101, 1), "X-101-32x8d": (101, 32), "X-152-32x8d": (152, 32)}
PAPER_SETS = {  # protocol.dataset -> (train sets, test sets) the paper trained and tested on
    "coco": (("coco_2017_train",), ("coco_2017_val",)),
    "voc": (("voc_2007_trainval", "voc_2012_trainval"), ("voc_2007_test",)),
}
PAPER_LABELS = {"coco": "COCO train2017/val2017 (paper)", "voc": "VOC07+12/VOC07 test (paper)"}
MAX_RECORD = 1 << 20   # run.json / launch_state.json larger than this are not records
MAX_CONFIG = 1 << 22


# ---------------------------------------------------------------------------------------------
# config.yaml


@dataclass(frozen=True)
class ConfigFields:
    """The values of config.yaml the report checks (Detectron2 key names in the docstrings)."""

    depth: int          # MODEL.RESNETS.DEPTH
    groups: int         # MODEL.RESNETS.NUM_GROUPS
    backbone: str       # MODEL.BACKBONE.NAME
    heads: str          # MODEL.ROI_HEADS.NAME
    mask_on: bool       # MODEL.MASK_ON
    weights: str        # MODEL.WEIGHTS
    max_iter: int       # SOLVER.MAX_ITER
    seed: int           # SEED (-1: not fixed)
    train: tuple[str, ...]   # DATASETS.TRAIN
    test: tuple[str, ...]    # DATASETS.TEST
    batch: int | None = None  # SOLVER.IMS_PER_BATCH (None: absent, not a Detectron2 dump)
    sha256: str = field(default="", compare=False)   # of the file's bytes


_WANTED = ("MODEL.RESNETS.DEPTH", "MODEL.RESNETS.NUM_GROUPS", "MODEL.BACKBONE.NAME", "MODEL.ROI_HEADS.NAME",
           "MODEL.MASK_ON", "MODEL.WEIGHTS", "SOLVER.MAX_ITER", "SEED", "DATASETS.TRAIN", "DATASETS.TEST",
           "SOLVER.IMS_PER_BATCH")
_PREFIXES = {".".join(w.split(".")[:i]) for w in _WANTED for i in range(1, w.count(".") + 1)}
_SPLIT = {n: re.compile(rf"\n(?= {{{n}}}[^ \n-])") for n in (0, 2, 4)}


class _NotBlockYaml(Exception):
    pass


def _pick(block: str, indent: int, prefix: str, keep: list[str]) -> None:
    """Append to ``keep`` the parts of ``block`` (keys at ``indent``) that hold a wanted key."""
    for chunk in _SPLIT[indent].split(block):
        nl = chunk.find("\n")
        head = chunk if nl < 0 else chunk[:nl]
        key, colon, rest = head[indent:].partition(":")
        if not colon or not key.replace("_", "").isalnum() or (rest and rest[0] != " ") or head[:indent].strip():
            if head.lstrip().startswith("#") and nl < 0:
                continue
            raise _NotBlockYaml      # a document marker, a flow collection, a comment, a stray line ...
        path = f"{prefix}.{key}" if prefix else key
        if path in _WANTED:
            keep.append(chunk)       # the key with every line of its value, as YAML reads it
        elif path in _PREFIXES:
            if rest.strip() or indent == 4:
                raise _NotBlockYaml  # a flow mapping where the dump writes a block
            keep.append(head)
            if nl >= 0:
                _pick(chunk[nl + 1:], indent + 2, path, keep)


def _subset(text: str) -> str:
    """The parts of a block-style YAML mapping (what ``CfgNode.dump()`` writes) that hold the keys
    in ``_WANTED``, with their parent keys, in file order -- split on indentation by regular
    expressions, so that the other ~300 lines are never looked at one by one. Raises _NotBlockYaml
    for anything else (the caller then parses the whole file)."""
    if "\t" in text or text.startswith(("---", "%")):
        raise _NotBlockYaml
    keep: list[str] = []
    _pick(text.strip("\n"), 0, "", keep)
    return "\n".join(keep) + "\n"


_INT = re.compile(r"^-?(0|[1-9][0-9]*)$")
_PLAIN = re.compile(r"^[A-Za-z_/][A-Za-z0-9_./+:-]*(?<!:)$")  # no spaces: "detectron2://x" is one string
_YAML_WORDS = {"yes", "no", "on", "off", "y", "n", "true", "false", "null"}
_QUOTED = re.compile(r"""^'([^']*)'$|^"([^"\\]*)"$""")


def _scalar(text: str) -> Any:
    """A scalar as YAML reads it, for the plain forms ``CfgNode.dump()`` writes; else _NotBlockYaml."""
    if text in ("true", "false"):
        return text == "true"
    if _INT.match(text):
        return int(text)
    if text == "[]":
        return []
    m = _QUOTED.match(text)
    if m:
        return m.group(1) if m.group(1) is not None else m.group(2)
    if _PLAIN.match(text) and text.lower() not in _YAML_WORDS:
        return text
    raise _NotBlockYaml  # floats, other YAML words, flow collections, anchors, ...: PyYAML decides


def _parse_subset(text: str) -> dict:
    """The nested dict of :func:`_subset`'s lines (block mappings, ``- item`` lists, plain scalars)
    without PyYAML's per-node cost; _NotBlockYaml for anything outside those forms."""
    root: dict = {}
    stack: list[tuple[int, dict]] = [(-1, root)]
    open_key: tuple[int, dict, str] | None = None    # a "KEY:" whose value follows on the next lines
    for ln in text.split("\n"):
        if not ln:
            continue
        body = ln.lstrip(" ")
        indent = len(ln) - len(body)
        if body.startswith("- "):
            if open_key is None or indent < open_key[0]:
                raise _NotBlockYaml
            i, parent, key = open_key
            if parent[key] is None:
                parent[key] = []
            if not isinstance(parent[key], list):
                raise _NotBlockYaml
            parent[key].append(_scalar(body[2:].strip()))
            continue
        key, colon, rest = body.partition(":")
        if not colon or not key.replace("_", "").isalnum() or (rest and rest[0] != " "):
            raise _NotBlockYaml
        if open_key is not None and indent > open_key[0]:
            i, parent, okey = open_key
            if parent[okey] is not None:
                raise _NotBlockYaml
            parent[okey] = {}
            stack.append((i, parent[okey]))
        while stack[-1][0] >= indent:
            stack.pop()
        parent = stack[-1][1]
        rest = rest.strip()
        if rest:
            parent[key], open_key = _scalar(rest), None
        else:
            parent[key], open_key = None, (indent, parent, key)
    return root


def read_config(path: Path) -> ConfigFields:
    """The checked fields of a Detectron2 ``config.yaml``; ParseError when it is not one.

    Reads only the needed lines of a block-style dump (a 330-line dump costs ~3 ms to parse whole
    with PyYAML, ~0.2 ms this way; the result is the same, see tests); anything else goes to PyYAML.
    """
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    fix = ("config.yaml must be the merged config Detectron2 wrote (cfg.dump()); restore it, or delete "
           "it and give the run a run.json")
    try:
        if path.stat().st_size > MAX_CONFIG:
            raise ParseError(f"{path}: {path.stat().st_size} bytes is too large for a Detectron2 config", fix)
        text = path.read_text(encoding="utf-8")
        try:
            part = _subset(text)
            try:
                cfg = _parse_subset(part)
            except _NotBlockYaml:
                cfg = yaml.load(part, Loader=loader)
            got = _fields(cfg, path, fix)
        except (_NotBlockYaml, yaml.YAMLError, ParseError):
            got = _fields(yaml.load(text, Loader=loader), path, fix)
        return dataclasses.replace(got, sha256=hashlib.sha256(text.encode()).hexdigest())
    except (OSError, UnicodeDecodeError, yaml.YAMLError, RecursionError) as e:
        raise ParseError(f"{path}: not a readable YAML file ({type(e).__name__}: {str(e)[:120]})", fix) from None


def _has(cfg: Any, dotted: str) -> bool:
    for part in dotted.split("."):
        if not isinstance(cfg, dict) or part not in cfg:
            return False
        cfg = cfg[part]
    return True


def _fields(cfg: Any, path: Path, fix: str) -> ConfigFields:
    def get(dotted: str, kind: type) -> Any:
        node = cfg
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                raise ParseError(f"{path}: not a Detectron2 config ({dotted} is missing)", fix)
            node = node[part]
        if kind is tuple:
            if isinstance(node, str) and len(node) < 10000:  # a yacs-style "('a', 'b')" literal
                try:
                    node = ast.literal_eval(node)
                except (ValueError, SyntaxError):
                    pass
            if isinstance(node, (list, tuple)) and all(isinstance(x, str) for x in node):
                return tuple(node)
        elif isinstance(node, kind) and not (kind is int and isinstance(node, bool)):
            return node
        raise ParseError(f"{path}: {dotted} is {short(node)}, not a {kind.__name__}", fix)

    return ConfigFields(get("MODEL.RESNETS.DEPTH", int), get("MODEL.RESNETS.NUM_GROUPS", int),
                        get("MODEL.BACKBONE.NAME", str), get("MODEL.ROI_HEADS.NAME", str),
                        get("MODEL.MASK_ON", bool), get("MODEL.WEIGHTS", str), get("SOLVER.MAX_ITER", int),
                        get("SEED", int), get("DATASETS.TRAIN", tuple), get("DATASETS.TEST", tuple),
                        get("SOLVER.IMS_PER_BATCH", int) if _has(cfg, "SOLVER.IMS_PER_BATCH") else None)


def _backbone_kind(name: str) -> str:
    return {"build_resnet_fpn_backbone": "FPN", "build_resnet_backbone": "C4"}.get(name, name)


def _heads_kind(name: str) -> str:
    return "Res5ROIHeads*" if name.startswith("Res5ROIHeads") else name


def protocol_fields(p: Protocol) -> dict[str, Any]:
    """The config values that define protocol ``p`` (as :func:`config_view` shows a config)."""
    depth, groups = _ARCH[p.arch]
    fpn = p.meta_arch.endswith("fpn")
    heads = {"mask_fpn": "StandardROIHeads", "cascade_fpn": "CascadeROIHeads"}.get(p.meta_arch, "Res5ROIHeads*")
    return {"RESNETS.DEPTH": depth, "RESNETS.NUM_GROUPS": groups, "BACKBONE.NAME": "FPN" if fpn else "C4",
            "ROI_HEADS.NAME": heads, "MASK_ON": p.has_masks, "SOLVER.MAX_ITER": p.max_iter}


def config_view(c: ConfigFields) -> dict[str, Any]:
    """``SOLVER.MAX_ITER`` at the reference batch: a run scaled linearly to another batch (fewer GPUs)
    sees the protocol's images and is the protocol, at another batch (:func:`scaled_batch`)."""
    return {"RESNETS.DEPTH": c.depth, "RESNETS.NUM_GROUPS": c.groups, "BACKBONE.NAME": _backbone_kind(c.backbone),
            "ROI_HEADS.NAME": _heads_kind(c.heads), "MASK_ON": c.mask_on, "SOLVER.MAX_ITER": _reference_iters(c)}


def _reference_iters(c: ConfigFields) -> int | float:
    if c.batch is None or c.batch == REFERENCE_BATCH or c.batch <= 0:
        return c.max_iter
    images = c.max_iter * c.batch
    return images // REFERENCE_BATCH if images % REFERENCE_BATCH == 0 else images / REFERENCE_BATCH


def scaled_batch(c: ConfigFields | None) -> int | None:
    """The run's batch where it differs from the paper's ``REFERENCE_BATCH`` (None: the paper's / unknown)."""
    return c.batch if c is not None and c.batch not in (None, REFERENCE_BATCH) else None


def deviations(p: Protocol, c: ConfigFields) -> tuple[str, ...]:
    """``("RESNETS.DEPTH=18 (protocol: 50)", ...)``: where config.yaml differs from protocol ``p``."""
    want, got = protocol_fields(p), config_view(c)
    batch = scaled_batch(c)
    shown = dict(got, **({"SOLVER.MAX_ITER": f"{c.max_iter} at batch {batch}"} if batch else {}))
    at = f" at batch {REFERENCE_BATCH}" if batch else ""
    return tuple(f"{k}={shown[k]} (protocol: {want[k]}{at if k == 'SOLVER.MAX_ITER' else ''})"
                 for k in want if got[k] != want[k])


def implied_protocol(c: ConfigFields) -> Protocol | None:
    """The protocol whose defining fields config.yaml matches exactly (its datasets decide COCO/VOC)."""
    got = config_view(c)
    hits = [p for p in PROTOCOLS.values() if protocol_fields(p) == got]
    voc = any("voc" in t.lower() for t in c.test)
    hits = [p for p in hits if (p.dataset == "voc") == voc] or hits
    return hits[0] if len(hits) == 1 else None


# ---------------------------------------------------------------------------------------------
# datasets


@dataclass(frozen=True)
class Dataset:
    """What a run trained and tested on. key: what tables group by; label: what they show;
    paper: True / False / None (unknown); source: how it was decided."""

    key: str
    label: str
    paper: bool | None
    source: str


UNKNOWN_DATASET = Dataset("unknown", "dataset unknown", None, "no dataset in run.json and no config.yaml")


def _names(sets: tuple[str, ...]) -> str:
    return "+".join(sets) or "(none)"


def _dataset(protocol: Protocol | None, info: dict | None, cfg: ConfigFields | None, d: Path) -> Dataset:
    kind = protocol.dataset if protocol else ""
    paper_sets = PAPER_SETS.get(kind)
    cfg_sets = (tuple(sorted(cfg.train)), tuple(sorted(cfg.test))) if cfg else None
    is_paper_sets = bool(cfg_sets and paper_sets and cfg_sets == tuple(tuple(sorted(s)) for s in paper_sets))
    if info:
        ds_id, paper = info["id"], info["paper"]
        named = tuple(tuple(sorted(info[k])) for k in ("train", "test") if k in info)
        if cfg_sets and len(named) == 2 and named != cfg_sets:
            raise ParseError(f"{d}: dataset: run.json trains on {_names(named[0])} -> {_names(named[1])}, "
                             f"config.yaml on {_names(cfg.train)} -> {_names(cfg.test)}", _MIXED_FIX)
        if paper and ((cfg_sets and not is_paper_sets) or (
                not cfg_sets and len(named) == 2 and named != tuple(tuple(sorted(s)) for s in paper_sets))):
            sets = cfg_sets or (named if len(named) == 2 else None)
            what = f"{_names(sets[0])} -> {_names(sets[1])}" if sets else "?"
            raise ParseError(f"{d}: dataset: run.json says the paper's dataset, but the run trains on {what}",
                             _MIXED_FIX)
        if paper:
            return Dataset(f"paper:{kind}", PAPER_LABELS[kind], True, "run.json")
        files = info.get("files") or {}
        digest = hashlib.sha256(json.dumps(sorted((str(k), str(v.get("sha256", "")) if isinstance(v, dict) else "")
                                                  for k, v in files.items())).encode()).hexdigest()[:8]
        return Dataset(f"id:{ds_id}:{digest}", str(ds_id), False, "run.json")
    if cfg:
        if is_paper_sets:
            return Dataset(f"paper:{kind}", PAPER_LABELS[kind], True, "config.yaml DATASETS")
        label = f"{_names(cfg.train)} -> {_names(cfg.test)}"
        return Dataset(f"sets:{label}", label, False, "config.yaml DATASETS")
    return UNKNOWN_DATASET


# ---------------------------------------------------------------------------------------------
# the run


@dataclass
class Identity:
    """Who a run is. ``sources``: which records stated it (``run.json + directory + config.yaml``)."""

    protocol: str
    weights: str
    seed: int | None
    family: str = ""
    variant: str = ""
    experiment: str = ""
    dataset: Dataset = UNKNOWN_DATASET
    modified: tuple[str, ...] = ()
    max_iter: int | None = None
    batch: int | None = None     # SOLVER.IMS_PER_BATCH where it is not the paper's (linear scaling)
    sources: str = ""


_MIXED_FIX = ("the run's files come from different runs (copied or moved?): restore the directory from "
              "one run, or delete the stale file")


def _read_run_json(path: Path) -> tuple[RunInfo, dict]:
    fix = "restore run.json (the trainer writes it) or delete it to fall back to the directory layout and config.yaml"
    try:
        size = path.stat().st_size
        if size > MAX_RECORD:
            raise ParseError(f"{path}: {size} bytes is too large for a run record", fix)
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ParseError(f"{path} is unreadable ({type(e).__name__}: {str(e)[:120]})", fix) from None
    if not isinstance(raw, dict):
        raise ParseError(f"{path} holds {short(raw)}, not a run record (a JSON object)", fix)
    known = {f.name for f in fields(RunInfo)}
    older = {"experiment": "", "family": "", "weights_path": ""}  # absent from hand-made or older records
    try:
        info = RunInfo(**{**older, **{k: v for k, v in raw.items() if k in known}})
    except TypeError as e:
        raise ParseError(f"{path} is not a run record ({e})", fix) from None

    def bad(name: str, want: str) -> ParseError:
        return ParseError(f"{path}: {name} is {short(getattr(info, name))}, not {want}", fix)

    for name in ("protocol", "weights_name", "family", "variant", "experiment", "weights_path"):
        if not isinstance(getattr(info, name), str):
            raise bad(name, "a string")
    if info.protocol not in PROTOCOLS:
        raise ParseError(f"{path}: protocol {short(info.protocol)} is not one of the toolkit's "
                         f"({', '.join(PROTOCOLS)})", fix)
    if isinstance(info.seed, bool) or not isinstance(info.seed, int) or info.seed < 0:
        raise bad("seed", "a non-negative integer")
    if info.family not in FAMILIES + ("",):
        raise bad("family", f"one of {', '.join(FAMILIES)}")
    try:
        check_name("weights", info.weights_name)
        if info.variant:
            check_name("variant", info.variant)
    except UserError as e:
        raise ParseError(f"{path}: {e.cause}", fix) from None
    ds = info.dataset
    if not isinstance(ds, dict):
        raise bad("dataset", "an object")
    if ds:
        if not isinstance(ds.get("id"), str) or not ds["id"].strip() or len(ds["id"]) > 200:
            raise ParseError(f"{path}: dataset.id is {short(ds.get('id'))}, not a short name", fix)
        if not isinstance(ds.get("paper"), bool):
            raise ParseError(f"{path}: dataset.paper is {short(ds.get('paper'))}, not true/false", fix)
        for k in ("train", "test"):
            if k in ds and not (isinstance(ds[k], list) and all(isinstance(x, str) for x in ds[k])):
                raise ParseError(f"{path}: dataset.{k} is {short(ds[k])}, not a list of set names", fix)
        if "files" in ds and not isinstance(ds["files"], dict):
            raise ParseError(f"{path}: dataset.files is {short(ds['files'])}, not an object", fix)
    return info, ds


def _layout(d: Path) -> tuple[str, str, str, int | None, str]:
    """(protocol, weights, variant, seed, experiment) the directory names state ("" / None where they
    don't); a variant's runs live in ``<weights>+<variant>/`` (``infomin_det.rundir.run_dir``)."""
    parts = d.parts
    m = _SEED_DIR.match(parts[-1]) if parts else None
    seed = int(m.group(1)) if m else None
    if m and len(parts) >= 4 and "/".join(parts[-4:-2]) in PROTOCOLS:
        weights, _, variant = parts[-2].partition("+")
        return "/".join(parts[-4:-2]), weights, variant, seed, parts[-5] if len(parts) >= 5 else ""
    return "", "", "", seed, ""


def _is_random_name(name: str) -> bool:
    """A row name that says random init, however spelled (``Random``, ``random_``)."""
    return re.sub(r"[^a-z0-9]", "", name.lower()) == RANDOM_INIT


def identify(d: Path) -> Identity:
    """The identity of the run in ``d`` (an absolute, resolved path); ParseError when its sources
    disagree or cannot tell the protocol (see the module docstring)."""
    info = ds = cfg = None
    if (d / RUN_JSON).is_file():
        info, ds = _read_run_json(d / RUN_JSON)
    if (d / "config.yaml").is_file():
        cfg = read_config(d / "config.yaml")
    lay_protocol, lay_weights, lay_variant, lay_seed, lay_exp = _layout(d)
    sources = [s for s, present in (("run.json", info), ("directory", lay_protocol or lay_seed is not None),
                                    ("config.yaml", cfg)) if present]
    clash: list[str] = []

    def agree(name: str, *claims: tuple[str, Any]) -> None:
        stated = [(src, v) for src, v in claims if v is not None]
        if len({v for _, v in stated}) > 1:
            clash.append(f"{name}: " + ", ".join(f"{src} says {v}" for src, v in stated))

    cfg_seed = cfg.seed if cfg and cfg.seed >= 0 else None
    if info is not None:
        agree("protocol", ("run.json", info.protocol), ("the directory", lay_protocol or None))
        agree("weights", ("run.json", info.weights_name), ("the directory", lay_weights or None))
        agree("variant", ("run.json", info.variant or "(none)"),
              ("the directory", (lay_variant or "(none)") if lay_protocol else None))
        agree("seed", ("run.json", info.seed), ("the directory", lay_seed), ("config.yaml SEED", cfg_seed))
        ident = Identity(info.protocol, info.weights_name, info.seed, info.family, info.variant, info.experiment)
        if cfg is not None:
            given = "" if is_random_init(info.weights_path) else info.weights_path
            if given and given != cfg.weights:
                clash.append(f"weights file: run.json says {given}, config.yaml MODEL.WEIGHTS={cfg.weights or '(none)'}")
            if (info.family == "random" or _is_random_name(info.weights_name)) and cfg.weights:
                clash.append(f"weights file: the run is random init ({info.family or info.weights_name}) but "
                             f"config.yaml loads MODEL.WEIGHTS={cfg.weights}")
            if info.family in ("ssl", "supervised") and not cfg.weights:
                clash.append(f"weights file: family {info.family}, but config.yaml loads no weights "
                             "(MODEL.WEIGHTS is empty: random init)")
            recorded = info.provenance.get("config_sha256") if isinstance(info.provenance, dict) else None
            if isinstance(recorded, str) and recorded and recorded != cfg.sha256:
                clash.append(f"config: run.json records config sha256 {recorded[:12]}..., config.yaml has "
                             f"{cfg.sha256[:12]}... (not the config this run trained with)")
    elif lay_protocol:
        agree("seed", ("the directory", lay_seed), ("config.yaml SEED", cfg_seed))
        family = ("random" if not cfg.weights else "") if cfg else ""
        ident = Identity(lay_protocol, lay_weights, lay_seed, family, lay_variant, lay_exp)
        if cfg is not None and _is_random_name(lay_weights) and cfg.weights:
            clash.append(f"weights file: the row is named {lay_weights} but config.yaml loads MODEL.WEIGHTS={cfg.weights}")
    else:
        why = "no run.json, the directory is not <protocol>/<weights>/seed<k>"
        fix = "write run.json (infomin-det train does) or lay the run out as <protocol>/<weights>/seed<k>"
        if cfg is None:
            raise ParseError(f"{d}: cannot tell the protocol: {why}, and config.yaml is missing", fix)
        p = implied_protocol(cfg)
        if p is None:
            raise ParseError(f"{d}: cannot tell the protocol: {why}, and config.yaml "
                             f"(RESNETS.DEPTH={cfg.depth}, NUM_GROUPS={cfg.groups}, BACKBONE.NAME={cfg.backbone}, "
                             f"ROI_HEADS.NAME={cfg.heads}, MASK_ON={cfg.mask_on}, SOLVER.MAX_ITER={cfg.max_iter}) "
                             "matches none of the paper's", fix)
        agree("seed", ("the directory", lay_seed), ("config.yaml SEED", cfg_seed))
        weights = Path(cfg.weights).stem if cfg.weights else "random"
        ident = Identity(p.id, weights, lay_seed if lay_seed is not None else cfg_seed,
                         "random" if not cfg.weights else "")
    if clash:
        raise ParseError(f"{d}: the run's records disagree -- " + "; ".join(clash), _MIXED_FIX)
    protocol = PROTOCOLS[ident.protocol]
    ident.dataset = _dataset(protocol, ds or None, cfg, d)
    if cfg is not None:
        ident.modified = deviations(protocol, cfg)
        ident.max_iter = cfg.max_iter
        ident.batch = scaled_batch(cfg)
    if ident.variant.startswith(CUSTOM_PREFIX):   # trained from the user's own config file
        ident.modified = (f"custom config {ident.variant[len(CUSTOM_PREFIX):]}.yaml",) + ident.modified
    ident.sources = " + ".join(sources)
    return ident
