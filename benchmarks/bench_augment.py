"""InfoMin augmentation throughput per CPU core: the fast pipeline vs PyContrast's own pipeline vs a
plain torchvision composition of the same recipe vs JPEG decode alone, on real photos (500x375 JPEG
q90), side by side in one process.

    .venv/bin/python benchmarks/bench_augment.py [--pycontrast DIR] [--repeats 7] [--seconds 2] [--json]
    .venv/bin/python benchmarks/bench_augment.py --loader [--workers 1,2] [--repeats 7]

``--pycontrast DIR``: a checkout of https://github.com/HobbitLong/PyContrast (``git clone`` it
anywhere; nothing of it is copied into this repository). Its *unmodified* InfoMin pipeline is
imported from there -- ``datasets.util.build_transforms(aug="D", modal="RGB", use_memory_bank=False)``
(the MoCo-queue setting: crop 0.2) through ``datasets.dataset.ImageFolderInstance(two_crop=True[,
jigsaw_transform])`` -- and measured in the same rounds, so the ratio "x PyContrast" is always a
same-run ratio (it needs ``scikit-image``, which PyContrast imports). Without it, only the
torchvision re-composition is the baseline.

Real photos come from Debian wallpaper packages (``apt-get download`` + ``dpkg-deb -x``, no install),
cached with the derived 500x375 q90 JPEGs under ``$XDG_CACHE_HOME/infomin-det/bench_augment``.
The process is pinned to one core, torch uses one thread; methods are interleaved round-robin in
every repeat so that machine load hits all of them alike. Reports medians and min / max over the
repeats and the ratios to the baselines and to decode-only (medians of per-repeat paired ratios).

``--loader``: the pretraining DataLoader itself (``pretrain.data.SkipUnreadable`` + ``InfoMinAugment``
with JigSaw, batch 64, ``worker_init``) with 1, 2, ... workers, interleaved per repeat, on all cores:
samples/s and the scaling against one worker (no pinning: the workers are the parallelism).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

PACKAGE = "mate-backgrounds"


def cache_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "infomin-det" / "bench_augment"


def source_photos(cache: Path) -> list[Path]:
    """Real photos from a Debian wallpaper package, through the project's cached fetcher."""
    from infomin_det.data.photos import photos

    return [p.path for p in photos(packages=[PACKAGE])]


def make_inputs(cache: Path, n: int) -> list[Path]:
    """``n`` 500x375 JPEG q90 files made deterministically from the photos (centre crop to 4:3)."""
    from PIL import Image

    out = cache / "jpeg500x375q90"
    files = [out / f"{i:03d}.jpg" for i in range(n)]
    if all(f.exists() for f in files):
        return files
    photos = source_photos(cache)
    if not photos:
        sys.exit(f"error: no JPEG photos found in {cache}\n  fix: delete {cache} and rerun")
    out.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(files):
        src = Image.open(photos[i % len(photos)]).convert("RGB")
        w, h = src.size
        # a different 4:3 window per reuse k of the same photo: smaller by 15 % per reuse, moved
        k = i // len(photos)
        cw = int(min(w, h * 4 // 3) * (1 - 0.15 * (k % 4)))
        ch = cw * 3 // 4
        left = (w - cw) * ((k + 1) % 3) // 2 if k else (w - cw) // 2
        top = (h - ch) * ((k // 3 + 1) % 3) // 2 if k else (h - ch) // 2
        tmp = f.with_suffix(".tmp")
        src.crop((left, top, left + cw, top + ch)).resize((500, 375), Image.Resampling.LANCZOS).save(
            tmp, "JPEG", quality=90)
        os.replace(tmp, f)
    return files


def methods(files: list[Path]) -> dict[str, Callable[[Path], object]]:
    from PIL import Image

    from pretrain.augment import AugmentConfig, InfoMinAugment, torchvision_jigsaw, torchvision_reference

    rng = random.Random(0)
    fast, fast_jig = InfoMinAugment(AugmentConfig()), InfoMinAugment(AugmentConfig(jigsaw=True))
    ref, ref_jig = torchvision_reference(), torchvision_jigsaw()

    def tv(path: Path):
        img = Image.open(path).convert("RGB")
        return ref(img), ref(img)

    def tv_jig(path: Path):
        img = Image.open(path).convert("RGB")
        return ref(img), ref(img), ref_jig(img)

    import simplejpeg

    return {
        "decode only (PIL)": lambda p: Image.open(p).convert("RGB"),
        "decode only (libjpeg-turbo)": lambda p: simplejpeg.decode_jpeg(p.read_bytes(), colorspace="RGB"),
        "torchvision 2 views": tv,
        "torchvision 2 views + jigsaw": tv_jig,
        "fast 2 views": lambda p: fast(str(p), rng),
        "fast 2 views + jigsaw": lambda p: fast_jig(str(p), rng),
    }


def pycontrast_methods(checkout: Path, files: list[Path], scratch: Path) -> dict[str, Callable[[Path], object]]:
    """PyContrast's InfoMin pipeline as its own code builds it, from ``checkout`` (see the docstring)."""
    pkg = checkout / "pycontrast" if (checkout / "pycontrast" / "datasets").is_dir() else checkout
    if not (pkg / "datasets" / "util.py").is_file():
        sys.exit(f"error: {checkout} is not a PyContrast checkout (no pycontrast/datasets/util.py)\n"
                 "  fix: git clone https://github.com/HobbitLong/PyContrast and pass --pycontrast <that folder>")
    sys.path.insert(0, str(pkg))
    try:
        from datasets.dataset import ImageFolderInstance
        from datasets.util import build_transforms
    except ImportError as e:
        sys.exit(f"error: PyContrast's pipeline cannot be imported: {e}\n"
                 "  fix: pip install scikit-image (PyContrast imports skimage.color) into this venv")
    finally:
        sys.path.pop(0)
    import datasets.util

    if not Path(datasets.util.__file__).resolve().is_relative_to(pkg.resolve()):
        sys.exit(f"error: 'datasets' resolved to {datasets.util.__file__}, not PyContrast's\n"
                 "  fix: run in a venv without another top-level 'datasets' package")
    folder = scratch / "pycontrast_imagefolder" / "all"     # ImageFolder wants root/<class>/<image>
    folder.mkdir(parents=True, exist_ok=True)
    for f in files:
        link = folder / f.name
        if not link.exists():
            link.symlink_to(f.resolve())
    train, jigsaw = build_transforms("D", "RGB", use_memory_bank=False)
    two = ImageFolderInstance(str(folder.parent), transform=train, two_crop=True)
    two_jig = ImageFolderInstance(str(folder.parent), transform=train, two_crop=True, jigsaw_transform=jigsaw)
    index = {Path(p).name: i for i, (p, _) in enumerate(two.imgs)}
    return {"PyContrast 2 views": lambda p: two[index[p.name]],
            "PyContrast 2 views + jigsaw": lambda p: two_jig[index[p.name]]}


def measure(fns: dict[str, Callable[[Path], object]], files: list[Path], repeats: int,
            seconds: float) -> dict[str, list[float]]:
    """samples/s per method per repeat; each repeat runs every method for ~``seconds``."""
    from tqdm import tqdm

    rates: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():  # warm-up (file cache, lazy imports)
        for f in files[:4]:
            fn(f)
    with tqdm(total=repeats * len(fns), desc="bench_augment", unit="run", file=sys.stderr) as bar:
        for _ in range(repeats):
            for name, fn in fns.items():
                n, t0 = 0, time.perf_counter()
                while time.perf_counter() - t0 < seconds:
                    fn(files[n % len(files)])
                    n += 1
                rates[name].append(n / (time.perf_counter() - t0))
                bar.update(1)
    return rates


def loader_rates(files: list[Path], workers: list[int], repeats: int, batches: int) -> dict[int, list[float]]:
    """samples/s of the pretraining DataLoader per worker count per repeat (first batch excluded:
    worker start-up is paid once per epoch, not per batch)."""
    import torch

    from pretrain.augment import AugmentConfig, InfoMinAugment
    from pretrain.data import ImageList, SkipUnreadable, worker_init

    images = ImageList(str(files[0].parent), tuple(map(str, files)), (-1,) * len(files), ())
    ds = SkipUnreadable(images, InfoMinAugment(AugmentConfig(jigsaw=True)), seed=0)
    batch = 64
    sampler = [i % len(files) for i in range(batch * (batches + 1))]
    rates: dict[int, list[float]] = {w: [] for w in workers}
    for _ in range(repeats):
        for w in workers:
            it = iter(torch.utils.data.DataLoader(ds, batch_size=batch, sampler=sampler, num_workers=w,
                                                  worker_init_fn=worker_init, prefetch_factor=4 if w else None))
            next(it)
            t0 = time.perf_counter()
            n = sum(len(b["views"]) for b in it)
            rates[w].append(n / (time.perf_counter() - t0))
    return rates


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=7, help="repeats per method (median reported, >= 5)")
    ap.add_argument("--seconds", type=float, default=2.0, help="seconds per method per repeat")
    ap.add_argument("--images", type=int, default=32, help="distinct input JPEGs")
    ap.add_argument("--cache", type=Path, default=None, help=f"cache dir (default {cache_dir()})")
    ap.add_argument("--pycontrast", type=Path, default=None, metavar="DIR",
                    help="a PyContrast checkout: measure its own pipeline side by side (see the docstring)")
    ap.add_argument("--loader", action="store_true", help="measure the DataLoader's scaling over workers")
    ap.add_argument("--workers", default="1,2", help="worker counts for --loader (default 1,2)")
    ap.add_argument("--batches", type=int, default=8, help="batches of 64 per --loader run")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.repeats < 5:
        sys.exit("error: --repeats must be >= 5\n  fix: medians need at least 5 runs")

    import torch

    torch.set_num_threads(1)
    if args.loader:
        try:
            workers = [int(w) for w in args.workers.split(",")]
        except ValueError:
            workers = []
        if not workers or min(workers) < 1:
            sys.exit(f"error: --workers {args.workers!r} is not a list of worker counts >= 1\n  fix: e.g. --workers 1,2")
        lr = loader_rates(make_inputs(args.cache or cache_dir(), args.images), workers, args.repeats, args.batches)
        one = lr[workers[0]]
        print(f"pretraining DataLoader (InfoMin views + JigSaw, batch 64, {args.batches} batches), "
              f"{len(os.sched_getaffinity(0))} cores; median of {args.repeats}, interleaved")
        print(f"{'workers':>7} {'samples/s':>9} {'(min..max)':>15} {'x ' + str(workers[0]) + ' worker':>10}")
        for w, r in lr.items():
            x = statistics.median(a / b for a, b in zip(r, one))
            print(f"{w:>7} {statistics.median(r):>9.1f} {f'({min(r):.0f}..{max(r):.0f})':>15} {x:>10.2f}")
        return 0
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    cache = args.cache or cache_dir()
    files = make_inputs(cache, args.images)
    fns = methods(files)
    if args.pycontrast is not None:
        fns.update(pycontrast_methods(args.pycontrast, files, cache))
    rates = measure(fns, files, args.repeats, args.seconds)
    med = {k: statistics.median(v) for k, v in rates.items()}
    base = {"fast 2 views": "torchvision 2 views", "fast 2 views + jigsaw": "torchvision 2 views + jigsaw"}
    theirs = {"fast 2 views": "PyContrast 2 views", "fast 2 views + jigsaw": "PyContrast 2 views + jigsaw"}
    decode_name = "decode only (PIL)"

    def paired(a: str, b: str) -> float:
        """Median over repeats of the ratio of two methods measured back to back (robust to load)."""
        return statistics.median(x / y for x, y in zip(rates[a], rates[b]))

    rows = []
    for name, m in med.items():
        rows.append({"method": name, "median_samples_per_s": round(m, 1),
                     "min": round(min(rates[name]), 1), "max": round(max(rates[name]), 1),
                     "x_torchvision": round(paired(name, base[name]), 2) if name in base else None,
                     "x_pycontrast": round(paired(name, theirs[name]), 2) if theirs.get(name) in rates else None,
                     "fraction_of_decode": round(paired(name, decode_name), 3)})
    if args.json:
        print(json.dumps({"repeats": args.repeats, "seconds": args.seconds, "images": len(files),
                          "core": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
                          "rows": rows}, indent=2))
        return 0
    print(f"InfoMin augmentation, 500x375 JPEG q90 from real photos ({len(files)} files), 224 px views, "
          f"1 core, 1 thread; median of {args.repeats} x {args.seconds:g} s, interleaved")
    print(f"{'method':<30} {'samples/s':>9} {'(min..max)':>15} {'x PyContrast':>12} {'x torchvision':>13} {'/ decode':>8}")
    for r in rows:
        xp = f"{r['x_pycontrast']:.2f}" if r["x_pycontrast"] is not None else "-"
        xt = f"{r['x_torchvision']:.2f}" if r["x_torchvision"] is not None else "-"
        mm = f"({r['min']:.0f}..{r['max']:.0f})"
        print(f"{r['method']:<30} {r['median_samples_per_s']:>9.1f} {mm:>15} {xp:>12} {xt:>13} "
              f"{r['fraction_of_decode']:>8.3f}")
    print("x PyContrast, x torchvision, / decode: median over repeats of the ratio between runs made back to back"
          + ("" if args.pycontrast else "; PyContrast not measured (pass --pycontrast DIR)"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
