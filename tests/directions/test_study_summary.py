"""studies/gradient_variance_summary.py: t intervals as scipy's, each claim's ratio on records built to have a
known answer, and the records it reads from the run directories of a miniature of the sweep."""

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from optimlab.config import load_config
from optimlab.report.load import load_runs
from optimlab.train.loop import train

STUDIES = Path(__file__).parents[2] / "studies"
sys.path.insert(0, str(STUDIES))  # the summary imports its shared helpers (sweep_summary.py) from there
spec = importlib.util.spec_from_file_location("gradient_variance_summary", STUDIES / "gradient_variance_summary.py")
summary = importlib.util.module_from_spec(spec)
spec.loader.exec_module(summary)


def test_t_interval_is_scipys_student_t_interval_and_one_sample_test():
    values = [0.3, -0.1, 0.5, 0.2, 0.4]
    got = summary.t_interval(values)
    low, high = stats.t.interval(0.95, len(values) - 1, loc=sum(values) / 5, scale=stats.sem(values))
    assert got["low"] == pytest.approx(low) and got["high"] == pytest.approx(high)
    assert got["p"] == pytest.approx(stats.ttest_1samp(values, 0.0).pvalue)


def records(seed: int, lr: float, growth: float) -> list[dict]:
    """SG-B var growing by `growth` from step 0 to 10, GC at 3/4 of SG-2B, SVRG at 1/10 of SG-B."""
    out = []
    for step in (0, 5, 10):
        var = 1e-4 * growth ** (step / 10) * (1 + 0.01 * seed)
        loss = 2.0 / (1 + step * lr)
        for name, v in (("sg_b", var), ("sg_2b", var / 2), ("gc", 3 * var / 8), ("svrg", var / 10), ("kfac", var)):
            out.append({"task": "t", "duplicates": 0, "lr": lr, "seed": seed, "step": step, "estimator": name,
                        "loss": loss, "end_loss": 2.0 / (1 + 20 * lr), "var": v, "nvar": 0.5 + 0.01 * step})  # fmt: skip
    return out


def test_each_claims_ratio_on_records_with_a_known_answer():
    data = [r for seed in range(3) for lr, growth in ((0.1, 4.0), (0.5, 4.0)) for r in records(seed, lr, growth)]
    result = summary.summarise(data, [], late=5, draws=200)
    rise = result["1_variance_rises"]["t dup=0 lr=0.1"]["log10_last_over_first"]
    assert rise["mean"] == pytest.approx(math.log10(4.0))
    gc = result["4_gc_below_sg2b_with_duplicates"]["t dup=0 lr=0.1"]["log10_gc_over_sg2b"]
    assert gc["mean"] == pytest.approx(math.log10(0.75))
    svrg = result["5_svrg_on_deep_models"]["variance"]["t dup=0 lr=0.5"]["log10_svrg_over_sgb"]
    assert svrg["mean"] == pytest.approx(-1.0)
    lr = result["2_smaller_lr_higher_variance"]["t dup=0 lr=0.1 vs 0.5"]
    assert lr["log10_var_small_over_large_equal_steps"]["mean"] == pytest.approx(0.0)


def test_loss_near_a_step_is_the_mean_batch_loss_of_a_window_around_it():
    losses = np.arange(100.0)
    assert summary.loss_near(losses, 0) == 0.0  # step 0: its own batch only
    assert summary.loss_near(losses, 30) == pytest.approx(np.mean(losses[27:34]))
    assert summary.loss_near(losses, 95, cap=2) == pytest.approx(np.mean(losses[93:98]))


def test_records_of_a_miniature_sweep_measure_every_estimator_on_one_trajectory(tmp_path):
    base = ["task=digits_mlp", "optim=sgd", "optim.lr=0.1", "task.batch_size=32", "train.steps=12", "train.log_every=1",
            "instruments=[direction_variance]", "instruments.log_spaced=4", "instruments.draws=3", "log.progress=never"]  # fmt: skip
    runs = {
        "sg_2b": ["instruments.draw_batch_size=64"],
        "svrg": ["direction=svrg", "direction.apply=false", "direction.snapshot_every=6"],
        "gc": ["direction=gc", "direction.apply=false", "direction.snapshot_every=6", "direction.clusters=3"],
        "kfac": ["precond=kfac", "precond.apply=false", "precond.kl_clip=null"],
    }
    for name, extra in runs.items():
        train(load_config([*base, *extra, f"run_dir={tmp_path / name}"]))
    trained = ["task=digits_mlp", "optim=sgd", "optim.lr=0.05", "task.batch_size=32", "train.steps=12", "log.progress=never"]
    train(load_config([*trained, "direction=svrg", "direction.snapshot_every=6", f"run_dir={tmp_path / 'svrg_trained'}"]))
    got, training, checks = summary.records_of(load_runs([tmp_path]))
    assert checks == {"trajectories": 1, "complete": 1, "same_params": 1, "sgb_max_rel_diff": 0.0}
    # every log-spaced step reaches the records (0, 1, 3, 5 and 10: two share one log line without log_every=1)
    assert sorted({r["step"] for r in got}) == [0, 1, 3, 5, 10]
    assert {r["estimator"] for r in got} == {"sg_b", "sg_2b", "svrg", "gc", "kfac"}
    at = {(r["step"], r["estimator"]): r for r in got}
    assert at[(0, "svrg")]["var"] < 1e-12  # at its snapshot the SVRG direction is the full gradient exactly
    assert at[(1, "sg_2b")]["var"] < at[(1, "sg_b")]["var"]
    [svrg] = training
    assert svrg["direction"] == "svrg" and svrg["steps"] == 12
    # one extra gradient per step and two passes over the training split (snapshots at steps 0 and 6)
    assert svrg["grad_evals"] > 2 * 12


def test_the_page_tables_replace_only_their_blocks(tmp_path):
    data = [r for seed in range(3) for lr, growth in ((0.1, 4.0), (0.5, 4.0)) for r in records(seed, lr, growth)]
    blocks = summary.tables(summary.summarise(data, [], late=5, draws=200))
    page = tmp_path / "page.md"
    page.write_text("intro\n<!-- gv:gc -->\nold table\n<!-- /gv:gc -->\nprose\n<!-- gv:unknown -->\n")
    summary.write_blocks(page, {"gc": blocks["gc"]})
    text = page.read_text()
    assert "old table" not in text and text.startswith("intro\n<!-- gv:gc -->\n| task |")
    assert "| t | own | 0.1 | 0.75× [0.75, 0.75] |" in text  # GC / SG-2B as a geometric-mean ratio
    assert text.endswith("<!-- /gv:gc -->\nprose\n<!-- gv:unknown -->\n")
