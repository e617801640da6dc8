"""The weights/config cross-check: refuse a config that disagrees with what the weights require.

``weights_meta(weights)`` reads a weights' :class:`WeightsMeta` (converted ``.pkl``: its metadata;
``detectron2://`` / ``catalog://``: ``CATALOG``; ``""`` → None, random init). ``check_weights(cfg, meta, ...)``
compares ``meta.config_values()`` (+ ``norm_fused`` → a BN-family norm) with the merged config and raises ONE
:class:`UserError` listing every mismatch, unless the key is allowed (``--allow-mismatch KEY|all``).
No torch model is built here.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Iterable

from infomin_det.errors import UserError
from infomin_det.rundir import is_random_init
from infomin_det.weights_meta import CATALOG, WeightsMeta

NORM_KEY = "MODEL.RESNETS.NORM"
# BN-fused weights carry a per-channel scale and bias only (the statistics were folded in): any BN
# layer takes them -- FrozenBN as they are, (Sync)BN with statistics re-estimated from the batches
# while fine-tuning (the authors' X-152 protocol) -- but GN or no norm would not.
BN_NORMS = ("FrozenBN", "BN", "SyncBN", "naiveSyncBN", "naiveSyncBN_N", "nnSyncBN")


def weights_meta(weights: str) -> WeightsMeta | None:
    """Metadata of ``weights`` (None for random init or a file/URL without metadata).

    Raises UserError for a missing file or one Detectron2 would misread.
    """
    if is_random_init(weights):
        return None
    if weights.startswith(("detectron2://", "catalog://")):
        return CATALOG.get(weights)
    if "://" in weights:
        return None
    path = Path(weights)
    if path.exists() and not path.is_file():
        raise UserError(f"weights {weights} is not a regular file", "pass the converted .pkl file itself")
    if not path.is_file():
        raise UserError(f"weights file {weights} does not exist",
                        "check the path, or pass --weights random for random initialisation")
    st = path.stat()
    return _file_meta(str(path.resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=32)
def _file_meta(path: str, size: int, mtime_ns: int) -> WeightsMeta | None:
    """Read once per process and file version (``submit`` checks many runs of the same weights); only
    the metadata is read, not the tensors (a file converted before the metadata came first is read in full)."""
    from infomin_det.convert.d2pkl import read_d2_meta

    return read_d2_meta(path)


def cfg_value(cfg: Any, key: str) -> Any:
    """``cfg`` value at the dotted ``key`` (``MODEL.RESNETS.DEPTH``)."""
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def _same(a: Any, b: Any) -> bool:
    if isinstance(b, (list, tuple)):
        try:
            return len(a) == len(b) and all(abs(float(x) - float(y)) < 1e-3 for x, y in zip(a, b))
        except TypeError:
            return False
    if isinstance(b, bool) or isinstance(a, bool):
        return bool(a) == bool(b) and type(a) is type(b)
    return a == b


def _allowed(key: str, allow: set[str]) -> bool:
    return "all" in allow or key in allow or key.rsplit(".", 1)[-1] in allow


def _fmt(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(f"{float(x):g}" for x in v) + "]"
    return str(v)


def mismatches(cfg: Any, meta: WeightsMeta) -> list[tuple[str, Any, Any]]:
    """``[(key, config value, required value)]`` for every disagreement."""
    out = [(k, cfg_value(cfg, k), want) for k, want in meta.config_values().items() if not _same(cfg_value(cfg, k), want)]
    if meta.norm_fused and cfg_value(cfg, NORM_KEY) not in BN_NORMS:
        out.append((NORM_KEY, cfg_value(cfg, NORM_KEY), "FrozenBN"))
    return out


def check_weights(cfg: Any, weights: str, meta: WeightsMeta | None, allow: Iterable[str] = ()) -> list[str]:
    """Raise one UserError listing every mismatch not allowed; returns the accepted (allowed) ones."""
    allow = set(allow)
    if is_random_init(weights):
        return []
    if meta is None:
        if "all" in allow:
            return ["all (weights carry no metadata)"]
        raise UserError(f"weights {weights} carry no infomin-det metadata, so their architecture and input "
                        "convention cannot be checked against the config",
                        f"convert them with `infomin-det convert {weights} <out>.pkl`, or pass "
                        "--allow-mismatch all (with --family ssl|supervised)")
    bad = mismatches(cfg, meta)
    refused = [m for m in bad if not _allowed(m[0], allow)]
    if refused:
        lines = "; ".join(f"{k} is {_fmt(have)} in the config but the weights ({meta.arch.name}, "
                          f"{meta.source_format}) require {_fmt(want)}" for k, have, want in refused)
        overrides = " ".join(f"{k} {_fmt(want)!s}".replace(" [", " \"[").replace("]", "]\"")
                             if isinstance(want, (list, tuple)) else f"{k} {_fmt(want)}"
                             for k, want in ((k, w) for k, _, w in refused))
        keys = " ".join(f"--allow-mismatch {k}" for k, _, _ in refused)
        raise UserError(f"config disagrees with the weights {weights}: {lines}",
                        f"pass the overrides `{overrides}`, or accept the difference with `{keys}`")
    return [f"{k}: config {_fmt(have)}, weights {_fmt(want)}" for k, have, want in bad]
