"""A private cache root for tests that reuses the real cache's downloads without being able to damage it.

The unpacked Debian packages (~1 GB, ~25k files) are hard-linked, not symlinked: whatever a test
writes lands in its own tree (the fetcher replaces files by rename, never in place), and the
developer's cache is never a target.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from infomin_det.data.debian import debian_dir


def private_cache(root: Path) -> Path:
    """``root`` as an ``INFOMIN_DET_CACHE`` holding hard links to the real cache's Debian packages."""
    real = debian_dir()           # the real cache: resolved before the caller redirects INFOMIN_DET_CACHE
    root.mkdir(parents=True, exist_ok=True)
    if real.is_dir():
        shutil.copytree(real, root / "debian", copy_function=os.link)
    return root
