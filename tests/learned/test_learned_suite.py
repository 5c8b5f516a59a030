"""The amalgamation evaluation suite: its problems' trainer settings, and `optimlab evaluate` / `baseline`
over it (scores, mean +- 2 standard errors, per-problem settings reaching the trainer, plots)."""

import json
import math
from pathlib import Path

import pytest
import yaml

from optimlab.cli import main
from optimlab.errors import ConfigError
from optimlab.learned.evaluation import best_log_val_loss, load_evaluate_config
from optimlab.learned.suite import SUITES, steps_per_epoch, suite_problems, trainer_overrides
from optimlab.tasks import build_task


def test_suite_problems_and_their_defaults():
    names = [p.name for p in SUITES["amalgamation"]]
    assert names == ["conv_train", "conv_deeper_pool", "conv_wider", "conv_mnist1d", "conv_smallbatch",
                     "conv_train_dp", "mlp_train", "resnet"]  # fmt: skip
    small = suite_problems("amalgamation", ["conv_smallbatch"])[0]
    size = len(build_task("digits_cnn", {}).train)
    assert steps_per_epoch(small) == size // 32
    overrides = trainer_overrides(small, steps=None, eval_every=None)
    assert f"train.steps={25 * (size // 32)}" in overrides and f"train.eval_every={size // 32}" in overrides
    assert "task.batch_size=32" in overrides
    dp = trainer_overrides(suite_problems("amalgamation", ["conv_train_dp"])[0], steps=5, eval_every=2)
    assert {"privacy=dp_sgd", "privacy.clip=1.0", "privacy.noise_multiplier=1.1", "train.steps=5"} <= set(dp)
    cfg = load_evaluate_config(["suite=amalgamation", "path=x"])
    assert cfg.repeats == 10 and cfg.tasks == names
    plain = load_evaluate_config(["path=x"])
    assert (plain.repeats, plain.steps, plain.tasks, plain.batch_size) == (3, 1000, ["mnist1d_mlp"], 128)
    with pytest.raises(ConfigError, match="tasks"):
        load_evaluate_config(["suite=amalgamation", "tasks=[conv_fmnist]"])
    with pytest.raises(ConfigError, match="suite"):
        load_evaluate_config(["suite=l2o"])
    with pytest.raises(ConfigError, match="batch_size"):
        load_evaluate_config(["suite=amalgamation", "batch_size=64"])


def test_suite_conv_problems_are_the_meta_training_convnet():
    """conv_train is preset=conv_train's meta-training problem; the ConvNet variants keep its hidden=0."""
    from optimlab.learned.metaconfig import PRESETS

    preset = PRESETS["conv_train"]
    problems = {p.name: p for p in SUITES["amalgamation"]}
    train = problems["conv_train"]
    assert train.task == preset["tasks"][0] and train.batch_size == preset["batch_size"]
    assert {**train.options, **preset["task_options"]} == train.options
    model = build_task(train.task, train.options).new_model(0)
    assert sum(p.numel() for p in model.parameters()) == 6090 and len(list(model.parameters())) == 6
    for name in ("conv_deeper_pool", "conv_wider", "conv_smallbatch", "conv_train_dp"):
        assert problems[name].task == "digits_cnn" and problems[name].options["hidden"] == 0, name
    assert "task.hidden=0" in trainer_overrides(train, steps=5, eval_every=5)


def test_evaluate_learned_optimizer_on_suite_problems(tmp_path, capsys):
    out = tmp_path / "eval"
    args = ["suite=amalgamation", "path=rnnprop-mnist1d", "tasks=[conv_smallbatch,conv_train_dp]", "repeats=2",
            "steps=4", "eval_every=2", f"run_dir={out}"]  # fmt: skip
    assert main(["evaluate", *args]) == 0
    report = json.loads((out / "evaluation.json").read_text())
    assert report["suite"] == "amalgamation" and set(report["results"]) == {"conv_smallbatch", "conv_train_dp"}
    for task, results in report["results"].items():
        (label,) = results
        runs = sorted((out / "runs" / task / label).glob("seed*"))
        scores = [best_log_val_loss(run) for run in runs]
        assert results[label]["replicates"]["0"] == scores and len(scores) == 2
        mean = sum(scores) / 2
        two_se = 2 * math.sqrt(sum((s - mean) ** 2 for s in scores) / 1 / 2)
        assert results[label]["mean"] == pytest.approx(mean) and results[label]["two_se"] == pytest.approx(two_se)
        config = yaml.safe_load((runs[0] / "config.yaml").read_text())
        assert config["optim"]["name"] == "learned" and config["train"]["steps"] == 4
        if task == "conv_train_dp":
            assert config["privacy"]["name"] == "dp_sgd" and config["privacy"]["noise_multiplier"] == 1.1
        else:
            assert config["task"]["batch_size"] == 32
        assert Path(out / "plots" / f"{task}.png").stat().st_size > 0
    assert "conv_train_dp" in capsys.readouterr().out
    # A baseline drawn over the learned optimizer's runs, on the same figure.
    base = tmp_path / "base"
    overlay = ["suite=amalgamation", "optim=sgd", "lrs=[0.1]", "tasks=[conv_smallbatch]", "repeats=1", "steps=2",
               "eval_every=1", f"run_dir={base}", f"overlay=[{out}]"]  # fmt: skip
    assert main(["baseline", *overlay]) == 0
    assert json.loads((base / "evaluation.json").read_text())["plots"] == [str(base / "plots" / "conv_smallbatch.png")]
    assert main(["baseline", "suite=amalgamation", f"overlay=[{tmp_path / 'none'}]"]) == 2
