"""Real photographs shipped in Debian packages: background photos and alpha-matted photo cut-outs.

    photos()           -> [Photo]   real photos (JPEG/PNG) from wallpaper packages and opencv-doc
    photos(scenes_only=True)        only scenes with no salient object of a cut-out class
                                    (usable as detection backgrounds without unlabelled objects)
    cutouts()          -> [Cutout]  tuxpaint photo stamps: RGBA PNGs with exact alpha + category

The wallpaper packages also hold vector art, renders and gradients; only the files listed in
``PHOTO_FILES`` (checked by eye: camera photographs) are used. Tux Paint's cartoon stamps and
drawings are left out the same way (``CUTOUT_CATEGORIES`` names photo directories, ``_NOT_PHOTOS``
the drawn or duplicated files inside them).

Both helpers accept a directory instead of the packages (``photo_dir`` / ``cutout_dir``) for machines
where the packages cannot be had: any JPEG/PNG under ``photo_dir``; RGBA PNGs under
``cutout_dir/<category>/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from infomin_det.data.debian import Package, fetch
from infomin_det.errors import UserError

CUTOUT_PACKAGE = "tuxpaint-stamps-default"
STAMPS = "usr/share/tuxpaint/stamps"

# package -> {path inside the package: is_scene}. is_scene False = object-centric photo (a fruit, a
# flower, an animal fills it): fine for pretraining, not as a detection background.
PHOTO_FILES: dict[str, dict[str, bool]] = {
    "lomiri-wallpapers-16.04": {f"usr/share/backgrounds/{n}.jpg": s for n, s in [
        ("Bridge_by_Sander_Klootwijk", True), ("Dragonfly_by_Bolly", False),
        ("Picture_0B_by_freespace", False), ("Picture_1A_by_freespace", True),
        ("Wine_by_Jakkub_Mede", True), ("aitzgorri_by_Aitzol_Berasategi", True),
        ("free_by_Peter_Nerlich", True), ("friends_by_Aitzol_Berasategi", False),
        ("life_by_Aitzol_Berasategi", True), ("picosdeeuropa_by_Aitzol_Berasategi", True),
        ("seeding_by_Clements_Engelhardt", False), ("sunset_by_Aitzol_Berasategi", True)]},
    "mate-backgrounds": {f"usr/share/backgrounds/mate/nature/{n}.jpg": s for n, s in [
        ("Aqua", True), ("Blinds", True), ("Dune", True), ("FreshFlower", False),
        ("Garden", False), ("GreenMeadow", True), ("LadyBird", False), ("RainDrops", True),
        ("Storm", True), ("TwoWings", False), ("Wood", True), ("YellowFlower", False)]},
    "plasma-workspace-wallpapers": {f"usr/share/wallpapers/{n}/contents/images/{f}": s for n, f, s in [
        ("BytheWater", "1920x1080.jpg", True), ("ColdRipple", "1920x1080.jpg", True),
        ("ColorfulCups", "2560x1600.jpg", True), ("DarkestHour", "1920x1080.jpg", True),
        ("EveningGlow", "1920x1080.jpg", True), ("FallenLeaf", "1920x1080.jpg", True),
        ("Kite", "1920x1080.jpg", True), ("OneStandsOut", "1920x1080.jpg", True),
        ("Path", "1920x1080.jpg", True), ("Volna", "5120x2880.jpg", True),
        ("summer_1am", "1920x1080.jpg", True)]},
    "opencv-doc": {f"usr/share/doc/opencv-doc/examples/data/{n}": s for n, s in [
        ("aero1.jpg", True), ("aloeL.jpg", True), ("basketball1.png", True), ("board.jpg", True),
        ("box_in_scene.png", True), ("building.jpg", True), ("graf1.png", True), ("home.jpg", True),
        ("left01.jpg", True), ("leuvenA.jpg", True), ("messi5.jpg", True),
        ("rubberwhale1.png", True), ("stuff.jpg", True),
        ("apple.jpg", False), ("baboon.jpg", False), ("butterfly.jpg", False),
        ("fruits.jpg", False), ("orange.jpg", False), ("squirrel_cls.jpg", False)]},
}

# category -> stamp directories (relative to STAMPS; recursive; "cartoon" sub-directories skipped)
CUTOUT_CATEGORIES: dict[str, tuple[str, ...]] = {
    "bird": ("animals/birds",),
    "mammal": ("animals/mammals",),
    "fish": ("animals/fish",),
    "insect": ("animals/insects",),
    "fruit": ("food/fruit",),
    "vegetable": ("food/vegetables",),
    "flower": ("plants/flowers",),
    "tool": ("household/tools",),
}
# drawn (not photographed), not of the category, or a mirrored duplicate
_NOT_PHOTOS = {"animals/mammals/bears/toys/edward_bear.png", "animals/mammals/hedgehog.png",
               "animals/fish/lobster.png", "animals/fish/shrimp.png",
               "animals/insects/Brown_slug.png", "animals/insects/Woodlouse.png",
               "plants/flowers/plastic"}

_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}


@dataclass(frozen=True)
class Photo:
    """A real photograph. ``source``: Debian package name, or ``dir:<path>`` for a user folder."""

    path: Path
    source: str
    is_scene: bool


@dataclass(frozen=True)
class Cutout:
    """A photo cut-out: an RGBA PNG whose alpha channel is the object's exact mask."""

    path: Path
    category: str
    source: str


def photo_packages(scenes_only: bool = False) -> list[str]:
    return [p for p, files in PHOTO_FILES.items() if not scenes_only or any(files.values())]


def photos(scenes_only: bool = False, photo_dir: str | Path | None = None,
           packages: list[str] | None = None) -> list[Photo]:
    """Real photos, sorted by path. Fetches (and caches) the packages on first use.

    photo_dir: use every JPEG/PNG under this folder instead (all counted as scenes).
    packages: restrict to these packages (default: all of ``PHOTO_FILES``).
    """
    if photo_dir is not None:
        d = Path(photo_dir)
        found = sorted(p for p in d.rglob("*") if p.suffix.lower() in _IMAGE_SUFFIXES)
        if not found:
            raise UserError(f"no JPEG/PNG photos under {d}",
                            "point photo_dir at a folder holding .jpg/.png photographs")
        return [Photo(p, f"dir:{d}", True) for p in found]
    out: list[Photo] = []
    for name in packages or photo_packages(scenes_only):
        pkg: Package = fetch(name)
        for rel, is_scene in sorted(PHOTO_FILES[name].items()):
            if scenes_only and not is_scene:
                continue
            path = pkg.root / rel
            if not path.is_file():
                raise UserError(f"{name} {pkg.version} lacks {rel}",
                                f"use Debian 12's {name} (delete {pkg.root.parent} to refetch) "
                                "or pass photo_dir=DIR")
            out.append(Photo(path, name, is_scene))
    return out


def cutouts(cutout_dir: str | Path | None = None) -> list[Cutout]:
    """Photo cut-outs with their category, sorted by (category, path).

    cutout_dir: use ``<cutout_dir>/<category>/**/*.png`` (RGBA) instead of Tux Paint's stamps.
    """
    if cutout_dir is not None:
        d = Path(cutout_dir)
        out = [Cutout(p, c.name, f"dir:{d}") for c in sorted(d.iterdir()) if c.is_dir()
               for p in sorted(c.rglob("*.png"))]
        if not out:
            raise UserError(f"no <category>/*.png cut-outs under {d}",
                            "put RGBA PNGs (alpha = object mask) into one sub-folder per category")
        return out
    pkg = fetch(CUTOUT_PACKAGE)
    stamps = pkg.root / STAMPS
    out = []
    for category, dirs in CUTOUT_CATEGORIES.items():
        for rel_dir in dirs:
            for p in sorted((stamps / rel_dir).rglob("*.png")):
                rel = p.relative_to(stamps).as_posix()
                if ("cartoon" in p.relative_to(stamps).parts or rel in _NOT_PHOTOS
                        or any(rel.startswith(x + "/") for x in _NOT_PHOTOS)):
                    continue
                out.append(Cutout(p, category, CUTOUT_PACKAGE))
    if not out:
        raise UserError(f"{CUTOUT_PACKAGE} {pkg.version} holds none of the expected stamps",
                        f"use Debian 12's {CUTOUT_PACKAGE} or pass cutout_dir=DIR")
    return out
