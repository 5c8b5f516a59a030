"""The sweep runner and local backend with a stand-in trainer (tests/sweep/fake_train.py): statuses,
fault tolerance, skip and resume on re-run, records, locks, interruption."""

import fcntl
import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
from sweep_helpers import FAKE, fake_command, wait_for

from optimlab.errors import ConfigError
from optimlab.sweep import expand, run_sweep
from optimlab.sweep.execute import threads_per_run
from optimlab.rundir import is_locked, read_summary
from optimlab.sweep.state import outcome, scan_status


def summaries(result):
    return {run.key: read_summary(run.run_dir) for run in result.runs}


def test_all_runs_complete_with_records_logs_and_threads(tmp_path, small_spec):
    result = run_sweep(small_spec, root=tmp_path, workers=2, command=fake_command(), progress=False)
    assert result.exit_code == 0 and set(result.statuses.values()) == {"completed"}
    record = json.loads((tmp_path / "small" / "sweep.json").read_text())
    assert record["finished"] and record["counts"] == {"completed": 6} and record["workers"] == 2
    assert [r["dir"] for r in record["runs"]] == [run.key for run in result.runs]
    for entry, run in zip(record["runs"], result.runs):
        assert entry["overrides"] == list(run.overrides) and entry["attempts"] == 1 and entry["exit_code"] == 0
        assert "completed: 20/20" in (tmp_path / "small" / entry["log"]).read_text()
    assert {s["threads"] for s in summaries(result).values()} == {str(threads_per_run(2))}


def test_local_pool_runs_at_most_workers_at_once(tmp_path, small_spec):
    result = run_sweep(small_spec, root=tmp_path, workers=2, command=fake_command(steps=10), progress=False)
    spans = sorted((s["started"], s["finished"]) for s in summaries(result).values())
    for start, _ in spans:  # at any run's start, at most 2 runs (itself included) are running
        assert sum(s <= start < f for s, f in spans) <= 2


def test_crashes_and_kills_are_recorded_and_the_sweep_goes_on_then_rerun_resumes(tmp_path, small_spec):
    # seed 1 runs crash (exit 1), seed 2 runs SIGKILL themselves half way; seed 0 runs complete.
    modes = {1: "crash", 2: "die"}
    result = run_sweep(small_spec, root=tmp_path, workers=2, command=fake_command(modes), progress=False)
    assert result.exit_code == 1
    by_seed = {seed: {result.statuses[r.key] for r in result.runs if r.config.seed == seed} for seed in range(3)}
    assert by_seed == {0: {"completed"}, 1: {"failed"}, 2: {"interrupted"}}
    record = {r["dir"]: r for r in json.loads((tmp_path / "small" / "sweep.json").read_text())["runs"]}
    crashed = next(r for r in result.runs if r.config.seed == 1)
    assert record[crashed.key]["error"] == "RuntimeError: boom" and record[crashed.key]["exit_code"] == 1
    killed = next(r for r in result.runs if r.config.seed == 2)
    assert record[killed.key]["exit_code"] == -signal.SIGKILL and record[killed.key]["error"] == "killed by SIGKILL"

    completed = [r for r in result.runs if r.config.seed == 0]
    before = {r.key: (r.run_dir / "summary.json").stat().st_mtime_ns for r in completed}
    again = run_sweep(small_spec, root=tmp_path, workers=2, command=fake_command({1: "crash"}), progress=False)
    assert again.skipped == 2
    assert {r.key: (r.run_dir / "summary.json").stat().st_mtime_ns for r in completed} == before  # untouched
    for run in again.runs:
        summary = read_summary(run.run_dir)
        if run.config.seed == 2:  # resumed from the checkpoint written before the kill
            assert again.statuses[run.key] == "completed" and summary["resumed_from"] == 10
    assert {again.statuses[r.key] for r in again.runs if r.config.seed == 1} == {"failed"}  # launched again
    record = {r["dir"]: r for r in json.loads((tmp_path / "small" / "sweep.json").read_text())["runs"]}
    assert record[killed.key]["attempts"] == 2 and record[crashed.key]["attempts"] == 2
    assert record[completed[0].key]["attempts"] == 1


def test_status_from_the_run_directory(tmp_path):
    run_dir = tmp_path / "run"
    assert scan_status(run_dir) == "pending"
    run_dir.mkdir()
    (run_dir / "summary.json").write_text(json.dumps({"status": "running"}))
    (run_dir / ".lock").touch()
    assert scan_status(run_dir) == "interrupted"  # says running, but no process holds the lock: killed
    with open(run_dir / ".lock") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert is_locked(run_dir) and scan_status(run_dir) == "busy"
    assert not is_locked(run_dir)
    (run_dir / "summary.json").write_text(json.dumps({"status": "diverged"}))
    assert scan_status(run_dir) == "diverged"


def test_outcome_of_an_exit_code(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    assert outcome(run_dir, 75) == ("interrupted", None)  # checkpointed on SIGTERM, SIGUSR1 or SIGINT
    # Ctrl-C before the trainer could checkpoint (during start-up): `optimlab` exits 130; a stop, not a failure
    assert outcome(run_dir, 130) == ("interrupted", "stopped by Ctrl-C (exit 130)")
    assert outcome(run_dir, -signal.SIGINT) == ("interrupted", "killed by SIGINT")
    assert outcome(run_dir, -signal.SIGSEGV) == ("failed", "killed by SIGSEGV")
    assert outcome(run_dir, 1, "RuntimeError: boom") == ("failed", "RuntimeError: boom")
    assert outcome(run_dir, 0) == ("failed", "exited 0 but summary.json says None")
    (run_dir / "summary.json").write_text(json.dumps({"status": "stopped"}))
    assert outcome(run_dir, 0) == ("stopped", None) and scan_status(run_dir) == "stopped"  # a result: skipped


def test_a_run_held_by_another_process_is_left_alone(tmp_path, small_spec):
    held_run = expand(small_spec, tmp_path)[0]
    held_run.run_dir.mkdir(parents=True)
    with open(held_run.run_dir / ".lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = run_sweep(small_spec, root=tmp_path, workers=2, command=fake_command(), progress=False)
    assert result.statuses[held_run.key] == "busy" and read_summary(held_run.run_dir) is None
    assert sum(s == "completed" for s in result.statuses.values()) == 5 and result.exit_code == 1


def test_one_sweep_process_per_sweep_folder(tmp_path, small_spec):
    from optimlab.sweep.state import SweepLock

    lock = SweepLock(tmp_path / "small")
    assert lock.acquire()
    try:
        with pytest.raises(ConfigError, match="in use by another sweep process"):
            run_sweep(small_spec, root=tmp_path, command=fake_command(), progress=False)
    finally:
        lock.release()


def test_bad_input_fails_before_any_run_starts(tmp_path):
    from optimlab.sweep import parse_spec

    spec = parse_spec({"name": "bad", "grid": [{"optim": ["sgd"]}, {"optim": "sgd", "optim.momentun": [0.9]}]})
    with pytest.raises(ConfigError, match="optim.momentun"):
        run_sweep(spec, root=tmp_path, command=fake_command(), progress=False)
    assert not (tmp_path / "bad").exists()
    with pytest.raises(ConfigError, match="unknown backend 'nope'"):
        run_sweep(parse_spec({"name": "s", "grid": {"optim": "sgd"}}), root=tmp_path, backend="nope")
    assert not (tmp_path / "s").exists()


DRIVER = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    from sweep_helpers import fake_command
    from optimlab.sweep import parse_spec, run_sweep
    spec = parse_spec({{"name": "slow", "grid": {{"optim": ["sgd", "adam", "adamw"]}}}})
    result = run_sweep(spec, root={root!r}, workers=2, command=fake_command({{0: {mode!r}}}, steps=40), progress=False)
    sys.exit(result.exit_code)
""")


def _start_driver(tmp_path, mode):
    script = DRIVER.format(tests=str(FAKE.parent), root=str(tmp_path), mode=mode)
    # The sweep runs as from an interactive terminal: SIGINT at its default, even when the test suite itself
    # was started as a background job (which inherits SIGINT ignored, and python then never raises
    # KeyboardInterrupt, as `nohup ... &` intends).
    return subprocess.Popen([sys.executable, "-c", script], start_new_session=True, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_default_sigint)


def _default_sigint():
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _running_pids(tmp_path):
    """The pids of the two running runs once each has written a checkpoint (then a stop resumes both)."""
    summaries = [(p.parent, s) for p in (tmp_path / "slow").glob("*/*/summary.json") if (s := read_summary(p.parent))]
    running = [(run_dir, s["pid"]) for run_dir, s in summaries if s.get("status") == "running"]
    if len(running) != 2 or not all(list((run_dir / "checkpoints").glob("step-*.pt")) for run_dir, _ in running):
        return None
    return [pid for _, pid in running]


def _assert_stopped_and_recorded(tmp_path):
    record = json.loads((tmp_path / "slow" / "sweep.json").read_text())
    statuses = sorted(r["status"] for r in record["runs"])
    assert statuses == ["interrupted", "interrupted", "pending"] and not record["finished"]
    for run in record["runs"]:
        if run["status"] == "interrupted":
            assert run["exit_code"] == 75
            assert read_summary(tmp_path / "slow" / run["dir"])["status"] == "interrupted"


def _rerun_resumes(tmp_path, stopped):
    from optimlab.sweep import parse_spec

    spec = parse_spec({"name": "slow", "grid": {"optim": ["sgd", "adam", "adamw"]}})
    result = run_sweep(spec, root=tmp_path, workers=2, command=fake_command(steps=40), progress=False)
    assert result.exit_code == 0
    resumed = {run.key: read_summary(run.run_dir)["resumed_from"] for run in result.runs}
    assert all(resumed[key] >= 5 for key in stopped) and len(stopped) == 2


def test_sigterm_to_the_sweep_checkpoints_running_runs_and_exits_75(tmp_path):
    driver = _start_driver(tmp_path, "slow")
    wait_for(lambda: _running_pids(tmp_path))
    driver.send_signal(signal.SIGTERM)
    _, err = driver.communicate(timeout=60)
    assert driver.returncode == 75, err
    _assert_stopped_and_recorded(tmp_path)


@pytest.mark.parametrize("target", ["process group", "sweep process"])
def test_ctrl_c_records_runs_as_interrupted_not_failed_then_rerun_resumes(tmp_path, target):
    # Ctrl-C in a terminal sends SIGINT to the whole foreground process group: the sweep and its runs. The
    # trainer checkpoints on SIGINT and exits 75; the sweep also asks its runs to stop.
    driver = _start_driver(tmp_path, "slow")
    wait_for(lambda: _running_pids(tmp_path))
    if target == "process group":
        os.killpg(driver.pid, signal.SIGINT)
    else:
        driver.send_signal(signal.SIGINT)
    _, err = driver.communicate(timeout=60)
    assert driver.returncode == 75, err
    _assert_stopped_and_recorded(tmp_path)
    record = json.loads((tmp_path / "slow" / "sweep.json").read_text())
    _rerun_resumes(tmp_path, [r["dir"] for r in record["runs"] if r["status"] == "interrupted"])


def test_kill_9_of_the_whole_sweep_process_group_then_rerun(tmp_path):
    driver = _start_driver(tmp_path, "slow")
    pids = wait_for(lambda: _running_pids(tmp_path))  # both running runs have a checkpoint to resume from
    os.killpg(driver.pid, signal.SIGKILL)  # the sweep and its runs, all at once
    driver.wait(timeout=30)
    wait_for(lambda: not any(os.path.exists(f"/proc/{pid}") for pid in pids), timeout=30)
    from optimlab.sweep import parse_spec

    runs = expand(parse_spec({"name": "slow", "grid": {"optim": ["sgd", "adam", "adamw"]}}), tmp_path)
    before = {r.key: scan_status(r.run_dir) for r in runs}
    assert sorted(before.values()) == ["interrupted", "interrupted", "pending"]  # `running` summaries, no process
    _rerun_resumes(tmp_path, [key for key, status in before.items() if status == "interrupted"])


def test_a_growing_sweep_adds_runs_while_it_runs_and_records_them(tmp_path, small_spec):
    """`grow` sees which runs are still to end; the runs of the larger spec it returns join the sweep, its
    record and its result; run again, every run is skipped and nothing starts."""
    from optimlab.sweep.spec import parse_spec

    larger = parse_spec({**small_spec.data, "grid": {"task": "logreg", "optim": ["sgd", "adam", "adagrad"]}})
    calls = []

    def grow(runs, running):
        calls.append((len(runs), len(running)))
        optims = {run.config.optim.name for run in runs}
        adam_ended = not any(run.key in running for run in runs if run.config.optim.name == "adam")
        return larger if adam_ended and "adagrad" not in optims else None

    result = run_sweep(small_spec, root=tmp_path, workers=2, backend="fresh", command=fake_command(), progress=False,
                       grow=grow)
    assert result.exit_code == 0 and len(result.runs) == 9 and set(result.statuses.values()) == {"completed"}
    assert calls[0] == (6, 6)  # before the first run starts: all six to run
    assert calls[-1][0] == 9  # adagrad's three runs joined; the calls after they did see all nine
    record = json.loads((tmp_path / "small" / "sweep.json").read_text())
    assert record["counts"] == {"completed": 9} and record["spec"]["grid"]["optim"] == ["sgd", "adam", "adagrad"]
    again = run_sweep(small_spec, root=tmp_path, workers=2, backend="fresh", command=fake_command(), progress=False,
                      grow=grow)
    assert again.skipped == 9 and len(again.runs) == 9


def test_a_backend_that_cannot_add_runs_refuses_a_growing_sweep(tmp_path, small_spec):
    class Fixed:
        name = "fixed"

        def run(self, launches, on_done):
            raise AssertionError("must not start")

    with pytest.raises(ConfigError, match="backend 'fixed' cannot add runs to a running sweep"):
        run_sweep(small_spec, root=tmp_path, backend=Fixed(), command=fake_command(), progress=False,
                  grow=lambda runs, running: None)
