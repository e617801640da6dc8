"""``infomin-det train --protocol P --weights W [--seed K] [OPTS...]``: one run, 1..N local processes.

Everything that can be refused is refused before a process is started or a file written
(:func:`~infomin_det.engine.config.check_spec`). Several processes go through the launcher's own
path (:func:`infomin_det.launch.task.run_local`: the same rendezvous, device and backend rules as a
SLURM job). Exit status: 0 with the results printed; 2 bad input; 75 stopped by SIGUSR2 after
checkpointing (run the same command again to resume).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import sys
from pathlib import Path

from infomin_det import wandb_log
from infomin_det.dist import DEVICES, check_local_processes, cores, resolve_device
from infomin_det.engine.spec import TrainSpec
from infomin_det.rundir import is_random_init, run_dir, weights_name_of

TRAIN_WORKER = "infomin_det.engine.trainer:train_worker"
EXIT_PREEMPTED = 75                     # EX_TEMPFAIL: try again (the run resumes)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--protocol", required=True, help="protocol id, e.g. coco/R50-FPN-1x (see `infomin-det protocols`)")
    parser.add_argument("--weights", required=True, help="converted .pkl, detectron2:// catalog URL, or 'random' (random init)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the run (>= 0; default 0)")
    parser.add_argument("--family", choices=("ssl", "supervised", "random"), default=None,
                        help="override the family chosen from the weights' metadata")
    parser.add_argument("--variant", default="", help="a named variant of the protocol leaf (default: the authors')")
    parser.add_argument("--config-file", default="", metavar="FILE.yaml",
                        help="your Detectron2 YAML instead of the protocol's leaf (e.g. _BASE_: a leaf, plus your "
                             "changes): a custom variant of --protocol, row <weights>+custom-<stem>, never the paper's")
    parser.add_argument("--device", choices=DEVICES, default="auto",
                        help="auto: CUDA when visible, else CPU; cuda: refuse to run without a GPU; cpu")
    parser.add_argument("--dataset", default="", help="coco-json:<train.json>:<train_images>:<val.json>:<val_images>")
    parser.add_argument("--root", default="runs", help="runs root (output dir: <root>/<experiment>/<protocol>/<weights>/seed<k>)")
    parser.add_argument("--experiment", default="default")
    parser.add_argument("--weights-name", default="", help="row name in reports (default: weights file stem)")
    parser.add_argument("--output-dir", default="", help="explicit output dir (overrides --root layout)")
    parser.add_argument("--num-processes", type=int, default=1, help="local processes (gloo on CPU, NCCL on GPU)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads per process on CPU (default cores/processes)")
    parser.add_argument("--allow-mismatch", action="append", default=[], metavar="KEY",
                        help="accept a weights/config disagreement on KEY ('all' for every key)")
    parser.add_argument("--eval-only", action="store_true")
    wandb_log.add_argument(parser)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="Detectron2 KEY VALUE overrides")


def spec_from_args(args: argparse.Namespace) -> TrainSpec:
    name = args.weights_name or weights_name_of(args.weights)
    opts = args.opts[1:] if args.opts[:1] == ["--"] else args.opts
    weights = "" if is_random_init(args.weights) else args.weights
    spec = TrainSpec(args.protocol, weights, "", weights_name=name, seed=args.seed, experiment=args.experiment,
                     opts=tuple(opts), dataset=args.dataset, allow_mismatch=tuple(args.allow_mismatch),
                     eval_only=args.eval_only, num_processes=args.num_processes, family=args.family or "",
                     variant=args.variant, device=args.device,
                     config_file=str(Path(args.config_file).resolve()) if args.config_file else "",
                     extra={"threads": args.threads, "wandb": args.wandb})
    out = args.output_dir or str(run_dir(args.root, args.experiment, args.protocol, name, args.seed, spec.row_variant))
    return dataclasses.replace(spec, output_dir=out)


def main(args: argparse.Namespace) -> int:
    from infomin_det.engine.config import check_spec

    spec = spec_from_args(args)
    check_spec(spec)
    if spec.num_processes > 1:
        import torch

        device = resolve_device(spec.device)
        check_local_processes(spec.num_processes, device, torch.cuda.device_count() if device == "cuda" else 0,
                              cores(), flag="--num-processes")
    out = sys.stdout
    with contextlib.redirect_stdout(sys.stderr):   # logs and pycocotools' prints: stdout is for the results
        results = _run(spec, args)
    if results is None:
        return EXIT_PREEMPTED
    print(json.dumps({"output_dir": spec.output_dir, "results": results}, indent=2), file=out)
    return 0


def _run(spec: TrainSpec, args: argparse.Namespace) -> dict | None:
    from infomin_det.launch.task import DistributedTask, Preempted, run_local

    try:
        if spec.num_processes > 1:
            threads = args.threads or 0
            task = DistributedTask(TRAIN_WORKER, spec, threads=threads or max(1, cores() // spec.num_processes),
                                   label=f"{spec.protocol}/{spec.weights_name}/seed{spec.seed}")
            results = run_local(task, spec.num_processes)
        else:
            from infomin_det.engine.trainer import train_worker

            results = train_worker(spec)
    except Preempted as e:
        print(f"stopped: {e}", file=sys.stderr)
        return None
    return results


