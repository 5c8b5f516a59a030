"""Early stopping for searches: successive halving with synchronous rungs.

A `search` block may carry an `early_stopping` block:

    search:
      trials: 27
      space: {optim.lr: {log: [1e-4, 1e-1]}}
      early_stopping:
        metric: val/loss      # default: the task's main metric on the validation split (val/<main>)
        mode: min             # min | max; default: the task's own direction
        rungs: [100, 300, 1000]   # step counts; the last is the budget of the trials that survive
        keep: 0.33            # fraction promoted at each rung (or eta: 3, keeping 1/eta)

Every trial runs to the first rung; the best `keep` fraction (at least one trial) of those that completed it
are extended to the next rung, the others are marked `stopped` at the rung step. Trials are compared within
one grid point and seed (e.g. per optimizer), never across them. This is successive halving
(Jamieson & Talwalkar, AISTATS 2016) with the rungs of ASHA (Li et al., MLSys 2020,
arXiv:1810.05934), run synchronously: a rung is decided once all of its trials have reached it.

Each trial keeps ONE run directory, named by its config with `train.steps` = the last rung, and each rung
re-runs it with a larger `train.steps`, which the trainer resumes from the run's last checkpoint. The
decisions are kept in `sweep.json` (`early_stopping.rungs`), so running the command again after it finished,
or after a kill, redoes no rung. Diverged trials are never promoted and keep their status.
"""

from __future__ import annotations

import copy
import math
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from optimlab import rundir
from optimlab.errors import ConfigError, suggest
from optimlab.rundir import read_summary, write_json
from optimlab.sweep.execute import Launch, make_launch, thread_env
from optimlab.sweep.expand import Run, expand
from optimlab.sweep.state import BUSY, log_tail, now, outcome, read_sweep_record, scan_status

ES_KEYS = ("metric", "mode", "rungs", "keep", "eta")
MODES = ("min", "max")


@dataclass(frozen=True)
class EarlyStopping:
    rungs: tuple[int, ...]
    keep: float  # fraction of a rung's trials promoted to the next rung
    metric: str | None = None  # None: val/<the task's main metric>
    mode: str | None = None  # None: the task's direction (summary.json higher_is_better)


def parse_early_stopping(block: Any, where: str) -> EarlyStopping:
    """The validated `early_stopping` block of a search; ConfigError naming the bad key."""
    where = f"{where}: search early_stopping"
    if not isinstance(block, Mapping):
        raise ConfigError(f"{where} must be a mapping with keys {', '.join(ES_KEYS)}")
    for key in block:
        if key not in ES_KEYS:
            raise ConfigError(f"{where}: unknown key {key!r}{suggest(str(key), ES_KEYS)}")
    rungs = block.get("rungs")
    if (not isinstance(rungs, list) or not rungs
            or not all(isinstance(r, int) and not isinstance(r, bool) and r > 0 for r in rungs)
            or any(a >= b for a, b in zip(rungs, rungs[1:]))):
        raise ConfigError(f"{where} 'rungs' must be increasing positive step counts, e.g. [100, 300, 1000], got {rungs!r}")
    if "keep" in block and "eta" in block:
        raise ConfigError(f"{where}: give 'keep' or 'eta', not both")
    if "eta" in block:
        eta = block["eta"]
        if not isinstance(eta, (int, float)) or isinstance(eta, bool) or not eta > 1:
            raise ConfigError(f"{where} 'eta' must be a number > 1, got {eta!r}")
        keep = 1.0 / eta
    else:
        keep = block.get("keep", 1 / 3)
        if not isinstance(keep, (int, float)) or isinstance(keep, bool) or not 0 < keep < 1:
            raise ConfigError(f"{where} 'keep' must be a fraction in (0, 1), got {keep!r}")
    metric, mode = block.get("metric"), block.get("mode")
    if metric is not None and (not isinstance(metric, str) or not metric):
        raise ConfigError(f"{where} 'metric' must be a metric name such as val/loss, got {metric!r}")
    if mode is not None and mode not in MODES:
        raise ConfigError(f"{where} 'mode' must be min or max, got {mode!r}")
    return EarlyStopping(tuple(rungs), float(keep), metric, mode)


def early_stopping_of(data: Any) -> EarlyStopping | None:
    """The early stopping of a spec's YAML mapping (SweepSpec.data), or None."""
    search = data.get("search") if isinstance(data, Mapping) else None
    if not isinstance(search, Mapping) or "early_stopping" not in search:
        return None
    return parse_early_stopping(search["early_stopping"], "spec")


def promoted_count(n: int, keep: float) -> int:
    """How many of `n` trials go on: keep * n rounded to the nearest (0.33 * 6 -> 2), at least one."""
    return max(1, min(n, int(math.floor(n * keep + 0.5))))


def metric_value(summary: dict[str, Any], metric: str | None) -> float | None:
    """The metric of a run at its last step (summary `final`, else `best`); None when absent or not finite."""
    if metric is None:
        metric = f"val/{summary.get('main_metric', 'loss')}"
    for part in ("final", "best"):
        value = (summary.get(part) or {}).get(metric)
        if isinstance(value, (int, float)) and math.isfinite(value):
            return float(value)
    return None


def choose(values: dict[str, float | None], keep: float, maximize: bool) -> list[str]:
    """The keys promoted: the best `promoted_count` by value, missing values last, ties by order given."""
    order = list(values)
    ranked = sorted(order, key=lambda k: (values[k] is None,
                                          0.0 if values[k] is None else (-values[k] if maximize else values[k]),
                                          order.index(k)))
    return ranked[:promoted_count(len(order), keep)]


def halving_runs(spec, es: EarlyStopping, root, extra) -> list[Run]:
    """The trials, each named by its config at the last rung (so all its rungs share one directory)."""
    given = [item for item in extra if item.partition("=")[0] == "train.steps"]
    if given or any("train.steps" in point for point in spec.points):
        raise ConfigError(f"sweep {spec.name!r}: train.steps is set by search early_stopping 'rungs' "
                          f"(the last rung is the full budget); remove it{' (' + given[0] + ')' if given else ''}")
    return expand(spec, root, (*extra, f"train.steps={es.rungs[-1]}"))


def at_rung(run: Run, steps: int) -> Run:
    """The same run directory, trained to `steps` (the trainer resumes when only train.steps grew)."""
    cfg = copy.deepcopy(run.config)
    cfg.train.steps = steps
    return replace(run, overrides=(*run.overrides, f"train.steps={steps}"), config=cfg)


def reached(run: Run, steps: int) -> bool:
    """Whether the trial got to rung `steps`: it completed it, or went on beyond it (a later rung that failed
    or was interrupted resumes at that later rung, never back at this one)."""
    summary = read_summary(run.run_dir) or {}
    step = int(summary.get("step") or 0)
    if summary.get("status") in (rundir.COMPLETED, rundir.STOPPED):
        return step >= steps
    return step > steps and summary.get("status") != rundir.DIVERGED


def run_halving(spec, es: EarlyStopping, runs: list[Run], folder: Path, backend, threads: int, extra, command,
                interrupt_guard) -> Any:
    """Run the rungs of `es` over `runs`; returns the runner's SweepResult."""
    from optimlab.sweep.runner import SweepResult

    previous = read_sweep_record(folder / "sweep.json")
    decided = {(d.get("step"), d.get("group")): d for d in (previous.get("early_stopping") or {}).get("rungs", [])}
    space = set((spec.data.get("search") or {}).get("space") or {})
    keys_of: dict[str, set[str]] = {}
    for run in runs:
        keys_of.setdefault(group_of(run, space), set()).add(run.key)
    old_runs = {r.get("dir"): r for r in previous.get("runs", [])}
    entries = {run.key: {"attempts": int(old_runs.get(run.key, {}).get("attempts") or 0), "exit_code": None,
                         "error": None} for run in runs}
    header = {"name": spec.name, "description": spec.description, "source": spec.source, "spec": spec.data or None,
              "extra": list(extra), "backend": getattr(backend, "name", type(backend).__name__),
              "workers": getattr(backend, "workers", None), "cpus_per_run": threads, "started": now()}
    rung_log: list[dict[str, Any]] = []
    lock = threading.Lock()

    def save(finished: bool = False) -> None:
        rows = []
        for run in runs:
            summary = read_summary(run.run_dir) or {}
            rows.append({"dir": run.key, "path": str(run.run_dir), "status": scan_status(run.run_dir),
                         "overrides": list(run.overrides), "config_hash": run.config_hash, **entries[run.key],
                         "step": summary.get("step"), "wall_time": summary.get("wall_time"),
                         "log": f"logs/{run.key}.log"})
        counts: dict[str, int] = {}
        for row in rows:
            counts[row["status"]] = counts.get(row["status"], 0) + 1
        es_record = {"metric": es.metric, "mode": es.mode, "keep": es.keep, "rungs_steps": list(es.rungs),
                     "rungs": rung_log}
        write_json(folder / "sweep.json", {**header, "updated": now(), "finished": finished, "counts": counts,
                                           "early_stopping": es_record, "runs": rows})

    env = thread_env(threads)
    active = list(runs)
    interrupted = failed = False
    try:
        with interrupt_guard():
            for step in es.rungs:
                todo = [at_rung(r, step) for r in active
                        if not reached(r, step) and scan_status(r.run_dir) not in (rundir.DIVERGED, rundir.STOPPED, BUSY)]
                by_key = {r.key: r for r in todo}

                def on_done(launch: Launch, code: int | None, error: str | None) -> None:
                    run = by_key[launch.key]
                    status, detail = outcome(run.run_dir, code, error or log_tail(launch.log))
                    with lock:
                        entries[run.key].update(exit_code=code, error=detail,
                                                attempts=entries[run.key]["attempts"] + 1)
                        save()
                    if status not in rundir.DONE:
                        print(f"optimlab sweep: {status}: {run.key}: {detail or ''}".rstrip(": "), file=sys.stderr)

                if todo:
                    print(f"optimlab sweep {spec.name}: rung {step} steps: {len(todo)} trials", file=sys.stderr)
                    backend.run([make_launch(r, command, env, folder / "logs") for r in todo], on_done)
                if step == es.rungs[-1]:
                    break
                diverged = [r.key for r in active if scan_status(r.run_dir) == rundir.DIVERGED]
                candidates = [r for r in active if r.key not in diverged]
                if not all(reached(r, step) for r in candidates):
                    failed = True  # a trial failed or was interrupted: decide this rung on the next invocation
                    break
                groups: dict[str, list[Run]] = {}
                for run in candidates:
                    groups.setdefault(group_of(run, space), []).append(run)
                decisions = [decided.get((step, g)) or _decide(members, step, es, g) for g, members in groups.items()]
                rung_log.extend({**d, "diverged": [k for k in diverged if k in keys_of[d["group"]]]}
                                for d in decisions)
                with lock:
                    save()  # the decisions are on record before any summary changes
                promoted = {k for d in decisions for k in d["promoted"]}
                for run in candidates:
                    if run.key not in promoted:
                        _mark_stopped(run, step)
                active = [r for r in candidates if r.key in promoted]
                print(f"optimlab sweep {spec.name}: rung {step}: promoted {len(promoted)}, "
                      f"stopped {len(candidates) - len(promoted)}" + (f", diverged {len(diverged)}" if diverged else ""),
                      file=sys.stderr)
    except KeyboardInterrupt:
        interrupted = True
    with lock:
        save(finished=not (interrupted or failed))
    statuses = {run.key: scan_status(run.run_dir) for run in runs}
    result = SweepResult(spec.name, folder, runs, statuses, interrupted, 0)
    counts = ", ".join(f"{n} {s}" for s, n in result.counts.items())
    print(f"optimlab sweep {spec.name}: {len(runs)} trials: {counts}; {folder / 'sweep.json'}", file=sys.stderr)
    return result


def group_of(run: Run, space: set[str]) -> str:
    """The trials compared with each other: those of one grid point and seed (all overrides but the searched)."""
    return " ".join(o for o in run.overrides if o.partition("=")[0] not in space and not o.startswith("train.steps="))


def _decide(candidates: list[Run], step: int, es: EarlyStopping, group: str) -> dict[str, Any]:
    """Rank the trials that reached rung `step` (their summaries are at that step) and split them."""
    # A trial already beyond this rung, or already stopped, was decided before the record was lost: keep that.
    beyond = [r.key for r in candidates if int((read_summary(r.run_dir) or {}).get("step") or 0) > step]
    if beyond:
        promoted = beyond
    else:
        summaries = {r.key: read_summary(r.run_dir) or {} for r in candidates}
        values = {k: (None if s.get("status") == rundir.STOPPED else metric_value(s, es.metric))
                  for k, s in summaries.items()}
        first = next(iter(summaries.values()), {})
        maximize = es.mode == "max" if es.mode else bool(first.get("higher_is_better"))
        promoted = choose(values, es.keep, maximize)
    return {"step": step, "group": group, "trials": len(candidates), "promoted": promoted,
            "stopped": [r.key for r in candidates if r.key not in promoted]}


def _mark_stopped(run: Run, step: int) -> None:
    """Record the trial as ended on purpose at `step`: sweeps skip it, reports list it without aggregating it."""
    path = Path(run.run_dir) / rundir.SUMMARY
    summary = read_summary(run.run_dir)
    if summary is None or summary.get("status") == rundir.STOPPED:
        return
    write_json(path, {**summary, "status": rundir.STOPPED, "stopped_at_rung": step})
