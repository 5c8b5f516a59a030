"""Where a sweep's runs execute, by name (`optimlab sweep --backend NAME`).

Each entry builds a backend object with `run(launches, on_done)` from the sweep's settings. The backend's
module is imported only when it is chosen, so a missing optional dependency (ray, submitit) is an error
for that backend alone, raised before any run starts.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from optimlab.registry import Registry

# name -> builder (workers, cpus_per_run, sweep folder, backend options) -> backend
SWEEP_BACKENDS: Registry[Callable[[int, int, Path, dict], Any]] = Registry("backend")


@SWEEP_BACKENDS.register("local", description="a pool of warm workers on this machine (runs forked after one import)")
def _local(workers: int, cpus_per_run: int, folder: Path, options: dict) -> Any:
    from optimlab.sweep.local import LocalBackend

    return LocalBackend(workers, **options)


@SWEEP_BACKENDS.register("fresh", description="a process pool on this machine, a fresh python process per run")
def _fresh(workers: int, cpus_per_run: int, folder: Path, options: dict) -> Any:
    from optimlab.sweep.local import LocalBackend

    return LocalBackend(workers, warm=False, **options)


@SWEEP_BACKENDS.register("population", description="runs that differ in seed and float hyperparameters trained together "
                         "in one process each (torch.func.vmap); the others on warm workers")
def _population(workers: int, cpus_per_run: int, folder: Path, options: dict) -> Any:
    from optimlab.sweep.population import PopulationBackend

    return PopulationBackend(workers, **options)


@SWEEP_BACKENDS.register("ray", description="Ray tasks, on a local instance or an existing cluster")
def _ray(workers: int, cpus_per_run: int, folder: Path, options: dict) -> Any:
    from optimlab.sweep.ray_backend import RayBackend

    return RayBackend(workers, cpus_per_run, **options)


@SWEEP_BACKENDS.register("slurm", description="a SLURM job array through submitit")
def _slurm(workers: int, cpus_per_run: int, folder: Path, options: dict) -> Any:
    from optimlab.sweep.slurm import SlurmBackend

    return SlurmBackend(folder / "slurm", cpus_per_run=cpus_per_run, **options)
