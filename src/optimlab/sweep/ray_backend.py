"""The Ray backend: one Ray task per run, each running the same training subprocess on a Ray worker.

`ray.init()` starts a private local Ray instance (no dashboard) unless `address` names an existing cluster
(`auto` or `ray://host:10001`). Ray is imported only when this backend is used. Runs write their run
directories themselves, so on a cluster the sweep root must be on a filesystem shared with the workers,
under the same path; the parent reads outcomes from the run directories as tasks finish.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable

from optimlab.errors import ConfigError
from optimlab.sweep.execute import Launch, cpu_count, execute

OnDone = Callable[[Launch, "int | None", "str | None"], None]


def require_ray():
    if importlib.util.find_spec("ray") is None:
        raise ConfigError("the ray backend needs Ray: pip install 'optimlab[ray]'")
    import ray

    return ray


class RayBackend:
    name = "ray"

    def __init__(self, workers: int = 1, cpus_per_run: int = 1, address: str | None = None, grace: float = 60.0):
        require_ray()
        self.workers = workers  # runs in flight at once
        self.cpus_per_run = cpus_per_run  # Ray's num_cpus per task (and the run's thread count)
        self.address = address
        self.grace = grace

    def run(self, launches: list[Launch], on_done: OnDone) -> None:
        ray = require_ray()
        started_here = False
        if not ray.is_initialized():
            options = dict(include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
            if self.address:
                ray.init(address=self.address, **options)
            else:
                ray.init(num_cpus=cpu_count(), object_store_memory=100 * 2**20, **options)
            started_here = True
        remote = ray.remote(execute).options(num_cpus=self.cpus_per_run, max_retries=0)
        queue = list(launches)
        in_flight: dict = {}

        def finish(ref) -> None:
            launch = in_flight.pop(ref)
            try:
                code = ray.get(ref)
            except Exception as error:  # the task was cancelled or its worker died
                on_done(launch, None, f"ray: {type(error).__name__}: {str(error).splitlines()[0]}")
            else:
                on_done(launch, code, None)

        try:
            while queue or in_flight:
                while queue and len(in_flight) < self.workers:
                    launch = queue.pop(0)
                    in_flight[remote.remote(launch)] = launch
                ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=0.5)
                for ref in ready:
                    finish(ref)
        except BaseException:
            # A cancelled task gets KeyboardInterrupt, on which `execute` sends SIGTERM to its run.
            for ref in in_flight:
                ray.cancel(ref)
            if in_flight:
                _, stuck = ray.wait(list(in_flight), num_returns=len(in_flight), timeout=self.grace)
                for ref in stuck:
                    ray.cancel(ref, force=True)
            for ref in list(in_flight):
                finish(ref)
            raise
        finally:
            if started_here:
                ray.shutdown()
