"""The population backend: eligible runs train in populations (each an ordinary run directory), the others
on warm workers with the reason in the sweep's log; re-running skips finished runs; populations that find
themselves not batchable fall back to warm workers."""

import threading
from pathlib import Path

import pytest

from optimlab.rundir import read_json, read_summary
from optimlab.sweep import parse_spec, run_sweep
from optimlab.sweep.execute import PYTHON, Launch
from optimlab.sweep.population import _Countdown, plan

@pytest.fixture(autouse=True)
def plugins(monkeypatch):
    """The toy task (with dropout), registered here and in the runs' processes."""
    import sys

    sys.path.insert(0, str(Path(__file__).parents[1] / "train"))
    import toy_task  # noqa: F401

    monkeypatch.setenv("OPTIMLAB_PLUGINS", str(Path(__file__).parents[1] / "train" / "toy_task.py"))


def test_sweep_trains_eligible_runs_in_populations_and_the_rest_alone(tmp_path, capsys):
    spec = parse_spec({"name": "pop", "base": {"task": "logreg", "train.steps": 20},
                       "grid": [{"optim": "sgd", "optim.lr": [0.01, 0.1], "seed": [0, 1]},
                                {"optim": "adam", "optim.lr": [0.01, 0.03]}, {"optim": "sgd_hd"}]})
    idle = threading.Event()
    result = run_sweep(spec, root=tmp_path, backend="population", workers=1, progress=False,
                       backend_options={"on_idle": idle.set})
    assert result.exit_code == 0 and result.counts == {"completed": 7}
    assert idle.wait(10)  # told once the worker had nothing left to start
    err = capsys.readouterr().err
    assert "1 run train one by one on warm workers: optim=sgd_hd" in err
    populations = {}
    for run in result.runs:
        summary = read_summary(run.run_dir)
        assert summary["status"] == "completed" and summary["config_hash"] == run.config_hash
        if run.config.optim.name == "sgd_hd":
            assert "population" not in summary
        else:
            populations.setdefault(run.config.optim.name, []).append(summary["population"])
    assert {name: sorted(p["index"] for p in members) for name, members in populations.items()} == \
        {"sgd": [0, 1, 2, 3], "adam": [0, 1]}
    assert {name: {p["size"] for p in members} for name, members in populations.items()} == {"sgd": {4}, "adam": {2}}
    record = read_json(result.folder / "sweep.json")
    assert record["backend"] == "population" and record["counts"] == {"completed": 7}
    assert all(entry["attempts"] == 1 and entry["exit_code"] == 0 for entry in record["runs"])

    again = run_sweep(spec, root=tmp_path, backend="population", workers=2, progress=False)
    assert again.skipped == 7 and again.counts == {"completed": 7}


def test_a_population_that_cannot_batch_its_model_falls_back_to_warm_workers(tmp_path, capsys):
    spec = parse_spec({"name": "dropout", "base": {"task": "toy", "task.batch_size": 16, "train.steps": 10,
                                                   "optim": "sgd"},
                       "grid": {"optim.lr": [0.05, 0.1]}, "seeds": 1})
    result = run_sweep(spec, root=tmp_path, backend="population", workers=1, progress=False)
    assert result.counts == {"completed": 2}
    assert "population of 2 runs trains one by one on warm workers" in capsys.readouterr().err
    for run in result.runs:
        assert "population" not in read_summary(run.run_dir)


def _launch(i: int, *overrides: str) -> Launch:
    argv = (PYTHON, "-m", "optimlab", "train", "task=logreg", *overrides, f"seed={i}", f"run_dir=/tmp/x/{i}")
    return Launch(key=f"r{i}", run_dir=f"/tmp/x/{i}", argv=argv)


def test_plan_groups_caps_and_spreads_populations_over_the_workers():
    same = [_launch(i, f"optim.lr={0.1 * (1 + i % 4)}") for i in range(16)]
    populations, alone = plan(same, workers=2, size=32)
    assert sorted(map(len, populations)) == [8, 8] and not alone
    populations, _ = plan(same, workers=1, size=5)
    assert sorted(map(len, populations)) == [4, 4, 4, 4]
    odd = [_launch(0, "optim=adam"), _launch(1, "optim=sgd_hd"), _launch(2, "optim=sgd"), _launch(3, "optim=sgd")]
    populations, alone = plan(odd, workers=1, size=32)
    assert [[m.key for m in p] for p in populations] == [["r2", "r3"]]
    assert {launch.key: reason.split(" ")[0] for launch, reason in alone} == {"r0": "no", "r1": "optim=sgd_hd"}
    bad = Launch(key="b", run_dir="/tmp/b", argv=(PYTHON, "-m", "optimlab", "train", "optim.lr=oops"))
    assert "does not load" in plan([bad], 1, 32)[1][0][1]


def test_plan_starts_the_costliest_population_first():
    """The workers take populations in plan order: the longest (more members, more steps, a heavier
    optimizer) go first, so that no worker is left alone with a long one at the end."""
    launches = ([_launch(i, "optim=sgd", f"optim.lr={i}") for i in range(3)]
                + [_launch(10 + i, "optim=adam", f"optim.lr={i}") for i in range(3)]
                + [_launch(20 + i, "optim=adam_c", f"optim.lr={i}") for i in range(3)]
                + [_launch(30 + i, "optim=sgd", "train.steps=5000", f"optim.lr={i}") for i in range(2)]
                + [_launch(40 + i, "optim=sgd_c", f"optim.lr={i}") for i in range(5)])
    populations, alone = plan(launches, workers=2, size=32)
    assert not alone
    assert [p[0].key for p in populations] == ["r30", "r40", "r20", "r10", "r0"]


def test_on_idle_fires_once_when_a_worker_has_nothing_left_to_start():
    calls = []
    countdown = _Countdown(2, lambda: calls.append(1))
    countdown.tick()
    assert calls == []
    countdown.tick()
    countdown.tick()
    for thread in threading.enumerate():
        if thread.name == "optimlab-idle":
            thread.join(10)
    assert calls == [1]
    _Countdown(0, lambda: calls.append(2))  # more workers than jobs: idle from the start
    for thread in threading.enumerate():
        if thread.name == "optimlab-idle":
            thread.join(10)
    assert calls == [1, 2]


def test_population_size_flag(tmp_path, capsys):
    from optimlab.cli import main

    spec = tmp_path / "s.yaml"
    spec.write_text("name: s\nbase: {task: logreg, train.steps: 5}\ngrid: {optim.lr: [0.1, 0.2, 0.3]}\n")
    assert main(["sweep", str(spec), "--backend", "local", "--population-size", "2"]) == 2
    assert "--population-size applies to --backend population" in capsys.readouterr().err
    assert main(["sweep", str(spec), "--backend", "population", "--population-size", "1", "--root", str(tmp_path)]) == 2
    assert "population size must be an integer >= 2" in capsys.readouterr().err
