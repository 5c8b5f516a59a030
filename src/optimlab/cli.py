"""The `optimlab` command: train | sweep | report | compare | list.

Bad input (an unknown name, a wrong type, an invalid value, a missing file) prints one line on stderr and
exits with code 2 before anything is written. A run that cannot write its run directory (a full or read-only
disk) prints one line and exits with code 1. OpenMP's idle threads sleep rather than spin (`OMP_WAIT_POLICY`
defaults to PASSIVE), so a run next to another busy process is not slowed tens of times.
"""

from __future__ import annotations

import sys

from optimlab import rundir
from optimlab.errors import ConfigError, RunFailed

USAGE = """usage: optimlab COMMAND [ARGS]

commands:
  train    [--config FILE] [key=value ...]   train one run (resumes an existing run directory)
  sweep    SPEC [--backend local|fresh|population|ray|slurm] [--workers N] [--root DIR]
  report   RUNS... --out DIR [--baseline NAME] [--series NAME...]
  compare  [task=NAME] [optims=[a,b]] [seeds=N] [key=value ...]   sweep + report (the main job)
  list     tasks | optimizers [NAME] | sweeps | instruments
  meta-train [--config FILE] [key=value ...]   meta-train a learned optimizer (preset=quick: about a minute)
  evaluate   path=DIR tasks=[...] [key=value ...]   a learned optimizer on tasks, repeated seeds
  baseline   optim=NAME lrs=[...] tasks=[...]       the same protocol for an analytical optimizer

`optimlab COMMAND --help` describes a command; `optimlab train --help` lists every config key.
"""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    thread_defaults()
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    command, rest = argv[0], argv[1:]
    try:
        load_plugins()
        handler = _commands()[command]
    except KeyError:
        from optimlab.errors import suggest

        print(f"optimlab: unknown command {command!r}{suggest(command, _commands())}", file=sys.stderr)
        return 2
    try:
        return handler(rest)
    except ConfigError as error:
        print(f"optimlab {command}: error: {error}", file=sys.stderr)
        return 2
    except RunFailed as error:
        print(f"optimlab {command}: failed: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"optimlab {command}: interrupted", file=sys.stderr)
        return rundir.EXIT_CTRL_C


# Commands whose process only coordinates (its runs are other processes, its files are closed when it
# returns): `entry` ends them without the interpreter's teardown.
_QUICK_EXIT = ("compare", "sweep", "report")


def entry() -> None:
    """The `optimlab` command and `python -m optimlab`: `main`, then the end of the process.

    After compare, sweep and report, the atexit handlers run and the output is flushed, then the process
    ends with `os._exit`: the interpreter's teardown, once torch, torch._dynamo and matplotlib are loaded,
    takes about a second (measured on 2 cores) and nothing in such a process needs it. The other commands,
    and a process with threads still running, exit normally.
    """
    import atexit
    import os
    import threading

    code = main()
    if sys.argv[1:2] and sys.argv[1] in _QUICK_EXIT and threading.active_count() == 1:
        atexit._run_exitfuncs()  # what a normal exit runs first: handlers of plugins, Ray, logging
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def thread_defaults() -> None:
    """Make OpenMP's idle threads sleep instead of spin, unless the user chose (`OMP_WAIT_POLICY`).

    torch runs one OpenMP thread per core. GNU OpenMP's threads spin-wait between parallel regions, so
    when another process holds a core the spinning threads and the one doing work take turns on it: one
    small run next to one busy process on 2 cores took 69 s instead of 23 s (docs/performance.md).
    PASSIVE waiting keeps the thread count, and so every result, and only changes how threads wait.
    OpenMP reads the variable when torch loads, so this runs before any import of torch.
    """
    import os

    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def load_plugins() -> None:
    """Import the modules named in $OPTIMLAB_PLUGINS (comma-separated module names or .py paths).

    This is how a researcher's own tasks and optimizers (registered with `register_task` / `register`)
    become available to the command line, sweeps included.
    """
    import importlib
    import importlib.util
    import os

    for entry in filter(None, (e.strip() for e in os.environ.get("OPTIMLAB_PLUGINS", "").split(","))):
        if entry.endswith(".py"):
            name = f"optimlab_plugin_{abs(hash(entry))}"
            spec = importlib.util.spec_from_file_location(name, entry)
            if spec is None or not os.path.exists(entry):
                raise ConfigError(f"OPTIMLAB_PLUGINS: no such file {entry!r}")
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
        else:
            try:
                importlib.import_module(entry)
            except ImportError as error:
                raise ConfigError(f"OPTIMLAB_PLUGINS: cannot import {entry!r}: {error}") from None


def _commands():
    # Imported lazily so that `optimlab list` does not pay for every backend.
    def train(argv):
        from optimlab.train.cli import train_main

        return train_main(argv)

    def sweep(argv):
        from optimlab.sweep.cli import sweep_main

        return sweep_main(argv)

    def compare(argv):
        from optimlab.sweep.cli import compare_main

        return compare_main(argv)

    def report(argv):
        from optimlab.report.cli import report_main

        return report_main(argv)

    def learned(name):
        def handler(argv):
            from optimlab.learned import cli

            return getattr(cli, name)(argv)

        return handler

    return {
        "train": train, "sweep": sweep, "report": report, "compare": compare, "list": _list,
        "meta-train": learned("meta_train_main"), "evaluate": learned("evaluate_main"), "baseline": learned("baseline_main"),
    }  # fmt: skip


LIST_USAGE = """usage: optimlab list WHAT [NAME]

  tasks                 every task with a one-line description
  optimizers            every optimizer with the first line of its docstring
  optimizers NAME       one optimizer: its description, keyword arguments and defaults (optim.<argument>=...)
  sweeps                the sweep files shipped in sweeps/
  instruments           gradient instruments with what each needs
"""


def _list(argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print(LIST_USAGE)
        return 0
    what = argv[0] if argv else ""
    if what == "tasks":
        from optimlab.tasks import available_tasks, get_task_spec

        for name in available_tasks():
            print(f"{name:24s} {get_task_spec(name).description}")
    elif what == "optimizers" and len(argv) > 1:
        print(optimizer_details(argv[1]))
    elif what == "optimizers":
        from optimlab.optim.registry import available, describe_optimizer

        for name in available(zoo=True):
            print(f"{name:24s} {describe_optimizer(name)}".rstrip())
    elif what == "sweeps":
        from optimlab.sweep.spec import available_sweeps

        print("\n".join(available_sweeps()))
    elif what == "instruments":
        from optimlab.instruments.registry import INSTRUMENTS

        for name in INSTRUMENTS.names():
            print(f"{name:20s} {INSTRUMENTS.describe(name)} [needs: {', '.join(INSTRUMENTS.get(name).needs)}]")
    else:
        raise ConfigError(f"list what? expected tasks, optimizers, sweeps or instruments, got {what!r}")
    return 0


def optimizer_details(name: str) -> str:
    """`optimlab list optimizers NAME`: the description and every keyword argument with its default."""
    import inspect

    from optimlab.optim.registry import describe_optimizer, optimizer_arguments

    lines = [f"{name}: {describe_optimizer(name)}".rstrip(), "", "arguments (optim.<argument>=value):"]
    for key, parameter in optimizer_arguments(name).items():
        default = "required" if parameter.default is inspect.Parameter.empty else repr(parameter.default)
        lines.append(f"  {key:24s} {default}")
    return "\n".join(lines)

if __name__ == "__main__":
    sys.exit(main())
