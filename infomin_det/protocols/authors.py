"""The authors' own Detectron2 configs, as merged values, and how our leaves relate to them.

``transfer_configs/authors.json`` (written by ``tools/authors_configs.py`` from snapshots of
``HobbitLong/PyContrast`` and ``facebookresearch/moco``; never fetched at run time) holds, for every
leaf of ours that has a published counterpart, the authors' config merged over Detectron2's defaults:
``defaults`` (every key, recorded once) overridden by the leaf's ``values``. :func:`expected` is what
our default leaf must equal -- the published values, or, for the few protocols the authors published
no file for, the nearest published leaf with the keys the protocol defines changed (random init,
6x schedule), each value again taken from a published leaf. :data:`NOT_PINNED` is the one list of
keys by which our leaves may deliberately differ, with the reason. No detectron2 import at module
level (only :func:`merged` builds a config).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Mapping

from infomin_det.errors import UserError
from infomin_det.untrusted import read_json
from transfer_configs import ROOT as CONFIG_ROOT

AUTHORS_JSON = CONFIG_ROOT / "authors.json"

# The authors' placeholder for "your converted weights here" (their *_infomin / *_moco leaves).
WEIGHTS_PLACEHOLDER = "See Instructions"

NOT_PINNED: dict[str, str] = {
    "SOLVER.REFERENCE_WORLD_SIZE": (
        "runtime: the protocols assume 8 GPUs x 2 images (16 per batch); with 8 Detectron2's "
        "auto_scale_workers scales batch size, learning rate and schedule linearly to other GPU counts, "
        "and at 8 GPUs the run is the authors' (who set 0 and always ran 8)"),
    "MODEL.WEIGHTS": (
        f"only where the authors' value is their placeholder {WEIGHTS_PLACEHOLDER!r} (the ssl leaves): "
        "ours hold '' and `--weights` supplies the converted checkpoint; every supervised/random "
        "leaf's weights address is pinned"),
}


@dataclass(frozen=True)
class Source:
    """Where a leaf's expected values come from: ``repo`` at ``commit``, ``files`` leaf first."""

    repo: str
    commit: str
    files: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.repo}@{self.commit[:7]}: {' <- '.join(self.files)}"


@dataclass(frozen=True)
class Expected:
    """What our default leaf of a protocol x family must equal.

    ``source`` is the published leaf the values come from; ``changed`` the keys taken from ``donors``
    (other published leaves) where the authors published no file for this protocol x family.
    """

    values: dict[str, Any]
    source: Source
    changed: dict[str, Source]

    @property
    def published(self) -> bool:
        return not self.changed


@lru_cache(maxsize=1)
def _table() -> dict[str, Any]:
    data = read_json(AUTHORS_JSON, "authors' config table")
    if not isinstance(data, dict) or not {"sources", "defaults", "leaves"} <= set(data):
        raise UserError(f"{AUTHORS_JSON} is not the authors' config table (keys sources/defaults/leaves)",
                        "rebuild it with tools/authors_configs.py (see docs/protocols.md)")
    return data


def authors_leaf(pid: str, family: str) -> tuple[dict[str, Any], Source] | None:
    """The authors' merged values (every key) and their source, or None where they published none."""
    t = _table()
    entry = t["leaves"].get(f"{pid}.{family}")
    if entry is None:
        return None
    src = t["sources"][entry["source"]]
    return {**t["defaults"], **entry["values"]}, Source(src["repo"], src["commit"], tuple(entry["files"]))


def published() -> list[tuple[str, str]]:
    """Every (protocol, family) with a published counterpart."""
    return [tuple(k.rsplit(".", 1)) for k in _table()["leaves"]]  # type: ignore[misc]


# Protocols the authors published no file for, and what they follow instead: the keys a schedule or
# the random family defines, each with the published leaf its value is taken from.
_SCHEDULE_KEYS = ("SOLVER.STEPS", "SOLVER.MAX_ITER")
_SCHEDULE_DONOR = {"6x": ("coco/R50-FPN-6x", "supervised")}
_RANDOM_KEYS = ("MODEL.WEIGHTS",)
_RANDOM_DONOR = ("coco/R50-FPN-1x", "random")


def expected(pid: str, family: str) -> Expected:
    """What our default leaf of ``pid`` x ``family`` must equal, key by key (see module docstring)."""
    from infomin_det.protocols import get_protocol

    proto = get_protocol(pid)
    direct = authors_leaf(pid, family)
    if direct is not None:
        return Expected(direct[0], direct[1], {})
    changed: dict[str, tuple[str, str]] = {}
    base_pid, base_family = pid, family
    if family == "random":
        base_family = "supervised"
        changed.update(dict.fromkeys(_RANDOM_KEYS, _RANDOM_DONOR))
    if authors_leaf(base_pid, base_family) is None and proto.schedule in _SCHEDULE_DONOR:
        base_pid = pid.replace(f"-{proto.schedule}", "-1x")
        changed.update(dict.fromkeys(_SCHEDULE_KEYS, _SCHEDULE_DONOR[proto.schedule]))
    base = authors_leaf(base_pid, base_family)
    if base is None:
        raise UserError(f"no published leaf to derive {pid} ({family}) from", "extend authors.json")
    values = dict(base[0])
    sources: dict[str, Source] = {}
    for key, (dpid, dfam) in changed.items():
        donor = authors_leaf(dpid, dfam)
        assert donor is not None, (dpid, dfam)
        values[key], sources[key] = donor[0][key], donor[1]
    return Expected(values, base[1], sources)


def flatten(cfg: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"MODEL.RESNETS.DEPTH": 50, ...}`` for a (nested) config; tuples become lists (JSON values)."""
    out: dict[str, Any] = {}
    for k, v in cfg.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        else:
            out[key] = _plain(v)
    return out


def _plain(v: Any) -> Any:
    return [_plain(x) for x in v] if isinstance(v, (list, tuple)) else v


def deviations(ours: Mapping[str, Any], theirs: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``{key: (ours, theirs)}`` for every key whose values differ, less :data:`NOT_PINNED`."""
    out = {}
    for key in sorted(set(ours) | set(theirs)):
        a, b = ours.get(key, "<absent>"), theirs.get(key, "<absent>")
        if key == "MODEL.WEIGHTS":
            if b == WEIGHTS_PLACEHOLDER:
                continue
        elif key in NOT_PINNED:
            continue
        if a != b or type(a) is not type(b):
            out[key] = (a, b)
    return out


def merged(pid: str, family: str, variant: str = "") -> dict[str, Any]:
    """Our leaf (or variant) of ``pid`` x ``family`` merged over Detectron2's defaults, flattened."""
    from detectron2.config import get_cfg

    from infomin_det.protocols import config_path

    cfg = get_cfg()
    cfg.merge_from_file(str(config_path(pid, family, variant)))
    return flatten(cfg)
