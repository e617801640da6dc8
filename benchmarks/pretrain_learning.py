"""Does InfoMin pretraining learn at the demo's scale? Pretext curve + linear probe, per variant.

    .venv/bin/python benchmarks/pretrain_learning.py run NAME [--lr 0.1] [--steps 300] [--seed 0] \
        [--aug infomin|mocov2|crop] [--negatives queue|batch] [--momentum 0.99] [--probe-every 100]
    .venv/bin/python benchmarks/pretrain_learning.py supervised NAME [--epochs 30] [--seed 0]
    .venv/bin/python benchmarks/pretrain_learning.py table [NAME ...]
    .venv/bin/python benchmarks/pretrain_learning.py plot OUT.png NAME [NAME ...]

One process, one thread (run two at a time on two cores). The demo's data and model: the 3000
96-px crops of real photos (``build_pretrain_set``), ResNet-18 MoCo v2 with the InfoMin head at 64
px, batch 32, queue 2048, T 0.15, SGD momentum 0.9, wd 1e-4, ``--lr`` the *peak* learning rate
(cosine to 0 at ``--steps``). Every 20 steps: the pretext task's mean InfoNCE and positive-pair
accuracy; at step 0 and every ``--probe-every`` steps: the toolkit's linear probe
(:func:`pretrain.probe.linear_probe` on :func:`pretrain.run_probe.features`, the same as
``infomin-det pretrain --probe``) of the query encoder on the labelled 8-class cut-out set (1200
train / 400 val, 64 px). Records go to ``runs/learning/NAME.jsonl``.

Diagnostic variants that are not toolkit options (they answer "which part holds learning back?"):
``--bn-splits N`` BN statistics per shuffled sub-batch in both encoders (shuffle-BN in one process);
``--head bn`` a projection head with BN after each linear (SimCLR / MoCo v3); ``--negatives batch`` is
the toolkit's own option (the other keys of the batch instead of the queue). Every record carries
``acc_batch`` (the toolkit's: the own key against the batch's other keys, chance 1/32);
``--aug mocov2`` is MoCo v2's weaker recipe (jitter 0.4/0.4/0.4/0.1, no RandAugment); ``--aug crop``
crop + flip only.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "runs" / "learning"  # git-ignored


def _augment(name: str, size: int):
    from pretrain.augment import AugmentConfig, recipe

    if name == "crop":   # a diagnostic control, not a recipe: crop + flip only
        return AugmentConfig(size=size, jitter_p=0, blur_p=0, randaug_ops=0, gray_p=0)
    return recipe(name, size=size)


def run(a: argparse.Namespace) -> None:
    import torch

    from infomin_det.data.labelled_set import build_labelled_set
    from infomin_det.data.pretrain_set import build_pretrain_set
    from pretrain.augment import InfoMinAugment
    from pretrain.data import EpochSampler, SkipUnreadable, scan_folder
    from pretrain.model import MoCo, arch_of
    from pretrain.run_probe import probe_encoder, probe_set

    torch.set_num_threads(1)
    torch.manual_seed(a.seed)
    images = scan_folder(build_pretrain_set(3000, 96, seed=0) / "images")
    labelled = probe_set(build_labelled_set(150, 50, 64, seed=0))
    ds = SkipUnreadable(images, InfoMinAugment(_augment(a.aug, 64)), a.seed)
    model = MoCo(arch_of("R-18"), queue_size=a.queue, momentum=a.momentum, temperature=a.temperature,
                 negatives=a.negatives)
    if a.bn_splits > 1:   # BN statistics per sub-batch, keys shuffled across them (MoCo's shuffle-BN in one process)
        from torch import nn

        class Split(nn.Module):
            def __init__(self, net: nn.Module, shuffle: bool) -> None:
                super().__init__()
                self.net, self.shuffle = net, shuffle

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                perm = torch.randperm(len(x)) if self.shuffle else torch.arange(len(x))
                return torch.cat([self.net(c) for c in x[perm].chunk(a.bn_splits)])[torch.argsort(perm)]
        model.encoder_q, model.encoder_k = Split(model.encoder_q, False), Split(model.encoder_k, True)
    if a.head == "bn":   # SimCLR / MoCo v3-style projection: BN after each linear, the last affine-free
        import copy
        from torch import nn
        c = 512
        model.head_q = nn.Sequential(nn.Linear(c, c, bias=False), nn.BatchNorm1d(c), nn.ReLU(inplace=True),
                                     nn.Linear(c, 128, bias=False), nn.BatchNorm1d(128, affine=False))
        model.head_k = copy.deepcopy(model.head_q)
        for p_ in model.head_k.parameters():
            p_.requires_grad = False
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=a.lr, momentum=0.9, weight_decay=1e-4)
    cpu = torch.device("cpu")

    held = SkipUnreadable(images, InfoMinAugment(_augment(a.aug, 64)), a.seed + 1)   # other draws of the views
    held.epoch = 10**6
    held_batches = [torch.stack([held[i]["views"] for i in range(j, j + 32)]) for j in range(0, 256, 32)]

    def probe() -> dict[str, float]:
        return {"probe": probe_encoder(model.encoder_q, labelled, 64, cpu).accuracy,
                "retrieval": model.key_retrieval(held_batches)}

    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{a.name}.jsonl"
    with open(path, "w") as log:
        def record(**rec: float) -> None:
            log.write(json.dumps(rec) + "\n")
            log.flush()
            print(a.name, json.dumps(rec), flush=True)

        t0 = time.perf_counter()
        record(step=0, **probe(), seconds=0.0, config=vars(a))
        model.train()
        sampler = EpochSampler(len(images.files), 32, 0, 1, a.seed)
        step, sums, epoch = 0, [0.0, 0.0, 0.0], 0
        while step < a.steps:
            sampler.epoch = ds.epoch = epoch
            for batch in torch.utils.data.DataLoader(ds, batch_size=32, sampler=sampler, num_workers=0, drop_last=True):
                for g in opt.param_groups:
                    g["lr"] = a.lr * 0.5 * (1 + math.cos(math.pi * step / a.steps))
                out = model(batch["views"])
                opt.zero_grad()
                out["loss"].backward()
                opt.step()
                step += 1
                sums[0] += float(out["loss"].detach())
                sums[1] += float(out["acc"])
                sums[2] += float(out["acc_batch"])
                if step % 20 == 0 or step == a.steps:
                    rec = {"step": step, "loss": sums[0] / 20, "acc": sums[1] / 20, "acc_batch": sums[2] / 20}
                    sums = [0.0, 0.0, 0.0]
                    if step % a.probe_every < 20 or step == a.steps:
                        rec.update(probe())
                    record(**rec, seconds=round(time.perf_counter() - t0, 1))
                if step >= a.steps:
                    break
            epoch += 1


def supervised(a: argparse.Namespace) -> None:
    """The labels' reference for the probe: an R-18 trained *with labels* on the probe's own train
    split (``pretrain.supervised``, the demo's supervised backbone), then the same probe on its frozen
    features, beside random init of the same seed. Writes ``runs/learning/NAME.json``."""
    import tempfile

    import torch

    from infomin_det.atomic import atomic_write
    from infomin_det.data.labelled_set import build_labelled_set
    from pretrain.model import arch_of, build_backbone
    from pretrain.run_probe import probe_encoder, probe_set
    from pretrain.supervised import SupervisedSpec, train_supervised

    torch.set_num_threads(1)
    root = build_labelled_set(150, 50, 64, seed=0)
    labelled, cpu = probe_set(root), torch.device("cpu")

    def probe(net: torch.nn.Module) -> float:
        return probe_encoder(net, labelled, 64, cpu).accuracy

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        res = train_supervised(SupervisedSpec(train=str(root / "train"), val=str(root / "val"), output_dir=tmp,
                                              epochs=a.epochs, seed=a.seed, device="cpu", progress=False))
        state = torch.load(res["checkpoint"], weights_only=True)
    net = build_backbone(arch_of("R-18"))
    net.load_state_dict({k: v for k, v in state.items() if not k.startswith("fc.")})
    torch.manual_seed(a.seed)
    random_init = build_backbone(arch_of("R-18"))   # the seed's random init (before the probes draw)
    rec = {"epochs": a.epochs, "seed": a.seed, "own_head_top1": res["top1"] / 100, "probe": probe(net),
           "probe_random_init": probe(random_init), "minutes": round((time.perf_counter() - t0) / 60, 1)}
    OUT.mkdir(parents=True, exist_ok=True)
    with atomic_write(OUT / f"{a.name}.json") as tmp:
        tmp.write_text(json.dumps(rec) + "\n")
    print(a.name, json.dumps(rec), flush=True)


def _load(name: str) -> list[dict]:
    return [json.loads(line) for line in (OUT / f"{name}.jsonl").read_text().splitlines()]


def table(names: list[str]) -> None:
    names = names or sorted(p.stem for p in OUT.glob("*.jsonl"))
    print("| run | steps | minutes | probe top-1 by step (step 0 = random init) | last loss / acc |")
    print("|---|---|---|---|---|")
    for n in names:
        recs = _load(n)
        probes = " ".join(f"{r['step']}: {100 * r['probe']:.1f}" for r in recs if "probe" in r)
        last = recs[-1]
        print(f"| {n} | {last['step']} | {last['seconds'] / 60:.1f} | {probes} | "
              f"{last.get('loss', float('nan')):.2f} / {last.get('acc', float('nan')):.2f} |")


def plot(out: str, names: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(17, 3.8), constrained_layout=True)
    colours = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000"]
    for i, n in enumerate(names):
        recs, c = _load(n), colours[i % len(colours)]
        cfg = recs[0].get("config", {})
        label = (f"{n}: peak lr {cfg.get('lr')}, {cfg.get('aug')}, {cfg.get('negatives', 'queue')} negatives, "
                 f"{cfg.get('steps')}-step cosine (ran {recs[-1]['step']})")
        pre = [r for r in recs if "loss" in r]
        axes[0].plot([r["step"] for r in pre], [r["loss"] for r in pre], color=c, label=label)
        acc = "acc_batch" if "acc_batch" in pre[0] else "acc"   # records older than acc_batch: the queue's
        axes[1].plot([r["step"] for r in pre], [r[acc] for r in pre], color=c, label=label)
        chance = math.log(32) if cfg.get("negatives") == "batch" else math.log(cfg.get("queue", 2048) + 1)
        axes[0].axhline(chance, color=c, ls="--", lw=0.8)
        pr = [r for r in recs if "probe" in r]
        axes[2].plot([r["step"] for r in pr], [100 * r["probe"] for r in pr], "o-", color=c, label=label)
        axes[2].axhline(100 * pr[0]["probe"], color=c, lw=0.8, ls=":")
        rt = [r for r in pr if "retrieval" in r]
        axes[3].plot([r["step"] for r in rt], [100 * r["retrieval"] for r in rt], "o-", color=c, label=label)
    axes[1].axhline(1 / 32, color="grey", ls="--", lw=1)
    axes[2].axhline(12.5, color="grey", ls="--", lw=1)
    axes[2].text(0, 12.5, " chance 12.5 %", va="bottom", fontsize=8, color="grey")
    for ax, title in zip(axes, ("pretext InfoNCE (mean of 20 steps; dashed: chance)",
                                "own key vs the batch's other keys (acc_batch; chance 1/32)",
                                "linear probe val top-1 % (dotted: step 0 = random init)",
                                "held-out key retrieval % (step 0 = random init)")):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("pretraining step (batch 32)")
        ax.grid(alpha=0.3)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=2, fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, -0.1))
    fig.savefig(out, dpi=150, bbox_inches="tight")
    print(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("name")
    r.add_argument("--steps", type=int, default=300)
    r.add_argument("--lr", type=float, default=0.1, help="peak learning rate (batch 32)")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--aug", choices=("infomin", "mocov2", "crop"), default="infomin")
    r.add_argument("--negatives", choices=("queue", "batch"), default="queue")
    r.add_argument("--momentum", type=float, default=0.99)
    r.add_argument("--temperature", type=float, default=0.15)
    r.add_argument("--queue", type=int, default=2048)
    r.add_argument("--probe-every", type=int, default=100)
    r.add_argument("--bn-splits", type=int, default=1)
    r.add_argument("--head", choices=("mlp", "bn"), default="mlp")
    u = sub.add_parser("supervised", help="the labels' reference: supervised R-18 on the probe's train split, probed")
    u.add_argument("name")
    u.add_argument("--epochs", type=int, default=30)
    u.add_argument("--seed", type=int, default=0)
    t = sub.add_parser("table")
    t.add_argument("names", nargs="*")
    f = sub.add_parser("plot")
    f.add_argument("out")
    f.add_argument("names", nargs="+")
    a = p.parse_args(argv)
    for name in [getattr(a, "name", "")] + list(getattr(a, "names", []) or []):
        if name and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):   # a file name under runs/learning/
            p.error(f"run name {name!r}: letters, digits, '.', '_', '-' only (it names runs/learning/<name>.json[l])")
    if a.cmd in ("run", "supervised") and (getattr(a, "steps", 1) < 1 or getattr(a, "epochs", 1) < 1):
        p.error("--steps / --epochs must be >= 1")
    if a.cmd == "run" and not 1 <= a.bn_splits <= 32:
        p.error("--bn-splits must be 1 .. 32 (sub-batches of the batch of 32)")
    if a.cmd == "run":
        run(a)
    elif a.cmd == "supervised":
        supervised(a)
    elif a.cmd == "table":
        table(a.names)
    else:
        plot(a.out, a.names)
    return 0


if __name__ == "__main__":
    sys.exit(main())
