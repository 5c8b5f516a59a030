"""The study's tasks (nqm, random_features) and the data variants reached through the task options."""

import torch

from optimlab.config import Config, config_hash, load_config, to_tree
from optimlab.tasks import build_task


def test_nqm_is_the_quadratic_with_its_variables_in_a_linear_layer():
    options = {"dim": 6, "train_samples": 50}
    torch.manual_seed(0)
    nqm = build_task("nqm", options)
    torch.manual_seed(0)
    quadratic = build_task("quadratic", options)
    torch.testing.assert_close(nqm.model.layer.weight.squeeze(1), quadratic.model.weight)
    batch = nqm.train.batch(torch.arange(10))
    grads = []
    for task, param in ((nqm, nqm.model.layer.weight), (quadratic, quadratic.model.weight)):
        loss_sum, count = task.loss(task.forward(task.model, batch), batch)
        grads.append(torch.autograd.grad(loss_sum / count, param)[0].reshape(-1))
    torch.testing.assert_close(grads[0], grads[1])


def test_random_features_student_size_follows_the_ratio_and_only_the_readout_trains():
    task = build_task("random_features", {"ratio": 0.5, "train_samples": 40, "dim": 5})
    assert task.model.projection.shape == (20, 5) and task.info["features"] == 20
    assert [name for name, _ in task.model.named_parameters()] == ["readout.weight", "readout.bias"]
    other = task.new_model(1)
    assert not torch.equal(other.projection, task.model.projection)  # the features are the run's random draw
    loss_sum, count = task.loss(task.forward(task.model, task.train.tensors), task.train.tensors)
    assert count == 40 and loss_sum > 0


def test_variants_are_task_options_that_change_only_the_training_split():
    plain = build_task("digits_mlp")
    varied = build_task("digits_mlp", {"duplicates": 20, "duplicate_copies": 4, "label_noise": 0.1})
    assert len(varied.train) == len(plain.train) + 80
    assert torch.equal(varied.val.tensors[1], plain.val.tensors[1])
    assert torch.equal(varied.test.tensors[0], plain.test.tensors[0])


def test_variants_at_their_defaults_leave_config_hashes_alone():
    assert config_hash(Config()) == "31fc522a65"
    assert "duplicates" not in to_tree(load_config(["task=digits_cnn"]))["task"]
    cfg = load_config(["task=mnist1d_mlp", "task.imbalance_class=3", "task.imbalance_ratio=0.2"])
    assert config_hash(cfg) != config_hash(Config()) and to_tree(cfg)["task"]["imbalance_class"] == 3
