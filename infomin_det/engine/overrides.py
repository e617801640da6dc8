"""The trailing ``KEY VALUE`` overrides of ``train`` / ``submit``, checked and merged into a config.

:func:`apply_overrides` refuses, with a :class:`UserError` naming the key and value, what yacs would
turn into a traceback or silently accept: an odd number of items, a key given twice, an option
(``--seed``) that argparse left among the overrides, an unknown key (with the nearest valid ones), a
group of keys instead of a value, a value of the wrong type (``None`` for an int, a list for a
scalar, a string in a list of numbers, ``1`` for a bool), and the keys the toolkit sets itself
(:data:`TOOLKIT_KEYS`; with ``--dataset``, also :data:`DATASET_KEYS`). Values are decoded exactly as
yacs decodes them (Python literals, else the string itself); an int for a float key becomes that
float. The merge itself is yacs' ``CfgNode.merge_from_list``.
"""

from __future__ import annotations

import difflib
import math
from typing import Any, Iterable, Iterator, Mapping

from yacs.config import CfgNode

from infomin_det.engine.spec import TOOLKIT_KEYS
from infomin_det.errors import UserError

#: keys set from a ``--dataset coco-json:...`` set (its registered splits); the class count and mask
#: format it sets may be overridden only consistently (checked by ``config.register_dataset``)
DATASET_KEYS: Mapping[str, str] = {
    "DATASETS.TRAIN": "--dataset",
    "DATASETS.TEST": "--dataset",
}


def config_keys(cfg: CfgNode, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Every (full key, value) of ``cfg``, groups included (a group's value is its CfgNode)."""
    for k, v in cfg.items():
        yield prefix + k, v
        if isinstance(v, CfgNode):
            yield from config_keys(v, f"{prefix}{k}.")


def _kind(v: Any) -> str:
    """'an int', 'a tuple of ints', 'a list of lists of floats', ..."""
    kind = {bool: "a bool (True/False)", int: "an int", float: "a float", str: "a string", type(None): "None",
            list: "a list", tuple: "a tuple", dict: "a dict"}.get(type(v), type(v).__name__)
    if isinstance(v, (list, tuple)) and v and len({_kind(e) for e in v}) == 1:
        first, *rest = _kind(v[0]).replace(" (True/False)", "").split(" ")[1:]
        kind += " of " + " ".join([first + "s", *rest])
    return kind


def _example(v: Any) -> str:
    if isinstance(v, (list, tuple)) and len(v) == 1:
        return repr(tuple(v)) if isinstance(v, tuple) else repr(list(v))
    return repr(v) if not isinstance(v, str) else v or '""'


def _conforms(new: Any, old: Any) -> bool:
    """``new`` may replace ``old``: same type (an int for a float; list <-> tuple as yacs casts), and in
    a sequence every element conforms to the old elements when those are all of one kind."""
    if old is None:
        return True
    if isinstance(old, bool) or isinstance(new, bool):
        return type(new) is type(old)
    if type(old) is float:
        return type(new) in (int, float) and (type(new) is int or not math.isnan(new))
    if isinstance(old, (list, tuple)):
        if not isinstance(new, (list, tuple)):
            return False
        protos = {_kind(o) for o in old}
        if len(protos) != 1:
            return True
        return all(_conforms(n, old[0]) for n in new)
    return type(new) is type(old)


def _fix_for(key: str, old: Any) -> str:
    if isinstance(old, bool):
        return f"write {key} True or {key} False"
    if isinstance(old, (list, tuple)):
        return f"write a {type(old).__name__} in Python syntax, quoted for the shell, e.g. {key} \"{_example(old)}\""
    return f"give {_kind(old)}, e.g. {key} {_example(old)}"


def _pairs(opts: Iterable[Any]) -> list[tuple[Any, Any]]:
    items = list(opts)
    for i in range(0, len(items), 2):
        k = items[i]
        if isinstance(k, str) and k.startswith("-"):
            raise UserError(f"option {k!r} comes after the KEY VALUE overrides, so it was taken as an override",
                            "put every --option before the overrides (the overrides go last, optionally after --)")
    if len(items) % 2:
        given = "1 item was" if len(items) == 1 else f"{len(items)} items were"
        raise UserError(f"the overrides must be KEY VALUE pairs, but {given} given: {items[-1]!r} has no value",
                        "give a value after every key (quote values with spaces)")
    return list(zip(items[0::2], items[1::2]))


def apply_overrides(cfg: CfgNode, opts: Iterable[Any], custom_dataset: bool = False) -> None:
    """Check every ``KEY VALUE`` pair of ``opts`` against ``cfg`` (the merged protocol config), then
    merge them all (nothing is merged if one is refused). ``custom_dataset``: a ``--dataset`` was given,
    so :data:`DATASET_KEYS` are the toolkit's too."""
    reserved = {**TOOLKIT_KEYS, **(DATASET_KEYS if custom_dataset else {})}
    keys = dict(config_keys(cfg))
    leaves = [k for k, v in keys.items() if not isinstance(v, CfgNode)]
    merged: list[Any] = []
    seen: set[str] = set()
    for key, raw in _pairs(opts):
        if not isinstance(key, str):
            raise UserError(f"override key {key!r} is not a string",
                            "keys are dotted config names like SOLVER.MAX_ITER")
        if key in seen:
            raise UserError(f"override {key} is given twice", "give each key once")
        seen.add(key)
        if key in reserved:
            raise UserError(f"override {key} is set by the toolkit", f"use {reserved[key]} instead")
        if key not in keys:
            near = difflib.get_close_matches(key.upper(), leaves, n=3, cutoff=0.6)
            hint = f"did you mean {' or '.join(near)}?" if near else "no similar key exists"
            raise UserError(f"override {key} {raw!r}: no such config key ({hint})",
                            "use a Detectron2 config key (see config.yaml of a run, or "
                            "detectron2/config/defaults.py)" if not near else f"write {near[0]}")
        old = keys[key]
        if isinstance(old, CfgNode):
            raise UserError(f"override {key} is a group of keys, not a value",
                            f"override its keys one by one, e.g. {key}.{next(iter(old), '...')}")
        value = CfgNode._decode_cfg_value(raw)
        if not _conforms(value, old):
            got = "None" if value is None else f"{_kind(value)} {value!r}"
            raise UserError(f"override {key} {raw!r}: expected {_kind(old)} (the config has {old!r}), got {got}",
                            _fix_for(key, old))
        merged += [key, float(value) if type(old) is float and type(value) is int else raw]
    cfg.merge_from_list(merged)
