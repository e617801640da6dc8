"""``infomin-det pretrain``: thin CLI over :mod:`pretrain.train` and :mod:`pretrain.linear_eval`.

    infomin-det pretrain DATA -o OUT [--arch R-50] [--jigsaw] ...          1 process (resumes)
    infomin-det pretrain DATA -o OUT --processes 2                          2 local gloo/NCCL processes
    infomin-det pretrain DATA -o OUT --cluster slurm --gpus-per-node 8      via infomin_det.launch
    infomin-det pretrain DATA --linear-eval OUT/checkpoint_*.pth --val VAL  top-1 / top-5
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from pretrain.model import ARCHS


def add_arguments(parser: argparse.ArgumentParser) -> None:
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
    g.add_argument("--moco-momentum", type=float, default=d["moco_momentum"])
    g.add_argument("--temperature", type=float, default=d["temperature"])
    g.add_argument("--jigsaw", action="store_true", help="add the JigSaw branch (loss 0.5 main + 0.5 jigsaw)")
    g.add_argument("--image-size", type=int, default=d["image_size"])
    g.add_argument("--crop-min", type=float, default=d["crop_min"], help="RandomResizedCrop lower area bound c")
    g.add_argument("--jitter-strength", type=float, default=d["jitter_strength"],
                   help="colour-jitter strength x: factors [0.8, 0.8, 0.8, 0.4] * x (hue capped at 0.5)")
    g = parser.add_argument_group("running")
    g.add_argument("--workers", type=int, default=d["workers"], help="data-loading processes per training process")
    g.add_argument("--seed", type=int, default=d["seed"])
    g.add_argument("--checkpoint-every", type=int, default=d["checkpoint_every"], help="steps; 0: every epoch")
    g.add_argument("--max-steps", type=int, default=d["max_steps"], help="stop after this many steps (0: none)")
    g.add_argument("--device", choices=["auto", "cpu", "cuda"], default=d["device"])
    g.add_argument("--processes", type=int, default=1, help="local processes (gloo on CPU, NCCL on GPU)")
    g.add_argument("--threads", type=int, default=1, help="torch threads per local process")
    g.add_argument("--no-tensorboard", action="store_true")
    g = parser.add_argument_group("cluster (through infomin_det.launch)")
    g.add_argument("--cluster", choices=["slurm", "local"], default=None,
                   help="submit as a job (submitit) instead of running here")
    g.add_argument("--nodes", type=int, default=1)
    g.add_argument("--gpus-per-node", type=int, default=0)
    g.add_argument("--partition", default=None)
    g.add_argument("--timeout-min", type=int, default=60 * 24)
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


def main(args: argparse.Namespace) -> int:
    import torch

    from infomin_det.errors import UserError

    if args.linear_eval:
        from pretrain.linear_eval import LinearEvalSpec, linear_eval
        if not args.val:
            raise UserError("--linear-eval needs --val", "pass the validation folder: --val VAL_DIR")
        torch.set_num_threads(args.threads)
        _print(linear_eval(LinearEvalSpec(args.linear_eval, args.data, args.val, epochs=args.linear_epochs,
                                          batch_size=args.batch_size, lr=args.linear_lr,
                                          image_size=args.image_size, workers=args.workers, seed=args.seed,
                                          progress=sys.stderr.isatty())), args.json)
        return 0
    if not args.output_dir:
        raise UserError("no --output-dir given", "pass -o RUN_DIR (checkpoints go there; a rerun resumes)")
    from pretrain.train import PretrainSpec, preflight, run_local
    spec = PretrainSpec(
        data=args.data, output_dir=args.output_dir, arch=args.arch, epochs=args.epochs, batch_size=args.batch_size,
        base_lr=args.base_lr, weight_decay=args.weight_decay, warmup_epochs=args.warmup_epochs,
        queue_size=args.queue_size, moco_momentum=args.moco_momentum, temperature=args.temperature,
        image_size=args.image_size, crop_min=args.crop_min, jitter_strength=args.jitter_strength,
        jigsaw=args.jigsaw, amp=args.amp, workers=args.workers, seed=args.seed,
        checkpoint_every=args.checkpoint_every, max_steps=args.max_steps, device=args.device,
        tensorboard=not args.no_tensorboard, progress=sys.stderr.isatty())
    if args.cluster:
        from infomin_det.launch import DistributedTask, ExecutorOptions, submit_tasks
        tasks_per_node = max(args.gpus_per_node, args.processes)
        preflight(spec, args.nodes * tasks_per_node)
        options = ExecutorOptions(partition=args.partition, nodes=args.nodes, gpus_per_node=args.gpus_per_node,
                                  tasks_per_node=tasks_per_node, cpus_per_task=max(1, args.workers),
                                  timeout_min=args.timeout_min).validate(args.cluster)
        task = DistributedTask("pretrain.train:pretrain_worker", spec, threads=args.threads, label="pretrain")
        [sub] = submit_tasks([task], args.output_dir, options, cluster=args.cluster, job_name="infomin-pretrain")
        _print({"run": sub.key, "action": sub.action, "job_id": sub.job_id, "output_dir": sub.output_dir,
                 "follow": f"infomin-det status {args.output_dir}"}, args.json)
        return 0
    torch.set_num_threads(args.threads)
    _print(run_local(spec, args.processes, args.threads), args.json)
    return 0
