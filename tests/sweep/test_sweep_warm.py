"""Warm workers (optimlab.sweep.warm): a run forked by a warm worker is indistinguishable from a fresh
`python -m optimlab train` process (bit-identical parameters and losses, no state leaking from the run
before it), a crash or SIGKILL takes down only its run, and kill -9 of the whole sweep resumes on re-run."""

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml
from sweep_helpers import pids_holding, wait_for

from optimlab.rundir import read_summary
from optimlab.sweep import parse_spec, run_sweep
from optimlab.sweep.execute import PYTHON
from optimlab.sweep.warm import is_train_command

PLUGINS = str(Path(__file__).with_name("warm_plugins.py"))
TOY = {"task.batch_size": 16, "optim.lr": 0.05, "train.log_every": 5, "train.eval_every": 10,
       "train.checkpoint_every": 10}


@pytest.fixture(autouse=True, scope="module")
def warm_tasks():
    """toy, leaky and crashy registered here too (the sweep validates its runs), only while these tests run:
    tests elsewhere parametrize over every registered task."""
    from optimlab.tasks.registry import _TASKS

    import warm_plugins  # noqa: F401

    yield
    for name in ("leaky", "crashy"):  # the registry has no removal: its tables, directly
        _TASKS._objects.pop(name, None)
        _TASKS._descriptions.pop(name, None)


@pytest.fixture(autouse=True)
def plugins(monkeypatch):
    monkeypatch.setenv("OPTIMLAB_PLUGINS", PLUGINS)


def spec(name, grid, seeds=1, steps=30, **base):
    return parse_spec({"name": name, "base": {**TOY, "train.steps": steps, **base}, "grid": grid, "seeds": seeds})


def config(run_dir):
    """config.yaml without run_dir (the two sweeps write to different roots)."""
    tree = yaml.safe_load((Path(run_dir) / "config.yaml").read_text())
    tree.pop("run_dir")
    return tree


def losses(run_dir):
    lines = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["train/loss"]) for r in lines if "train/loss" in r]


def test_only_optimlab_train_commands_run_warm():
    assert is_train_command((PYTHON, "-m", "optimlab", "train", "task=toy"))
    assert not is_train_command(("python", "-m", "optimlab", "train"))
    assert not is_train_command((PYTHON, "fake_train.py", "run"))


def test_the_server_primes_what_every_run_needs_and_freezes_its_objects_out_of_the_gc():
    # In a process of its own, as the fork server imports it: runs forked from it find the task modules
    # imported, and their garbage collections skip the server's objects.
    probe = (
        "import gc, sys; import optimlab.sweep.warm_server; from optimlab.tasks import registry; "
        "print(gc.get_freeze_count(), registry._builtins_loaded, "
        "'optimlab.tasks.mnist1d' in sys.modules, len(gc.get_objects()))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    frozen, builtins, mnist1d, unfrozen = done.stdout.split()
    assert int(frozen) > 100_000 and int(unfrozen) < 1_000
    assert builtins == mnist1d == "True"


def test_warm_runs_are_bit_identical_to_fresh_processes_and_nothing_leaks(tmp_path):
    # One worker: each run is forked right after the previous one ended; `leaky` changes threads, the
    # default dtype, deterministic flags, Python's RNG and a class attribute while it builds.
    grid = {"task": ["leaky", "toy"], "optim": ["adam", "sgd"]}
    sweep = spec("eq", grid, seeds=2)
    warm = run_sweep(sweep, root=tmp_path / "warm", workers=1, cpus_per_run=1, progress=False)
    fresh = run_sweep(sweep, root=tmp_path / "fresh", backend="fresh", workers=1, cpus_per_run=1, progress=False)
    assert warm.exit_code == fresh.exit_code == 0
    assert len(warm.runs) == 8
    for a, b in zip(warm.runs, fresh.runs):
        sa, sb = read_summary(a.run_dir), read_summary(b.run_dir)
        assert a.key == b.key and sa["status"] == sb["status"] == "completed"
        assert sa["params_sha256"] == sb["params_sha256"], a.key
        assert losses(a.run_dir) == losses(b.run_dir) and len(losses(a.run_dir)) == 6
        assert config(a.run_dir) == config(b.run_dir)
        if a.config.task.name == "toy":  # leaky's threads (2) did not carry over to the run after it
            assert config(a.run_dir)["train"]["threads"] == 1
    log = (tmp_path / "warm" / "eq" / "logs" / f"{warm.runs[0].key}.log").read_text()
    assert "(warm worker)" in log and "=== exit code 0" in log


def test_a_crash_and_a_sigkill_take_down_only_their_run_then_rerun_resumes(tmp_path):
    sweep = spec("iso", {"task": ["crashy", "toy"]}, seeds=3, steps=60, **{"task.delay": 0.02})
    runs = {run.key: run for run in parse_and_expand(sweep, tmp_path)}
    victim = next(run for run in runs.values() if run.config.task.name == "toy" and run.config.seed == 0)
    result = {}
    thread = threading.Thread(target=lambda: result.update(r=run_sweep(sweep, root=tmp_path, workers=2,
                                                                       progress=False)))
    thread.start()
    (pid,) = wait_for(lambda: list((victim.run_dir / "checkpoints").glob("step-*.pt"))
                      and pids_holding(victim.run_dir / ".lock", exclude=(os.getpid(),)), timeout=120, interval=0.02)
    os.kill(pid, signal.SIGKILL)
    thread.join(timeout=300)
    record = {r["dir"]: r for r in json.loads((tmp_path / "iso" / "sweep.json").read_text())["runs"]}
    assert record[victim.key]["status"] == "interrupted" and record[victim.key]["error"] == "killed by SIGKILL"
    for key, run in runs.items():
        if run.config.task.name == "crashy":
            assert record[key]["status"] == "failed" and "forward failed on purpose" in record[key]["error"]
        elif key != victim.key:
            assert record[key]["status"] == "completed"

    again = run_sweep(sweep, root=tmp_path, workers=2, progress=False)
    statuses = again.statuses
    assert statuses[victim.key] == "completed" and resumed(tmp_path / "iso", victim.key)
    assert sorted(statuses.values()) == ["completed"] * 3 + ["failed"] * 3


def resumed(folder, key):
    """Whether the run's last attempt resumed from a checkpoint (the trainer says so in the run's log)."""
    last = (folder / "logs" / f"{key}.log").read_text().rsplit("\n=== 20", 1)[-1]
    return "optimlab: resumed from step" in last


def parse_and_expand(sweep, root):
    from optimlab.sweep import expand

    return expand(sweep, root)


DRIVER = """
import sys
sys.path.insert(0, {tests!r})
import warm_plugins
from optimlab.sweep import parse_spec, run_sweep
from test_sweep_warm import TOY
spec = parse_spec({{"name": "k9", "base": {{**TOY, "train.steps": 400, "task.delay": 0.02}},
                   "grid": {{"task": ["toy"], "optim": ["sgd", "adam", "adamw"]}}}})
sys.exit(run_sweep(spec, root={root!r}, workers=2, progress=False).exit_code)
"""


def test_kill_9_of_the_whole_sweep_process_group_then_rerun_resumes(tmp_path):
    script = DRIVER.format(tests=str(Path(__file__).parent), root=str(tmp_path))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    driver = subprocess.Popen([sys.executable, "-c", script], start_new_session=True, env=env,
                              stderr=subprocess.PIPE, text=True)

    def running_with_checkpoints():
        dirs = [p.parent.parent for p in (tmp_path / "k9").glob("*/*/checkpoints/step-*.pt")]
        holders = {d: pids_holding(d / ".lock", exclude=(driver.pid,)) for d in set(dirs)}
        return holders if len(holders) == 2 and all(holders.values()) else None

    holders = wait_for(running_with_checkpoints, timeout=120, interval=0.05)
    os.killpg(driver.pid, signal.SIGKILL)  # the sweep, its fork server and its runs, all at once
    driver.communicate(timeout=30)
    pids = [pid for found in holders.values() for pid in found]
    wait_for(lambda: not any(os.path.exists(f"/proc/{pid}") for pid in pids), timeout=30)

    again = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    for run_dir in holders:
        summary = read_summary(run_dir)
        assert summary["status"] == "completed" and resumed(tmp_path / "k9", str(run_dir.relative_to(tmp_path / "k9")))
