"""Importance samplers: unbiased weighted gradients, the floor, per-example reductions, exact resume."""

import pytest
import torch
from torch import nn

from optimlab.config import load_config
from optimlab.tasks.base import Split, Task
from optimlab.train import train
from optimlab.train.importance import (
    ImportanceSampler, _one_norm, example_grad_norms, example_losses, weighted_task, with_weights,
)  # fmt: skip


def linear_task(n=40, features=3, classes=3, seed=0) -> Task:
    generator = torch.Generator().manual_seed(seed)
    x = (
        torch.randn(n, features, generator=generator, dtype=torch.float64)
        * torch.linspace(0.2, 3.0, n, dtype=torch.float64)[:, None]
    )
    y = torch.randint(0, classes, (n,), generator=generator)
    torch.manual_seed(seed)
    model = nn.Linear(features, classes).double()
    split = Split((x, y))
    return Task("linear", split, split, split, model)


def flat_grad(model) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for p in model.parameters()])


def weighted_gradient(task, weighted, sampler, indices) -> torch.Tensor:
    task.model.zero_grad()
    batch = with_weights(task.train.batch(indices), sampler, indices)
    total, count = weighted.loss(weighted.forward(task.model, batch), batch)
    (total / count).backward()
    return flat_grad(task.model)


@pytest.mark.parametrize("kind", ["loss", "gradnorm"])
def test_weighted_batch_gradient_is_unbiased(kind):
    task = linear_task()
    n = len(task.train)
    sampler = ImportanceSampler(n, 4, seed=3, kind=kind, floor=0.05)
    weighted = weighted_task(task, sampler)
    everyone = torch.arange(n)
    # Scores as training would record them: every example's loss or gradient norm.
    if kind == "loss":
        weighted_gradient(task, weighted, sampler, everyone)
    else:
        task.model.train()
        sampler.observe(everyone, example_grad_norms(task, task.model, task.train.batch(everyone)))
    assert bool(sampler.seen.all())
    probs = sampler.probabilities()
    assert float(probs.max() / probs.min()) > 5  # far from uniform: the test would see a bias
    task.model.zero_grad()
    full_loss, count = task.loss(task.forward(task.model, task.train.tensors), task.train.tensors)
    (full_loss / count).backward()
    full = flat_grad(task.model).clone()

    kind_of_scores = sampler.scores.clone()
    estimates, plain = [], []
    for _ in range(3000):
        indices = sampler.next()
        sampler.scores = kind_of_scores.clone()  # hold the distribution fixed while sampling
        estimates.append(weighted_gradient(task, weighted, sampler, indices))
        task.model.zero_grad()
        rows = task.train.batch(indices)
        s, c = task.loss(task.forward(task.model, rows), rows)
        (s / c).backward()
        plain.append(flat_grad(task.model))
    estimates, plain = torch.stack(estimates), torch.stack(plain)
    standard_error = estimates.std(dim=0) / len(estimates) ** 0.5
    z = (estimates.mean(dim=0) - full).abs() / standard_error
    assert float(z.max()) < 4.0, z
    # Without the weights the same draws are biased: the test can tell.
    z_plain = (plain.mean(dim=0) - full).abs() / (plain.std(dim=0) / len(plain) ** 0.5)
    assert float(z_plain.max()) > 6.0, z_plain


def test_floor_keeps_every_example_drawable_and_unseen_examples_score_the_mean():
    sampler = ImportanceSampler(10, 2, seed=0, kind="loss", floor=0.2)
    assert torch.allclose(sampler.probabilities(), torch.full((10,), 0.1, dtype=torch.float64))
    sampler.observe(torch.tensor([0, 1, 2]), torch.tensor([1000.0, 0.0, float("nan")]))
    probs = sampler.probabilities()
    assert float(probs.sum()) == pytest.approx(1.0)
    assert float(probs.min()) >= 0.2 / 10 - 1e-15
    assert float(probs[1]) == pytest.approx(0.2 / 10)  # a zero score: only the floor
    assert bool(~sampler.seen[2])  # a non-finite value is ignored; example 2 scores the mean (500) like 3..9
    assert float(probs[2]) == pytest.approx(float(probs[5]))
    assert torch.equal(sampler.weights(torch.tensor([0, 1])), 1.0 / (10 * sampler.probs[[0, 1]]))


def test_sampler_state_round_trips_and_draws_repeat():
    a = ImportanceSampler(20, 5, seed=1, kind="loss", floor=0.1)
    a.observe(torch.arange(20), torch.arange(20.0))
    a.next()
    b = ImportanceSampler(20, 5, seed=1, kind="loss", floor=0.1)
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.next(), b.next()) and torch.equal(a.probs, b.probs)


def test_per_example_losses_match_the_task_loss_one_example_at_a_time():
    task = linear_task()
    batch = task.train.batch(torch.arange(6))
    outputs = task.forward(task.model, batch)
    fast, counts = example_losses(task, outputs, batch)
    generic = Task("generic", task.train, task.val, task.test, task.model, loss=lambda o, b: task.loss(o, b))
    slow, slow_counts = example_losses(generic, outputs, batch)
    torch.testing.assert_close(fast, slow, rtol=0, atol=1e-12)
    assert torch.equal(counts, slow_counts.to(counts.dtype))


def test_vmapped_gradient_norms_equal_one_backward_per_example():
    task = linear_task()
    batch = task.train.batch(torch.arange(7))
    norms = example_grad_norms(task, task.model, batch)
    reference = torch.stack([_one_norm(task, task.model, tuple(t[i : i + 1] for t in batch)) for i in range(7)])
    torch.testing.assert_close(norms, reference, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", ["loss", "gradnorm"])
def test_importance_sampled_run_resumes_bit_identically(tmp_path, toy_overrides, kind):
    common = [*toy_overrides[:-2], "log.progress=never", f"train.sampler={kind}", "train.sampler_floor=0.3"]
    straight = train(load_config([*common, "train.steps=30", f"run_dir={tmp_path / 'straight'}"]))
    train(load_config([*common, "train.steps=17", f"run_dir={tmp_path / 'resumed'}"]))
    resumed = train(load_config([*common, "train.steps=30", f"run_dir={tmp_path / 'resumed'}"]))
    assert resumed["params_sha256"] == straight["params_sha256"]
    uniform = train(
        load_config([*toy_overrides[:-2], "log.progress=never", "train.steps=30", f"run_dir={tmp_path / 'u'}"])
    )
    assert uniform["params_sha256"] != straight["params_sha256"]


def test_importance_sampling_rejects_length_bucketing(tmp_path, toy_overrides):
    from optimlab.errors import ConfigError

    with pytest.raises(ConfigError, match="length_bucketing|sequence lengths"):
        train(load_config([*toy_overrides, "train.sampler=loss", "train.length_bucketing=true"]))


def test_gradnorm_hook_in_chunks_matches_one_pass():
    from optimlab.train.hooks import StepInfo
    from optimlab.train.importance import GradNormHook

    task = linear_task()
    indices = torch.arange(10)
    step = StepInfo(0, task.train.batch(indices), indices)
    whole, chunked = (ImportanceSampler(40, 4, 0, "gradnorm", 0.1) for _ in range(2))
    GradNormHook(task, task.model, whole).after_backward(step)
    GradNormHook(task, task.model, chunked, chunk=3).after_backward(step)
    assert bool(whole.seen[:10].all()) and not bool(whole.seen[10:].any())
    torch.testing.assert_close(whole.scores, chunked.scores, rtol=1e-12, atol=0)
