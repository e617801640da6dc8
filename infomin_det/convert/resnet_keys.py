"""ResNet/ResNeXt trunk keys: torchvision <-> Detectron2 names, arch inference, exact shape check.

Everything here works on key names and shapes only (no tensors are touched), in torchvision
naming (``conv1``, ``bn1``, ``layer1..4``, ``downsample.0/1``) which timm and every SSL release share.
:func:`infer_arch` reads the architecture off the shapes and :func:`check_exact` then demands that
the keys and shapes are *exactly* those of the trunk Detectron2 builds for that arch -- a partial
backbone, a deep "D" stem, an avg-pool shortcut or a ViT is refused with the first offending keys.
"""

from __future__ import annotations

import math
import re
from typing import Mapping, Sequence

from infomin_det.convert.files import show
from infomin_det.errors import UserError
from infomin_det.weights_meta import ResNetArch

Shape = tuple[int, ...]

# blocks per stage -> depth, for basic-block (18/34) and bottleneck (50/101/152) nets.
BLOCKS_TO_DEPTH: dict[tuple[bool, tuple[int, ...]], int] = {
    (False, (2, 2, 2, 2)): 18, (False, (3, 4, 6, 3)): 34,
    (True, (3, 4, 6, 3)): 50, (True, (3, 4, 23, 3)): 101, (True, (3, 8, 36, 3)): 152,
}
DEPTH_TO_BLOCKS = {d: blocks for (_, blocks), d in BLOCKS_TO_DEPTH.items()}
BN_STATS = ("weight", "bias", "running_mean", "running_var")
BN_COUNTER = "num_batches_tracked"

def tv_to_d2(key: str) -> str:
    """torchvision trunk key -> Detectron2 ResNet key (``layer1.0.bn2.weight`` -> ``res2.0.conv2.norm.weight``)."""
    if key == "conv1.weight":
        return "stem.conv1.weight"
    if key.startswith("bn1."):
        return "stem.conv1.norm." + key[4:]
    m = re.match(r"^layer([1-4])\.(\d+)\.(.+)$", key)
    if not m:
        raise KeyError(key)
    stage, block, rest = int(m.group(1)) + 1, m.group(2), m.group(3)
    rest = re.sub(r"^bn([1-3])\.", r"conv\1.norm.", rest)
    rest = re.sub(r"^downsample\.0\.", "shortcut.", rest)
    rest = re.sub(r"^downsample\.1\.", "shortcut.norm.", rest)
    return f"res{stage}.{block}.{rest}"


def d2_to_tv(key: str) -> str:
    """Inverse of :func:`tv_to_d2`."""
    if key == "stem.conv1.weight":
        return "conv1.weight"
    if key.startswith("stem.conv1.norm."):
        return "bn1." + key[len("stem.conv1.norm."):]
    m = re.match(r"^res([2-5])\.(\d+)\.(.+)$", key)
    if not m:
        raise KeyError(key)
    stage, block, rest = int(m.group(1)) - 1, m.group(2), m.group(3)
    rest = re.sub(r"^conv([1-3])\.norm\.", r"bn\1.", rest)
    rest = re.sub(r"^shortcut\.norm\.", "downsample.1.", rest)
    rest = re.sub(r"^shortcut\.", "downsample.0.", rest)
    return f"layer{stage}.{block}.{rest}"


def expected_shapes(arch: ResNetArch) -> dict[str, Shape]:
    """torchvision-named trunk keys and shapes of the ResNet Detectron2 builds for ``arch``.

    Mirrors ``detectron2.modeling.backbone.resnet.build_resnet_backbone`` (stride position does not
    change shapes). BN counters (``num_batches_tracked``) are not included: they are optional.
    """
    bottleneck = arch.depth >= 50
    out: dict[str, Shape] = {}

    def bn(name: str, c: int) -> None:
        out.update({f"{name}.{s}": (c,) for s in BN_STATS})

    out["conv1.weight"] = (arch.stem_out_channels, 3, 7, 7)
    bn("bn1", arch.stem_out_channels)
    cin, cout, width = arch.stem_out_channels, arch.res2_out_channels, arch.num_groups * arch.width_per_group
    for s, n in enumerate(DEPTH_TO_BLOCKS[arch.depth], start=1):
        for b in range(n):
            p, bin_ = f"layer{s}.{b}", cin if b == 0 else cout
            if bottleneck:
                convs = [(bin_, width, 1, 1), (width, width, 3, arch.num_groups), (width, cout, 1, 1)]
            else:
                convs = [(bin_, cout, 3, 1), (cout, cout, 3, 1)]
            for k, (ci, co, ks, g) in enumerate(convs, start=1):
                out[f"{p}.conv{k}.weight"] = (co, ci // g, ks, ks)
                bn(f"{p}.bn{k}", co)
            if b == 0 and cin != cout:
                out[f"{p}.downsample.0.weight"] = (cout, cin, 1, 1)
                bn(f"{p}.downsample.1", cout)
        cin, cout, width = cout, cout * 2, width * 2
    return out


def expected_groups(arch: ResNetArch) -> int:
    """Matched groups Detectron2's checkpointer reports ("Total num"): one per conv, with its norm.

    R-50: 53, R-101: 104, R-152: 155 (1 stem + 3 convs per bottleneck + one shortcut per stage that
    changes width).
    """
    return sum(1 for shape in expected_shapes(arch).values() if len(shape) == 4)


def _first(keys: Sequence[str], n: int = 3) -> str:
    keys = sorted(keys, key=_natural)
    more = f" (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(map(show, keys[:n])) + more


def _natural(key: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", key)]


def refuse_foreign(shapes: Mapping[str, Shape], where: str) -> None:
    """Raise a specific UserError for trunks we know Detectron2 cannot express."""
    keys = list(shapes)
    vit = [k for k in keys if re.match(r"^(cls_token|pos_embed|patch_embed\.|blocks\.\d+\.attn)", k)]
    if vit:
        raise UserError(f"{where} holds Vision Transformer weights ({_first(vit)}), not a ResNet",
                        "only ResNet/ResNeXt backbones convert to Detectron2's ResNet")
    deep = [k for k in keys if re.match(r"^conv1\.\d+\.", k) or re.match(r"^(bn1|act1)\.\d", k)]
    if deep:
        raise UserError(f"{where} has a deep 'D' stem ({_first(deep)}); Detectron2's BasicStem is one 7x7 conv",
                        "use a checkpoint with a plain 7x7 stem (no ResNet-D / ResNet-C variants)")
    avg = [k for k in keys if re.match(r"^layer\d\.\d+\.downsample\.2\.", k)]
    if avg:
        raise UserError(f"{where} has avg-pool shortcuts ({_first(avg)}); Detectron2 shortcuts are a strided 1x1 conv",
                        "use a checkpoint without the ResNet-D avg-pool downsample")


def infer_arch(shapes: Mapping[str, Shape], where: str = "the backbone") -> ResNetArch:
    """Architecture from torchvision-named trunk shapes (no ``fc.*``, no BN counters).

    Raises UserError naming the first offending keys when the trunk is not one Detectron2 builds.
    """
    refuse_foreign(shapes, where)
    empty = [k for k, shape in shapes.items() if 0 in tuple(shape)]
    if empty:
        raise UserError(f"{where}: tensor {show(empty[0])} has an empty dimension (shape {tuple(shapes[empty[0]])})",
                        "the checkpoint is damaged or not a ResNet; convert a complete one")
    stem = shapes.get("conv1.weight")
    if stem is None or len(stem) != 4 or stem[1:] != (3, 7, 7):
        raise UserError(f"{where} has no 7x7 RGB stem 'conv1.weight' (first keys: {_first(list(shapes))})",
                        "point --key/--prefix at the ResNet trunk (keys conv1.*, bn1.*, layer1..4.*)")
    blocks = []
    for s in range(1, 5):
        idx = {int(m.group(1)) for k in shapes if (m := re.match(rf"^layer{s}\.(\d+)\.conv1\.weight$", k))}
        if not idx:
            raise UserError(f"{where} is a partial backbone: no layer{s}.* keys (stage res{s + 1} missing)",
                            "convert the complete checkpoint; a truncated trunk cannot be mapped exactly")
        blocks.append(max(idx) + 1)
    bottleneck = "layer1.0.conv3.weight" in shapes
    depth = BLOCKS_TO_DEPTH.get((bottleneck, tuple(blocks)))
    if depth is None:
        kind = "bottleneck" if bottleneck else "basic-block"
        raise UserError(f"{where}: {kind} stages with {tuple(blocks)} blocks match no Detectron2 depth "
                        "(18/34: basic 2,2,2,2 / 3,4,6,3; 50/101/152: bottleneck 3,4,6,3 / 3,4,23,3 / 3,8,36,3)",
                        "only ResNet-18/34/50/101/152 trunks (and their ResNeXt/wide variants) convert")
    if bottleneck:
        width, per_group = shapes["layer1.0.conv2.weight"][:2]
        if width % per_group:
            raise UserError(f"{where}: layer1.0.conv2.weight {shapes['layer1.0.conv2.weight']} is not a grouped 3x3 conv",
                            "only ResNet/ResNeXt bottlenecks convert")
        arch = ResNetArch(depth, width // per_group, per_group, stem[0], shapes["layer1.0.conv3.weight"][0])
    else:
        res2 = shapes["layer1.0.conv1.weight"][0]
        if res2 != 64:
            raise UserError(f"{where}: R-{depth} with res2 width {res2}; Detectron2 builds R-18/34 only with width 64",
                            "use a standard-width R-18/34 checkpoint")
        arch = ResNetArch(depth, 1, 64, stem[0], 64)
    check_exact(shapes, arch, where)
    return arch


def arch_problem(arch: ResNetArch) -> str | None:
    """Why Detectron2 cannot build ``arch`` (as its ``build_resnet_backbone`` would assert), or None."""
    fields = (arch.depth, arch.num_groups, arch.width_per_group, arch.stem_out_channels, arch.res2_out_channels)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in fields):
        return f"arch fields must be integers, got {fields}"
    if arch.depth not in DEPTH_TO_BLOCKS:
        return f"depth {arch.depth} is not one of {sorted(DEPTH_TO_BLOCKS)}"
    if min(fields[1:]) <= 0:
        return f"widths must be positive, got {fields[1:]}"
    if arch.depth < 50 and (arch.num_groups, arch.width_per_group, arch.res2_out_channels) != (1, 64, 64):
        return f"R-{arch.depth} is built with 1 group of width 64 and res2 width 64 only"
    return None


def arch_values(arch: ResNetArch) -> int:
    """Number of values in the trunk of ``arch`` (its size, before building it)."""
    return sum(math.prod(shape) for shape in expected_shapes(arch).values())


def check_exact(shapes: Mapping[str, Shape], arch: ResNetArch, where: str = "the backbone") -> None:
    """Raise UserError unless ``shapes`` are exactly the trunk of ``arch`` (keys and shapes)."""
    want = expected_shapes(arch)
    missing = [k for k in want if k not in shapes]
    extra = [k for k in shapes if k not in want]
    wrong = [k for k in want if k in shapes and tuple(shapes[k]) != want[k]]
    if missing:
        raise UserError(f"{where} is a partial {arch.name} backbone: {len(missing)} tensors missing ({_first(missing)})",
                        "convert the complete checkpoint, or fix --key/--prefix")
    if extra:
        raise UserError(f"{where}: {len(extra)} tensors fit no {arch.name} trunk rule ({_first(extra)})",
                        "this trunk is not one Detectron2's ResNet builds; it cannot be mapped exactly")
    if wrong:
        k = wrong[0]
        raise UserError(f"{where}: {k} has shape {tuple(shapes[k])}, {arch.name} needs {want[k]} "
                        f"({len(wrong)} tensors differ)",
                        "this trunk is not one Detectron2's ResNet builds; it cannot be mapped exactly")
