"""Every registered task: builds, and forward + loss + metrics + backward work with consistent counts."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from optimlab.config import load_config
from optimlab.errors import ConfigError
from optimlab.tasks import available_tasks, build_task, get_task_spec

# Small models for the expensive families, so that building every task stays fast (by name or suffix).
TINY: dict[str, dict] = {
    "shakespeare_lstm": {"hidden": 16, "layers": 1, "embedding_size": 8},
    "gru_repeat": {"train_samples": 200, "val_samples": 50, "test_samples": 50, "state_size": 16},
    "quadratic": {"train_samples": 100, "val_samples": 20, "test_samples": 20},
    "_resnet": {"depth": 8, "width": 4},
    "_vgg11": {"width": 4},
    "_wrn": {"depth": 10, "widen": 1},
    "_densenet": {"depth": 10, "growth": 4},
    "_cnn": {"channels": [4, 8]},
    "_mlp": {"width": 16},
    "_lstm": {"hidden": 8, "embedding_size": 8, "bptt": 5, "eval_lanes": 2},
    "snli_lstm": {"hidden": 6, "mlp_hidden": 5, "embedding_size": 4},
    "snli_infersent": {"hidden": 6, "mlp_hidden": 5, "embedding_size": 4},
    "snli_convnet": {"hidden": 6, "mlp_hidden": 5, "embedding_size": 4},
    "multiwoz_bilstm": {"hidden": 6, "embedding_size": 4},
}



def shipped_tasks() -> list[str]:
    """The tasks optimlab registers itself: not those a test module registers for its own use (such as
    tests/train/test_population.py's), which would otherwise join these tests when collected first."""
    return [name for name in available_tasks() if get_task_spec(name).build.__module__.startswith("optimlab.")]


def tiny_options(name: str) -> dict:
    if name in TINY:
        return TINY[name]
    return next((options for suffix, options in TINY.items() if name.endswith(suffix)), {})


REQUIRED = [
    "mnist1d_logreg", "mnist1d_mlp", "mnist1d_cnn", "digits_mlp", "digits_cnn", "shakespeare_lstm",
    "gru_repeat", "quadratic", "rosenbrock", "logreg", "mnist_mlp", "mnist_lenet5", "cifar10_resnet",
    "cifar10_vgg11", "cifar10_wrn", "cifar10_densenet", "cifar100_resnet", "cifar100_vgg11",
    "cifar100_wrn", "cifar100_densenet", "fashion_mnist_cnn", "svhn_cnn",
]  # fmt: skip


def test_required_tasks_are_registered():
    assert set(REQUIRED) <= set(available_tasks())


@pytest.mark.parametrize("name", shipped_tasks())
def test_task_builds_and_trains_one_step(name, data_dir):
    torch.manual_seed(0)
    task = build_task(name, tiny_options(name), data_dir)
    assert task.name == name
    for split in (task.train, task.val, task.test):
        assert len(split) > 0
    index = torch.arange(min(4, len(task.train)))
    batch = task.train.batch(index)
    if task.augment is not None:
        batch = task.augment(batch, torch.Generator().manual_seed(0))
    task.model.train()
    outputs = task.forward(task.model, batch)
    total, count = task.loss(outputs, batch)
    assert total.dim() == 0 and torch.isfinite(total)
    assert int(count) > 0
    for metric, (value, n) in task.metrics(outputs, batch).items():
        assert torch.isfinite(torch.as_tensor(value)) and int(n) > 0, metric
    derived = task.main_metric == "perplexity" and task.info.get("perplexity")  # exp(loss), by evaluate()
    assert task.main_metric == "loss" or derived or task.main_metric in task.metrics(outputs, batch)
    (total / count).backward()
    grads = [p.grad for p in task.model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    # Evaluation mode works on the validation split too.
    task.model.eval()
    with torch.no_grad():
        val_batch = task.val.batch(torch.arange(min(4, len(task.val))))
        task.loss(task.forward(task.model, val_batch), val_batch)


@pytest.mark.parametrize("name", shipped_tasks())
def test_loss_count_is_additive_over_microbatches(name, data_dir):
    """sum and count over a batch equal the totals over its two halves (exact microbatch weighting)."""
    torch.manual_seed(0)
    task = build_task(name, tiny_options(name), data_dir)
    task.model.eval()  # BatchNorm in eval mode: per-sample outputs do not depend on the batch
    index = torch.arange(min(6, len(task.train)))
    with torch.no_grad():
        whole = task.train.batch(index)
        total, count = task.loss(task.forward(task.model, whole), whole)
        parts = [task.train.batch(index[:3]), task.train.batch(index[3:])]
        sums = [task.loss(task.forward(task.model, part), part) for part in parts]
    assert int(count) == sum(int(c) for _, c in sums)
    torch.testing.assert_close(total, sum(s for s, _ in sums), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", shipped_tasks())
def test_options_are_plain_typed_dataclasses(name):
    """The options validate through the typed config (OmegaConf structured), defaults included."""
    spec = get_task_spec(name)
    assert dataclasses.is_dataclass(spec.options) and spec.description
    cfg = load_config([f"task={name}"])
    assert cfg.task.options == dataclasses.asdict(spec.options())


def test_task_option_override_is_type_checked():
    cfg = load_config(["task=mnist1d_cnn", "task.channels=[8,8]", "task.val_fraction=0.2"])
    assert cfg.task.options["channels"] == [8, 8] and cfg.task.options["val_fraction"] == 0.2
    with pytest.raises(ConfigError, match="width"):
        load_config(["task=mnist1d_mlp", "task.width=wide"])
    with pytest.raises(ConfigError, match="widht"):
        load_config(["task=mnist1d_mlp", "task.widht=3"])


@pytest.mark.parametrize("name", ["mnist1d_cnn", "digits_cnn", "mnist1d_mlp", "digits_mlp"])
def test_small_models_support_hessian_vector_products(name, data_dir):
    """MARTHE needs double backward through the model: HVP equals a finite difference of gradients."""
    torch.manual_seed(0)
    task = build_task(name, {}, data_dir)
    model = task.model.double()
    batch = task.train.batch(torch.arange(32))
    batch = (batch[0].double(), batch[1])
    params = [p for p in model.parameters()]

    def grad(create_graph: bool):
        total, count = task.loss(task.forward(model, batch), batch)
        return torch.autograd.grad(total / count, params, create_graph=create_graph)

    vector = [torch.randn_like(p) for p in params]
    grads = grad(True)
    hvp = torch.autograd.grad(sum((g * v).sum() for g, v in zip(grads, vector)), params)
    eps = 1e-6
    with torch.no_grad():
        for p, v in zip(params, vector):
            p.add_(v, alpha=eps)
    plus = grad(False)
    with torch.no_grad():
        for p, v in zip(params, vector):
            p.sub_(v, alpha=2 * eps)
    minus = grad(False)
    for h, a, b in zip(hvp, plus, minus):
        torch.testing.assert_close(h, (a - b) / (2 * eps), rtol=1e-4, atol=1e-6)


def test_build_task_validates_options_like_the_config():
    with pytest.raises(ConfigError, match="unknown task option 'widht' for task 'mnist1d_mlp'; did you mean width"):
        build_task("mnist1d_mlp", {"widht": 3})
    with pytest.raises(ConfigError, match="'width'"):
        build_task("mnist1d_mlp", {"width": "wide"})
    with pytest.raises(ConfigError, match="unknown task option 'depth' for task 'cifar10_lenet5'; choose from"):
        build_task("cifar10_lenet5", {"augment": True, "depth": 3})
