"""Tasks for functional use: `new_model(seed)` (fresh weights, same data) and `functional_loss` (the task's loss
at given parameters through `torch.func.functional_call`)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from test_tasks_catalogue import shipped_tasks, tiny_options
from torch.func import functional_call, grad

from optimlab.tasks import build_task


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("name", shipped_tasks())
def test_new_model_is_the_seeded_initial_model_and_leaves_the_rng_alone(name, data_dir):
    torch.manual_seed(11)
    task = build_task(name, tiny_options(name), data_dir)
    torch.manual_seed(5)
    state = torch.get_rng_state()
    first, again, other = task.new_model(11), task.new_model(11), task.new_model(12)
    assert torch.equal(torch.get_rng_state(), state), "new_model moved the caller's generator"
    # The run's initial model for a seed is new_model(seed): a population member starts where its plain run does.
    assert _same_weights(first, task.model)
    assert _same_weights(first, again)
    shapes = {k: p.shape for k, p in task.model.named_parameters()}
    assert {k: p.shape for k, p in other.named_parameters()} == shapes
    # Every task draws its weights at random (Rosenbrock only through start_noise, 0 by default).
    if name != "rosenbrock":
        assert not _same_weights(first, other)
    assert first is not task.model and all(p.requires_grad for p in first.parameters())


def test_a_task_without_a_factory_says_so():
    torch.manual_seed(0)
    task = build_task("quadratic", FUNCTIONAL["quadratic"])
    bare = dataclasses.replace(task, model_factory=None)
    with pytest.raises(ValueError, match="'quadratic' has no model_factory"):
        bare.new_model(0)


def test_rosenbrock_start_noise_makes_seeds_differ(data_dir):
    task = build_task("rosenbrock", {"start_noise": 0.1}, data_dir)
    assert not _same_weights(task.new_model(1), task.new_model(2))


# An MLP, a ConvNet with BatchNorm, an LSTM language model, a GRU encoder-decoder with a custom forward,
# and an analytic objective.
FUNCTIONAL = {
    "digits_mlp": {"width": 16},
    "mnist1d_cnn": {"channels": [4, 4], "batch_norm": True},
    "shakespeare_lstm": {"hidden": 8, "layers": 2, "embedding_size": 4},
    "gru_repeat": {"train_samples": 50, "val_samples": 10, "test_samples": 10, "state_size": 8, "embedding_size": 4},
    "quadratic": {"dim": 5, "train_samples": 20, "val_samples": 5, "test_samples": 5},
}


def _double_batch(batch):
    return tuple(t.double() if t.is_floating_point() else t for t in batch)


def _task64(name: str, data_dir, train: bool):
    torch.manual_seed(0)
    task = build_task(name, FUNCTIONAL[name], data_dir)
    task.model.double().train(train)
    batch = _double_batch(task.train.batch(torch.arange(8)))
    return task, batch


@pytest.mark.parametrize("name", sorted(FUNCTIONAL))
def test_functional_loss_and_grad_equal_the_modules(name, data_dir):
    """Eval mode (deterministic): same (sum, count) and, through torch.func.grad, the autograd gradient, in
    float64 at perturbed parameters (so the module's own values are provably not used)."""
    if name == "shakespeare_lstm" and not (data_dir / "tinyshakespeare.txt").exists():
        pytest.skip("Tiny Shakespeare not present")
    task, batch = _task64(name, data_dir, train=False)
    params = {k: p.detach() + 0.01 * torch.randn_like(p) for k, p in task.model.named_parameters()}

    def mean_loss(p):
        total, count = task.functional_loss(p, batch)
        return total / count

    with torch.no_grad():
        for k, p in task.model.named_parameters():
            p.copy_(params[k])
    total, count = task.loss(task.forward(task.model, batch), batch)
    task.model.zero_grad()
    (total / count).backward()
    with torch.no_grad():  # put the module back: the functional loss must take the given tensors
        for p in task.model.parameters():
            p.add_(1.0)

    f_total, f_count = task.functional_loss(params, batch)
    assert int(f_count) == int(count)
    torch.testing.assert_close(f_total, total.detach(), rtol=1e-12, atol=1e-12)
    grads = grad(mean_loss)(params)
    for k, p in task.model.named_parameters():
        torch.testing.assert_close(grads[k], p.grad, rtol=1e-10, atol=1e-12, msg=k)


def test_functional_loss_in_training_mode_updates_the_given_batchnorm_buffers(data_dir):
    task, batch = _task64("mnist1d_cnn", data_dir, train=True)
    own = {k: b.clone() for k, b in task.model.named_buffers()}
    tensors = {k: t.detach().clone() for k, t in [*task.model.named_parameters(), *task.model.named_buffers()]}
    given = {k: tensors[k] for k in own}
    f_total, _ = task.functional_loss(tensors, batch)
    total, _ = task.loss(task.forward(task.model, batch), batch)  # batch statistics, like the functional call
    torch.testing.assert_close(f_total, total.detach(), rtol=1e-12, atol=1e-12)
    running = [k for k in own if k.endswith("running_mean")]
    assert running and all(not torch.equal(given[k], own[k]) for k in running)  # the given buffers moved
    for k in running:
        torch.testing.assert_close(given[k], dict(task.model.named_buffers())[k])  # exactly as the module's did


def test_functional_loss_with_an_explicit_model_and_vmap_over_a_population(data_dir):
    """`model=` runs another module of the same architecture; stacking members' parameters and vmapping
    gives each member's loss (the population-training use)."""
    torch.manual_seed(0)
    task = build_task("digits_mlp", {"width": 8}, data_dir)
    batch = task.train.batch(torch.arange(16))
    members = [task.new_model(seed) for seed in range(3)]
    losses = [task.loss(task.forward(m, batch), batch)[0] for m in members]
    explicit = task.functional_loss(dict(members[1].named_parameters()), batch, model=members[0])[0]
    torch.testing.assert_close(explicit, losses[1])
    stacked = {k: torch.stack([dict(m.named_parameters())[k].detach() for m in members]) for k, _ in
               members[0].named_parameters()}  # fmt: skip
    population = torch.vmap(lambda p: task.functional_loss(p, batch)[0])(stacked)
    torch.testing.assert_close(population, torch.stack(losses).detach(), rtol=1e-5, atol=1e-5)


def test_functional_call_reference_is_what_functional_loss_uses(data_dir):
    """The stand-in passes positional and keyword arguments through unchanged (gru_repeat's forward takes three)."""
    torch.manual_seed(0)
    task = build_task("gru_repeat", FUNCTIONAL["gru_repeat"], data_dir)
    task.model.eval()
    batch = task.train.batch(torch.arange(4))
    params = dict(task.model.named_parameters())
    expected = functional_call(task.model, params, batch)
    total, _ = task.functional_loss(params, batch)
    torch.testing.assert_close(total, task.loss(expected, batch)[0])
