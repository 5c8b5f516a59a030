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

import copy
import json
import re
import sys
import time
from pathlib import Path

from optimlab import rundir
from optimlab.config import Config, load_config
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
    """Each run's config, as `optimlab train OVERRIDES` loads it. Runs whose overrides differ only in
    `seed=<digits>` and `run_dir=<a path of plain characters>` are loaded once (~60 ms a config) and given
    their seed and run_dir, which the population validates again on its own."""
    loaded: dict[tuple[str, ...], Config] = {}
    cfgs = []
    for run in runs:
        overrides = [str(o) for o in run["overrides"]]
        varying = {k: v for k, _, v in (o.partition("=") for o in overrides) if k in _VARYING}
        rest = tuple(o for o in overrides if o.partition("=")[0] not in _VARYING)
        if not varying.get("seed", "0").isdigit() or not _PLAIN_PATH.fullmatch(varying.get("run_dir", "/")):
            cfgs.append(load_config(overrides))
            continue
        if rest not in loaded:
            loaded[rest] = load_config(rest)
        cfg = copy.deepcopy(loaded[rest])
        if "seed" in varying:
            cfg.seed = int(varying["seed"])
        if "run_dir" in varying:
            cfg.run_dir = varying["run_dir"]
        cfgs.append(cfg)
    return cfgs


_VARYING = ("seed", "run_dir")
# A path that the override grammar reads as itself, a string (no quotes, escapes, brackets, commas,
# interpolations, spaces; a slash, so never a number, bool or null).
_PLAIN_PATH = re.compile(r"[\w./+-]*/[\w./+-]*")


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
