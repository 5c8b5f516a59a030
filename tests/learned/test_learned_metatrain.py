"""Meta-training: strategies, the NaN guard, the run directory, kill -9 and resume bit for bit, the CLI cycle."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import optimlab.learned as lo
from optimlab.errors import ConfigError
from optimlab.learned import strategies
from optimlab.learned.estimators import TBPTT
from optimlab.learned.metaconfig import StrategyConfig, load_meta_config
from optimlab.learned.metaopt import MetaOptimizer, adaptive_clip
from optimlab.learned.metatrain import meta_train
from optimlab.learned.problems import LinearRegressionProblem
from optimlab.learned.unroll import LearnedOptimizerSystem

TINY = [
    "tasks=[tiny_mlp]", "batch_size=16", "strategy.unroll_len=4", "strategy.depths=[1,2]",
    "strategy.validation_depths=[2,2]", "strategy.epochs=3", "strategy.min_periods=2", "strategy.num_chances=1",
    "strategy.max_periods=3", "strategy.validation_trajectories=2", "strategy.warmup_steps=2",
    "log.progress=never", "checkpoint_every=1",
]  # fmt: skip
ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).resolve().parents[2] / "src"))


def progress(**kw):
    base = {"stage": 0, "period": 0, "repeat": 0, "stage_best": {}, "last_validation": None}
    return {**base, **kw}


def test_curriculum_rollback_rule():
    cfg = StrategyConfig(repeat_threshold=0.5, max_repeat=2)
    assert not strategies.should_roll_back(
        cfg, progress(), validation=float("nan"), train_loss=0.0
    )  # very first period
    assert strategies.should_roll_back(cfg, progress(period=1, last_validation=-1.0), validation=-0.4, train_loss=0.0)
    assert not strategies.should_roll_back(
        cfg, progress(period=1, last_validation=-1.0), validation=-0.6, train_loss=0.0
    )
    assert strategies.should_roll_back(
        cfg, progress(period=1, last_validation=-1.0), validation=float("inf"), train_loss=0.0
    )
    assert not strategies.should_roll_back(
        cfg, progress(period=1, repeat=2, last_validation=-1.0), validation=9.0, train_loss=0.0
    )
    # The first period of a later stage compares its *training* loss with the previous stage's best validation.
    best = {"0": {"validation": -1.0, "period": 3}}
    assert strategies.should_roll_back(cfg, progress(stage=1, stage_best=best), validation=-5.0, train_loss=-0.2)
    assert not strategies.should_roll_back(cfg, progress(stage=1, stage_best=best), validation=9.0, train_loss=-0.9)


def test_curriculum_stage_length_rule():
    cfg = StrategyConfig(depths=[1, 2], validation_depths=[2, 5], min_periods=3, num_chances=2, max_periods=10)
    best_at = lambda p: {"0": {"validation": -1.0, "period": p}}  # noqa: E731
    assert strategies.next_action(cfg, progress(period=1, stage_best=best_at(1))) == "continue"  # below min_periods
    assert strategies.next_action(cfg, progress(period=3, stage_best=best_at(2))) == "continue"  # 1 period past best
    assert strategies.next_action(cfg, progress(period=4, stage_best=best_at(2))) == "advance"
    assert (
        strategies.next_action(cfg, progress(stage=1, period=4, stage_best={"1": {"validation": 0, "period": 0}}))
        == "finish"
    )
    capped = StrategyConfig(depths=[1], validation_depths=[2], min_periods=50, max_periods=4)
    assert strategies.next_action(capped, progress(period=3, stage_best=best_at(3))) == "finish"
    assert strategies.depth(cfg, 1, 7) == 2 and strategies.validation_depth(cfg, 1) == 5
    rep = StrategyConfig(name="repeat", depths=[1, 2, 5], validation_depths=[10], num_periods=5)
    assert [strategies.depth(rep, 0, p) for p in range(5)] == [1, 2, 5, 5, 5]
    assert (
        strategies.next_action(rep, progress(period=3)) == "continue"
        and strategies.next_action(rep, progress(period=4)) == "finish"
    )


def test_adaptive_clipping_and_nan_guard():
    w = torch.tensor([3.0, 4.0])  # norm 5
    torch.testing.assert_close(adaptive_clip(torch.tensor([6.0, 8.0]), w, 0.1, 1e-3), torch.tensor([0.3, 0.4]))
    torch.testing.assert_close(adaptive_clip(torch.tensor([0.06, 0.08]), w, 0.1, 1e-3), torch.tensor([0.06, 0.08]))
    # zero weights: the limit is ratio * eps, so zero-initialised biases still move
    torch.testing.assert_close(
        adaptive_clip(torch.tensor([1.0, 0.0]), torch.zeros(2), 0.1, 1e-3), torch.tensor([1e-4, 0.0])
    )

    params = {"w": torch.nn.Parameter(torch.tensor([1.0, 2.0]))}
    meta = MetaOptimizer(params, lr=0.1)
    meta.step({"w": torch.tensor([1.0, 1.0])})
    before_w, before_state = (
        params["w"].detach().clone(),
        {k: v.clone() for k, v in meta.adam.state[params["w"]].items()},
    )
    out = meta.step({"w": torch.tensor([float("nan"), 1.0])})
    assert out["skipped"] == 1.0
    assert torch.equal(params["w"], before_w)
    assert all(torch.equal(meta.adam.state[params["w"]][k], v) for k, v in before_state.items())


def test_blown_up_unroll_is_reported_and_leaves_the_trajectory_intact():
    policy = lo.RNNProp(alpha=1e30)  # steps of 1e30: the loss overflows
    system = LearnedOptimizerSystem(policy, LinearRegressionProblem(), unroll_len=5, scale_spread=0.0)
    estimator = TBPTT(system)
    state = estimator.reset(0)
    start = {k: v.clone() for k, v in state["trajectory"].params.items()}
    grads, loss, _ = estimator.estimate(system.weights(), state, torch.Generator())
    assert grads is None
    assert all(torch.equal(start[k], v) for k, v in state["trajectory"].params.items())


def _sha(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_run_directory_layout_and_packaged_optimizer(tmp_path):
    cfg = load_meta_config([*TINY, f"run_dir={tmp_path / 'run'}"])
    summary = meta_train(cfg)
    run = tmp_path / "run"
    assert summary["status"] == "completed"
    assert {p.name for p in run.iterdir()} >= {
        "config.yaml",
        "metrics.jsonl",
        "summary.json",
        "periods",
        "checkpoints",
        "config.json",
        "weights.safetensors",
    }
    on_disk = json.loads((run / "summary.json").read_text())
    assert on_disk["final"]["sha256"] == _sha(run / "weights.safetensors")
    assert [r["stage"] for r in on_disk["periods"]][-1] == 1
    for line in (run / "metrics.jsonl").read_text().splitlines():
        json.loads(line)  # strict JSON
    spec = lo.load(run)
    assert spec.config["deploy"] == {"warmup_steps": 2, "warmup_lr": 0.05}
    assert spec.config["metadata"]["selected"] == on_disk["final"]["checkpoint"]
    assert meta_train(cfg)["iterations"] == summary["iterations"]  # a completed run is not re-run
    with pytest.raises(ConfigError, match="differs in strategy.epochs"):
        meta_train(load_meta_config([*TINY, f"run_dir={run}", "strategy.epochs=4"]))


@pytest.mark.parametrize("estimator", ["tbptt", "pes"])
def test_kill9_and_resume_is_bit_identical(tmp_path, estimator):
    overrides = [*TINY, f"estimator={estimator}"]
    reference = meta_train(load_meta_config([*overrides, f"run_dir={tmp_path / 'ref'}"]))
    assert reference["status"] == "completed"
    run = tmp_path / "killed"
    command = [sys.executable, "-m", "optimlab", "meta-train", *overrides, f"run_dir={run}"]
    proc = subprocess.Popen(command, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = run / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= 6:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run / "weights.safetensors").exists(), "the run finished before it was killed"
    resumed = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    ref_lines = (tmp_path / "ref" / "metrics.jsonl").read_text().splitlines()
    got = (run / "metrics.jsonl").read_text().splitlines()
    first = next((i for i, (a, b) in enumerate(zip(ref_lines, got)) if a != b), None)
    assert first is None and len(got) == len(ref_lines), (
        first,
        len(got),
        len(ref_lines),
        ref_lines[first or 0],
        got[first or 0],
    )
    assert _sha(run / "weights.safetensors") == _sha(tmp_path / "ref" / "weights.safetensors")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["policy_sha256"] == reference["policy_sha256"]


@pytest.mark.parametrize("extra", [
    ["policy=small_fc_lopt", "estimator=es", "estimator.pairs=2", "strategy=repeat", "strategy.num_periods=2",
     "strategy.validation_depths=[2]", "strategy.select=last"],
    ["policy=scale", "estimator=tbptt", "estimator.second_order=false", "strategy.depths=[2]", "strategy.validation_depths=[2]"],
])  # fmt: skip
def test_other_policies_estimators_strategies_and_two_tasks(tmp_path, extra):
    overrides = [*TINY, "tasks=[tiny_mlp,linear_regression]", "strategy.epochs=2", *extra, f"run_dir={tmp_path}"]
    summary = meta_train(load_meta_config(overrides))
    assert summary["status"] == "completed" and summary["final"]["sha256"] == _sha(tmp_path / "weights.safetensors")
    spec = lo.load(tmp_path)
    assert spec.policy.name == load_meta_config(overrides).policy.name
    if "strategy=repeat" in extra:
        assert [r["period"] for r in summary["periods"]][-1] == 1
        assert summary["final"]["checkpoint"] == f"stage_0.1.{summary['periods'][-1]['repeat']}"


def test_tensorboard_logging(tmp_path):
    overrides = [
        *TINY,
        "strategy.depths=[1]",
        "strategy.validation_depths=[2]",
        "strategy.epochs=1",
        "strategy.min_periods=1",
        "strategy.num_chances=0",
        "log.tensorboard=true",
        f"run_dir={tmp_path}",
    ]
    assert meta_train(load_meta_config(overrides))["status"] == "completed"
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


def test_resume_refuses_a_changed_choice_teacher(tmp_path, monkeypatch):
    """The teacher is named by its directory only: a resumed run compares the weights' sha256 it started with."""
    from optimlab.learned import metatrain
    from optimlab.learned.metatrain import MetaTrainer

    teacher = tmp_path / "teacher"
    torch.manual_seed(0)
    lo.save(lo.build_policy("choice", pool="small"), teacher)
    first = _sha(teacher / "weights.safetensors")
    original = MetaTrainer.meta_iteration

    def stopping(self):
        metatrain.request_stop()
        return original(self)

    cfg = load_meta_config([*TINY, "distill=choice", f"distill.teacher={teacher}", f"run_dir={tmp_path / 'run'}"])
    monkeypatch.setattr(MetaTrainer, "meta_iteration", stopping)
    interrupted = meta_train(cfg)
    assert interrupted["status"] == "interrupted" and interrupted["teacher_sha256"] == first
    monkeypatch.setattr(MetaTrainer, "meta_iteration", original)

    torch.manual_seed(1)  # another optimizer in the same directory
    lo.save(lo.build_policy("choice", pool="small"), teacher)
    with pytest.raises(ConfigError, match=rf"^config key 'distill.teacher': .* started with {first[:12]}") as error:
        meta_train(cfg)
    assert "\n" not in str(error.value)
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "interrupted"

    torch.manual_seed(0)  # the original teacher back: the run continues (one more meta-iteration)
    lo.save(lo.build_policy("choice", pool="small"), teacher)
    assert _sha(teacher / "weights.safetensors") == first
    monkeypatch.setattr(MetaTrainer, "meta_iteration", stopping)
    resumed = meta_train(cfg)
    assert resumed["status"] == "interrupted" and resumed["iterations"] == interrupted["iterations"] + 1
