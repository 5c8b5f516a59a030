"""studies/amalgamation_summary.py on a study folder built to have known answers: replicates found by their
meta-training seed across the two evaluation commands, the tests against scipy's, Holm over every row, the
verdict rule and the page block."""

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
from scipy import stats

SUMMARY = Path(__file__).parents[2] / "studies" / "amalgamation_summary.py"
spec = importlib.util.spec_from_file_location("amalgamation_summary", SUMMARY)
summary = importlib.util.module_from_spec(spec)
sys.modules["amalgamation_summary"] = summary  # dataclasses look their module up
spec.loader.exec_module(summary)

SHIFT = {"plain": 0.0, "minmax": -0.3, "mean": -0.1, "choice": 0.2, "rg": -0.5}


def evaluation(root: Path, problem: str, name: str, seeds: list[int], scores) -> None:
    """An `optimlab evaluate` run_dir: replicate k is meta-training seed seeds[k] (its runs' optim.path)."""
    run_dir = root / "eval" / problem / name
    for k, seed in enumerate(seeds):
        config = run_dir / "runs" / problem / "learned" / f"replicate{k}" / "seed0" / "config.yaml"
        config.parent.mkdir(parents=True)
        config.write_text(f"optim:\n  name: learned\n  path: /x/{name.split('_')[0]}_s{seed}\n  lr: 1.0\n")
    results = {problem: {"learned": {"replicates": {str(k): scores(s) for k, s in enumerate(seeds)}}}}
    (run_dir / "evaluation.json").write_text(json.dumps({"kind": "evaluate", "results": results}))


def baseline(root: Path, problem: str, optim: str, grid: dict[float, list[float]]) -> None:
    res = {f"{optim}-lr{lr:g}": {"replicates": {"0": v}, "mean": sum(v) / len(v)} for lr, v in grid.items()}
    res["best"] = min(res, key=lambda k: res[k]["mean"])
    folder = root / "eval" / problem / optim
    folder.mkdir(parents=True)
    (folder / "evaluation.json").write_text(json.dumps({"kind": "baseline", "results": {problem: res}}))


def score(config: str, seed: int, problem: str) -> list[float]:
    noise = 0.07 * ((seed * len(config)) % 3)  # differs between configurations, so pairs differ too
    base = {"conv_train": 0.0, "mlp_train": -1.0}[problem] + SHIFT[config] + 0.1 * seed + noise
    return [base + 0.01 * seed * seed, base - 0.01 * (seed % 2)]  # two evaluation seeds


@pytest.fixture
def study(tmp_path):
    for config in summary.CONFIGS:
        # conv_train: seeds 0-2 first, 3-4 later (`_b`); mlp_train: all five in one command, in another order
        evaluation(tmp_path, "conv_train", config, [0, 1, 2], lambda s, c=config: score(c, s, "conv_train"))
        evaluation(tmp_path, "conv_train", f"{config}_b", [3, 4], lambda s, c=config: score(c, s, "conv_train"))
        evaluation(tmp_path, "mlp_train", config, [4, 3, 2, 1, 0], lambda s, c=config: score(c, s, "mlp_train"))
    baseline(tmp_path, "conv_train", "adam", {0.01: [-3.0, -2.9, -3.1], 0.1: [-1.0, -1.1, -0.9]})
    baseline(tmp_path, "conv_train", "rmsprop", {0.003: [-2.8, -2.7, -2.75]})
    (tmp_path / "eval" / "conv_train" / "adam.time").write_text("10.5 0.5 30.0\n")
    (tmp_path / "eval" / "mlp_train" / "plain_top.time").write_text("3 1 8\n")
    return tmp_path


def test_replicates_by_seed_and_the_tests_match_scipy(study):
    data = summary.collect(study)
    assert data["problems"] == ["conv_train", "mlp_train"]  # the suite's order
    minmax = data["by_seed"]["conv_train"]["minmax"]
    assert sorted(minmax) == [0, 1, 2, 3, 4]
    assert minmax[3] == pytest.approx(sum(score("minmax", 3, "conv_train")) / 2)
    assert data["by_seed"]["mlp_train"]["rg"][4] == pytest.approx(sum(score("rg", 4, "mlp_train")) / 2)
    assert data["base"]["conv_train"]["adam"] == [-3.0, -2.9, -3.1]  # the best lr's seeds
    assert data["common"] == ["conv_train", "mlp_train"]

    tests = summary.comparisons(data)
    by_name = {(t.problem, t.name): t for t in tests}
    seeds = range(5)
    rg = [data["by_seed"]["conv_train"]["rg"][s] for s in seeds]
    plain = [data["by_seed"]["conv_train"]["plain"][s] for s in seeds]
    t = by_name[("conv_train", "rg vs plain")]
    assert t.p == pytest.approx(stats.ttest_rel(rg, plain).pvalue)
    assert t.welch == pytest.approx(stats.ttest_ind(rg, plain, equal_var=False).pvalue)
    assert t.effect == pytest.approx(sum(rg) / 5 - sum(plain) / 5)
    t = by_name[("conv_train", "rg vs adam")]
    assert t.p == pytest.approx(stats.ttest_ind(rg, [-3.0, -2.9, -3.1], equal_var=False).pvalue)
    assert ("mlp_train", "rg vs adam") not in by_name  # no baseline there
    t = by_name[("conv_train", "spread: rg vs minmax (std ratio)")]
    mm = [data["by_seed"]["conv_train"]["minmax"][s] for s in seeds]
    assert t.p == pytest.approx(stats.levene(rg, mm, center="median").pvalue)
    overall = data["overall"]["rg"][2]
    assert overall == pytest.approx(
        (data["by_seed"]["conv_train"]["rg"][2] + data["by_seed"]["mlp_train"]["rg"][2]) / 2
    )
    assert (summary.ALL, "rg vs plain") in by_name
    # Holm over every row: the smallest p times the number of finite p-values
    finite = [t.p for t in tests if math.isfinite(t.p)]
    smallest = min(tests, key=lambda t: t.p if math.isfinite(t.p) else 2)
    assert smallest.holm == pytest.approx(min(1.0, len(finite) * min(finite)))


def test_verdict_rule():
    def row(claim, effect, q):
        return summary.Test("p", claim, "x", effect, q, "", holm=q)

    assert summary.verdict([row("pool", -1.0, 0.01), row("pool", 2.0, 0.3)]) == "confirmed"
    assert summary.verdict([row("pool", 1.0, 0.01), row("pool", -2.0, 0.3)]) == "refuted"
    assert summary.verdict([row("pool", 1.0, 0.01), row("pool", -2.0, 0.01)]) == "mixed"
    assert summary.verdict([row("pool", -1.0, 0.2)]) == "unclear"
    assert summary.verdict([row("spread", 0.5, 0.01)]) == "confirmed"  # a smaller spread is the paper's way
    assert summary.verdict([row("spread", 1.5, 0.01)]) == "refuted"


def test_page_block_and_compute(study, tmp_path):
    page = tmp_path / "page.md"
    page.write_text(f"# Title\n\nprose\n\n{summary.BEGIN}\nold tables\n{summary.END}\n\nmore prose\n")
    summary.main([str(study), "--page", str(page), "--csv", str(tmp_path / "scores.csv")])
    text = page.read_text()
    assert text.startswith("# Title\n\nprose\n\n") and text.endswith(f"{summary.END}\n\nmore prose\n")
    assert "old tables" not in text and "### conv_train" in text and "### mlp_train" in text
    # CPU s = user + system of every time file, a top-up's included (no training runs in this folder)
    assert "| conv_train | 0 | 11 | 30 |" in text and "| mlp_train | 0 | 4 | 8 |" in text
    rows = (tmp_path / "scores.csv").read_text().splitlines()
    assert len(rows) == 1 + 2 * 5 * 5 * 2 + 3 + 3  # header, learned runs, adam and rmsprop seeds


def test_a_root_with_some_configurations_and_linked_baselines(study, tmp_path):
    """A second study root (say, another curriculum) with plain and minmax only, its baselines linked from the
    first: "all problems" over those two, and the linked runs are not its cost."""
    other = tmp_path / "other"
    for problem in ("conv_train", "mlp_train"):
        for config in ("plain", "minmax"):
            evaluation(other, problem, config, [0, 1, 2], lambda s, c=config, p=problem: score(c, s, p))
        summary_json = study / "eval" / problem / "adam" / "runs" / "r" / "summary.json"
        if problem == "conv_train":
            summary_json.parent.mkdir(parents=True)
            summary_json.write_text("{}")
            (other / "eval" / problem / "adam").symlink_to(study / "eval" / problem / "adam")
    data = summary.collect(other)
    assert data["common"] == ["conv_train", "mlp_train"]
    assert sorted(data["overall"]) == ["minmax", "plain"]
    assert data["base"]["conv_train"]["adam"] == [-3.0, -2.9, -3.1]  # read through the link
    assert summary.eval_cost(study)["conv_train"]["runs"] == 1
    assert summary.eval_cost(other)["conv_train"]["runs"] == 0
    names = {t.name for t in summary.comparisons(data)}
    assert names == {"minmax vs plain", "minmax vs adam"}
