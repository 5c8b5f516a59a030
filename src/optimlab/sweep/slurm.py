"""The SLURM backend, through submitit: one job array, one job per run, requeued on preemption or timeout.

Each job runs `TrainJob`, a `submitit.helpers.Checkpointable` that runs the same training subprocess as
the other backends. Before SLURM's time limit (or on preemption, where the cluster sends the signal)
submitit delivers SIGUSR1 to the job; `TrainJob.checkpoint` forwards it to the trainer, which writes a
checkpoint and exits 75, and submitit requeues the same job, whose trainer then resumes from that
checkpoint (`train.resume=true`). We ask submitit for SIGUSR1 rather than its default SIGUSR2 because
SLURM may signal every process of the job step, and the trainer checkpoints on SIGUSR1 and SIGTERM.

`cluster=None` lets submitit pick (SLURM when `sbatch` exists, else local); `cluster="local"` runs the jobs
as local processes, which is how the tests exercise this path.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from optimlab import rundir
from optimlab.errors import ConfigError
from optimlab.sweep.execute import Launch, execute, signal_and_wait

OnDone = Callable[[Launch, "int | None", "str | None"], None]

PREEMPT_SIGNAL = "USR1"  # read by submitit (SUBMITIT_PREEMPT_SIGNAL) when it is imported


def require_submitit():
    if importlib.util.find_spec("submitit") is None:
        raise ConfigError("the slurm backend needs submitit: pip install 'optimlab[slurm]'")
    os.environ.setdefault("SUBMITIT_PREEMPT_SIGNAL", PREEMPT_SIGNAL)
    import submitit

    # If submitit was imported earlier with another signal, jobs must agree with the submitting side.
    os.environ["SUBMITIT_PREEMPT_SIGNAL"] = submitit.JobEnvironment.USR_SIG
    return submitit


def _checkpointable_base():
    submitit = require_submitit()
    return submitit.helpers.Checkpointable


class TrainJob(_checkpointable_base() if importlib.util.find_spec("submitit") else object):  # type: ignore[misc]
    """The submitit job for one run: runs the trainer; on preemption makes it checkpoint, then requeues."""

    def __init__(self, grace: float = 60.0):
        self.grace = grace
        self._process: subprocess.Popen | None = None

    def __call__(self, launch: Launch) -> int:
        self._process = None
        code = execute(launch, on_start=self._started, preexec=_ignore_submitit_signal)
        if code == rundir.EXIT_INTERRUPTED:
            time.sleep(2.0)  # the preemption signal reached the trainer first; let submitit's handler requeue
        return code

    def _started(self, process: subprocess.Popen) -> None:
        self._process = process

    def checkpoint(self, launch: Launch):  # called by submitit in the job process on the preemption signal
        if self._process is not None:  # we are in a signal handler that interrupted `execute`'s wait
            signal_and_wait(self._process, signal.SIGUSR1, self.grace)
        self._process = None
        return super().checkpoint(launch)

    def __getstate__(self) -> dict:
        return {"grace": self.grace, "_process": None}


def _ignore_submitit_signal() -> None:
    """In the trainer: ignore submitit's signal if it is not one the trainer handles (SLURM may send it to all)."""
    name = "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", PREEMPT_SIGNAL)
    number = getattr(signal, name, None)
    if number is not None and number not in (signal.SIGUSR1, signal.SIGTERM):
        signal.signal(number, signal.SIG_IGN)


class SlurmBackend:
    name = "slurm"

    def __init__(
        self,
        folder: str | Path,
        *,
        cluster: str | None = None,
        partition: str | None = None,
        time_min: int = 60,
        gpus: int = 0,
        cpus_per_run: int = 1,
        array_parallelism: int | None = None,
        mem: str | None = None,
        account: str | None = None,
        qos: str | None = None,
        constraint: str | None = None,
        setup: list[str] | None = None,
        extra: dict[str, str] | None = None,
        signal_delay_s: int = 120,
        grace: float = 60.0,
        poll: float = 1.0,
    ):
        require_submitit()
        self.folder = Path(folder)
        self.cluster = cluster
        self.partition = partition
        self.time_min = time_min
        self.gpus = gpus
        self.cpus_per_run = cpus_per_run
        self.array_parallelism = array_parallelism
        # hydra-submitit's habits: sbatch options by name, shell lines before the job, anything else as extra
        self.slurm_options = {"mem": mem, "account": account, "qos": qos, "constraint": constraint}
        self.setup = list(setup or [])
        self.extra = dict(extra or {})
        self.signal_delay_s = signal_delay_s
        self.grace = grace
        self.poll = poll
        self.jobs: dict[str, object] = {}  # run key -> submitit job

    def executor(self):
        submitit = require_submitit()
        executor = submitit.AutoExecutor(folder=self.folder / "%j", cluster=self.cluster)
        params: dict = dict(timeout_min=self.time_min, cpus_per_task=self.cpus_per_run, tasks_per_node=1, nodes=1)
        if self.gpus:
            params["gpus_per_node"] = self.gpus
        if executor.cluster == "slurm":
            params.update({f"slurm_{key}": value for key, value in self.slurm_parameters().items()})
        executor.update_parameters(name="optimlab", **params)
        return executor

    def slurm_parameters(self) -> dict:
        """The SLURM-only parameters of submitit's SlurmExecutor (without the `slurm_` prefix AutoExecutor adds)."""
        params: dict = {"signal_delay_s": self.signal_delay_s}
        if self.partition:
            params["partition"] = self.partition
        if self.array_parallelism:
            params["array_parallelism"] = self.array_parallelism
        params.update({key: value for key, value in self.slurm_options.items() if value})
        if self.setup:
            params["setup"] = self.setup
        if self.extra:
            params["additional_parameters"] = self.extra
        return params

    def run(self, launches: list[Launch], on_done: OnDone) -> None:
        """Submit one job array and wait for it; on Ctrl-C the jobs are left running (re-run to collect)."""
        if not launches:
            return
        executor = self.executor()
        jobs = executor.map_array(TrainJob(self.grace), launches)
        self.jobs = {launch.key: job for launch, job in zip(launches, jobs)}
        pending = dict(zip(jobs, launches))
        while pending:
            for job in [j for j in pending if j.done()]:
                launch = pending.pop(job)
                try:
                    code = job.result()
                except Exception as error:
                    on_done(launch, None, f"job {job.job_id}: {str(error).strip().splitlines()[-1]}")
                else:
                    on_done(launch, code, None)
            if pending:
                time.sleep(self.poll)
