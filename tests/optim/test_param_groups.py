"""The param-group policy: weight-decay exemptions (`optim.no_decay`) and Muon's split, on small models."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from optimlab.config import Config, config_hash, from_tree, load_config, to_tree
from optimlab.errors import ConfigError
from optimlab.optim import build_optimizer
from optimlab.optim.param_groups import build_param_groups, muon_parameters
from optimlab.tasks.models import MLP, ConvNet2d, LSTMLanguageModel


def _mlp_with_norms() -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 8), nn.LayerNorm(8), nn.ReLU(), nn.Linear(8, 3)
    )


def _names(model: nn.Module, groups: list[dict]) -> list[tuple[list[str], dict]]:
    """Each group as (parameter names, its other keys), for readable assertions."""
    name = {id(p): n for n, p in model.named_parameters()}
    return [([name[id(p)] for p in g["params"]], {k: v for k, v in g.items() if k != "params"}) for g in groups]


def test_default_is_one_group_with_the_model_parameters_in_order():
    model = _mlp_with_norms()
    groups = build_param_groups(model, "adamw")
    assert len(groups) == 1 and groups[0].keys() == {"params"}
    assert all(a is b for a, b in zip(groups[0]["params"], model.parameters(), strict=True))


@pytest.mark.parametrize(
    "no_decay, exempt",
    [
        (["bias"], ["0.bias", "1.bias", "3.bias", "4.bias", "6.bias"]),
        (["norm"], ["1.weight", "1.bias", "4.weight", "4.bias"]),
        (["norm", "bias"], ["0.bias", "1.weight", "1.bias", "3.bias", "4.weight", "4.bias", "6.bias"]),
    ],
)
def test_no_decay_moves_biases_and_norm_parameters_to_a_zero_decay_group(no_decay, exempt):
    model = _mlp_with_norms()
    groups = _names(model, build_param_groups(model, "adamw", no_decay))
    decayed = [n for n, _ in model.named_parameters() if n not in exempt]
    assert groups == [(decayed, {}), (exempt, {"weight_decay": 0.0})]


def test_no_decay_counts_recurrent_biases_and_every_norm_layer():
    model = nn.Sequential(nn.LSTM(3, 4), nn.GroupNorm(2, 4), nn.InstanceNorm1d(4, affine=True), nn.RMSNorm(4))
    groups = _names(model, build_param_groups(model, "sgd", ["bias", "norm"]))
    assert groups == [
        (["0.weight_ih_l0", "0.weight_hh_l0"], {}),
        (["0.bias_ih_l0", "0.bias_hh_l0", "1.weight", "1.bias", "2.weight", "2.bias", "3.weight"],
         {"weight_decay": 0.0}),
    ]  # fmt: skip


def test_groups_train_as_the_policy_says():
    """An AdamW step with the exemption leaves a zero-gradient bias untouched while the weights decay."""
    model = nn.Linear(3, 2)
    optimizer = build_optimizer("adamw", build_param_groups(model, "adamw", ["bias"]), lr=0.1, weight_decay=0.5)
    weight, bias = model.weight.detach().clone(), model.bias.detach().clone()
    model.weight.grad, model.bias.grad = torch.zeros_like(weight), torch.zeros_like(bias)
    optimizer.step()
    torch.testing.assert_close(model.weight.detach(), weight * (1 - 0.1 * 0.5))
    assert torch.equal(model.bias.detach(), bias)


def test_muon_split_on_an_mlp():
    """Hidden matrices to Muon; the output layer and the biases to AdamW (with their exemption)."""
    model = MLP(4, [8, 8], 3)
    names = [n for n, _ in model.named_parameters()]
    weights = [n for n in names if n.endswith("weight")]
    groups = _names(model, build_param_groups(model, "muon", ["bias"]))
    assert groups == [
        (weights[:2], {"use_muon": True}),
        (weights[2:], {"use_muon": False}),
        ([n for n in names if n.endswith("bias")], {"use_muon": False, "weight_decay": 0.0}),
    ]


def test_muon_split_on_a_convnet():
    """Convolution filters (4-D) and BatchNorm stay on AdamW; the hidden linear layer goes to Muon."""
    model = ConvNet2d(1, 8, 10, [4, 4], hidden=16, batch_norm=True)
    kinds = {n: type(m).__name__ for n, m in model.named_modules()}
    groups = build_param_groups(model, "muon")
    muon = [n for n, p in model.named_parameters() if any(p is q for q in groups[0]["params"])]
    assert groups[0]["use_muon"] and len(muon) == 1
    assert kinds[muon[0].rsplit(".", 1)[0]] == "Linear" and dict(model.named_parameters())[muon[0]].shape == (16, 16)
    assert [g["use_muon"] for g in groups] == [True, False]
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_muon_split_keeps_embeddings_and_a_tied_readout_on_adamw():
    model = LSTMLanguageModel(vocab=11, embedding_size=4, hidden=6, layers=1)
    chosen = muon_parameters(model)
    expected = {id(model.lstm.weight_ih_l0), id(model.lstm.weight_hh_l0)}
    assert chosen == expected
    model.readout.weight = model.embedding.weight = nn.Parameter(torch.randn(11, 6))  # tied (same shape)
    model.lstm = nn.LSTM(6, 6, 1, batch_first=True)
    assert id(model.embedding.weight) not in muon_parameters(model)
    groups = build_param_groups(model, "muon")
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))  # the tied weight once


def test_bad_no_decay_is_a_config_error_naming_the_key():
    model = nn.Linear(2, 2)
    with pytest.raises(ConfigError, match="optim.no_decay.*'weights' is not one of bias, norm"):
        build_param_groups(model, "adamw", ["weights"])
    with pytest.raises(ConfigError, match="optim.no_decay.*'lbfgs' has no weight_decay"):
        build_param_groups(model, "lbfgs", ["bias"])
    with pytest.raises(ConfigError, match="optim.no_decay"):
        load_config(["optim.no_decay=bias"])
    with pytest.raises(ConfigError, match="optim.no_decay.*'bais' is not one of"):
        load_config(["optim.no_decay=[bais]"])


def test_no_decay_in_the_config_keeps_existing_hashes():
    assert config_hash(Config()) == "31fc522a65"
    assert config_hash(load_config(["optim=adamw"])) == config_hash(load_config(["optim=adamw", "optim.no_decay=[]"]))
    assert "no_decay" not in to_tree(load_config(["optim=adamw"]))["optim"]
    cfg = load_config(["optim=adamw", "optim.no_decay=[norm,bias,norm]"])
    assert cfg.optim.no_decay == ["bias", "norm"]  # one canonical order: same choice, same hash
    assert from_tree(to_tree(cfg)) == cfg
    assert config_hash(cfg) != config_hash(load_config(["optim=adamw"]))
    assert config_hash(cfg) == config_hash(load_config(["optim=adamw", "optim.no_decay=[bias,norm]"]))


def _decays() -> list[str]:
    from optimlab.optim.registry import available, optimizer_arguments

    return [name for name in available() if "weight_decay" in optimizer_arguments(name)]


@pytest.mark.parametrize("name", _decays())
def test_every_optimizer_with_weight_decay_honours_the_exemption(name):
    """With zero gradients only weight decay moves a parameter: the decayed ones move, the exempt ones do not."""
    torch.manual_seed(0)
    model = _mlp_with_norms()
    # ASGD's own `lambd` shrinks every parameter at every step, whatever its weight_decay: switched off here.
    extra = {"lambd": 0.0} if name == "asgd" else {}
    optimizer = build_optimizer(name, build_param_groups(model, name, ["bias", "norm"]), weight_decay=0.1, **extra)
    if hasattr(optimizer, "train"):  # schedule-free optimizers step only in training mode
        optimizer.train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    moved = sorted(n for n, p in model.named_parameters() if not torch.equal(p, before[n]))
    assert moved == ["0.weight", "3.weight", "6.weight"]
