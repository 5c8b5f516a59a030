"""`optimlab sweep` and `optimlab compare`.

Exit codes: 0 every run completed or diverged; 1 some run failed or was interrupted (the sweep itself went
on; run the command again to retry and resume them); 2 bad input, before any run started; 75 the sweep
was interrupted (Ctrl-C or SIGTERM; running runs checkpointed); run the same command again to resume.
"""

from __future__ import annotations

import argparse
import sys

from optimlab.errors import ConfigError, suggest
from optimlab.sweep.backends import SWEEP_BACKENDS

SWEEP_USAGE = """usage: optimlab sweep SPEC [key=value ...] [options]

SPEC is a YAML file, a name in sweeps/ (see `optimlab list sweeps`), a registered Python sweep, or
module:function. key=value overrides apply to every run (e.g. train.steps=100); they may come anywhere on
the line, before or after the options.

options:
  --backend local|fresh|population|ray|slurm  where runs execute (default local: warm workers forked from a
                               server that imported torch once; fresh: a new process per run; population: runs
                               differing only in seed and float hyperparameters trained together, one process each
                               group, the others on warm workers)
  --population-size N          population: at most N runs per population (default 32)
  --workers N                  runs at once (default: the usable CPU cores); each run gets max(1, cores // N) threads
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
  --slurm-mem SIZE             memory per job, as sbatch --mem takes it (e.g. 16G)
  --slurm-account NAME         account charged for the jobs
  --slurm-qos NAME             quality of service
  --slurm-constraint EXPR      node features (e.g. a100|h100)
  --slurm-setup LINE           a shell line run in the job before training (repeatable: module load ...)
  --slurm-extra KEY=VALUE      any other sbatch option, as #SBATCH --KEY=VALUE (repeatable)
"""

COMPARE_USAGE = """usage: optimlab compare [task=NAME] [optims=[a,b,...]] [seeds=N] [lrs=[...]] [workers=N]
                        [out=DIR] [root=DIR] [backend=population|local|fresh|ray|slurm] [name=NAME]
                        [progress=false] [extend=N] [dotted.config.key=value ...]

Runs a small learning-rate grid for each optimizer and several seeds, then writes the comparison report
(OUT/index.html). With no arguments: task=mnist1d_mlp optims=[sgd,adam,sgd_c,adam_c] seeds=3.
While an optimizer's best lr is the smallest or largest of its grid, the next lr that way is added and
run, at most extend=N times per optimizer (default 3; extend=0: the grid as given).
The flags of `optimlab sweep` and `optimlab report` are accepted too: --workers N, --root DIR,
--backend NAME, --out DIR, --name NAME, --no-progress (each the same as its key=value form).
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # bad arguments are bad input: exit code 2 through ConfigError
        raise ConfigError(message)


def _sweep_parser() -> _Parser:
    parser = _Parser(prog="optimlab sweep", add_help=False)
    parser.add_argument("spec")
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--backend", default="local", choices=SWEEP_BACKENDS.names())
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--root", default="runs")
    parser.add_argument("--cpus-per-run", type=int, default=None)
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--population-size", type=int, default=None)
    parser.add_argument("--ray-address", default=None)
    parser.add_argument("--slurm-partition", default=None)
    parser.add_argument("--slurm-time", default="60")
    parser.add_argument("--slurm-gpus", type=int, default=0)
    parser.add_argument("--slurm-array-parallelism", type=int, default=None)
    parser.add_argument("--slurm-cluster", default=None, choices=("slurm", "local"))
    parser.add_argument("--slurm-mem", default=None)
    parser.add_argument("--slurm-account", default=None)
    parser.add_argument("--slurm-qos", default=None)
    parser.add_argument("--slurm-constraint", default=None)
    parser.add_argument("--slurm-setup", action="append", default=[])
    parser.add_argument("--slurm-extra", action="append", default=[])
    return parser


def parse_slurm_extra(items: list[str]) -> dict[str, str]:
    """['gres=gpu:a100:1', 'mail-type=END'] -> {'gres': 'gpu:a100:1', 'mail_type': 'END'}: submitit's
    additional parameters, written as `#SBATCH --gres=gpu:a100:1` (submitit turns `_` back into `-`)."""
    extra = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--slurm-extra: expected KEY=VALUE, got {item!r}")
        extra[key.strip().lstrip("-").replace("-", "_")] = value
    return extra


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
    if not argv or any(a in ("-h", "--help") for a in argv):
        print(SWEEP_USAGE)
        return 0
    from optimlab.sweep.execute import cpu_count
    from optimlab.sweep.runner import dry_run, run_sweep
    from optimlab.sweep.spec import load_spec

    args = _sweep_parser().parse_intermixed_args(argv)
    if args.workers is None:
        args.workers = cpu_count()
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
    if args.population_size is not None and args.backend != "population":
        raise ConfigError("--population-size applies to --backend population")
    if args.backend == "population" and args.population_size is not None:
        options = {"size": args.population_size}
    if args.backend in ("local", "population"):
        from optimlab.sweep.execute import threads_per_run
        from optimlab.sweep.warm import start_fork_server

        start_fork_server(args.cpus_per_run or threads_per_run(args.workers))
    elif args.backend == "ray":
        options = {"address": args.ray_address}
    elif args.backend == "slurm":
        options = {"cluster": args.slurm_cluster, "partition": args.slurm_partition,
                   "time_min": parse_minutes(args.slurm_time), "gpus": args.slurm_gpus,
                   "array_parallelism": args.slurm_array_parallelism, "mem": args.slurm_mem,
                   "account": args.slurm_account, "qos": args.slurm_qos, "constraint": args.slurm_constraint,
                   "setup": args.slurm_setup, "extra": parse_slurm_extra(args.slurm_extra)}
    result = run_sweep(spec, root=args.root, backend=args.backend, workers=args.workers, extra=args.overrides,
                       cpus_per_run=args.cpus_per_run, backend_options=options, progress=not args.no_progress)
    return result.exit_code


def compare_main(argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print(COMPARE_USAGE)
        return 0
    from optimlab.sweep.compare import compare, parse_compare_args

    result = compare(parse_compare_args(flags_as_keys(argv)))
    if result.report is not None:
        print(result.report)
    return result.exit_code


def flags_as_keys(argv: list[str]) -> list[str]:
    """compare's key=value arguments from the flag style sweep and report use: `--workers 4` and
    `--workers=4` are `workers=4`, `--no-progress` is `progress=false`; key=value items pass unchanged."""
    from optimlab.sweep.compare import COMPARE_KEYS

    items, rest = [], list(argv)
    while rest:
        item = rest.pop(0)
        if not item.startswith("--"):
            items.append(item)
            continue
        flag, sep, value = item[2:].partition("=")
        key = flag.replace("-", "_")
        if key == "no_progress" and not sep:
            items.append("progress=false")
        elif key in COMPARE_KEYS:
            if not sep:
                if not rest or rest[0].startswith("--"):
                    raise ConfigError(f"--{flag} expects a value")
                value = rest.pop(0)
            items.append(f"{key}={value}")
        else:
            raise ConfigError(f"unknown compare option --{flag}{suggest(key, COMPARE_KEYS)}")
    return items
