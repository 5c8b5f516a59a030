"""`optimlab compare`: a small learning-rate grid per optimizer, several seeds, then the comparison report.

    optimlab compare task=mnist1d_mlp optims=[sgd,adam,sgd_c,adam_c] seeds=3

is the README's main job (and what `optimlab compare` with no arguments runs). Each optimizer gets the
learning-rate grid of its family (`LR_GRIDS`), or `lrs=[...]` for all, or `lrs={sgd: [...], adam: [...]}`
per optimizer. Any dotted config override (`train.steps=500`) applies to every run. The runs form the sweep
`compare-<task>` under `root`, so re-running the command skips finished runs and resumes interrupted ones.
While an optimizer's best learning rate is the smallest or largest of its grid, the grid is extended by one
value in that direction and run, at most `extend` times per optimizer (`optimlab.sweep.lr_extension`); the
report lists what was added and why. With the local, fresh and population backends an optimizer's
extension joins the running sweep as soon as its own runs have ended (`_sweep_extending`); with the others
the extensions run in rounds after the sweep.
"""

from __future__ import annotations

import dataclasses
import importlib
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from optimlab.config import Config
from optimlab.errors import ConfigError, suggest
from optimlab.sweep.execute import cpu_count, threads_per_run, train_command
from optimlab.sweep.expand import Run
from optimlab.sweep.lr_extension import Edge, Extension, edges_from_runs, extend_grids
from optimlab.sweep.warm import start_fork_server
from optimlab.sweep.runner import BACKENDS, SweepResult, run_sweep
from optimlab.sweep.spec import SweepSpec, parse_spec

# Learning-rate grids: three log-spaced values around each family's usual default.
LR_GRIDS: dict[str, tuple[float, ...]] = {
    "sgd": (0.1, 0.3, 1.0),
    "adam": (3e-3, 1e-2, 3e-2),
}
# Optimizer name -> family. Others fall back to their own default lr x (1/3, 1, 3).
FAMILIES: dict[str, str] = {
    **dict.fromkeys(("sgd", "sgd_c", "sgd_hd", "asgd", "sgd_schedulefree"), "sgd"),
    **dict.fromkeys(("adam", "adam_c", "adam_hd", "adamw", "adamw_c", "nadam", "radam", "adamax", "rmsprop", "rmsprop_c",
                     "adamw_schedulefree"), "adam"),
}

# Backends that add runs to a running sweep (`run_sweep`'s `grow`): compare extends its grids while it runs.
GROWING_BACKENDS = ("local", "fresh", "population")

# The training budget of every compare run unless overridden: a few minutes for the default job on 2 cores.
DEFAULT_TRAIN = {"train.steps": 1500, "train.eval_every": 250, "train.checkpoint_every": 500}


@dataclass
class CompareArgs:
    task: str = "mnist1d_mlp"
    optims: list[str] = dataclasses.field(default_factory=lambda: ["sgd", "adam", "sgd_c", "adam_c"])
    seeds: Any = 3  # n -> 0..n-1, or a list
    lrs: Any = None  # None: family grids; a list for every optimizer; a mapping optimizer -> list
    workers: int | None = None  # default: one per core
    out: str = "reports/compare"
    root: str = "runs"
    backend: str = "population"  # runs differing in seed and lr train together; the others on warm workers
    name: str | None = None  # the sweep's name; default compare-<task>
    progress: bool = True
    extend: int = 3  # learning rates added per optimizer while its best lr is on the grid's edge; 0: none
    overrides: list[str] = dataclasses.field(default_factory=list)  # dotted config overrides for every run


COMPARE_KEYS = tuple(f.name for f in dataclasses.fields(CompareArgs) if f.name != "overrides")
_CONFIG_KEYS = tuple(f.name for f in dataclasses.fields(Config))
# Config keys compare sets itself, with the compare key to use instead.
_OWNED = {"task": "task", "task.name": "task", "optim": "optims", "optim.name": "optims", "optim.lr": "lrs",
          "seed": "seeds", "run_dir": "root"}


@dataclass
class CompareResult:
    sweep: SweepResult
    report: Path | None  # index.html, or None when no report was written

    @property
    def exit_code(self) -> int:
        return self.sweep.exit_code


def parse_compare_args(argv: Sequence[str]) -> CompareArgs:
    """`key=value` arguments (OmegaConf dotlist syntax: `optims=[sgd,adam]`) to CompareArgs."""
    mine, overrides = [], []
    for item in argv:
        key, sep, _ = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"expected key=value, got {item!r}")
        if key in COMPARE_KEYS:
            mine.append(item)
        elif key in _OWNED:
            raise ConfigError(f"compare sets {key!r} itself; use {_OWNED[key]}=...")
        elif key.partition(".")[0] in _CONFIG_KEYS and "." in key:
            overrides.append(item)
        else:
            raise ConfigError(f"unknown compare key {key!r}{suggest(key, COMPARE_KEYS)} "
                              "(or a dotted config key such as train.steps=500)")
    try:
        values = OmegaConf.to_container(OmegaConf.from_dotlist(mine))
    except OmegaConfBaseException as error:
        raise ConfigError(f"cannot parse compare arguments: {error}") from None
    args = CompareArgs(**values, overrides=overrides)
    _check(args)
    return args


def _check(args: CompareArgs) -> None:
    if not isinstance(args.task, str) or not args.task:
        raise ConfigError(f"compare key 'task': expected a task name, got {args.task!r}")
    if isinstance(args.optims, str):
        args.optims = [args.optims]
    if not isinstance(args.optims, list) or not args.optims or not all(isinstance(o, str) for o in args.optims):
        raise ConfigError(f"compare key 'optims': expected a non-empty list of optimizer names, got {args.optims!r}")
    if len(set(args.optims)) != len(args.optims):
        raise ConfigError(f"compare key 'optims': duplicate names in {args.optims!r}")
    if args.workers is not None and (not isinstance(args.workers, int) or isinstance(args.workers, bool)
                                     or args.workers < 1):
        raise ConfigError(f"compare key 'workers': expected a positive integer, got {args.workers!r}")
    for key in ("out", "root"):
        if not isinstance(getattr(args, key), str) or not getattr(args, key):
            raise ConfigError(f"compare key {key!r}: expected a path, got {getattr(args, key)!r}")
    if args.backend not in BACKENDS:
        raise ConfigError(f"compare key 'backend': {args.backend!r} is not one of {', '.join(BACKENDS)}")
    if not isinstance(args.progress, bool):
        raise ConfigError(f"compare key 'progress': expected true or false, got {args.progress!r}")
    if not isinstance(args.extend, int) or isinstance(args.extend, bool) or args.extend < 0:
        raise ConfigError(f"compare key 'extend': expected a non-negative integer, got {args.extend!r}")
    if isinstance(args.lrs, dict):
        for name in args.lrs:
            if name not in args.optims:
                raise ConfigError(f"compare key 'lrs.{name}': {name!r} is not in optims{suggest(name, args.optims)}")
    for optim in args.optims:
        lr_grid(optim, args.lrs)  # every grid resolves before anything runs


def lr_grid(optim: str, lrs: Any = None) -> list[float]:
    """The learning rates tried for `optim`: from `lrs` if given, else its family's grid."""
    if isinstance(lrs, dict):
        lrs = lrs.get(optim)
    if lrs is not None:
        values = lrs if isinstance(lrs, list) else [lrs]
        if not values or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in values):
            raise ConfigError(f"compare key 'lrs' for {optim!r}: expected positive numbers, got {lrs!r}")
        return [float(v) for v in values]
    if optim in FAMILIES:
        return list(LR_GRIDS[FAMILIES[optim]])
    from optimlab.optim.registry import optimizer_arguments

    parameter = optimizer_arguments(optim).get("lr")  # an unknown name raises, naming it
    default = None if parameter is None else parameter.default
    if not isinstance(default, (int, float)) or isinstance(default, bool) or default <= 0:
        raise ConfigError(f"no default learning-rate grid for optimizer {optim!r}; give lrs=[...]")
    return [float(f"{default * f:.3g}") for f in (1 / 3, 1.0, 3.0)]


def compare_spec(args: CompareArgs, grids: dict[str, list[float]] | None = None) -> SweepSpec:
    """The sweep of `args`; `grids` (optimizer -> lrs) replaces the grids of `args.lrs` / the families."""
    grids = grids or {optim: lr_grid(optim, args.lrs) for optim in args.optims}
    grid = [{"task": args.task, "optim": optim, "optim.lr": list(grids[optim])} for optim in args.optims]
    data = {"name": args.name or f"compare-{args.task}",
            "description": f"optimlab compare: {', '.join(args.optims)} on {args.task}",
            "base": dict(DEFAULT_TRAIN), "grid": grid, "seeds": args.seeds}
    return parse_spec(data, source="optimlab compare")


def compare(
    args: CompareArgs | None = None,
    *,
    command: Callable[[Run], Sequence[str]] = train_command,
    report: Callable[..., Path] | None = None,
    backend_options: dict | None = None,
) -> CompareResult:
    """Run the comparison sweep, extend the lr grids whose best value is on an edge (`args.extend`), then
    write the report (`optimlab.report.write_report`) to `args.out`."""
    args = args or CompareArgs()
    _check(args)
    grids = {optim: lr_grid(optim, args.lrs) for optim in args.optims}
    workers = args.workers or cpu_count()
    if args.backend in ("local", "population") and command is train_command:
        start_fork_server(threads_per_run(workers))

    options = backend_options
    writing = threading.Event()  # set once the report is being written: the idle thread imports nothing then
    if args.backend == "population" and report is None:
        options = {"on_idle": lambda: _import_report(writing), **(backend_options or {})}

    configs: dict = {}  # validated once: an extension round validates only its new learning rates

    def sweep(grids: dict[str, list[float]], grow=None) -> SweepResult:
        return run_sweep(compare_spec(args, grids), root=args.root, backend=args.backend, workers=workers,
                         extra=args.overrides, backend_options=options, command=command,
                         progress=args.progress, config_cache=configs, grow=grow)

    notes: list[str] = []
    if args.extend > 0 and args.backend in GROWING_BACKENDS:
        result, notes = _sweep_extending(args, grids, sweep)
    else:
        result = sweep(grids)
        if not result.interrupted and args.extend > 0:

            def rerun(extended: dict[str, list[float]]) -> bool:
                nonlocal result
                result = sweep(extended)  # the same sweep with more lrs: its finished runs are skipped
                return not result.interrupted

            notes = extend_grids(grids, args.extend, lambda: _edges(result.run_dirs, args.optims[0]), rerun)
    if result.interrupted:
        return CompareResult(result, None)
    write = report or _report_writer(writing)
    if write is None:
        print(f"optimlab compare: optimlab.report is not available; the runs are in {result.folder}", file=sys.stderr)
        return CompareResult(result, None)
    # notes only when there are some: a report writer without the keyword still works for a plain grid
    index = write(result.run_dirs, Path(args.out), baseline=args.optims[0], **({"notes": notes} if notes else {}))
    return CompareResult(result, Path(index))


def _sweep_extending(args: CompareArgs, grids: dict[str, list[float]], sweep) -> tuple[SweepResult, list[str]]:
    """The sweep with its lr grids extended while it runs: as soon as all runs of one optimizer have ended,
    its best lr is checked and, on an edge, the next lr's runs join the sweep while the other optimizers
    still train (instead of a second round after the slowest one). Returns the sweep and the report's lines."""
    extension = Extension(grids, args.extend)
    checked: dict[str, int] = {}  # optimizer -> the grid size its edge was last checked at

    def grow(runs: list[Run], running: set[str]) -> SweepSpec | None:
        grown = False
        for optim in args.optims:
            mine = [run for run in runs if run.config.optim.name == optim]
            if checked.get(optim) == len(grids[optim]) or any(run.key in running for run in mine):
                continue
            checked[optim] = len(grids[optim])
            try:
                edges = _edges([run.run_dir for run in mine], optim)
            except ConfigError as error:
                print(f"optimlab compare: learning-rate grid of {optim} not extended: {error}", file=sys.stderr)
                continue
            edge = next((e for e in edges if e.optim == optim), None)
            grown |= extension.consider(optim, edge) is not None
        return compare_spec(args, grids) if grown else None

    result = sweep(grids, grow)
    if result.interrupted:
        return result, []
    try:
        final = _edges(result.run_dirs, args.optims[0])
    except ConfigError:
        final = []
    return result, extension.notes(final)


# The report's modules are imported by the backend's idle thread (`_import_report`) and by this thread (the
# grid extension's edges, the report): one at a time, since two threads importing the same package's modules
# at once can meet one of them half initialised (an ImportError naming a circular import).
_REPORT_IMPORTS = threading.Lock()


def _import_report(writing: threading.Event) -> None:
    """Import the report's modules (matplotlib among them: a second or more) while the sweep's last runs
    train and a core is free, instead of after them; nothing once the report is being written."""
    with _REPORT_IMPORTS:
        if writing.is_set():  # too late: the report imports what it needs itself, on its own thread
            return
        try:
            for name in ("optimlab.report", "matplotlib.figure", "matplotlib.backends.backend_agg"):
                importlib.import_module(name)
        except ImportError:  # the report says so itself when it is written
            pass


def _edges(run_dirs: Sequence[Path], baseline: str) -> list[Edge]:
    """`edges_from_runs`, once the report's modules are imported."""
    with _REPORT_IMPORTS:
        importlib.import_module("optimlab.report.analysis")
        importlib.import_module("optimlab.report.load")
    return edges_from_runs(run_dirs, baseline)


def _report_writer(writing: threading.Event) -> Callable[..., Path] | None:
    try:
        with _REPORT_IMPORTS:
            writing.set()
            module = importlib.import_module("optimlab.report")
    except ModuleNotFoundError as error:
        if error.name != "optimlab.report":
            raise
        return None
    return getattr(module, "write_report", None)
