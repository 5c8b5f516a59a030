"""`optimlab train --population FILE`: the process that trains one population of a sweep.

FILE is JSON written by the population backend (`optimlab.sweep.population`):

    {"runs": [{"key": "<task>/<optim>-<hash>", "overrides": ["task=...", "optim.lr=0.01", "run_dir=...", ...]}, ...],
     "result": "<path>"}

Each run's config is loaded from its overrides as `optimlab train OVERRIDES` loads it. When the runs
cannot train as one population (`NotBatchable`) or one of them is bad input, nothing is trained: the
reason is written to the result file as `{"fallback": reason}` and the command exits 2, so the backend
trains those runs one by one instead (where each bad run fails on its own). Exit codes otherwise: 0 (every
member completed or diverged), 75 (stopped by a signal after checkpointing every member), 1 (failed).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from optimlab import rundir
from optimlab.config import Config, load_config_cached
from optimlab.errors import ConfigError


def read_population(path: str | Path) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise ConfigError(f"--population: cannot read {path}: {error}") from None
    runs = data.get("runs") if isinstance(data, dict) else None
    if not isinstance(runs, list) or not all(isinstance(r, dict) and isinstance(r.get("overrides"), list) for r in runs):
        raise ConfigError(f"--population: {path} does not list runs with their overrides")
    return data


def load_members(runs: list[dict]) -> list[Config]:
    """Each run's config, as `optimlab train OVERRIDES` loads it (`load_config_cached`: runs that differ only
    in seed and run_dir are validated once; the population validates those two again on its own)."""
    cache: dict[tuple[str, ...], Config] = {}
    return [load_config_cached(run["overrides"], cache) for run in runs]


def population_main(path: str) -> int:
    from optimlab.train.population import train_population

    started, cpu = time.perf_counter(), time.process_time()
    data = read_population(path)
    result = data.get("result")
    try:
        cfgs = load_members(data["runs"])
        print(f"population of {len(cfgs)} runs:", *(cfg.run_dir for cfg in cfgs), sep="\n  ", flush=True)
        summaries = train_population(cfgs, handle_signals=True)
    except ConfigError as error:
        if result:
            rundir.write_json(Path(result), {"fallback": str(error).splitlines()[0]})
        raise
    for cfg, summary in zip(cfgs, summaries):
        print(f"{summary['status']}: {summary['step']}/{summary['steps']} steps ({cfg.run_dir})", file=sys.stderr)
    print(f"population of {len(cfgs)} runs: {time.perf_counter() - started:.1f} s wall, "
          f"{time.process_time() - cpu:.1f} s CPU", file=sys.stderr)
    if result:
        rundir.write_json(Path(result), {"statuses": [summary["status"] for summary in summaries]})
    return rundir.EXIT_INTERRUPTED if any(s["status"] == rundir.INTERRUPTED for s in summaries) else rundir.EXIT_OK
