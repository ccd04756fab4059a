"""The ``od2 sweep`` command line: its parser and its entry point."""

from __future__ import annotations

import argparse
import dataclasses

from .runner import SweepOptions, dry_run, run_sweep
from .spec import EXECUTORS, load_spec

DESCRIPTION = """\
Run an ablation as an experiment: every arm of SPEC.yaml with every seed, one od2 run folder per (arm, seed) under
the spec's output folder (<output>/<arm>/seed<N>), each ending with an evaluation on DATASETS.TEST
(<run>/eval/coco_summary.json), and <output>/sweep.json recording each run's status. `od2 report <output>`
turns the folder into means, confidence intervals and paired differences.

Running it again resumes: done runs are skipped, interrupted ones continue with --resume, failed ones run again
(unless --skip-failed). Ctrl-C or SIGTERM stops the running runs and leaves them resumable.
The spec's keys (base, overrides, arms, seeds, output, executor, slurm, gpus_per_run, step_seconds,
step_source) are documented in docs/sweeps.md."""

EPILOG = """examples:
  od2 sweep configs/sweeps/bccd_ablations.yaml --dry-run          the plan and its estimated time
  od2 sweep configs/sweeps/bccd_ablations.yaml --dry-run --measure 20   ... timing 20 iterations per arm here
  od2 sweep configs/sweeps/bccd_ablations.yaml                      run it, one run at a time
  od2 sweep configs/sweeps/bccd_ablations.yaml --jobs 2             two runs at once, cores split between them
  od2 sweep configs/sweeps/coco_log.yaml --executor slurm --partition gpu --timeout-min 4320"""


def _count(minimum: int):
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value
    return parse


def add_sweep_parser(sub: argparse._SubParsersAction) -> None:
    sweep = sub.add_parser("sweep", help="run every arm x seed of an ablation spec (resumable; local or SLURM)",
                           description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sweep.add_argument("spec", metavar="SPEC.yaml", help="the sweep spec (docs/sweeps.md)")
    sweep.add_argument("--dry-run", action="store_true",
                       help="print the plan and run nothing: one line per run (arm, seed, iterations left, state: "
                            "done / resume at iter K / new), the total, and the estimated time (and GPU-hours when "
                            "the spec gives gpus_per_run) from a step time: measured in this sweep's own runs, "
                            "else by --measure, else the spec's step_seconds")
    sweep.add_argument("--measure", type=_count(2), default=0, metavar="N",
                       help="a dry run that trains N iterations of each arm's config that this sweep's runs have not "
                            "timed yet, in a temporary folder, and estimate from that (N >= 2: the first is start-up)")
    sweep.add_argument("--executor", choices=EXECUTORS,
                       help="where runs go: local (this machine) or slurm (one job per run through submitit); "
                            "default: the spec's executor, else local")
    sweep.add_argument("--jobs", type=_count(1), default=1, metavar="N",
                       help="local executor: runs at once, the CPU cores (OMP threads) and the config's "
                            "DATALOADER.NUM_WORKERS split between them (default 1)")
    sweep.add_argument("--skip-failed", action="store_true",
                       help="leave runs that failed in an earlier start as they are instead of running them again")
    slurm = sweep.add_argument_group("slurm executor (each overrides the spec's slurm: section)")
    slurm.add_argument("--partition", help="SLURM partition")
    slurm.add_argument("--gpus-per-run", type=_count(1), metavar="G",
                       help="GPUs per run (G > 1 trains under torchrun --nproc_per_node G); for every arm")
    slurm.add_argument("--cpus-per-task", type=int, metavar="C", help="CPU cores per job")
    slurm.add_argument("--timeout-min", type=int, metavar="M", help="time limit per job in minutes")
    slurm.add_argument("--slurm-cluster", choices=("slurm", "local"), default="slurm",
                       help="submitit's cluster: slurm, or local (submitit's local executor: the jobs run on this "
                            "machine through the same submission code, to try a spec before the cluster)")


def run_sweep_command(args: argparse.Namespace) -> int:
    spec = load_spec(args.spec)
    slurm = {**spec.slurm, **{key: value for key, value in (
        ("partition", args.partition), ("cpus_per_task", args.cpus_per_task), ("timeout_min", args.timeout_min))
        if value is not None}}
    arms = spec.arms if args.gpus_per_run is None else tuple(
        dataclasses.replace(arm, gpus_per_run=args.gpus_per_run) for arm in spec.arms)
    spec = dataclasses.replace(spec, slurm=slurm, arms=arms, executor=args.executor or spec.executor)
    if args.dry_run or args.measure:
        print(dry_run(spec, args.measure, jobs=args.jobs if spec.executor == "local" else 1))
        return 0
    return run_sweep(spec, SweepOptions(executor=spec.executor, jobs=args.jobs, skip_failed=args.skip_failed,
                                        cluster=args.slurm_cluster))
