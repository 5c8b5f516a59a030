"""The report's answer: Holm-corrected verdicts, lr-edge warnings, seconds noise, profiles, clean CSVs."""

from __future__ import annotations

import csv
import itertools
import math
import random

import numpy as np
import pytest
from scipy import stats

from optimlab.report import write_report
from optimlab.report.analysis import analyze, verdict
from optimlab.report.load import load_runs
from optimlab.report.lr_edges import edge_side
from optimlab.report.stats import holm
from optimlab.report.timing import resolved, spread
from report_fakes import write_run

# --------------------------------------------------------------------------------------------------------
# Holm-Bonferroni


def test_holm_by_hand():
    # sorted: 0.005 x4 = 0.02, 0.01 x3 = 0.03, 0.03 x2 = 0.06, 0.04 x1 = 0.04 -> 0.06 (monotone)
    q = holm([0.01, 0.04, 0.03, 0.005])
    assert q == pytest.approx([0.03, 0.06, 0.06, 0.02])
    q = holm([0.5, math.nan, 0.6])  # nan is no comparison: m = 2
    assert q[0] == pytest.approx(1.0) and math.isnan(q[1]) and q[2] == pytest.approx(1.0)
    assert holm([]) == [] and holm([0.2]) == [0.2]


def _step_down(p: list[float], alpha: float) -> set[int]:
    """Holm's procedure as published: reject p_(k) while p_(k) < alpha / (m - k + 1), stop at the first failure."""
    order = sorted(range(len(p)), key=lambda i: p[i])
    rejected = set()
    for k, i in enumerate(order):
        if p[i] >= alpha / (len(p) - k):
            break
        rejected.add(i)
    return rejected


def test_holm_adjusted_values_reproduce_the_step_down_procedure():
    rng = random.Random(0)
    for _ in range(200):
        m = rng.randint(1, 8)
        p = [rng.choice([rng.random(), rng.random() * 0.02, 0.01]) for _ in range(m)]  # ties included
        q = holm(p)
        assert all(qi >= pi for qi, pi in zip(q, p)) and max(q) <= 1.0
        for alpha in (0.01, 0.05, 0.1):
            assert {i for i, qi in enumerate(q) if qi < alpha} == _step_down(p, alpha)


def test_verdict_direction():
    assert verdict(+0.1, 0.01, higher_is_better=True) == "better"
    assert verdict(+0.1, 0.01, higher_is_better=False) == "worse"
    assert verdict(-0.1, 0.01, higher_is_better=False) == "better"
    assert verdict(+0.1, 0.05, higher_is_better=True) == "n.s."
    assert verdict(+0.1, math.nan, higher_is_better=True) == "n/a"


# --------------------------------------------------------------------------------------------------------
# Verdicts on runs whose answer is known

BASE = [0.80, 0.81, 0.82, 0.80, 0.81]
KNOWN = {
    "base": BASE,
    "good": [0.90, 0.91, 0.92, 0.90, 0.91],  # clearly better
    "poor": [0.70, 0.71, 0.72, 0.70, 0.71],  # clearly worse
    "same": BASE,  # identical
    "edge": [0.817, 0.827, 0.832, 0.822, 0.812],  # p = 0.026: significant alone, not after Holm
}


@pytest.fixture(scope="module")
def known(tmp_path_factory):
    root = tmp_path_factory.mktemp("known")
    for optim, tests in KNOWN.items():
        for seed, test in enumerate(tests):
            write_run(root / "runs", f"{optim}-s{seed}", optim=optim, seed=seed, val=test, test=test)
    out = root / "report"
    write_report([root / "runs"], out, baseline="base")
    return root


def test_known_answers_with_holm(known):
    (task,) = analyze(load_runs([known / "runs"]), baseline="base").tasks
    rows = {r.label: r for r in task.rows}
    assert {label: r.verdict for label, r in rows.items()} == {
        "base": "baseline", "good": "better", "poor": "worse", "same": "n.s.", "edge": "n.s."}  # fmt: skip
    raw = {k: stats.ttest_ind(v, BASE, equal_var=False).pvalue for k, v in KNOWN.items() if k != "base"}
    assert 0.025 < raw["edge"] < 0.05  # the borderline case: significant uncorrected ...
    assert rows["edge"].p_value == pytest.approx(raw["edge"])
    assert rows["edge"].p_holm == pytest.approx(2 * raw["edge"]) and rows["edge"].p_holm > 0.05  # ... not after
    assert rows["same"].p_value == pytest.approx(1.0) and rows["same"].p_holm == pytest.approx(1.0)
    first, second = sorted(("good", "poor"), key=raw.get)  # the two smallest p-values of the four
    assert rows[first].p_holm == pytest.approx(4 * raw[first])
    assert rows[second].p_holm == pytest.approx(max(4 * raw[first], 3 * raw[second]))


def test_verdicts_lead_the_report_and_csv(known):
    out = known / "report"
    with open(out / "verdicts.csv") as f:
        rows = {r["optimizer"]: r for r in csv.DictReader(f)}
    assert {k: r["verdict"] for k, r in rows.items()} == {"good": "better", "poor": "worse", "same": "n.s.",
                                                          "edge": "n.s."}  # fmt: skip
    assert all(r["baseline"] == "base" and r["comparisons"] == "4" for r in rows.values())
    assert float(rows["edge"]["p_value"]) < 0.05 < float(rows["edge"]["p_holm"])
    md = (out / "report.md").read_text()
    top = md[: md.index("## Runs")]
    assert "## Verdicts" in top
    assert "cls: good **is better than** base: test/accuracy 0.908 vs 0.808" in top
    assert "cls: poor **is worse than** base" in top and "95 % family-wise confidence" in top
    assert "cls: edge **shows no significant difference from** base" in top and "(Welch p = 0.026), not below 0.05" in top
    html = (out / "index.html").read_text()
    assert html.index("<h2>Verdicts</h2>") < html.index("<h2>Runs</h2>")
    assert '<li class="better">cls: good is better than base' in html


# --------------------------------------------------------------------------------------------------------
# Learning rates on the edge of the grid


def test_edge_side():
    assert edge_side([0.1, 0.3, 1.0], 1.0) == "high"
    assert edge_side([0.1, 0.3, 1.0], 0.1) == "low"
    assert edge_side([0.1, 0.3, 1.0], 0.3) is None
    assert edge_side([0.5], 0.5) is None  # one value is no grid
    assert edge_side([0.1, 0.1, 1.0], 1.0) == "high"


def test_report_warns_when_the_best_lr_is_on_the_edge(tmp_path):
    for lr, val in ((0.01, 0.6), (0.1, 0.7), (1.0, 0.8)):  # sgd keeps improving up to its largest lr
        for seed in (0, 1):
            write_run(tmp_path / "runs", f"sgd-{lr}-{seed}", optim="sgd", lr=lr, seed=seed, val=val, test=val)
    for lr, val in ((1e-3, 0.7), (1e-2, 0.9), (1e-1, 0.8)):  # adam peaks inside its grid
        for seed in (0, 1):
            write_run(tmp_path / "runs", f"adam-{lr}-{seed}", optim="adam", lr=lr, seed=seed, val=val, test=val)
    (task,) = analyze(load_runs([tmp_path / "runs"]), baseline="sgd").tasks
    assert [(e.label, e.best_lr, e.side, e.lrs) for e in task.lr_edges] == [("sgd", 1.0, "high", (0.01, 0.1, 1.0))]
    write_report([tmp_path / "runs"], tmp_path / "out", baseline="sgd", notes=["lrs added: none"])
    md = (tmp_path / "out" / "report.md").read_text()
    top = md[: md.index("## Runs")]
    assert "- lrs added: none" in top
    assert "Warning: sgd's best lr 1 is the largest of its grid (0.01, 0.1, 1) on cls: a larger lr" in top
    assert "caution: sgd's best lr 1 is the largest of its grid." in top  # in adam's verdict line
    with open(tmp_path / "out" / "best.csv") as f:
        assert {r["optimizer"]: r["lr_edge"] for r in csv.DictReader(f)} == {"adam": "", "sgd": "high"}


# --------------------------------------------------------------------------------------------------------
# Seconds to target: shown with their noise


def test_spread_matches_numpy():
    t = [1.0, 1.2, math.inf, 0.9]
    s = spread(t)
    x = np.array([1.0, 1.2, 0.9])
    assert (s.n, s.total) == (3, 4)
    assert s.mean == pytest.approx(x.mean())
    assert s.two_se == pytest.approx(2 * x.std(ddof=1) / math.sqrt(3))
    assert s.cv == pytest.approx(x.std(ddof=1) / x.mean())
    assert spread([math.inf]).n == 0 and math.isnan(spread([2.0]).two_se)


def test_resolved_only_when_intervals_do_not_overlap():
    fast, slow = spread([1.0, 1.1, 0.9]), spread([3.0, 3.1, 2.9])
    noisy = spread([0.5, 3.5, 2.0])
    assert resolved([fast, slow]) and resolved([slow, fast]) and resolved([fast])
    assert not resolved([fast, noisy]) and not resolved([fast, slow, noisy])
    assert not resolved([fast, spread([5.0])])  # one seed: its noise is unknown


def _two_task_runs(root, noisy: bool):
    """Two tasks, a (fast in steps) and b (slow); seconds per step either steady or very noisy."""
    times = {"a": [0.010, 0.010, 0.010], "b": [0.011, 0.011, 0.011]}
    if noisy:
        times = {"a": [0.005, 0.03, 0.012], "b": [0.02, 0.004, 0.011]}
    for task in ("t1", "t2"):
        for optim, reach in (("a", 40), ("b", 80)):
            for seed in range(3):
                write_run(root, f"{task}/{optim}-{seed}", task=task, optim=optim, seed=seed, val=0.9, test=0.9,
                          reach=reach, step_time=times[optim][seed])  # fmt: skip


@pytest.mark.parametrize("noisy", [False, True])
def test_seconds_scores_enter_the_summary_only_above_noise(tmp_path, noisy):
    _two_task_runs(tmp_path / "runs", noisy)
    write_report([tmp_path / "runs"], tmp_path / "out", baseline="a")
    md = (tmp_path / "out" / "report.md").read_text()
    top = md[: md.index("## Runs")]
    assert "score, time to target in steps (AlgoPerf, 1 = fastest on every task): a 1.000, b 0.667" in top
    assert ("Scores in wall seconds are left out of this summary: on t1, t2" in top) == noisy
    assert ("time to target in wall seconds: a 1.000" in top) == (not noisy)
    assert "| optimizer | reached (seeds) | steps to target | × fastest (steps) | s to target | s, mean ± 2 SE" in md
    assert "Scores in wall seconds depend on the machine's load" in md  # the caveat under the profiles


# --------------------------------------------------------------------------------------------------------
# Performance profiles only across tasks


def test_one_task_has_no_profiles_and_says_why(tmp_path):
    _two_task_runs(tmp_path / "runs", noisy=False)
    out = tmp_path / "out"
    write_report([tmp_path / "runs"], out)
    assert (out / "profiles.csv").is_file() and (out / "performance-profiles.png").is_file()
    write_report([tmp_path / "runs" / "t1"], out)  # the same folder, now one task: nothing stale is left
    assert not (out / "profiles.csv").exists() and not (out / "performance-profiles.png").exists()
    md = (out / "report.md").read_text()
    assert "Not drawn: performance profiles compare optimizers across tasks, and this report has 1 task" in md
    assert "profiles.csv" not in md.split("Tables as CSV:")[1] and "Performance-profile score" not in md
    assert "performance-profiles" not in (out / "index.html").read_text()


# --------------------------------------------------------------------------------------------------------
# Clean CSVs

NUMERIC = {
    "verdicts.csv": ["mean", "baseline_mean", "difference", "n", "baseline_n", "p_value", "p_holm", "comparisons",
                     "alpha"],
    "runs.csv": ["seed", "lr", "step", "final_val", "final_test", "final_test_loss", "wall_time", "diverged_step"],
    "configs.csv": ["lr", "n", "n_diverged", "n_excluded", "val_mean", "val_std", "test_mean", "test_std"],
    "best.csv": ["n", "n_diverged", "n_excluded", "val_mean", "val_std", "test_mean", "test_std", "test_ci_low",
                 "test_ci_high", "test_loss_mean", "test_loss_std", "difference", "p_value", "p_holm", "lr",
                 "target", "steps_to_target", "seconds_to_target", "seconds_reached", "seconds_mean",
                 "seconds_2se", "seconds_cv"],
    "profiles.csv": ["target", "steps_to_target", "seconds_to_target", "ratio_steps", "ratio_seconds"],
}  # fmt: skip


def test_every_csv_holds_plain_values(plan_report, known):
    checked = 0
    for out in (plan_report.parent, known / "report"):
        for path in sorted(out.glob("*.csv")):
            with open(path, newline="") as f:
                rows = list(csv.reader(f))
            header, body = rows[0], rows[1:]
            assert body, path.name
            assert set(NUMERIC[path.name]) <= set(header), path.name
            for row in body:
                assert len(row) == len(header)
                for name, cell in zip(header, row):
                    assert "np." not in cell and "numpy" not in cell, (path.name, name, cell)
                    if name in NUMERIC[path.name] and cell:
                        float(cell)  # raises on anything but a plain number, 'inf' included
                        checked += 1
    assert checked > 200
    with open(plan_report.parent / "profiles.csv") as f:
        scores = [r for r in csv.DictReader(f) if r["task"] == "score"]
    assert [float(r["ratio_steps"]) for r in scores] == pytest.approx([1.0, 2 / 3, 0.0, 2.5 / 6])


def test_csv_cells_of_numpy_scalars():
    from optimlab.report.tables import _cell

    cells = [_cell(v) for v in (np.float64(500.0), np.int64(3), np.bool_(True), np.float32(0.5), math.nan, math.inf)]
    assert cells == ["500.0", "3", "True", "0.5", "", "inf"]
    assert list(itertools.chain(cells)) == cells
