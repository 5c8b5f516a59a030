"""The report reads the run-directory contract of optimlab.rundir: configuration identity, statuses, strict JSON."""

from __future__ import annotations

import math

import yaml

from optimlab import rundir
from optimlab.config import config_hash, load_config, to_yaml
from optimlab.report import tables
from optimlab.report.analysis import analyze
from optimlab.report.load import configuration_hash, load_runs
from report_fakes import write_run


def test_old_run_without_the_field_is_grouped_by_the_identity_of_its_config(tmp_path):
    a = write_run(tmp_path, "a", seed=0, val=0.8, test=0.8)
    b = write_run(tmp_path, "b", seed=1, val=0.9, test=0.9)
    write_run(tmp_path, "c", seed=0, lr=0.2, val=0.7, test=0.7)
    runs = {r.path.name: r for r in load_runs([tmp_path])}
    expected = rundir.identity_hash(yaml.safe_load((a / rundir.CONFIG).read_text()), with_seed=False)
    assert runs["a"].configuration == runs["b"].configuration == expected
    assert runs["c"].configuration != expected
    assert "configuration_hash" not in rundir.read_summary(b)
    (task,) = analyze(list(runs.values())).tasks
    assert sorted(len(config.runs) for config in task.configurations) == [1, 2]


def test_the_summary_field_wins_over_the_config(tmp_path):
    # Two runs whose configs differ but whose summaries name the same configuration are seeds of it.
    write_run(tmp_path, "a", seed=0, lr=0.1, val=0.8, test=0.8, configuration_hash="feedc0ffee")
    write_run(tmp_path, "b", seed=1, lr=0.2, val=0.9, test=0.9, configuration_hash="feedc0ffee")
    runs = load_runs([tmp_path])
    assert {r.configuration for r in runs} == {"feedc0ffee"}
    (task,) = analyze(runs).tasks
    assert [len(config.runs) for config in task.configurations] == [2]


def test_the_fallback_equals_the_trainers_field_for_new_runs():
    # The trainer writes config_hash(cfg, with_seed=False) into summary.json and to_yaml(cfg) into config.yaml.
    for overrides in ([], ["optim.name=adam", "optim.lr=0.001", "seed=3"], ["hyper.name=marthe"],
                      ["optim.lr=1e-3", "task.batch_size=7", "train.log_every=3", "seed=9"]):  # fmt: skip
        cfg = load_config(overrides)
        field = config_hash(cfg, with_seed=False)
        assert configuration_hash({}, yaml.safe_load(to_yaml(cfg))) == field
        assert configuration_hash({"configuration_hash": field}, {}) == field
    seeds = {config_hash(load_config([f"seed={s}"]), with_seed=False) for s in range(3)}
    assert len(seeds) == 1


def test_strict_json_with_nulls_reads_like_old_nan_tokens(tmp_path):
    old = write_run(tmp_path / "old", "d", status="diverged", diverged_step=30)
    new = write_run(tmp_path / "new", "d", status="diverged", diverged_step=30, strict=True)
    assert "NaN" in (old / rundir.METRICS).read_text()
    assert "NaN" not in (new / rundir.METRICS).read_text() and "null" in (new / rundir.METRICS).read_text()
    (run_old,) = load_runs([old])
    (run_new,) = load_runs([new])
    for run in (run_old, run_new):
        steps, _, loss = run.series("train/loss")
        assert steps == [10.0, 20.0, 30.0]
        assert loss[:2] == [2.0 - 1.5 * 10 / 80, 2.0 - 1.5 * 20 / 80] and math.isnan(loss[2])
        assert math.isnan(run.final("train/loss"))


def test_stopped_runs_are_listed_but_not_aggregated(tmp_path):
    write_run(tmp_path, "a", seed=0, val=0.8, test=0.8)
    stopped = write_run(tmp_path, "b", seed=1, val=0.8, test=0.8)
    summary = rundir.read_summary(stopped)
    rundir.write_json(stopped / rundir.SUMMARY, {**summary, "status": rundir.STOPPED, "step": 40})
    runs = load_runs([tmp_path])
    (task,) = analyze(runs).tasks
    (config,) = task.configurations
    assert [r.path.name for r in config.used_runs] == ["a"] and config.n_excluded == 1
    assert config.test.n == 1
    header, rows = tables.problem_runs(analyze(runs))
    (row,) = rows
    assert row[header.index("status")] == "stopped" and "early" in row[header.index("detail")]
    header, rows = tables.overview(analyze(runs))
    assert rows[0][header.index("stopped")] == "1" and rows[0][header.index("completed")] == "1"
