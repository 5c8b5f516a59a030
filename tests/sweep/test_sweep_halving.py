"""Successive halving over a search: rungs share one run directory, losers are marked stopped, re-runs redo nothing."""

import json

import pytest

from optimlab import rundir
from optimlab.errors import ConfigError
from optimlab.report.load import load_runs
from optimlab.report.tables import has_stopped, tuning_budget
from optimlab.rundir import read_summary
from optimlab.sweep import run_sweep
from optimlab.sweep.halving import choose, parse_early_stopping, promoted_count
from optimlab.sweep.spec import parse_spec


def halving_spec(**early_stopping):
    return parse_spec({"name": "asha", "base": {"task": "logreg", "optim": "sgd", "train.eval_every": 5},
                       "search": {"trials": 6, "method": "random", "seed": 1,
                                  "space": {"optim.lr": {"log": [1e-3, 1.0]}},
                                  "early_stopping": {"metric": "val/loss", "mode": "min", "rungs": [5, 15],
                                                     **early_stopping}}})


def test_promotion_keeps_the_best_fraction_and_puts_missing_values_last():
    assert [promoted_count(n, 0.33) for n in (1, 2, 3, 6, 9, 10)] == [1, 1, 1, 2, 3, 3]
    values = {"a": 0.5, "b": None, "c": 0.1, "d": 0.3, "e": float("inf"), "f": 0.2}
    assert choose(values, 1 / 3, maximize=False) == ["c", "f"]
    assert choose(values, 1 / 3, maximize=True) == ["e", "a"]
    assert choose({"a": None, "b": None}, 0.5, maximize=False) == ["a"]


@pytest.mark.parametrize("block, message", [
    ({"rungs": [15, 5]}, "'rungs' must be increasing"),
    ({"rungs": []}, "'rungs' must be increasing"),
    ({"rungs": [5], "keep": 1.5}, "'keep' must be a fraction"),
    ({"rungs": [5], "eta": 1}, "'eta' must be a number > 1"),
    ({"rungs": [5], "keep": 0.5, "eta": 2}, "'keep' or 'eta', not both"),
    ({"rungs": [5], "mode": "lowest"}, "'mode' must be min or max"),
    ({"rungs": [5], "rung": [5]}, "unknown key 'rung'"),
])
def test_bad_early_stopping_names_the_key(block, message):
    with pytest.raises(ConfigError, match=message):
        parse_spec({"name": "s", "search": {"trials": 2, "space": {"optim.lr": {"log": [1e-3, 1.0]}},
                                            "early_stopping": block}})
    assert parse_early_stopping({"rungs": [1, 3], "eta": 3}, "s").keep == pytest.approx(1 / 3)


def test_train_steps_comes_from_the_rungs(tmp_path):
    with pytest.raises(ConfigError, match="train.steps is set by search early_stopping 'rungs'"):
        run_sweep(halving_spec(), root=tmp_path, extra=["train.steps=100"], backend="fresh", progress=False)


def test_six_trials_two_rungs_promote_two_and_stop_four_and_rerun_changes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run_sweep(halving_spec(), root=tmp_path / "runs", backend="local", workers=2, progress=False)
    assert result.exit_code == 0 and len(result.runs) == 6
    summaries = {run.key: read_summary(run.run_dir) for run in result.runs}
    done = [k for k, s in summaries.items() if s["status"] == rundir.COMPLETED]
    stopped = [k for k, s in summaries.items() if s["status"] == rundir.STOPPED]
    assert len(done) == 2 and all(summaries[k]["step"] == 15 for k in done)
    assert len(stopped) == 4 and all(summaries[k]["step"] == 5 for k in stopped)
    # the promoted two were the best at step 5: their metrics at step 5 are in their metrics.jsonl
    def val_loss_at(key, step):
        for line in (result.folder / key / rundir.METRICS).read_text().splitlines():
            record = json.loads(line)
            if record.get("step") == step and "val/loss" in record:
                return record["val/loss"]
        raise AssertionError(f"no val/loss at step {step} for {key}")

    assert max(val_loss_at(k, 5) for k in done) <= min(summaries[k]["final"]["val/loss"] for k in stopped)
    record = json.loads((result.folder / "sweep.json").read_text())
    (rung,) = record["early_stopping"]["rungs"]
    assert rung["step"] == 5 and sorted(rung["promoted"]) == sorted(done) and sorted(rung["stopped"]) == sorted(stopped)
    assert record["finished"] and record["counts"] == {"completed": 2, "stopped": 4}

    launched = {r["dir"]: r["attempts"] for r in record["runs"]}
    before = {run.key: (run.run_dir / rundir.SUMMARY).read_text() for run in result.runs}
    again = run_sweep(halving_spec(), root=tmp_path / "runs", backend="local", workers=2, progress=False)
    assert again.exit_code == 0 and again.statuses == result.statuses
    assert {run.key: (run.run_dir / rundir.SUMMARY).read_text() for run in again.runs} == before
    assert launched == {k: 2 if k in done else 1 for k in summaries}
    rerun = {r["dir"]: r["attempts"] for r in json.loads((result.folder / "sweep.json").read_text())["runs"]}
    assert rerun == launched  # nothing launched again
    runs = load_runs([result.folder])
    assert has_stopped(runs) and tuning_budget(runs) == "sgd: 6 runs, 50 steps"  # 4 x 5 + 2 x 15


def test_trials_are_compared_within_each_grid_point(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = parse_spec({"name": "per_optim", "base": {"task": "logreg", "train.eval_every": 2},
                       "grid": {"optim": ["sgd", "adam"]},
                       "search": {"trials": 3, "method": "sobol", "space": {"optim.lr": {"log": [1e-3, 1.0]}},
                                  "early_stopping": {"rungs": [2, 4], "eta": 3}}})
    result = run_sweep(spec, root=tmp_path / "runs", backend="local", workers=2, progress=False)
    assert result.exit_code == 0
    completed = [run.config.optim.name for run in result.runs if result.statuses[run.key] == rundir.COMPLETED]
    assert sorted(completed) == ["adam", "sgd"] and list(result.statuses.values()).count(rundir.STOPPED) == 4
    groups = json.loads((result.folder / "sweep.json").read_text())["early_stopping"]["rungs"]
    assert len(groups) == 2 and all(g["trials"] == 3 and len(g["promoted"]) == 1 for g in groups)
