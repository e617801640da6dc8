"""The typed description of one view sweep: :class:`SweepSpec`, validated on construction.

Owns the sweep's settings and their checks (every bad value is a ``UserError`` before anything is
read or written), the (de)serialisation used by ``sweep.json`` and the point files, and
:attr:`SweepSpec.point_key`: the hash of the settings that determine a point's result, which decides
whether a finished point file may be reused (:mod:`pretrain.views.sweep_outputs`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any, ClassVar

from infomin_det.errors import UserError
from pretrain.views.families import VIEW_FAMILIES, ViewFamily

POINT_FORMAT = 1  # bump when a point's row changes meaning (part of ``SweepSpec.point_key``)


def _positive(name: str, v: float) -> None:
    if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
        raise UserError(f"{name} must be > 0, got {v}", f"pass a positive --{name.replace('_', '-')}")


@dataclass(frozen=True)
class SweepSpec:
    """One sweep: ``family`` varied over ``values``, each pretrained with ``seeds`` seeds (0..seeds-1).

    Budgets: ``steps`` pretraining steps of ``batch_size`` pairs per point; images ``image_size``
    px; labelled set ``n_train_per_class`` / ``n_val_per_class`` images per class (8 classes,
    data seed ``data_seed``); ``probe_steps`` L-BFGS iterations and ``probe_weight_decay`` of the
    linear probe (:func:`pretrain.probe.linear_probe`). ``lr`` (AdamW),
    ``weight_decay``, ``temperature`` (InfoNCE tau). Everything is validated on construction.
    """

    family: str
    values: tuple[float, ...]
    out: str
    image_size: int = 64
    steps: int = 600
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    temperature: float = 0.1
    seeds: int = 1
    n_train_per_class: int = 150
    n_val_per_class: int = 50
    data_seed: int = 0
    probe_steps: int = 100
    probe_weight_decay: float = 1e-3
    feat_dim: int = 128

    # fields that define a point's result (a finished point is reused when these agree)
    _POINT_FIELDS: ClassVar[tuple[str, ...]] = (
        "family", "image_size", "steps", "batch_size", "lr", "weight_decay", "temperature",
        "n_train_per_class", "n_val_per_class", "data_seed", "probe_steps", "probe_weight_decay", "feat_dim")

    def __post_init__(self) -> None:
        fam = VIEW_FAMILIES.get(self.family)()  # UserError naming the families for an unknown name
        object.__setattr__(self, "values", tuple(float(v) for v in self.values))
        if not self.values:
            raise UserError(f"no values to sweep for {self.family}",
                            f"pass --values, e.g. {','.join(f'{v:g}' for v in fam.defaults)}")
        if len(set(self.values)) != len(self.values):
            raise UserError(f"duplicate values in {', '.join(f'{v:g}' for v in self.values)}",
                            "list each value once (use --seeds for repeats)")
        for v in self.values:
            why = fam.check(v, self.image_size) if math.isfinite(v) else "not a finite number"
            if why:
                raise UserError(f"{self.family} {fam.param}={v:g} is out of range: {why}",
                                f"use values like {','.join(f'{d:g}' for d in fam.defaults)}")
        for name in ("steps", "batch_size", "seeds", "n_train_per_class", "n_val_per_class", "probe_steps",
                     "feat_dim", "lr", "temperature"):
            _positive(name, getattr(self, name))
        for name in ("steps", "batch_size", "seeds", "n_train_per_class", "n_val_per_class", "probe_steps",
                     "feat_dim", "image_size", "data_seed"):
            if int(getattr(self, name)) != getattr(self, name) or isinstance(getattr(self, name), bool):
                raise UserError(f"{name} must be a whole number, got {getattr(self, name)}", f"pass an integer {name}")
        if self.data_seed < 0:
            raise UserError(f"data seed must be >= 0, got {self.data_seed}", "pass --data-seed 0 (or another >= 0)")
        if self.weight_decay < 0 or self.probe_weight_decay < 0:
            raise UserError("weight decays must be >= 0", "pass --weight-decay / --probe-weight-decay >= 0")
        if not 32 <= self.image_size <= 96:
            raise UserError(f"image size {self.image_size} px is outside the encoder's 32..96 px",
                            "use --image-size 64 (the paper's) or 32 for a quick run")
        if self.batch_size < 2:
            raise UserError(f"batch size {self.batch_size} leaves no negatives", "use --batch-size >= 2 (e.g. 64)")
        n_train = 8 * self.n_train_per_class
        if self.batch_size > n_train:
            raise UserError(f"batch size {self.batch_size} exceeds the {n_train} training images",
                            "use a smaller --batch-size or a larger --n-train-per-class")
        if 8 * self.n_val_per_class < 2:
            raise UserError("the val split needs >= 2 images for an I_NCE batch", "raise --n-val-per-class")
        if not str(self.out):
            raise UserError("no output directory given", "pass --out DIR")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SweepSpec":
        """Build from a mapping (e.g. ``sweep.json["spec"]``); unknown keys are a UserError."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise UserError(f"unknown sweep parameter(s): {', '.join(unknown)}", f"use only {', '.join(sorted(names))}")
        missing = sorted(n for n in ("family", "values", "out") if n not in d)
        if missing:
            raise UserError(f"missing sweep parameter(s): {', '.join(missing)}", "give family, values and out")
        return cls(**{**d, "values": tuple(d["values"])})

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "values": list(self.values)}

    @property
    def point_key(self) -> str:
        """Hash of the settings that determine a point's result (not ``values``, ``seeds``, ``out``)."""
        d = {k: getattr(self, k) for k in self._POINT_FIELDS} | {"format": POINT_FORMAT}
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def fam(self) -> ViewFamily:
        """The family varied (a fresh instance of the registered class: families hold no state)."""
        return VIEW_FAMILIES[self.family]()
