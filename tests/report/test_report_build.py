"""write_report on fake run directories with known numbers (report_fakes.PLAN)."""

from __future__ import annotations

import base64
import csv
import json
import math
import re

import numpy as np
import pytest
from scipy import stats

from optimlab.errors import ConfigError
from optimlab.report import write_report
from optimlab.report.analysis import analyze
from optimlab.report.load import find_run_dirs, load_runs
from report_fakes import write_run

inf = math.inf


@pytest.fixture(scope="module")
def analysis(plan_root):
    return analyze(load_runs([plan_root]), baseline="sgd")


@pytest.fixture
def report(plan_report):
    return plan_report


def _task(analysis, name):
    return next(t for t in analysis.tasks if t.task == name)


def test_labels_and_configurations(analysis):
    assert analysis.labels == ["adam", "sgd", "sgd+marthe", "sgd@sgdr"]
    cls = _task(analysis, "cls")
    assert sorted(len(c.runs) for c in cls.configurations) == [2, 2, 3, 3, 3, 3, 3]


def test_best_configuration_chosen_on_validation(analysis):
    cls = _task(analysis, "cls")
    chosen = {r.label: r.config.lr for r in cls.rows}
    # sgd lr=1.0 has the highest mean of its finite seeds but one diverged seed: it counts as worst
    assert chosen == {"adam": 1e-3, "sgd": 0.1, "sgd+marthe": 0.1, "sgd@sgdr": 0.1}
    assert [r.label for r in cls.rows] == ["adam", "sgd@sgdr", "sgd", "sgd+marthe"]  # best val mean first
    quad = _task(analysis, "quad")
    assert {r.label: r.config.lr for r in quad.rows} == {"sgd": 0.5, "adam": 0.01}
    assert [r.label for r in quad.rows] == ["sgd", "adam"]  # lower is better


def test_test_statistics_match_scipy(analysis):
    cls = _task(analysis, "cls")
    adam, sgd = cls.row("adam"), cls.row("sgd")
    a, b = [0.88, 0.87, 0.89], [0.84, 0.86, 0.83]
    assert adam.config.test.mean == pytest.approx(np.mean(a))
    assert adam.config.test.std == pytest.approx(np.std(a, ddof=1))
    low, high = stats.t.interval(0.95, 2, loc=np.mean(a), scale=stats.sem(a))
    assert (adam.config.test.ci_low, adam.config.test.ci_high) == pytest.approx((low, high))
    assert adam.p_value == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue)
    assert adam.difference == pytest.approx(np.mean(a) - np.mean(b))
    # significant uncorrected (p = 0.032), the smallest of the 4, so not after Holm (q = 4 p = 0.129)
    assert adam.p_value < 0.05 and adam.p_holm == pytest.approx(4 * adam.p_value) and adam.verdict == "n.s."
    assert analysis.comparisons == 4
    assert sgd.verdict == "baseline" and math.isnan(sgd.p_value)
    assert cls.row("sgd+marthe").verdict == "n.s."
    assert adam.config.test_loss.mean == pytest.approx(1 - np.mean(a))


def test_ties_on_the_main_metric_are_broken_by_val_loss(tmp_path):
    for seed in (0, 1):
        write_run(tmp_path, f"a{seed}", optim="adam", lr=1e-3, seed=seed, val=0.9, test=0.9, val_loss=0.3)
        write_run(tmp_path, f"b{seed}", optim="adam", lr=1e-2, seed=seed, val=0.9, test=0.8, val_loss=0.2)
    (task,) = analyze(load_runs([tmp_path])).tasks
    assert task.row("adam").config.lr == 1e-2


def test_failed_seed_excluded_but_counted(analysis):
    cls = _task(analysis, "cls")
    adam_hi = next(c for c in cls.configurations if c.label == "adam" and c.lr == 1e-2)
    assert (len(adam_hi.runs), len(adam_hi.used_runs), adam_hi.n_excluded) == (3, 2, 1)
    sgd_big = next(c for c in cls.configurations if c.label == "sgd" and c.lr == 1.0)
    assert sgd_big.n_diverged == 1 and math.isnan(sgd_big.val[0])


def test_lower_is_better_direction(analysis):
    quad = _task(analysis, "quad")
    adam = quad.row("adam")
    a, b = [0.26, 0.27], [0.21, 0.25]
    assert adam.p_value == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue)
    assert adam.verdict == "n.s."


def test_targets_and_times_to_target_by_hand(analysis):
    cls, quad = _task(analysis, "cls"), _task(analysis, "quad")
    # cls: best mean final val 0.89 (adam), initial 0.1: 0.89 - 0.05 * 0.79
    assert cls.target == pytest.approx(0.8505)
    # quad: best 0.21 (sgd), initial 2.0: 0.21 + 0.05 * 1.79
    assert quad.target == pytest.approx(0.2995)
    p = analysis.profile
    # columns adam, sgd, sgd+marthe, sgd@sgdr. cls: adam seeds all at 40; sgd seeds never/80/80 -> median 80;
    # marthe never reaches 0.8505 (finals 0.83, 0.84); sgdr at 60. quad: adam 40, sgd 80, the others not run.
    np.testing.assert_array_equal(p.steps, [[40, 80, inf, 60], [40, 80, inf, inf]])
    np.testing.assert_allclose(p.seconds, [[0.8, 0.8, inf, 0.6], [0.8, 0.8, inf, inf]])
    np.testing.assert_allclose(p.ratio_steps, [[1, 2, inf, 1.5], [1, 2, inf, inf]])
    np.testing.assert_allclose(p.score_steps, [1.0, 2 / 3, 0.0, (4 - 1.5) / 3 / 2])
    np.testing.assert_allclose(p.score_seconds, [(8 / 9 + 1) / 2, (8 / 9 + 1) / 2, 0.0, 0.5])


def test_explicit_target_and_tolerance(plan_root):
    runs = load_runs([plan_root])
    result = analyze(runs, targets={"cls": 0.5}, tolerance=0.5)
    cls = next(t for t in result.tasks if t.task == "cls")
    assert cls.target == 0.5
    quad = next(t for t in result.tasks if t.task == "quad")
    assert quad.target == pytest.approx(0.21 + 0.5 * 1.79)
    with pytest.raises(ConfigError, match="unknown task 'clss'"):
        analyze(runs, targets={"clss": 0.5})


def test_default_baseline_is_best_on_validation(plan_root):
    result = analyze(load_runs([plan_root]))
    assert {t.task: t.baseline for t in result.tasks} == {"cls": "adam", "quad": "sgd"}


def test_files_written(report):
    out = report.parent
    assert report.name == "index.html"
    for name in ("report.md", "runs.csv", "configs.csv", "best.csv", "profiles.csv", "performance-profiles.png"):
        assert (out / name).is_file(), name
    for stem in ("cls-curves", "cls-lr-sensitivity", "cls-lr-traces", "quad-curves", "quad-lr-sensitivity"):
        assert (out / f"{stem}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (out / "quad-lr-traces.png").exists()  # no hypergradient or scheduled run on quad
    with open(out / "runs.csv") as f:
        runs = list(csv.DictReader(f))
    assert len(runs) == 25
    assert sorted(r["status"] for r in runs if r["status"] != "completed") == ["diverged", "failed"]
    with open(out / "best.csv") as f:
        best = {(r["task"], r["optimizer"]): r for r in csv.DictReader(f)}
    assert set(best) == {("cls", "adam"), ("cls", "sgd"), ("cls", "sgd+marthe"), ("cls", "sgd@sgdr"),
                         ("quad", "sgd"), ("quad", "adam")}  # fmt: skip
    assert float(best[("cls", "adam")]["test_mean"]) == pytest.approx(0.88)
    assert best[("cls", "sgd+marthe")]["steps_to_target"] == "inf"
    markdown = (out / "report.md").read_text()
    for image in re.findall(r"!\[[^]]*\]\(([^)]+)\)", markdown):
        assert (out / image).is_file()
    assert "| adam | lr=0.001" in markdown
    assert "diverged at step 30" in markdown and "RuntimeError: out of memory" in markdown


def test_html_is_self_contained(report):
    html = report.read_text()
    pngs = sorted(report.parent.glob("*.png"))
    assert html.count('src="data:image/png;base64,') == len(pngs) == 6
    assert "<script" not in html.lower()
    assert not re.search(r"""(?:src|href)\s*=\s*["'](?!data:)""", html, re.I)
    assert "http://" not in html and "https://" not in html
    assert "<link" not in html.lower() and "@import" not in html
    assert "better" in html and "diverged" in html
    embedded = {base64.b64decode(d) for d in re.findall(r'src="data:image/png;base64,([^"]+)"', html)}
    assert embedded == {p.read_bytes() for p in pngs}


def test_band_is_mean_min_max_over_seeds():
    from optimlab.report.plots import band

    seeds = [([0, 10, 20], [0, 1, 2], [1.0, 2.0, math.nan]), ([0, 10], [0, 1], [3.0, 6.0])]
    steps, mean, low, high = band(seeds)
    np.testing.assert_array_equal(steps, [0, 10])  # step 20 has no finite value
    np.testing.assert_array_equal(mean, [2.0, 4.0])
    np.testing.assert_array_equal(low, [1.0, 2.0])
    np.testing.assert_array_equal(high, [3.0, 6.0])


def test_find_run_dirs_accepts_runs_and_folders(plan_root):
    one = plan_root / "quad" / "adam-none-constant-lr0.01-s0"
    assert find_run_dirs([one]) == [one.resolve()]
    assert len(find_run_dirs([plan_root, plan_root / "cls"])) == 25  # deduplicated


def test_metric_override(plan_root):
    runs = load_runs([plan_root / "cls"], metric="loss")
    assert {(r.main_metric, r.higher_is_better) for r in runs} == {("loss", False)}
    runs = load_runs([plan_root / "cls"], metric="loss:max")
    assert {r.higher_is_better for r in runs} == {True}


# --------------------------------------------------------------------------------------------------------
# Bad input


def test_no_runs_found(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no runs found in .*empty"):
        write_report([tmp_path / "empty"], tmp_path / "out")
    with pytest.raises(ConfigError, match="no such run directory or folder: .*missing"):
        write_report([tmp_path / "missing"], tmp_path / "out")
    with pytest.raises(ConfigError, match="no run directories given"):
        write_report([], tmp_path / "out")


def _copy_run(plan_root, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(plan_root / "quad" / "adam-none-constant-lr0.01-s0", run)
    return run


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda r: (r / "summary.json").write_text("{not json"), r"summary.json: not valid JSON"),
        (lambda r: (r / "summary.json").write_text('{"status": "weird"}'), r"'status' must be one of"),
        (lambda r: (r / "config.yaml").unlink(), r"config.yaml is missing"),
        (lambda r: (r / "config.yaml").write_text("seed: 0\n"), r"'task.name' is missing"),
        (lambda r: (r / "config.yaml").write_text("a: [1,\n"), r"config.yaml: not valid YAML"),
        (lambda r: (r / "metrics.jsonl").unlink(), r"metrics.jsonl is missing"),
        (lambda r: (r / "metrics.jsonl").write_text('{"step": 0}\nnope\n'), r"metrics.jsonl:2: not a JSON object"),
        (lambda r: (r / "metrics.jsonl").write_text('{"time": 0}\n'), r"metrics.jsonl:1: each line needs a numeric"),
    ],
)
def test_malformed_run_directory_names_the_problem(plan_root, tmp_path, damage, message):
    run = _copy_run(plan_root, tmp_path)
    damage(run)
    with pytest.raises(ConfigError, match=message) as error:
        write_report([run], tmp_path / "out")
    assert str(run) in str(error.value)
    assert "\n" not in str(error.value)


def test_unknown_baseline(plan_root, tmp_path):
    with pytest.raises(ConfigError, match="baseline optimizer 'adamw' is not among the runs; did you mean adam"):
        write_report([plan_root], tmp_path / "out", baseline="adamw")


def test_a_task_with_only_failed_runs_is_listed(tmp_path):
    write_run(tmp_path / "runs", "f0", task="broken", status="failed")
    write_run(tmp_path / "runs", "ok", val=0.8, test=0.7)
    index = write_report([tmp_path / "runs"], tmp_path / "out")
    text = (tmp_path / "out" / "report.md").read_text()
    assert "## Task `broken`" in text and "nothing to compare" in text
    assert "RuntimeError: out of memory" in index.read_text()


def test_tasks_disagreeing_on_the_main_metric(plan_root, tmp_path):
    run = _copy_run(plan_root, tmp_path)
    summary = json.loads((run / "summary.json").read_text())
    summary["main_metric"], summary["higher_is_better"] = "accuracy", True
    (run / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(ConfigError, match="disagree on the main metric"):
        load_runs([plan_root / "quad", run])
