"""privacy=dp_sgd: per-example clipping and noise against a Python loop over the examples, the trainer path,
and the refusals."""

import pytest
import torch

from optimlab.config import config_hash, load_config
from optimlab.errors import ConfigError
from optimlab.tasks import build_task
from optimlab.train import train
from optimlab.train.dp_sgd import _NOISE_SEED, DPSGDHook, per_example_gradients
from optimlab.train.hooks import RunContext, StepInfo


def _ctx(seed=3):
    torch.manual_seed(0)
    task = build_task("digits_cnn", {"channels": [4, 8], "hidden": 8})
    model = task.model.double()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    return RunContext(task, model, optimizer, torch.device("cpu"), seed, 16, 10)


def _loop_reference(ctx, batch, clip):
    """Σ_i clip(∇ℓ_i) by autograd on one example at a time."""
    params = [p for p in ctx.model.parameters()]
    total = [torch.zeros_like(p) for p in params]
    norms = []
    for i in range(len(batch[0])):
        one = tuple(t[i : i + 1] for t in batch)
        loss_sum, count = ctx.task.loss(ctx.task.forward(ctx.model, one), one)
        grads = torch.autograd.grad(loss_sum / count, params)
        norm = float(torch.sqrt(sum((g**2).sum() for g in grads)))
        norms.append(norm)
        for t, g in zip(total, grads):
            t += g / max(1.0, norm / clip)
    return total, norms


@pytest.mark.parametrize("chunk", [None, 5])
def test_clipped_noisy_gradient_matches_a_loop_over_examples(chunk):
    ctx = _ctx()
    x, y = ctx.task.train.batch(torch.arange(12))
    batch = (x.double(), y)
    clip, sigma = 1.5, 0.7
    reference, norms = _loop_reference(ctx, batch, clip)
    assert min(norms) < clip < max(norms)  # some examples are clipped, some are not
    hook = DPSGDHook(ctx, clip, sigma, chunk)
    hook.after_backward(StepInfo(0, batch, torch.arange(12)))
    generator = torch.Generator().manual_seed(ctx.seed * 7919 + _NOISE_SEED)
    for p, ref in zip(ctx.model.parameters(), reference):
        noise = torch.randn(p.shape, generator=generator, dtype=p.dtype)
        assert torch.allclose(p.grad, (ref + sigma * clip * noise) / 12, rtol=1e-10, atol=1e-12)
    assert hook.stats()["clipped_fraction"] == pytest.approx(sum(n > clip for n in norms) / 12)


def test_per_example_gradients_of_an_unclipped_batch_average_to_the_batch_gradient():
    ctx = _ctx()
    x, y = ctx.task.train.batch(torch.arange(8))
    batch = (x.double(), y)
    grads = per_example_gradients(ctx.model, ctx.task, batch)
    loss_sum, count = ctx.task.loss(ctx.task.forward(ctx.model, batch), batch)
    full = torch.autograd.grad(loss_sum / count, list(ctx.model.parameters()))
    for g, f in zip(grads.values(), full):
        assert g.shape[0] == 8 and torch.allclose(g.mean(0), f, atol=1e-12)


def test_trainer_runs_dp_sgd_resumes_and_refuses_batch_norm(tmp_path):
    base = ["task=digits_cnn", "task.channels=[4,8]", "task.hidden=8", "task.batch_size=16", "train.steps=6",
            "train.eval_every=3", "train.log_every=2", "log.progress=never"]  # fmt: skip
    private = [*base, "privacy=dp_sgd", "privacy.clip=1.0", "privacy.noise_multiplier=1.1"]
    assert config_hash(load_config(base)) != config_hash(load_config(private))
    assert config_hash(load_config([*base, "privacy=none"])) == config_hash(load_config(base))
    whole = train(load_config([*private, f"run_dir={tmp_path / 'whole'}"]))
    assert whole["status"] == "completed"
    plain = train(load_config([*base, f"run_dir={tmp_path / 'plain'}"]))
    assert whole["final"]["val/loss"] != plain["final"]["val/loss"]
    # Stopped after 3 steps and resumed: the noise generator is checkpointed, the result is identical.
    train(load_config([*private, "train.steps=3", "train.checkpoint_every=3", f"run_dir={tmp_path / 'split'}"]))
    resumed = train(load_config([*private, "train.checkpoint_every=3", f"run_dir={tmp_path / 'split'}"]))
    assert resumed["final"]["val/loss"] == whole["final"]["val/loss"]
    with pytest.raises(ConfigError, match="BatchNorm"):
        train(load_config([*private, "task.batch_norm=true", f"run_dir={tmp_path / 'bn'}"]))
    with pytest.raises(ConfigError, match="clip_grad_norm"):
        train(load_config([*private, "train.clip_grad_norm=1", f"run_dir={tmp_path / 'clip'}"]))
    with pytest.raises(ConfigError, match="privacy.clip"):
        load_config([*private, "privacy.clip=0"])
