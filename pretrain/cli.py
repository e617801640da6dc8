"""``infomin-det pretrain``: thin CLI over :mod:`pretrain.train` and :mod:`pretrain.linear_eval`.

    infomin-det pretrain DATA -o OUT [--arch R-50] [--jigsaw] ...          1 process (resumes)
    infomin-det pretrain DATA -o OUT --processes 2                          2 local gloo/NCCL processes
    infomin-det pretrain DATA -o OUT --cluster slurm --gpus-per-node 8      via infomin_det.launch
    infomin-det pretrain DATA --linear-eval OUT/checkpoint_*.pth --val VAL  top-1 / top-5
    infomin-det pretrain DATA -o OUT --probe LABELLED [--probe-every 200]   + linear probe while training
    infomin-det pretrain DATA -o OUT --augment-on device                    the GPU runs the augmentation

Every value is checked before anything starts or is written. ``--cluster`` takes the launcher's
full executor option set (``infomin_det.launch.options.add_executor_arguments``); without
``--cluster`` the run happens in this process (or ``--processes`` local ones). On a cluster each
task gets ``--workers + 1`` CPUs unless ``--cpus-per-task`` says otherwise (the loader workers
plus the training process itself).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from infomin_det import wandb_log
from pretrain.augment import RECIPES
from pretrain.augment_batched import AUGMENT_ON
from pretrain.model import ARCHS, NEGATIVES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from infomin_det.launch.options import add_executor_arguments

    d = {f.name: f.default for f in dataclasses.fields(_spec_cls())}
    parser.add_argument("data", help="image folder: ImageNet layout (root/<class>/*.jpg) or any folder of images")
    parser.add_argument("-o", "--output-dir", help="run directory (checkpoints, TensorBoard); resumes from it")
    parser.add_argument("--arch", default=d["arch"], choices=list(ARCHS), metavar="ARCH",
                        help=f"backbone: {', '.join(ARCHS)} (default %(default)s)")
    g = parser.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, default=d["epochs"])
    g.add_argument("--batch-size", type=int, default=d["batch_size"], help="per process (default %(default)s)")
    g.add_argument("--lr", type=float, default=d["base_lr"], dest="base_lr",
                   help="lr at a global batch of 256; scaled linearly (default %(default)s)")
    g.add_argument("--weight-decay", type=float, default=d["weight_decay"])
    g.add_argument("--warmup-epochs", type=float, default=d["warmup_epochs"],
                   help="linear warm-up; -1: 0 up to a global batch of 256, else 5 (default)")
    g.add_argument("--amp", choices=["none", "bf16", "fp16"], default=d["amp"], help="torch autocast dtype")
    g = parser.add_argument_group("MoCo / InfoMin")
    g.add_argument("--queue-size", type=int, default=d["queue_size"])
    g.add_argument("--negatives", choices=list(NEGATIVES), default=d["negatives"],
                   help="queue: MoCo's queue of earlier keys (the paper's, default); batch: the other keys of the "
                        "batch, all from the current key encoder (docs/pretrain.md, 'Does the demo's pretraining learn?')")
    g.add_argument("--moco-momentum", type=float, default=d["moco_momentum"])
    g.add_argument("--temperature", type=float, default=d["temperature"])
    g.add_argument("--jigsaw", action="store_true", help="add the JigSaw branch (loss 0.5 main + 0.5 jigsaw)")
    g.add_argument("--image-size", type=int, default=d["image_size"])
    g.add_argument("--augment", choices=list(RECIPES), default=d["augment"],
                   help="augmentation recipe: the paper's InfoMin (default) or MoCo v2's (no RandAugment, weaker jitter)")
    g.add_argument("--augment-on", choices=list(AUGMENT_ON), default=d["augment_on"],
                   help="workers: the loader workers run the whole augmentation (default); device: they decode and "
                        "draw, the training device (a GPU) runs the pixel ops on the batch")
    g.add_argument("--crop-min", type=float, default=d["crop_min"], help="RandomResizedCrop lower area bound c")
    g.add_argument("--jitter-strength", type=float, default=d["jitter_strength"],
                   help="colour-jitter strength x: factors [0.8, 0.8, 0.8, 0.4] * x (hue capped at 0.5)")
    g = parser.add_argument_group("running")
    g.add_argument("--workers", type=int, default=d["workers"], help="data-loading processes per training process")
    g.add_argument("--seed", type=int, default=d["seed"])
    g.add_argument("--checkpoint-every", type=int, default=d["checkpoint_every"], help="steps; 0: every epoch")
    g.add_argument("--max-steps", type=int, default=d["max_steps"], help="stop after this many steps (0: none)")
    g.add_argument("--device", choices=["auto", "cpu", "cuda"], default=d["device"])
    g.add_argument("--processes", type=int, default=None,
                   help="local processes (gloo on CPU, NCCL on GPU, one per GPU; default 1); with --cluster: "
                        "tasks per node")
    g.add_argument("--threads", type=int, default=1, help="torch threads per process")
    g.add_argument("--no-tensorboard", action="store_true")
    wandb_log.add_argument(g)
    g = parser.add_argument_group("does the run learn? (rank 0, printed and in RUN/probe.jsonl)")
    g.add_argument("--probe", metavar="DIR", default=None,
                   help="labelled folder DIR/train/<class>/* + DIR/val/<class>/*: linear probe of the frozen "
                        "query encoder at step 0, every --probe-every steps and at the end")
    g.add_argument("--probe-every", type=int, default=None, metavar="N",
                   help=f"steps between probes (default {d['probe_every']}; needs --probe)")
    add_executor_arguments(parser, cluster_default=None)  # --cluster absent: run here
    g = parser.add_argument_group("linear evaluation")
    g.add_argument("--linear-eval", metavar="CKPT", help="evaluate CKPT linearly: DATA is the training folder")
    g.add_argument("--val", help="validation folder (with --linear-eval)")
    g.add_argument("--linear-epochs", type=int, default=60)
    g.add_argument("--linear-lr", type=float, default=30.0)
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")


def _spec_cls():
    from pretrain.train import PretrainSpec
    return PretrainSpec


def _print(result: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        width = max(map(len, result))
        print("\n".join(f"{k:<{width}}  {v}" for k, v in result.items()))


def _linear_eval(args: argparse.Namespace) -> int:
    from infomin_det.errors import UserError
    from pretrain import limits
    from pretrain.linear_eval import LinearEvalSpec, linear_eval

    if not args.val:
        raise UserError("--linear-eval needs --val", "pass the validation folder: --val VAL_DIR")
    for given, name in ((args.output_dir, "-o"), (args.cluster, "--cluster"), (args.processes, "--processes"),
                        (args.probe, "--probe"), (args.probe_every, "--probe-every"), (args.wandb or None, "--wandb")):
        if given is not None:
            raise UserError(f"{name} does not apply to --linear-eval (one process here; the result is printed)",
                            f"drop {name}; save the result with --json > FILE")
    _refuse_executor_flags_without_cluster(args)
    limits.threads(args.threads, local=True)
    spec = LinearEvalSpec(args.linear_eval, args.data, args.val, epochs=args.linear_epochs,
                          batch_size=args.batch_size, lr=args.linear_lr, image_size=args.image_size,
                          workers=args.workers, seed=args.seed, device=args.device, amp=args.amp,
                          progress=sys.stderr.isatty())
    spec.check()
    import torch
    torch.set_num_threads(args.threads)
    _print(linear_eval(spec), args.json)
    return 0


def executor_request(args: argparse.Namespace, workers: int, cluster: str):
    """The launcher's :class:`ExecutorOptions` for ``--cluster`` runs: every executor flag as given;
    ``--cpus-per-task`` defaults to ``workers + 1`` (the loader workers and the training process),
    ``--processes`` means tasks per node. Validated for ``cluster``."""
    from infomin_det.errors import UserError
    from infomin_det.launch.options import ExecutorOptions

    values = {f.name: getattr(args, f"ex_{f.name}") for f in dataclasses.fields(ExecutorOptions)}
    if values["cpus_per_task"] is None:
        values["cpus_per_task"] = workers + 1
    if args.processes is not None:
        if values["tasks_per_node"] is not None and values["tasks_per_node"] != args.processes:
            raise UserError(f"--processes {args.processes} and --tasks-per-node {values['tasks_per_node']} disagree",
                            "give one of them (with --cluster both mean processes per node)")
        values["tasks_per_node"] = args.processes
    return ExecutorOptions.from_mapping(values).validate(cluster)


def _refuse_executor_flags_without_cluster(args: argparse.Namespace) -> None:
    from infomin_det.errors import UserError
    from infomin_det.launch.options import ExecutorOptions

    defaults = ExecutorOptions()
    given = [f.name for f in dataclasses.fields(ExecutorOptions)
             if getattr(args, f"ex_{f.name}") != getattr(defaults, f.name)]
    if given:
        flag = "--" + given[0].replace("_", "-")
        raise UserError(f"{flag} is an executor option, but no --cluster is given (the run would happen here "
                        "and ignore it)", f"add --cluster slurm|local, or drop {flag} (use --processes for local runs)")


def _submit(args: argparse.Namespace, spec) -> int:
    from infomin_det.launch import DistributedTask, submit_tasks
    from infomin_det.launch.options import resolve_cluster
    from pretrain import limits
    from pretrain.train import preflight

    cluster = resolve_cluster(args.cluster)
    options = executor_request(args, spec.workers, cluster)
    limits.threads(args.threads, local=False)
    preflight(spec, options.world_size)
    task = DistributedTask("pretrain.train:pretrain_worker", spec, threads=args.threads, label="pretrain")
    [sub] = submit_tasks([task], args.output_dir, options, cluster=cluster, job_name="infomin-pretrain")
    _print({"run": sub.key, "action": sub.action, "job_id": sub.job_id, "output_dir": sub.output_dir,
            "follow": f"infomin-det status {args.output_dir}"}, args.json)
    return 1 if sub.action == "failed" else 0


def main(args: argparse.Namespace) -> int:
    from infomin_det.errors import UserError

    if args.linear_eval:
        return _linear_eval(args)
    if not args.output_dir:
        raise UserError("no --output-dir given", "pass -o RUN_DIR (checkpoints go there; a rerun resumes)")
    if args.probe_every is not None and args.probe is None:
        raise UserError("--probe-every needs --probe", "add --probe DIR (a labelled train/ + val/ folder)")
    if args.probe is not None and not args.probe.strip():
        raise UserError("--probe is empty", "pass the labelled folder (DIR/train/<class>/*, DIR/val/<class>/*), "
                                            "or drop --probe")
    from pretrain.train import PretrainSpec, run_local
    probe_every = {} if args.probe_every is None else {"probe_every": args.probe_every}
    spec = PretrainSpec(
        data=args.data, output_dir=args.output_dir, arch=args.arch, epochs=args.epochs, batch_size=args.batch_size,
        base_lr=args.base_lr, weight_decay=args.weight_decay, warmup_epochs=args.warmup_epochs,
        queue_size=args.queue_size, negatives=args.negatives, moco_momentum=args.moco_momentum, temperature=args.temperature,
        image_size=args.image_size, augment=args.augment, crop_min=args.crop_min, jitter_strength=args.jitter_strength,
        jigsaw=args.jigsaw, augment_on=args.augment_on, amp=args.amp, workers=args.workers, seed=args.seed,
        checkpoint_every=args.checkpoint_every, max_steps=args.max_steps, device=args.device,
        tensorboard=not args.no_tensorboard, progress=sys.stderr.isatty(), probe=args.probe or "", wandb=args.wandb,
        **probe_every)
    spec.check()
    if args.cluster is not None:
        return _submit(args, spec)
    _refuse_executor_flags_without_cluster(args)
    import torch
    from pretrain import limits
    limits.threads(args.threads, local=True)
    torch.set_num_threads(args.threads)
    _print(run_local(spec, 1 if args.processes is None else args.processes, args.threads), args.json)
    return 0
