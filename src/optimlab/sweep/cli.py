"""`optimlab sweep` and `optimlab compare`.

Exit codes: 0 every run completed or diverged; 1 some run failed or was interrupted (the sweep itself went
on; run the command again to retry and resume them); 2 bad input, before any run started; 75 the sweep
was interrupted (Ctrl-C or SIGTERM; running runs checkpointed); run the same command again to resume.
"""

from __future__ import annotations

import argparse
import sys

from optimlab.errors import ConfigError
from optimlab.sweep.backends import SWEEP_BACKENDS

SWEEP_USAGE = """usage: optimlab sweep SPEC [key=value ...] [options]

SPEC is a YAML file, a name in sweeps/ (see `optimlab list sweeps`), a registered Python sweep, or
module:function. key=value overrides apply to every run (e.g. train.steps=100).

options:
  --backend local|ray|slurm    where runs execute (default local: a process pool on this machine)
  --workers N                  runs at once (default 1); each run gets max(1, cores // N) threads
  --root DIR                   runs go to DIR/<sweep>/<task>/<optim>-<config hash> (default runs)
  --cpus-per-run N             threads (Ray: num_cpus, SLURM: cpus per task) per run
  --dry-run                    validate and list the runs with their status; run nothing
  --no-progress                no progress bar
  --ray-address ADDR           an existing Ray cluster (default: start a local Ray instance)
  --slurm-partition NAME       SLURM partition
  --slurm-time MINUTES         time limit per job (minutes, or H:MM:SS; default 60)
  --slurm-gpus N               GPUs per job (default 0)
  --slurm-array-parallelism N  jobs of the array running at once
  --slurm-cluster slurm|local  submitit cluster (default: slurm when sbatch exists, else local)
"""

COMPARE_USAGE = """usage: optimlab compare [task=NAME] [optims=[a,b,...]] [seeds=N] [lrs=[...]] [workers=N]
                        [out=DIR] [root=DIR] [backend=local|ray|slurm] [name=NAME] [progress=false]
                        [dotted.config.key=value ...]

Runs a small learning-rate grid for each optimizer and several seeds, then writes the comparison report
(OUT/index.html). With no arguments: task=mnist1d_mlp optims=[sgd,adam,sgd_c,adam_c] seeds=3.
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # bad arguments are bad input: exit code 2 through ConfigError
        raise ConfigError(message)


def _sweep_parser() -> _Parser:
    parser = _Parser(prog="optimlab sweep", add_help=False)
    parser.add_argument("spec")
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--backend", default="local", choices=SWEEP_BACKENDS.names())
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--root", default="runs")
    parser.add_argument("--cpus-per-run", type=int, default=None)
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--ray-address", default=None)
    parser.add_argument("--slurm-partition", default=None)
    parser.add_argument("--slurm-time", default="60")
    parser.add_argument("--slurm-gpus", type=int, default=0)
    parser.add_argument("--slurm-array-parallelism", type=int, default=None)
    parser.add_argument("--slurm-cluster", default=None, choices=("slurm", "local"))
    return parser


def parse_minutes(text: str) -> int:
    """'90' -> 90; '1:30:00' -> 90; '2-00:00:00' (days) -> 2880."""
    try:
        days, _, clock = str(text).rpartition("-")
        parts = [int(p) for p in clock.split(":")]
        if len(parts) == 1:
            minutes = parts[0]
        elif len(parts) == 2:
            minutes = parts[0] * 60 + parts[1]
        elif len(parts) == 3:
            minutes = parts[0] * 60 + parts[1] + (parts[2] > 0)
        else:
            raise ValueError
        minutes += int(days or 0) * 24 * 60
    except ValueError:
        raise ConfigError(f"--slurm-time: expected minutes or H:MM:SS, got {text!r}") from None
    if minutes < 1:
        raise ConfigError(f"--slurm-time: must be at least 1 minute, got {text!r}")
    return minutes


def sweep_main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(SWEEP_USAGE)
        return 0
    from optimlab.sweep.runner import dry_run, run_sweep
    from optimlab.sweep.spec import load_spec

    args = _sweep_parser().parse_args(argv)
    if args.workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {args.workers}")
    if args.cpus_per_run is not None and args.cpus_per_run < 1:
        raise ConfigError(f"--cpus-per-run must be at least 1, got {args.cpus_per_run}")
    spec = load_spec(args.spec)
    if args.dry_run:
        rows = dry_run(spec, root=args.root, extra=args.overrides)
        for run, status in rows:
            print(f"{status:12s} {run.run_dir}  {' '.join(run.overrides)}")
        print(f"{len(rows)} runs", file=sys.stderr)
        return 0
    options: dict = {}
    if args.backend == "ray":
        options = {"address": args.ray_address}
    elif args.backend == "slurm":
        options = {"cluster": args.slurm_cluster, "partition": args.slurm_partition,
                   "time_min": parse_minutes(args.slurm_time), "gpus": args.slurm_gpus,
                   "array_parallelism": args.slurm_array_parallelism}
    result = run_sweep(spec, root=args.root, backend=args.backend, workers=args.workers, extra=args.overrides,
                       cpus_per_run=args.cpus_per_run, backend_options=options, progress=not args.no_progress)
    return result.exit_code


def compare_main(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print(COMPARE_USAGE)
        return 0
    from optimlab.sweep.compare import compare, parse_compare_args

    result = compare(parse_compare_args(argv))
    if result.report is not None:
        print(result.report)
    return result.exit_code
