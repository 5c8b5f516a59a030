"""Sweeps: grids of runs on a local process pool, Ray or SLURM, with crash-safe records; `optimlab compare`.

    from optimlab.sweep import load_spec, run_sweep
    result = run_sweep(load_spec("sweeps/example.yaml"), backend="local", workers=2)

See docs/sweeps.md.
"""

from optimlab.sweep.compare import CompareArgs, compare, parse_compare_args
from optimlab.sweep.expand import Run, expand
from optimlab.sweep.named import register_sweep
from optimlab.sweep.runner import SweepResult, dry_run, run_sweep
from optimlab.sweep.spec import SweepSpec, available_sweeps, load_spec, parse_spec, spec_from_points

__all__ = [
    "CompareArgs",
    "Run",
    "SweepResult",
    "SweepSpec",
    "available_sweeps",
    "compare",
    "dry_run",
    "expand",
    "load_spec",
    "parse_compare_args",
    "parse_spec",
    "register_sweep",
    "run_sweep",
    "spec_from_points",
]
