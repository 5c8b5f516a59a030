"""studies/gradient_variance_summary.py: t intervals as scipy's, and each claim's ratio on records built to
have a known answer."""

import importlib.util
import math
from pathlib import Path

import pytest
from scipy import stats

SUMMARY = Path(__file__).parents[2] / "studies" / "gradient_variance_summary.py"
spec = importlib.util.spec_from_file_location("gradient_variance_summary", SUMMARY)
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
                        "train_loss": loss, "full_loss": loss, "var": v, "nvar": 0.5 + 0.01 * step})  # fmt: skip
    return out


def test_each_claims_ratio_on_records_with_a_known_answer():
    data = [r for seed in range(3) for lr, growth in ((0.1, 4.0), (0.5, 4.0)) for r in records(seed, lr, growth)]
    result = summary.summarise(data, [], late=5)
    rise = result["1_variance_rises"]["t dup=0 lr=0.1"]["log10_last_over_first"]
    assert rise["mean"] == pytest.approx(math.log10(4.0))
    gc = result["4_gc_below_sg2b_with_duplicates"]["t dup=0 lr=0.1"]["log10_gc_over_sg2b"]
    assert gc["mean"] == pytest.approx(math.log10(0.75))
    svrg = result["5_svrg_on_deep_models"]["variance"]["t dup=0 lr=0.5"]["log10_svrg_over_sgb"]
    assert svrg["mean"] == pytest.approx(-1.0)
    lr = result["2_smaller_lr_higher_variance"]["t dup=0 lr=0.1 vs 0.5"]
    assert lr["log10_var_small_over_large_equal_steps"]["mean"] == pytest.approx(0.0)
