"""The population backend (`optimlab sweep SPEC --backend population`): a sweep's runs trained in populations.

The pending runs are grouped by `optimlab.train.population_rules.population_key` (same task, optimizer and
every non-float setting; seeds and float hyperparameters may differ). Each group of two or more runs is cut
into populations of at most `size` members (and into as many populations as there are workers when there
are fewer groups than workers, so that every core trains); each population is one process,
`optimlab train --population FILE`, forked from the warm workers' server. Runs that cannot train in a
population train one by one on warm workers (backend `local`), and the sweep's log says why. A population
that finds itself not batchable once its task is built (a BatchNorm or dropout model, a step hook, a task
whose loss torch.func cannot batch) or that holds a run with bad input trains nothing, and its runs too go
to the warm workers.

Each run's outcome is read from its own run directory, as for every backend: sweep.json, skipping finished
runs and resuming interrupted ones work unchanged (a population resumes each member from its own newest
checkpoint).
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
import threading
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from optimlab.config import Config, load_config_cached
from optimlab.errors import ConfigError
from optimlab.rundir import read_json
from optimlab.sweep.execute import PYTHON, Launch
from optimlab.sweep.local import LocalBackend, More, OnDone
from optimlab.sweep.warm import is_train_command

DEFAULT_SIZE = 32


class PopulationBackend:
    name = "population"
    grows = True  # `run` takes `more`: runs added while the sweep runs (planned into populations of their own)

    def __init__(self, workers: int = 1, size: int = DEFAULT_SIZE, grace: float = 60.0,
                 on_idle: Callable[[], None] | None = None):
        """`on_idle`: called once (on a thread of its own) as soon as a worker has nothing left to start,
        so that a caller can use that core for what comes after the sweep (compare imports its report)."""
        if not isinstance(size, int) or isinstance(size, bool) or size < 2:
            raise ConfigError(f"population size must be an integer >= 2, got {size!r}")
        self.workers = workers
        self.size = size
        self.local = LocalBackend(workers, grace=grace)
        self.on_idle = on_idle

    def run(self, launches: list[Launch], on_done: OnDone, more: More | None = None) -> None:
        jobs: dict[str, list[Launch]] = {}  # population job key -> its members

        def jobs_of(launches: list[Launch]) -> list[Launch]:
            """`launches` as the pool's jobs: populations, then the runs that train alone."""
            populations, alone = plan(launches, self.workers, self.size)
            for reason, count in _reasons(alone).items():
                _say(f"{count} run{'s' * (count != 1)} train one by one on warm workers: {reason}")
            population_jobs = [population_launch(members) for members in populations]
            jobs.update((job.key, members) for job, members in zip(population_jobs, populations))
            return population_jobs + [launch for launch, _ in alone]

        first = jobs_of(launches)
        fallback: list[Launch] = []
        # After this many jobs have ended, the pool has nothing left to start: a worker stays idle.
        idle = _Countdown(len(first) - self.workers + 1, self.on_idle)

        def more_jobs() -> list[Launch]:
            added = jobs_of(more())
            idle.add(len(added))
            return added

        def done(launch: Launch, code: int | None, error: str | None) -> None:
            idle.tick()
            members = jobs.get(launch.key)
            if members is None:  # a run trained alone
                on_done(launch, code, error)
                return
            result = read_json(Path(launch.run_dir)) or {}
            _note_end(members, launch, code)
            if "fallback" in result:
                _say(f"population of {len(members)} runs trains one by one on warm workers: {result['fallback']}")
                fallback.extend(members)
                return
            for member in members:
                on_done(member, code, error)

        grow = more_jobs if more is not None else None
        self.local.run(first, done, grow)
        if fallback:
            self.local.run(fallback, on_done, grow)


class _Countdown:
    """Calls `action` on a thread once `tick` has been called `count` times (at once if count <= 0)."""

    def __init__(self, count: int, action: Callable[[], None] | None):
        self.count, self.action = count, action
        self.lock = threading.Lock()
        if count <= 0:
            self._fire()

    def add(self, count: int) -> None:
        """`count` more jobs to end before the pool is idle (none once `action` has been called)."""
        with self.lock:
            if self.count > 0:
                self.count += count

    def tick(self) -> None:
        with self.lock:
            self.count -= 1
            fire = self.count == 0
        if fire:
            self._fire()

    def _fire(self) -> None:
        if self.action is not None:
            threading.Thread(target=self.action, name="optimlab-idle", daemon=True).start()


def plan(launches: list[Launch], workers: int, size: int) -> tuple[list[list[Launch]], list[tuple[Launch, str]]]:
    """Populations (lists of launches, the costliest first: `population_rules.step_cost` times steps) and the
    launches that train alone, with the reason."""
    from optimlab.train.population_rules import config_ineligibility, population_key, step_cost

    groups: dict[str, list[Launch]] = defaultdict(list)
    configs: dict[str, Config] = {}
    alone: list[tuple[Launch, str]] = []
    cache: dict[tuple[str, ...], Config] = {}
    for launch in launches:
        cfg, reason = _config(launch, cache)
        reason = reason or config_ineligibility(cfg)
        if reason is None:
            key = population_key(cfg)
            groups[key].append(launch)
            configs.setdefault(key, cfg)
        else:
            alone.append((launch, reason))
    populations: list[tuple[list[Launch], Config]] = []
    for key, members in groups.items():
        if len(members) == 1:
            alone.append((members[0], "no other run shares its task and settings"))
            continue
        count = -(-len(members) // size)
        populations += [(members[i::count], configs[key]) for i in range(count)]
    # Fewer populations than workers: halve the largest, so that every worker trains.
    while len(populations) < workers and populations and max(len(p) for p, _ in populations) >= 4:
        largest = max(populations, key=lambda population: len(population[0]))
        populations.remove(largest)
        populations += [(largest[0][0::2], largest[1]), (largest[0][1::2], largest[1])]
    # Longest first: the workers take them in this order, so the last to start are the shortest.
    populations.sort(key=lambda population: population[1].train.steps * step_cost(population[1], len(population[0])),
                     reverse=True)
    return [members for members, _ in populations], alone


def population_launch(members: list[Launch]) -> Launch:
    """The launch that trains `members` as one population; its `run_dir` is the result file's path."""
    digest = hashlib.sha256("\n".join(m.key for m in members).encode()).hexdigest()[:10]
    folder = Path(members[0].log).parent if members[0].log else Path(tempfile.mkdtemp(prefix="optimlab-population-"))
    folder.mkdir(parents=True, exist_ok=True)
    spec, result = folder / f"population-{digest}.json", folder / f"population-{digest}.result.json"
    result.unlink(missing_ok=True)
    runs = [{"key": m.key, "overrides": list(m.argv[4:])} for m in members]
    spec.write_text(json.dumps({"runs": runs, "result": str(result)}, indent=1))
    for member in members:
        if member.log:
            with open(member.log, "a") as log:
                log.write(f"\n=== trained in population {spec.stem} ({len(members)} runs); its log: "
                          f"{folder / f'{spec.stem}.log'}\n")
    return Launch(key=f"population-{digest}", run_dir=str(result),
                  argv=(PYTHON, "-m", "optimlab", "train", "--population", str(spec)), env=dict(members[0].env),
                  log=str(folder / f"{spec.stem}.log") if members[0].log else "", cwd=members[0].cwd)


def _config(launch: Launch, cache: dict[tuple[str, ...], Config]) -> tuple[Config | None, str | None]:
    """The launch's config, loaded as `optimlab train` loads it (`load_config_cached`), or None and why not."""
    overrides = tuple(launch.argv[4:])
    if not is_train_command(launch.argv) or any(o.startswith("-") for o in overrides):
        return None, "not a plain `optimlab train` run"
    try:
        return load_config_cached(overrides, cache), None
    except ConfigError as error:  # the run reports its own error when it trains alone
        return None, f"its config does not load ({error})"


def _reasons(alone: list[tuple[Launch, str]]) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for _, reason in alone:
        counts[reason] += 1
    return counts


def _note_end(members: list[Launch], launch: Launch, code: int | None) -> None:
    """Each member's log says how its population ended (the population's own log has the details)."""
    for member in members:
        if member.log:
            with open(member.log, "a") as log:
                log.write(f"=== population {launch.key} exit code {code} (log: {launch.log})\n")


def _say(message: str) -> None:
    print(f"optimlab sweep: population: {message}", file=sys.stderr, flush=True)
