"""Checkpoint layouts: where a checkpoint keeps its backbone, and which encoder to take.

A :class:`Layout` is one known release format (MoCo, DINO, SwAV, ... -- the table in docs/convert.md):
the path to the state dict inside the checkpoint (``container``), the prefix of the query/online
encoder's trunk, and the non-backbone key groups it is known to carry (momentum encoder, queue,
projection heads) which are dropped by name. ``LAYOUTS`` is the registry; :func:`select` runs every
recogniser, falls back to a generic search for a single ResNet trunk, and refuses ambiguity (and
says why nothing was found). ``--key``/``--prefix`` bypass recognition (:func:`from_override`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

import torch

from infomin_det.convert.files import show
from infomin_det.errors import UserError
from infomin_det.registry import Registry
from infomin_det.pretrain_format import PRETRAIN_FORMAT, PRETRAIN_FORMAT_VERSION

# Encoders we never take when searching generically: momentum/EMA/target copies.
_MOMENTUM = re.compile(r"(encoder_k|momentum|_ema\b|ema_|target|teacher)")
_STEM, _TRUNK = "conv1.weight", "layer1.0.conv1.weight"
_IN_BLOCK = re.compile(r"layer\d\.\d+\.$")  # a block's own conv1, not a stem


@dataclass(frozen=True)
class Candidate:
    """A backbone found in a checkpoint: where it is and why it was chosen.

    container: key path from the checkpoint root to the state dict (``()`` = the file is the state
    dict); prefix: prefix of the trunk's keys inside it; drops: ``(key prefix, group)`` for the other
    keys of the container that are known and dropped; encoder: which encoder, in words.
    """

    source_format: str
    container: tuple[str, ...]
    prefix: str
    encoder: str
    drops: tuple[tuple[str, str], ...] = ()
    arch_hint: Mapping[str, int] | None = None  # self-describing checkpoints record their arch
    drop_outside: bool = False  # --key/--prefix given: keys outside the prefix and non-tensor entries are dropped
    alias: str = ""  # another prefix holding the *same* trunk (mmselfsup encoder_q.0.): checked equal, dropped

    @property
    def where(self) -> str:
        path = "".join(f"[{k!r}]" for k in self.container) or "<file>"
        return f"{path} prefix {self.prefix!r}"


@dataclass(frozen=True)
class Layout:
    """One known checkpoint format (see module docstring)."""

    name: str
    containers: tuple[tuple[str, ...], ...]
    prefixes: tuple[str, ...]
    encoder: str
    drops: tuple[tuple[str, str], ...] = ()
    requires_any: tuple[str, ...] = ()  # key prefixes, one of which the container must hold
    ema: bool = False  # only taken with --ema
    alias: str = ""  # see Candidate.alias

    def recognise(self, ckpt: Any, ema: bool) -> Candidate | None:
        if self.ema != ema:
            return None
        for path in self.containers:
            sd = resolve(ckpt, path)
            if not is_state_dict(sd):
                continue
            if self.requires_any and not any(k.startswith(self.requires_any) for k in sd):
                continue
            for prefix in self.prefixes:
                if prefix + _STEM in sd or prefix + _TRUNK in sd:
                    return Candidate(self.name, path, prefix, self.encoder, self.drops, alias=self.alias)
        return None


def _m(*prefixes: str) -> tuple[str, ...]:
    """Each prefix with and without DataParallel's ``module.``."""
    return tuple(p for x in prefixes for p in ("module." + x, x))


def _drops(group: str, *prefixes: str) -> tuple[tuple[str, str], ...]:
    return tuple((p, group) for p in _m(*prefixes))


LAYOUTS: Registry[Layout] = Registry("checkpoint layout")   # searched in this order (docs/extending.md)
for _layout in (
    Layout("torchvision/timm", ((),), ("",), "the whole file (a plain ResNet state dict)"),
    Layout("moco-v1/v2", (("state_dict",),), _m("encoder_q."), "query encoder encoder_q (not encoder_k)",
           _drops("momentum encoder", "encoder_k.") + _drops("queue", "queue")),
    Layout("moco-v3", (("state_dict",),), _m("base_encoder."), "base encoder (not momentum_encoder)",
           _drops("momentum encoder", "momentum_encoder.") + _drops("predictor", "predictor.")),
    Layout("pycontrast", (("model",),), _m("encoder."), "online encoder in 'model' (EMA copy: --ema)",
           _drops("head", "head.") + _drops("jigsaw head", "head_jig.")),
    Layout("pycontrast-ema", (("model_ema",),), _m("encoder."), "EMA encoder in 'model_ema' (--ema)",
           _drops("head", "head.") + _drops("jigsaw head", "head_jig."), ema=True),
    Layout("lightning/solo-learn", (("state_dict",),), ("backbone.",), "online backbone (not momentum_backbone)",
           _drops("momentum encoder", "momentum_backbone.") + _drops("projector", "projector.", "momentum_projector.")
           + _drops("predictor", "predictor.") + _drops("online classifier", "classifier."),
           requires_any=("momentum_backbone.", "projector.", "classifier.")),
    Layout("mmselfsup/densecl", (("state_dict",),), ("backbone.",), "backbone (online encoder)",
           _drops("neck", "neck.") + _drops("head", "head.") + _drops("momentum encoder", "encoder_k.")
           + _drops("encoder_q neck", "encoder_q.1.") + _drops("queue", "queue"),
           requires_any=("neck.", "head."), alias="encoder_q.0."),
    Layout("dino", (("teacher",),), _m("backbone."), "teacher backbone (DINO evaluates the teacher)",
           _drops("head", "head.")),
    Layout("swav", ((),), ("module.",), "the trunk under 'module.'",
           (("module.projection_head.", "projection head"), ("module.prototypes.", "prototypes"))),
    Layout("vissl", (("classy_state_dict", "base_model", "model", "trunk"), ("model_state_dict",)),
           ("_feature_blocks.",), "the trunk (heads live outside it)", (("heads.", "heads"),)),
):
    LAYOUTS.register(_layout.name, _layout)


def resolve(ckpt: Any, path: tuple[str, ...]) -> Any:
    """``ckpt[path[0]][path[1]]...`` or None."""
    obj = ckpt
    for k in path:
        if not isinstance(obj, Mapping) or k not in obj:
            return None
        obj = obj[k]
    return obj


def is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def _pretrain(ckpt: Any) -> Candidate | None:
    """This project's own self-describing pretrain checkpoint."""
    if not isinstance(ckpt, Mapping) or ckpt.get("format") != PRETRAIN_FORMAT:
        return None
    version = ckpt.get("format_version")
    if version != PRETRAIN_FORMAT_VERSION:
        raise UserError(f"pretrain checkpoint format_version {version!r}; this converter reads version "
                        f"{PRETRAIN_FORMAT_VERSION}", "convert it with the infomin-det version that wrote it")
    if not is_state_dict(ckpt.get("backbone")) or not isinstance(ckpt.get("arch"), Mapping):
        raise UserError("pretrain checkpoint lacks a 'backbone' state dict or its 'arch' record",
                        "the file is damaged or not written by infomin-det pretrain; re-export it")
    return Candidate(PRETRAIN_FORMAT, ("backbone",), "", "query encoder (recorded by pretrain)",
                     arch_hint=dict(ckpt["arch"]))


def _roots(sd: Mapping[str, Any]) -> dict[str, set[str]]:
    """prefix -> which anchors ('stem', 'trunk') of a ResNet trunk sit under it."""
    roots: dict[str, set[str]] = {}
    for k in sd:
        for anchor, name in ((_STEM, "stem"), (_TRUNK, "trunk")):
            root = k[: -len(anchor)]
            if k.endswith(anchor) and (not root or root.endswith(".")) and not _IN_BLOCK.search(root):
                roots.setdefault(root, set()).add(name)
    return roots


def _containers(ckpt: Any, depth: int = 3, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Mapping]]:
    """Every state dict in the checkpoint, up to ``depth`` levels of nesting."""
    if is_state_dict(ckpt):
        return [(path, ckpt)]
    if not isinstance(ckpt, Mapping) or depth == 0:
        return []
    return [c for k, v in ckpt.items() if isinstance(k, str) for c in _containers(v, depth - 1, path + (k,))]


def _generic(ckpt: Any) -> list[Candidate]:
    """ResNet trunks anywhere in the checkpoint, momentum copies excluded."""
    found = []
    for path, sd in _containers(ckpt):
        for prefix in _roots(sd):
            if not _MOMENTUM.search(".".join(path) + "." + prefix):
                found.append(Candidate("generic", path, prefix, "the only ResNet trunk found"))
    return found


def _check_prefix_consistency(ckpt: Any) -> None:
    """A stem under one prefix and the stages under another is a prefix bug, never a backbone."""
    for path, sd in _containers(ckpt):
        roots = _roots(sd)
        stem_only = [p for p, a in roots.items() if a == {"stem"}]
        trunk_only = [p for p, a in roots.items() if a == {"trunk"}]
        if stem_only and trunk_only:
            where = "".join(f"[{k!r}]" for k in path) or "the file"
            raise UserError(f"{where}: the stem is under prefix {stem_only[0]!r} but layer1 under "
                            f"{trunk_only[0]!r} -- keys carry the prefix inconsistently",
                            "fix the checkpoint's key names; a backbone split across prefixes is not converted")


def select(ckpt: Any, ema: bool = False) -> Candidate:
    """The one backbone to convert, by layout recognition (then a generic search)."""
    hit = _pretrain(ckpt)
    if hit is not None:
        if ema:
            raise UserError("--ema: an infomin-det pretrain checkpoint keeps the query encoder only (no EMA model)",
                            "drop --ema")
        return hit
    _check_prefix_consistency(ckpt)
    found: dict[tuple, Candidate] = {}
    for layout in LAYOUTS.values():
        c = layout.recognise(ckpt, ema)
        if c is not None:
            found.setdefault((c.container, c.prefix), c)
    if ema and not found:
        raise UserError("--ema: the checkpoint has no EMA model ('model_ema')",
                        "drop --ema, or pass --key/--prefix to the EMA weights")
    candidates = list(found.values()) or _generic(ckpt)
    if not candidates:
        raise _nothing_found(ckpt)
    if len(candidates) > 1:
        listing = "; ".join(f"{c.where} ({c.source_format})" for c in candidates)
        raise UserError(f"{len(candidates)} candidate encoders and nothing decides between them: {listing}",
                        "choose one with --key (dotted path to the state dict) and --prefix")
    return candidates[0]


def _mappings(obj: Any, depth: int = 3, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Mapping]]:
    """Every mapping in the checkpoint (itself included), up to ``depth`` levels of nesting."""
    if not isinstance(obj, Mapping):
        return []
    out = [(path, obj)]
    if depth:
        out += [m for k, v in obj.items() if isinstance(k, str) for m in _mappings(v, depth - 1, path + (k,))]
    return out


def _where(path: tuple[str, ...]) -> str:
    return "".join(f"[{k!r}]" for k in path) or "the file"


def _arg(value: str) -> str:
    """A command-line argument as the user would type it ('' for empty)."""
    return show(value) if value else "''"


def _entries(m: Mapping, n: int = 8) -> str:
    keys = list(m)
    return ", ".join(show(k) for k in keys[:n]) + (f" (+{len(keys) - n} more)" if len(keys) > n else "")


def _nothing_found(ckpt: Any) -> UserError:
    """Why no ResNet trunk was found: an empty checkpoint, a trunk among non-tensor entries, or none."""
    if not isinstance(ckpt, Mapping):
        return UserError(f"the checkpoint holds a {type(ckpt).__name__}, not a dict of weights",
                         "pass a checkpoint whose top level is a dict (a state dict, or a dict holding one)")
    if not ckpt:
        return UserError("the checkpoint is an empty dict: it holds no weights", "copy or save the checkpoint again")
    for path, m in _mappings(ckpt):
        named = {k: v for k, v in m.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
        roots = _roots(named)
        if roots and not is_state_dict(m):
            odd = [k for k, v in m.items() if not (isinstance(k, str) and isinstance(v, torch.Tensor))]
            shown = ", ".join(f"{show(k)} ({type(m[k]).__name__})" if isinstance(k, str)
                              else f"{k!r} (a {type(k).__name__} key)" for k in odd[:3])
            return UserError(f"{_where(path)} holds a ResNet trunk but also {len(odd)} entries that are not "
                             f"name -> tensor: {shown}",
                             f"pass --key {_arg('.'.join(path))} --prefix {_arg(next(iter(roots)))} "
                             "(non-tensor entries and keys outside the prefix are then dropped)")
    empty = [path for path, m in _mappings(ckpt) if not m]
    if empty:
        return UserError(f"{_where(empty[0])} is an empty dict and no ResNet trunk is found elsewhere "
                         f"(top-level entries: {_entries(ckpt)})", "the checkpoint holds no weights; save it again")
    return UserError(f"no ResNet trunk (keys ending in conv1.weight / layer1.0.conv1.weight) found; "
                     f"top-level entries: {_entries(ckpt)}",
                     "pass --key to the state dict and --prefix to the trunk's keys")


def _walk(ckpt: Any, key: str) -> Any:
    """The object at dotted ``key`` ('' = the file), or UserError naming the first step that fails."""
    obj, done = ckpt, []
    for part in key.split(".") if key else []:
        if not isinstance(obj, Mapping):
            raise UserError(f"--key {_arg(key)}: {_where(tuple(done))} is a {type(obj).__name__}, not a dict",
                            "pass --key as a dotted path through nested dicts to the state dict")
        if part not in obj:
            flat = any(isinstance(k, str) and k.startswith(part + ".") for k in obj)
            hint = ("; dots inside key names belong in --prefix, not --key" if flat
                    else "")
            raise UserError(f"--key {_arg(key)}: {_where(tuple(done))} has no entry {part!r} "
                            f"(entries: {_entries(obj)}){hint}",
                            "pass --key as a dotted path through nested dicts to the state dict, e.g. --key state_dict")
        obj = obj[part]
        done.append(part)
    return obj


def from_override(ckpt: Any, key: str | None, prefix: str | None) -> Candidate:
    """The candidate named by ``--key`` (dotted path, '' = the file) and ``--prefix``.

    Entries outside the prefix, and entries that are not name -> tensor, are dropped by
    :func:`~infomin_det.convert.converter.extract` (and reported as such).
    """
    key = key or ""
    path = tuple(key.split(".")) if key else ()
    sd = _walk(ckpt, key)
    if not isinstance(sd, Mapping):
        raise UserError(f"--key {_arg(key)} leads to a {type(sd).__name__}, not a state dict",
                        "pass --key as a dotted path to the dict of tensors, e.g. --key state_dict")
    named = {k: v for k, v in sd.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not named:
        raise UserError(f"--key {_arg(key)} leads to a dict without tensors (entries: {_entries(sd)})",
                        "pass --key as a dotted path to the dict of tensors, e.g. --key state_dict")
    roots = list(_roots(named))
    listing = ", ".join(repr(r) for r in roots[:6]) or "none"
    if prefix is None:
        if len(roots) != 1:
            raise UserError(f"--key {_arg(key)}: {len(roots)} ResNet trunks, under prefixes {listing}",
                            "pass --prefix too")
        prefix = roots[0]
    if prefix and not prefix.endswith("."):
        near = [r for r in roots if r.startswith(prefix)]
        raise UserError(f"--prefix {prefix!r} does not end at a '.'; a prefix is whole name parts",
                        f"pass --prefix {near[0]!r}" if len(near) == 1 else f"trunk prefixes here: {listing}")
    if not any(k.startswith(prefix) for k in named):
        raise UserError(f"--prefix {prefix!r} matches no tensor key in {_arg(key) if key else 'the file'} "
                        f"(first keys: {_entries(named, 3)})", f"trunk prefixes here: {listing}")
    encoder = "chosen with --key/--prefix"
    if _MOMENTUM.search(key + "." + prefix):
        encoder += " (by its name a momentum/EMA/target/teacher copy)"
    return Candidate("custom", path, prefix, encoder, drop_outside=True)
