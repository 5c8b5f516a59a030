"""What a warm worker's fork server imports once, and what each forked run executes.

Importing this module imports torch, torch's compiler stack (torch.optim's constructors import
`torch._dynamo`, over a second) and optimlab's training code; nothing here computes with torch, so the
fork server's OpenMP thread pool is never started and forking it stays safe.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys

import torch
import torch._dynamo  # noqa: F401  (imported by torch.optim's constructors; seconds)

import optimlab.cli
import optimlab.instruments.registry  # noqa: F401  (imported by every run's build)
import optimlab.train.cli  # noqa: F401
import optimlab.train.loop  # noqa: F401
from optimlab.sweep.execute import PYTHON, Launch


def prime() -> None:
    """In the server, once: the set-up that every run would otherwise repeat after its fork.

    Imports the built-in task modules (read the first time a task is looked up) and the modules a run
    imports lazily (the optimizer lookup's, torch.save's), and builds the config schemas every run's
    `load_config` merges with (`config.build_caches`); none of it computes with torch. (`optimlab
    train`'s help text, parsed from the config dataclasses' source, is built only when help is printed.)
    """
    import encodings.cp437  # noqa: F401  (numpy reads .npz member names with it: cached task data)

    import torch.utils.serialization  # noqa: F401  (torch.save: checkpoints)

    with contextlib.suppress(ImportError):  # the first record_function imports it (every zero_grad has one)
        import torch.profiler._cupti_monitor  # noqa: F401

    import optimlab.optim.zoo  # noqa: F401  (every optimizer lookup)
    from optimlab.config import build_caches
    from optimlab.tasks.registry import available_tasks, get_task_spec

    build_caches({get_task_spec(name).options for name in available_tasks()})  # every run's load_config


def run_launch(launch: Launch, environ: dict[str, str]) -> None:
    """In the forked process: become `python -m optimlab train ...` of `launch` and exit with its code.

    The output goes to the run's log; the environment is `environ` (the sweep's at launch time with the
    launch's variables, as a fresh subprocess would get) and the working directory the launch's; the
    intra-op thread count is its OMP_NUM_THREADS (torch read the variable when the server imported it).
    """
    from optimlab.sweep.warm import log_header

    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the server ignores it (optimlab.sweep.warm_server)
    log = os.open(launch.log or os.devnull, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(log, log_header(launch).encode())
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    os.environ.clear()
    os.environ.update(environ)
    if launch.cwd:
        os.chdir(launch.cwd)
    threads = os.environ.get("OMP_NUM_THREADS", "")
    if threads.isdigit() and int(threads) > 0:
        torch.set_num_threads(int(threads))
    argv = [sys.executable if a == PYTHON else a for a in launch.argv]
    sys.argv = ["optimlab", *argv[3:]]
    sys.exit(optimlab.cli.main(argv[3:]))
