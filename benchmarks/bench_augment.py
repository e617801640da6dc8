"""InfoMin augmentation throughput per CPU core: the fast pipeline vs PyContrast's own pipeline vs a
plain torchvision composition of the same recipe vs JPEG decode alone, on real photos (500x375 JPEG
q90), side by side in one process.

    .venv/bin/python benchmarks/bench_augment.py [--pycontrast DIR] [--repeats 7] [--seconds 2] [--json]
    .venv/bin/python benchmarks/bench_augment.py --loader [--workers 1,2] [--repeats 7]
    .venv/bin/python benchmarks/bench_augment.py --device-part [--device cuda] [--batch 256]
    .venv/bin/python benchmarks/bench_augment.py --stages [--pycontrast DIR]

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

The device path (``pretrain --augment-on device``, :mod:`pretrain.augment_batched`) is two rows of
the main table -- "device path, CPU part": what a loader worker still does per sample (decode and
draw) -- and ``--device-part``: the pixel half on one batch of ``--batch`` samples with JigSaw on
``--device`` (cpu: all of this machine's threads; cuda when present), samples/s with the CPU part's
cost per sample beside it.

``--stages``: milliseconds per sample (two views + JigSaw) in each stage of ours and, with
``--pycontrast``, of theirs (each of their Compose's transforms, their image loader, their JigSaw
transform), one core, by timing wrappers around the stages (a stage called inside another counts
for the outer one; "other" is the rest: drawing, stacking, Python).
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
    from pretrain.augment_batched import BatchedAugment

    rng = random.Random(0)
    fast, fast_jig = InfoMinAugment(AugmentConfig()), InfoMinAugment(AugmentConfig(jigsaw=True))
    dev, dev_jig = BatchedAugment(AugmentConfig()), BatchedAugment(AugmentConfig(jigsaw=True))
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
        "device path, CPU part": lambda p: dev.draw(str(p), rng),
        "device path, CPU part + jigsaw": lambda p: dev_jig.draw(str(p), rng),
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

    def with_jigsaw(p: Path):
        return two_jig[index[p.name]]
    with_jigsaw.dataset = two_jig  # for --stages
    return {"PyContrast 2 views": lambda p: two[index[p.name]], "PyContrast 2 views + jigsaw": with_jigsaw}


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


def device_part_rates(files: list[Path], device: str, batch: int, repeats: int) -> tuple[list[float], list[float]]:
    """(samples/s of ``BatchedAugment.apply`` on one collated batch with JigSaw on ``device``, per
    repeat; CPU seconds per sample of the loader's half -- draw and collate -- per repeat)."""
    import torch

    from pretrain.augment import AugmentConfig
    from pretrain.augment_batched import BatchedAugment

    aug, rng, dev = BatchedAugment(AugmentConfig(jigsaw=True)), random.Random(0), torch.device(device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    rates, cpu = [], []
    for r in range(repeats + 1):  # the first round warms up (kernels, allocator) and is not counted
        t0 = time.process_time()
        host = aug.collate([aug.draw(str(files[i % len(files)]), rng) for i in range(batch)])
        cpu_s = (time.process_time() - t0) / batch
        sync()
        t0 = time.perf_counter()
        aug.apply(host, dev)
        sync()
        if r:
            rates.append(batch / (time.perf_counter() - t0))
            cpu.append(cpu_s)
    return rates, cpu


class StageClock:
    """Wraps callables so that their time adds to a named stage (only the outermost stage counts)."""

    def __init__(self) -> None:
        self.ms: dict[str, float] = {}
        self.depth = 0

    def wrap(self, stage: str, fn: Callable) -> Callable:
        self.ms.setdefault(stage, 0.0)

        def timed(*a, **k):
            self.depth += 1
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                self.depth -= 1
                if not self.depth:
                    self.ms[stage] += 1e3 * (time.perf_counter() - t0)
        return timed


def stage_table(run: Callable[[Path], object], clock: StageClock, files: list[Path], n: int) -> dict[str, float]:
    """ms per sample per stage of ``n`` calls of ``run`` (after a warm-up), plus "other" and "total"."""
    for f in files[:4]:
        run(f)
    for k in clock.ms:
        clock.ms[k] = 0.0
    t0 = time.perf_counter()
    for i in range(n):
        run(files[i % len(files)])
    total = 1e3 * (time.perf_counter() - t0) / n
    out = {k: v / n for k, v in clock.ms.items()}
    return {**out, "other": total - sum(out.values()), "total": total}


def our_stages(files: list[Path], n: int) -> dict[str, float]:
    import pretrain.augment as A
    from pretrain.decode import EncodedImage

    clock, saved = StageClock(), {}
    names = {"resized_crop": "crop + resize", "apply_jitter": "colour jitter", "gaussian_blur": "blur",
             "apply_rand_augment": "RandAugment", "grayscale": "grayscale", "apply_jigsaw": "JigSaw"}
    saved["decode"] = EncodedImage.decode
    EncodedImage.decode = clock.wrap("decode", EncodedImage.decode)
    for attr, stage in names.items():
        saved[attr] = getattr(A, attr)
        setattr(A, attr, clock.wrap(stage, saved[attr]))
    try:
        aug, rng = A.InfoMinAugment(A.AugmentConfig(jigsaw=True)), random.Random(0)
        return stage_table(lambda p: aug(str(p), rng), clock, files, n)
    finally:
        EncodedImage.decode = saved.pop("decode")
        for attr, fn in saved.items():
            setattr(A, attr, fn)


def their_stages(fns: dict[str, Callable[[Path], object]], n: int, files: list[Path]) -> dict[str, float]:
    """PyContrast's stages: ``fns`` from :func:`pycontrast_methods` (its dataset is the closure's)."""
    ds = fns["PyContrast 2 views + jigsaw"].dataset
    clock = StageClock()
    ds.loader = clock.wrap("decode (PIL open + convert)", ds.loader)
    ts = ds.transform.transforms
    for i, t in enumerate(list(ts)):
        inner = getattr(t, "transforms", None)  # RandomApply([...]): name it by what it applies
        name = type(inner[0]).__name__ if inner else type(t).__name__
        ts[i] = clock.wrap(name, t)
    ds.jigsaw_transform = clock.wrap("JigSaw (whole transform)", ds.jigsaw_transform)
    return stage_table(fns["PyContrast 2 views + jigsaw"], clock, files, n)


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
    ap.add_argument("--device-part", action="store_true", help="measure the device path's pixel half on one batch")
    ap.add_argument("--device", default="cpu", help="torch device for --device-part (default cpu)")
    ap.add_argument("--batch", type=int, default=256, help="batch for --device-part (default 256)")
    ap.add_argument("--stages", action="store_true", help="ms per sample in each stage, ours (and PyContrast's)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.repeats < 5:
        sys.exit("error: --repeats must be >= 5\n  fix: medians need at least 5 runs")

    import torch

    if args.device_part:
        try:
            dev = torch.device(args.device)
            torch.empty(0, device=dev)
        except (RuntimeError, AssertionError) as e:
            sys.exit(f"error: --device {args.device!r} is not usable here: {str(e).splitlines()[0]}\n  fix: --device cpu, or cuda on a GPU machine")
        if args.batch < 1:
            sys.exit(f"error: --batch {args.batch} is not a batch size\n  fix: e.g. --batch 256")
        rates, cpu = device_part_rates(make_inputs(args.cache or cache_dir(), args.images), args.device, args.batch, args.repeats)
        where = f"{args.device} ({torch.get_num_threads()} threads)" if dev.type == "cpu" else torch.cuda.get_device_name(dev)
        print(f"device path, pixel half: batch {args.batch}, 224 px views + JigSaw, on {where}; median of {args.repeats}")
        print(f"  device part: {statistics.median(rates):.1f} samples/s ({min(rates):.0f}..{max(rates):.0f})")
        print(f"  CPU part (decode + draw + collate): {1e3 * statistics.median(cpu):.2f} ms/sample "
              f"({1e3 * min(cpu):.2f}..{1e3 * max(cpu):.2f}), one core")
        return 0
    torch.set_num_threads(1)
    if args.stages:
        if hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
        cache = args.cache or cache_dir()
        files = make_inputs(cache, args.images)
        n = 200
        tables = {"ours": our_stages(files, n)}
        if args.pycontrast is not None:
            tables["PyContrast"] = their_stages(pycontrast_methods(args.pycontrast, files, cache), n // 4, files)
        print(f"ms per sample (2 views + JigSaw), 1 core, 1 thread; ours over {n} samples, PyContrast's over {n // 4}")
        for who, t in tables.items():
            print(f"{who}:")
            for stage, ms in t.items():
                print(f"  {stage:<30} {ms:>7.2f}")
        return 0
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
    theirs = {"fast 2 views": "PyContrast 2 views", "fast 2 views + jigsaw": "PyContrast 2 views + jigsaw",
              "device path, CPU part": "PyContrast 2 views", "device path, CPU part + jigsaw": "PyContrast 2 views + jigsaw"}
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
    print(f"{'method':<31} {'samples/s':>9} {'(min..max)':>15} {'x PyContrast':>12} {'x torchvision':>13} {'/ decode':>8}")
    for r in rows:
        xp = f"{r['x_pycontrast']:.2f}" if r["x_pycontrast"] is not None else "-"
        xt = f"{r['x_torchvision']:.2f}" if r["x_torchvision"] is not None else "-"
        mm = f"({r['min']:.0f}..{r['max']:.0f})"
        print(f"{r['method']:<31} {r['median_samples_per_s']:>9.1f} {mm:>15} {xp:>12} {xt:>13} "
              f"{r['fraction_of_decode']:>8.3f}")
    print("x PyContrast, x torchvision, / decode: median over repeats of the ratio between runs made back to back"
          + ("" if args.pycontrast else "; PyContrast not measured (pass --pycontrast DIR)"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
