"""Debian packages as an offline data source: fetch by name, unpack into a cache, record provenance.

    fetch("tuxpaint-stamps-default") -> Package(name, version, root, licences, deb_sha256, ...)

A package is downloaded with ``apt-get download`` (no system install, no root needed for the
unpack), unpacked with ``dpkg-deb -x`` and described by a ``manifest.json``:

    <cache>/debian/<name>/manifest.json     name, version, deb file + sha256, licences, copyright
    <cache>/debian/<name>/<name>_<ver>_<arch>.deb
    <cache>/debian/<name>/root/usr/...      the unpacked package tree

``<cache>`` is :func:`infomin_det.cache.cache_dir` (``$INFOMIN_DET_CACHE`` or ``~/.cache/infomin-det``).
The entry is built in a temporary directory and renamed into place, so a present ``manifest.json``
means a complete entry and is reused as is. A ``.deb`` copied by hand into ``<cache>/debian/`` is
used instead of downloading (for machines without apt or without access to a Debian mirror).
Concurrent fetches of one package (several test processes) are serialised with a file lock.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from infomin_det.atomic import file_lock, write_text_atomic
from infomin_det.cache import cache_dir
from infomin_det.errors import UserError
from infomin_det.filehash import sha256_file

MANIFEST = "manifest.json"


def debian_dir() -> Path:
    """Where fetched packages live (and where a hand-copied ``.deb`` is picked up)."""
    d = cache_dir() / "debian"
    d.mkdir(parents=True, exist_ok=True)
    return d


@dataclass(frozen=True)
class Package:
    """One unpacked Debian package. ``root`` is the unpacked filesystem tree (``root/usr/...``).

    licences: the distinct ``License:`` values of the package's machine-readable copyright file
    (package level; per-file detail is in the copyright file itself, path ``copyright``).
    """

    name: str
    version: str
    deb_file: str
    deb_sha256: str
    licences: tuple[str, ...]
    copyright: str
    root: Path

    def to_dict(self) -> dict:
        d = asdict(self)
        d["root"] = str(self.root)
        d["licences"] = list(self.licences)
        return d


def licences_of(copyright_file: Path) -> tuple[str, ...]:
    """Distinct ``License:`` short names of a DEP-5 copyright file, in first-seen order."""
    seen: dict[str, None] = {}
    if copyright_file.is_file():
        for line in copyright_file.read_text(errors="replace").splitlines():
            if line.startswith("License:"):
                value = line.split(":", 1)[1].strip()
                if value:
                    seen.setdefault(value, None)
    return tuple(seen)


def _unavailable(name: str, why: str) -> UserError:
    return UserError(
        f"Debian package {name!r} cannot be had: {why}",
        f"copy {name}_*.deb (from any Debian 12 mirror) into {debian_dir()}/ and rerun, "
        "or use folders of your own photos (photos(photo_dir=DIR) / cutouts(cutout_dir=DIR), docs/data.md)")


def _run(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)


def _download(name: str, into: Path) -> Path:
    """``apt-get download name`` into ``into``; one ``apt-get update`` if the lists lack it."""
    if shutil.which("apt-get") is None:
        raise _unavailable(name, "apt-get is not installed on this machine")
    tried_update = False
    while True:
        r = _run(["apt-get", "download", "-q", name], cwd=into)
        debs = sorted(into.glob(f"{name}_*.deb"))
        if r.returncode == 0 and debs:
            return debs[0]
        if tried_update:
            last = (r.stderr.strip().splitlines() or ["apt-get download failed"])[-1]
            raise _unavailable(name, last)
        tried_update = True
        u = _run(["apt-get", "update", "-q"])
        if u.returncode != 0:
            last = (u.stderr.strip().splitlines() or ["apt-get update failed"])[-1]
            raise _unavailable(name, f"apt-get update failed ({last})")


def _dpkg_field(deb: Path, field: str) -> str:
    r = _run(["dpkg-deb", "-f", str(deb), field])
    if r.returncode != 0:
        raise UserError(f"{deb} is not a readable Debian package ({r.stderr.strip()})",
                        "delete it and rerun to download it again")
    return r.stdout.strip()


def read_manifest(name: str) -> Package | None:
    """The cached entry of ``name``, or None when it was never (completely) fetched."""
    entry = debian_dir() / name
    path = entry / MANIFEST
    if not path.is_file():
        return None
    d = json.loads(path.read_text())
    return Package(name=d["name"], version=d["version"], deb_file=d["deb_file"],
                   deb_sha256=d["deb_sha256"], licences=tuple(d["licences"]),
                   copyright=d["copyright"], root=entry / "root")


def fetch(name: str, progress: bool = True) -> Package:
    """Return the unpacked package ``name``, downloading and unpacking it on first use.

    Raises :class:`UserError` (with what to do) when it can be neither found in the cache, nor
    downloaded, nor unpacked.
    """
    cached = read_manifest(name)
    if cached is not None:
        return cached
    if shutil.which("dpkg-deb") is None:
        raise _unavailable(name, "dpkg-deb is not installed (package 'dpkg')")
    with file_lock(debian_dir() / f".{name}.lock"):
        cached = read_manifest(name)  # another process may have finished it meanwhile
        if cached is not None:
            return cached
        base = debian_dir()
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=base))
        try:
            hand_copied = sorted(base.glob(f"{name}_*.deb"))
            if hand_copied:
                deb = tmp / hand_copied[-1].name
                shutil.copy2(hand_copied[-1], deb)
            else:
                if progress:
                    print(f"[data] apt-get download {name}", flush=True)
                deb = _download(name, tmp)
            if _dpkg_field(deb, "Package") != name:
                raise UserError(f"{deb.name} does not hold package {name!r}",
                                f"remove it from {base} and rerun")
            version = _dpkg_field(deb, "Version")
            if progress:
                print(f"[data] unpack {deb.name} ({deb.stat().st_size / 1e6:.0f} MB)", flush=True)
            r = _run(["dpkg-deb", "-x", str(deb), str(tmp / "root")])
            if r.returncode != 0:
                raise _unavailable(name, f"dpkg-deb -x failed ({r.stderr.strip()})")
            copyright_rel = f"usr/share/doc/{name}/copyright"
            manifest = {
                "name": name,
                "version": version,
                "deb_file": deb.name,
                "deb_sha256": sha256_file(deb),
                "licences": list(licences_of(tmp / "root" / copyright_rel)),
                "copyright": copyright_rel,
                "source": "hand-copied .deb" if hand_copied else "apt-get download",
            }
            write_text_atomic(tmp / MANIFEST, json.dumps(manifest, indent=2) + "\n")
            final = base / name
            if final.exists():  # an incomplete leftover (no manifest): replace it
                shutil.rmtree(final)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    pkg = read_manifest(name)
    assert pkg is not None
    return pkg
