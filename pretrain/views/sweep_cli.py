"""``infomin-det sweep``: vary one view parameter, pretrain + linear-evaluate, plot I_NCE vs accuracy.

    infomin-det sweep --family frequency --values 0.3,0.7,1,2,4 --out runs/sweep-freq
                      [--steps N --batch-size B --image-size S --seeds N ...]
    infomin-det sweep --list                 (or --family list): families, parameter, unit, defaults

Owns argument parsing and the terminal summary; the work is :func:`pretrain.views.sweep.run_sweep`.
The spec is validated before anything is written. Rerunning with the same settings resumes: points
already in ``<out>/points/`` are not retrained. Runs on one torch thread unless ``--threads`` says
otherwise (measured: 600 steps at the defaults take ~110 s on one core for frequency, whose two
encoders cost most; 2 threads on a shared 2-core machine were > 3x slower). Never imports detectron2.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from infomin_det.errors import UserError
from pretrain.views import sweep as sw
from pretrain.views.families import VIEW_FAMILIES

_DEFAULTS = {f.name: f.default for f in dataclasses.fields(sw.SweepSpec) if f.default is not dataclasses.MISSING}
# spec field -> CLI flag help (every one is an optional override of SweepSpec's default)
_FLAGS: dict[str, tuple[type, str]] = {
    "steps": (int, "pretraining steps per point"),
    "batch_size": (int, "pairs per step (K of the training InfoNCE; the val I_NCE batches use the same K)"),
    "image_size": (int, "image / view side in px (32..96)"),
    "seeds": (int, "seeds per value (0..N-1); error bars when > 1"),
    "lr": (float, "AdamW peak learning rate (cosine schedule)"),
    "weight_decay": (float, "AdamW weight decay"),
    "temperature": (float, "InfoNCE temperature"),
    "n_train_per_class": (int, "labelled-set training images per class (8 classes)"),
    "n_val_per_class": (int, "labelled-set val images per class"),
    "data_seed": (int, "seed of the labelled set and its train/val source split"),
    "probe_steps": (int, "L-BFGS iterations of the linear probe"),
    "probe_weight_decay": (float, "L2 penalty of the linear probe"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--family", help="view family to vary (--list shows them)")
    parser.add_argument("--values", help="comma-separated parameter values (default: the family's)")
    parser.add_argument("--out", help="output directory (sweep.csv / sweep.json / sweep.png, points/)")
    parser.add_argument("--list", action="store_true", help="list the view families and exit")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1; 0 = torch's choice). The encoder's small convs "
                             "gain little from more threads and slow down badly when the cores are shared")
    for name, (typ, help_) in _FLAGS.items():
        parser.add_argument("--" + name.replace("_", "-"), dest=name, type=str, default=None,
                            help=f"{help_} (default {_DEFAULTS[name]})")


def _print_families() -> None:
    from rich.console import Console
    from rich.table import Table
    table = Table(title="view families (infomin-det sweep --family NAME)")
    for col in ("family", "parameter", "unit", "default values", "encoders", "views"):
        table.add_column(col)
    for name, fam in VIEW_FAMILIES.items():
        table.add_row(name, fam.param, fam.unit, ",".join(f"{v:g}" for v in fam.defaults),
                      "one shared" if fam.shared_encoder else "two", fam.summary)
    Console(width=160).print(table)


def _number(name: str, text: str, typ: type) -> float | int:
    try:
        return typ(text)
    except ValueError:
        raise UserError(f"--{name.replace('_', '-')} {text!r} is not {'a whole number' if typ is int else 'a number'}",
                        f"pass e.g. --{name.replace('_', '-')} {_DEFAULTS[name]}") from None


def spec_from_args(args: argparse.Namespace) -> sw.SweepSpec:
    """Parse and validate every option into a :class:`SweepSpec` (UserError on any bad input)."""
    if not args.family:
        raise UserError("no --family given", f"pass --family with one of {', '.join(VIEW_FAMILIES)} (or --list)")
    fam = VIEW_FAMILIES.get(args.family)  # UserError naming the families for an unknown name
    if args.values:
        values = []
        for part in args.values.split(","):
            try:
                values.append(float(part))
            except ValueError:
                raise UserError(f"--values item {part.strip()!r} is not a number",
                                f"pass comma-separated numbers, e.g. --values {','.join(f'{v:g}' for v in fam.defaults)}") from None
    else:
        values = list(fam.defaults)
    if not args.out:
        raise UserError("no --out directory given", f"pass e.g. --out runs/sweep-{args.family}")
    overrides = {name: _number(name, getattr(args, name), typ) for name, (typ, _) in _FLAGS.items()
                 if getattr(args, name) is not None}
    return sw.SweepSpec(family=args.family, values=tuple(values), out=args.out, **overrides)


def _print_rows(result: sw.SweepResult, spec: sw.SweepSpec) -> None:
    from rich.console import Console
    from rich.table import Table
    fam = spec.fam
    table = Table(title=f"{spec.family} sweep ({spec.steps} steps x {spec.batch_size} pairs, {spec.image_size} px)")
    for col in (f"{fam.param} ({fam.unit})", "seed", "I_NCE (nats)", "log K", "val pair acc %",
                "linear top-1 %", "untrained top-1 %", "train s", "new"):
        table.add_column(col, justify="right")
    trained = set(result.trained)
    for r in result.rows:
        table.add_row(f"{r['value']:g}", str(r["seed"]), f"{r['i_nce']:.3f}", f"{r['log_k']:.3f}",
                      f"{r['val_contrast_acc']:.1f}", f"{r['linear_top1']:.1f}", f"{r['init_linear_top1']:.1f}",
                      f"{r['train_seconds']:.0f}",
                      "yes" if (r["value"], r["seed"]) in trained else "resumed")
    Console(width=140).print(table)


def main(args: argparse.Namespace) -> int:
    if args.list or args.family == "list":
        _print_families()
        return 0
    spec = spec_from_args(args)
    if args.threads < 0:
        raise UserError(f"--threads {args.threads} is negative", "pass --threads 0 (torch's default) or a count >= 1")
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    result = sw.run_sweep(spec, progress=not args.no_progress, log=lambda m: print(m, file=sys.stderr))
    _print_rows(result, spec)
    print(f"csv:  {result.csv}")
    print(f"json: {result.json}")
    print(f"plot: {result.png}")
    return 0
