"""Population training: each member equals its stand-alone run, writes the same run directory, diverges
alone, resumes exactly after kill -9; runs that cannot be batched are refused before anything is written."""

import dataclasses
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from optimlab import rundir
from optimlab.config import config_hash, from_tree, load_config, read_yaml_mapping
from optimlab.errors import ConfigError
from optimlab.tasks import Split, Task, build_task, register_task
from optimlab.tasks.models.convnet import ConvNet1d
from optimlab.tasks.models.mlp import MLP
from optimlab.tasks.registry import _TASKS
from optimlab.train import load_run, train
from optimlab.train import population, population_batched
from optimlab.train.population import MemberState, NotBatchable, train_population
from optimlab.train.population_batched import batched_loss
from optimlab.train.population_rules import config_ineligibility, member_settings, population_key

BASE = [
    "task=toy", "task.dropout=0.0", "task.batch_size=16", "train.steps=20", "train.log_every=5",
    "train.eval_every=10", "train.checkpoint_every=10", "log.progress=never",
]

# optimizer settings -> the members' (lr, seed) pairs and extra per-member float settings
CASES = {
    "adam": (["optim=adam"], [("optim.lr=0.01", 0), ("optim.lr=0.03", 1), ("optim.lr=0.01", 2)]),
    "sgd_momentum": (["optim=sgd", "optim.momentum=0.9"], [("optim.lr=0.1", 0), ("optim.lr=0.3", 1)]),
    "sgd_c": (["optim=sgd_c", "optim.topC=3", "optim.momentum=0.9"],
              [("optim.lr=0.1", 0), ("optim.lr=0.05 optim.decay=0.5", 1)]),
    # Members with the same lr share the base Adam call; their memories stay their own.
    "adam_c": (["optim=adam_c", "optim.topC=3"],
               [("optim.lr=0.01", 0), ("optim.lr=0.01 optim.decay=0.5", 1), ("optim.lr=0.03", 2)]),
    "cosine_weight_decay": (["optim=adamw", "schedule=cosine", "optim.no_decay=[bias]"],
                            [("optim.lr=0.01 optim.weight_decay=0.1", 0), ("optim.lr=0.02 optim.betas=[0.8,0.99]", 1)]),
    # Equal settings: one merged param group (foreach kernels) for both members.
    "adam_same_lr_step": (["optim=adam", "schedule=step", "schedule.milestones=[5,15]", "schedule.gamma=0.3"],
                          [("optim.lr=0.01", 0), ("optim.lr=0.01", 1)]),
    "step_schedule_clipping": (["optim=sgd", "schedule=step", "schedule.milestones=[7,15]"],
                               [("optim.lr=0.5 train.clip_grad_norm=0.05", 0), ("optim.lr=0.2 schedule.gamma=0.5", 1)]),
    # foreach given: the members still share merged groups, stepped as blocks of the stacked parameters.
    "adam_foreach": (["optim=adam", "optim.foreach=true"], [("optim.lr=0.01", 1), ("optim.lr=0.02", 0), ("optim.lr=0.01", 0)]),
}


@dataclasses.dataclass
class ToyMLPOptions:
    activation: str = "tanh"


def build_toy_mlp(options: ToyMLPOptions, data_dir) -> Task:
    """Two-dimensional inputs (flattened by the MLP), a classification loss: the written-out batched loss."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(192, 2, 3, generator=generator)
    y = x.flatten(1)[:, :3].argmax(dim=1)
    splits = [Split((x[lo:hi], y[lo:hi])) for lo, hi in ((0, 128), (128, 160), (160, 192))]

    def factory():
        return MLP(6, [16, 12], 3, options.activation)

    return Task("toy_mlp", *splits, factory(), model_factory=factory)


if "toy_mlp" not in _TASKS:
    register_task("toy_mlp", options=ToyMLPOptions, description="MLP test task")(build_toy_mlp)


def configs(tmp_path, case, folder="pop", extra=()):
    common, members = CASES[case]
    return [load_config([*BASE, *common, *settings.split(), f"seed={seed}", *extra,
                         f"run_dir={tmp_path / folder / str(i)}"]) for i, (settings, seed) in enumerate(members)]


def params(run_dir) -> dict[str, torch.Tensor]:
    return load_run(run_dir).model.state_dict()


def relative_error(a: dict, b: dict) -> float:
    return max(float((a[k] - b[k]).norm() / b[k].norm().clamp_min(1e-12)) for k in a)


@pytest.mark.parametrize("case", list(CASES))
def test_each_member_ends_where_its_stand_alone_run_does(tmp_path, case):
    cfgs = configs(tmp_path, case)
    summaries = train_population(cfgs)
    for i, (cfg, summary) in enumerate(zip(cfgs, summaries)):
        alone = train(dataclasses.replace(cfg, run_dir=str(tmp_path / "alone" / str(i))))
        assert summary["status"] == alone["status"] == "completed"
        assert summary["population"] == {"size": len(cfgs), "index": i} and "population" not in alone
        assert summary["config_hash"] == alone["config_hash"] == config_hash(cfg)
        assert relative_error(params(cfg.run_dir), params(tmp_path / "alone" / str(i))) < 1e-5
        ours = [json.loads(line) for line in (Path(cfg.run_dir) / rundir.METRICS).read_text().splitlines()]
        theirs = [json.loads(line) for line in (tmp_path / "alone" / str(i) / rundir.METRICS).read_text().splitlines()]
        assert [sorted(r) for r in ours] == [sorted(r) for r in theirs]  # the same records, key for key
        for a, b in zip(ours, theirs):
            for key in ("train/loss", "lr", "val/loss"):
                if key in a:
                    assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-9), (key, a["step"])


_MLP = ["task=toy_mlp", "task.batch_size=16", "train.steps=20", "train.eval_every=10", "train.log_every=5"]
# model and optimizer settings -> the members' learning rates (seeds 0, 1, ...)
WITHOUT_VMAP = {
    "mlp_adam_c": ([*_MLP, "optim=adam_c", "optim.topC=3"], (0.01, 0.03, 0.01)),
    "mlp_sgd_momentum": ([*_MLP, "optim=sgd", "optim.momentum=0.9"], (0.01, 0.03, 0.01)),
    "convnet_adam": (["task=digits_cnn", "task.batch_size=32", "train.steps=12", "train.eval_every=6",
                      "train.log_every=4", "train.eval_batches=1", "optim=adam"], (0.01, 0.003)),
}


@pytest.mark.parametrize("case", WITHOUT_VMAP)
def test_members_without_vmap_end_where_their_stand_alone_runs_do(tmp_path, case, monkeypatch):
    """An MLP and a 2-D ConvNet take the written-out batched loss (no vmap); each member still equals its
    stand-alone run."""
    def vmapped(*args):
        raise AssertionError(f"the {case} population used vmap")
    monkeypatch.setattr(population._Population, "_member_loss", vmapped)
    common, lrs = WITHOUT_VMAP[case]
    cfgs = [load_config([*common, "log.progress=never", f"optim.lr={lr}", f"seed={seed}",
                         f"run_dir={tmp_path / 'pop' / str(seed)}"]) for seed, lr in enumerate(lrs)]
    summaries = train_population(cfgs)
    for i, (cfg, summary) in enumerate(zip(cfgs, summaries)):
        alone = train(dataclasses.replace(cfg, run_dir=str(tmp_path / "alone" / str(i))))
        assert summary["status"] == alone["status"] == "completed"
        assert relative_error(params(cfg.run_dir), params(tmp_path / "alone" / str(i))) < 1e-5
        assert summary["final"]["train/loss"] == pytest.approx(alone["final"]["train/loss"], rel=1e-5)


@pytest.mark.parametrize(("activation", "dtype"), [("tanh", torch.float32), ("relu", torch.float32),
                                                   ("sigmoid", torch.float32), ("relu", torch.float64)])
def test_batched_loss_gradients_equal_the_vmapped_ones(activation, dtype):
    task = build_task("toy_mlp", {"activation": activation})
    models = [task.new_model(seed).to(dtype) for seed in range(4)]
    for model in models:  # a linear layer without bias too
        model.layers[-1].bias = None
    stacked = {name: torch.stack([dict(m.named_parameters())[name].detach() for m in models]).requires_grad_()
               for name, _ in models[0].named_parameters()}
    index = torch.stack([torch.randperm(128, generator=torch.Generator().manual_seed(i))[:16] for i in range(4)])
    batch = tuple(t[index].to(dtype) if t.is_floating_point() else t[index] for t in task.train.tensors)
    batched = batched_loss(task, models[0])
    assert batched is not None
    losses, sums, counts = batched(stacked, batch)
    ours = torch.autograd.grad(losses.sum(), list(stacked.values()))

    def member(params, rows):
        loss_sum, count = task.functional_loss(params, rows, models[0])
        return loss_sum * (1.0 / torch.as_tensor(count)).to(loss_sum.dtype), loss_sum
    vmapped, vmapped_sums = torch.func.vmap(member)(stacked, batch)
    theirs = torch.autograd.grad(vmapped.sum(), list(stacked.values()))
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs))
    torch.testing.assert_close(sums, vmapped_sums.detach(), rtol=1e-6, atol=0)
    assert counts.tolist() == [16] * 4


@pytest.mark.parametrize("classes", [3, 10, 17, 40])
def test_batched_cross_entropy_equals_each_members_own_bit_for_bit(classes):
    """The members' losses come from one cross-entropy (over (members, classes, rows) where the probe allows
    it); each member's loss values and logit gradients are those of its own `cross_entropy`."""
    generator = torch.Generator().manual_seed(classes)
    task = build_task("toy_mlp", {})
    for scale in (0.1, 3.0, 30.0):
        logits = (torch.randn(4, 128, classes, generator=generator) * scale).requires_grad_()
        targets = torch.randint(0, classes, (4, 128), generator=generator)
        weights = torch.rand(4, generator=generator)
        ours, counts = population_batched._member_losses(task, logits, (targets, targets))
        theirs = torch.stack([nn.functional.cross_entropy(logits[m], targets[m], reduction="none") for m in range(4)])
        torch.testing.assert_close(ours, theirs.sum(dim=1), rtol=1e-6, atol=0)
        assert counts.tolist() == [128] * 4
        ours_grad, = torch.autograd.grad((ours * weights).sum(), logits)
        alone = [nn.functional.cross_entropy(logits[m], targets[m], reduction="sum") * weights[m] for m in range(4)]
        theirs_grad, = torch.autograd.grad(sum(alone), logits)
        assert torch.equal(ours_grad, theirs_grad)


def test_batched_mlp_gradients_equal_each_members_own_backward_bit_for_bit():
    """At mnist1d_mlp's sizes (40 inputs, two hidden layers of 100, 10 classes, batches of 128), where the
    matrix products take MKL's blocked kernels, each member's batched gradient is its stand-alone gradient
    (nn.Linear layers, the summed cross-entropy seeded with 1/count) bit for bit."""
    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(512, 40, generator=generator), torch.randint(0, 10, (512,), generator=generator)
    task = Task("mlp40", *[Split((x, y))] * 3, MLP(40, [100, 100], 10), model_factory=lambda: MLP(40, [100, 100], 10))
    models = [task.new_model(seed) for seed in range(4)]
    stacked = {name: torch.stack([dict(m.named_parameters())[name].detach() for m in models]).requires_grad_()
               for name, _ in models[0].named_parameters()}
    index = torch.stack([torch.randperm(512, generator=generator)[:128] for _ in range(4)])
    batch = tuple(t[index] for t in task.train.tensors)
    losses, _, _ = batched_loss(task, models[0])(stacked, batch)
    ours = torch.autograd.grad(losses.sum(), list(stacked.values()))
    for m, model in enumerate(models):
        loss_sum = nn.functional.cross_entropy(model(batch[0][m]), batch[1][m], reduction="sum")
        theirs = torch.autograd.grad(loss_sum, list(model.parameters()), torch.tensor(1 / 128))
        assert all(torch.equal(a[m], b) for a, b in zip(ours, theirs)), m


@pytest.mark.parametrize(("options", "dtype"), [({}, torch.float32), ({}, torch.float64),
                                              ({"hidden": 0, "channels": [4, 6, 8], "pools": [1, 2]}, torch.float32)])
def test_batched_convnet_gradients_equal_each_members_own_backward_bit_for_bit(options, dtype):
    """A 2-D ConvNet (digits_cnn) without vmap: each member's convolutions are its own calls and the
    max-pools take every member's images at once; each member's gradient is its stand-alone one bit for bit."""
    task = build_task("digits_cnn", options)
    models = [task.new_model(seed).to(dtype) for seed in range(3)]
    stacked = {name: torch.stack([dict(m.named_parameters())[name].detach() for m in models]).requires_grad_()
               for name, _ in models[0].named_parameters()}
    generator = torch.Generator().manual_seed(0)
    index = torch.stack([torch.randperm(len(task.train), generator=generator)[:64] for _ in models])
    batch = tuple(t[index].to(dtype) if t.is_floating_point() else t[index] for t in task.train.tensors)
    batched = batched_loss(task, models[0])
    assert batched is not None
    losses, sums, counts = batched(stacked, batch)
    ours = torch.autograd.grad(losses.sum(), list(stacked.values()))
    for m, model in enumerate(models):
        loss_sum = nn.functional.cross_entropy(model(batch[0][m]), batch[1][m], reduction="sum")
        theirs = torch.autograd.grad(loss_sum, list(model.parameters()), torch.tensor(1 / 64, dtype=dtype))
        assert all(torch.equal(a[m], b) for a, b in zip(ours, theirs)), m
        torch.testing.assert_close(sums[m], loss_sum.detach(), rtol=1e-6, atol=0)
    assert counts.tolist() == [64] * 3


@pytest.mark.parametrize("settings", [dict(kernel_size=2), dict(kernel_size=3, stride=2, padding=1),
                                      dict(kernel_size=2, ceil_mode=True), dict(kernel_size=2, dilation=2)])
def test_channels_last_max_pool_equals_max_pool2d_bit_for_bit(settings):
    """Values, indices and gradients of `_MaxPool2d` are `max_pool2d`'s, on images full of ties (ReLU's
    zeros, a few distinct levels) where the first maximum of each window must be the one kept."""
    generator = torch.Generator().manual_seed(0)
    pool = nn.MaxPool2d(**settings)
    for size in (8, 7):
        x = torch.randint(-2, 3, (6, 16, size, size), generator=generator).float().relu().requires_grad_()
        theirs = pool(x)
        ours = population_batched._MaxPool2d.apply(x, pool.kernel_size, pool.stride, pool.padding, pool.dilation,
                                                   pool.ceil_mode)
        assert torch.equal(ours, theirs)
        grad = torch.randn(theirs.shape, generator=generator)
        assert torch.equal(*(torch.autograd.grad(y, x, grad)[0] for y in (ours, theirs)))
        last = x.detach().contiguous(memory_format=torch.channels_last)
        indices = [torch.ops.aten.max_pool2d_with_indices(t, pool.kernel_size, pool.stride, pool.padding,
                                                          pool.dilation, pool.ceil_mode)[1] for t in (x.detach(), last)]
        assert torch.equal(indices[0], indices[1].contiguous())


def test_batched_loss_is_only_for_models_it_writes_out():
    toy = build_task("toy", {"dropout": 0.0})
    assert batched_loss(toy, toy.model) is None  # a module of its own (Slow)
    mlp = build_task("toy_mlp", {})
    assert batched_loss(mlp, nn.Sequential(nn.Linear(6, 3), nn.Dropout(0.0))) is None
    assert batched_loss(mlp, nn.Sequential(nn.Flatten(), nn.Linear(6, 3), nn.Softmax(dim=-1))) is None
    assert batched_loss(mlp, mlp.new_model(0).to(torch.bfloat16)) is None
    assert batched_loss(mlp, mlp.new_model(0).double()) is not None
    assert batched_loss(mlp, ConvNet1d(40, 10)) is None  # vmap's grouped 1-D convolutions are the faster ones
    cnn_bn = build_task("digits_cnn", {"batch_norm": True})  # running statistics: buffers
    assert batched_loss(cnn_bn, cnn_bn.model) is None


def test_member_run_directory_has_the_stand_alone_layout(tmp_path):
    cfgs = configs(tmp_path, "adam")
    train_population(cfgs)
    alone = tmp_path / "alone"
    train(dataclasses.replace(cfgs[0], run_dir=str(alone)))
    member = Path(cfgs[0].run_dir)
    assert sorted(p.name for p in member.rglob("*")) == sorted(p.name for p in alone.rglob("*"))
    ours, theirs = torch.load(member / "checkpoints" / "step-20.pt"), torch.load(alone / "checkpoints" / "step-20.pt")
    assert ours.keys() == theirs.keys()
    assert ours["optimizer"]["param_groups"] == theirs["optimizer"]["param_groups"]
    assert ours["optimizer"]["state"].keys() == theirs["optimizer"]["state"].keys()
    for name, tensor in ours["model"].items():  # each member's own weights only, not every member's
        assert tensor.untyped_storage().nbytes() == theirs["model"][name].untyped_storage().nbytes()
    saved = from_tree(read_yaml_mapping(member / rundir.CONFIG, "config"))
    assert saved.train.threads == torch.get_num_threads()  # recorded, as stand-alone runs record it


def test_a_diverging_member_is_recorded_and_frozen_while_the_others_go_on(tmp_path):
    common = [*BASE, "optim=sgd", "train.log_every=1"]
    cfgs = [load_config([*common, f"optim.lr={lr}", f"seed={i}", f"run_dir={tmp_path / 'pop' / str(i)}"])
            for i, lr in enumerate((0.1, 1e38, 0.2))]
    summaries = train_population(cfgs)
    assert [s["status"] for s in summaries] == ["completed", "diverged", "completed"]
    for i, cfg in enumerate(cfgs):
        alone = train(dataclasses.replace(cfg, run_dir=str(tmp_path / "alone" / str(i))))
        assert alone["status"] == summaries[i]["status"]
        assert alone["diverged_step"] == summaries[i]["diverged_step"]
        assert alone["step"] == summaries[i]["step"]
        if alone["status"] == "completed":
            assert relative_error(params(cfg.run_dir), params(tmp_path / "alone" / str(i))) < 1e-5


@pytest.mark.parametrize("case", ["sgd_c", "adam_same_lr_step"])
def test_members_resume_from_their_own_checkpoints_even_at_different_steps(tmp_path, case):
    """One member trained 10 steps alone, then the population of it and a fresh one trains to 20: both
    equal their uninterrupted stand-alone runs; and a stand-alone run resumes a member's checkpoint.
    (With equal settings the members share a merged param group, whose lr comes from a member that steps.)"""
    cfgs = configs(tmp_path, case)
    train(dataclasses.replace(cfgs[0], train=dataclasses.replace(cfgs[0].train, steps=10)))
    summaries = train_population(cfgs)
    assert [s["status"] for s in summaries] == ["completed", "completed"]
    for i, cfg in enumerate(cfgs):
        alone = tmp_path / "alone" / str(i)
        train(dataclasses.replace(cfg, run_dir=str(alone)))
        assert relative_error(params(cfg.run_dir), params(alone)) < 1e-5
    # A finished population re-run does nothing; extended, it continues each member.
    again = train_population(cfgs)
    assert [s["wall_time"] for s in again] == [s["wall_time"] for s in summaries]
    longer = [dataclasses.replace(c, train=dataclasses.replace(c.train, steps=30)) for c in cfgs]
    standalone = train(dataclasses.replace(longer[1], run_dir=str(tmp_path / "alone30")))
    member = train(longer[1])  # a stand-alone run resumes the member's population checkpoint
    assert member["status"] == "completed" and member["step"] == 30
    assert standalone["status"] == "completed"
    assert relative_error(params(longer[1].run_dir), params(tmp_path / "alone30")) < 1e-5


def _stacks_seen(monkeypatch) -> list[list[list[int]]]:
    """Records the rows of each stacked group of every population trained from now on."""
    seen = []
    original = population._Population._stack_groups

    def spy(self):
        original(self)
        seen.append([stack.rows for stack in self.stacks])
    monkeypatch.setattr(population._Population, "_stack_groups", spy)
    return seen


def test_stacking_and_unstacking_change_no_bit(tmp_path, monkeypatch):
    """Members with equal settings step as blocks of the stacked parameters (two param groups: no_decay);
    the same population never stacked, or unstacked halfway, ends with bit-identical parameters."""
    common = ["task=toy_mlp", "task.batch_size=16", "train.steps=12", "train.eval_every=6", "train.log_every=3",
              "log.progress=never", "optim=adamw", "optim.no_decay=[bias]", "schedule=cosine"]
    members = [("optim.lr=0.01", 0), ("optim.lr=0.02", 0), ("optim.lr=0.01", 1), ("optim.lr=0.01", 2)]

    def run(folder):
        cfgs = [load_config([*common, lr, f"seed={seed}", f"run_dir={tmp_path / folder / str(i)}"])
                for i, (lr, seed) in enumerate(members)]
        return [s["params_sha256"] for s in train_population(cfgs)]

    seen = _stacks_seen(monkeypatch)
    stacked = run("stacked")
    # Rows are sorted by settings: the three members of lr 0.01 are adjacent, in two groups (decay, no decay).
    assert sorted(seen[0]) == [[0, 1, 2], [0, 1, 2], [3], [3]]
    set_gradients = population._Population._set_gradients
    calls = []

    def unstack_halfway(self, grads, active):
        calls.append(1)
        if len(calls) == 6:
            self._unstack(set(range(len(self.members))))
            assert not self.stacks and not self.located
        set_gradients(self, grads, active)
    monkeypatch.setattr(population._Population, "_set_gradients", unstack_halfway)
    assert run("unstacked") == stacked
    monkeypatch.setattr(population._Population, "_stack_groups", lambda self: None)
    assert run("never") == stacked


def test_a_member_of_a_stacked_group_diverges_alone(tmp_path, monkeypatch):
    """Three members with equal settings (one block): two diverge at different steps, as their stand-alone
    runs do, and the third ends where its stand-alone run does."""
    common = ["task=toy_mlp", "task.activation=relu", "task.batch_size=16", "train.steps=20", "train.log_every=1",
              "train.eval_every=10", "log.progress=never", "optim=sgd", "optim.lr=1000"]
    cfgs = [load_config([*common, f"seed={seed}", f"run_dir={tmp_path / 'pop' / str(seed)}"]) for seed in range(3)]
    seen = _stacks_seen(monkeypatch)
    summaries = train_population(cfgs)
    assert seen == [[[0, 1, 2]]]
    assert [s["status"] for s in summaries] == ["completed", "diverged", "diverged"]
    for cfg, summary in zip(cfgs, summaries):
        alone = train(dataclasses.replace(cfg, run_dir=str(tmp_path / "alone" / str(cfg.seed))))
        assert (alone["status"], alone["diverged_step"], alone["step"]) == (
            summary["status"], summary["diverged_step"], summary["step"])
    assert summaries[1]["diverged_step"] != summaries[2]["diverged_step"]
    assert relative_error(params(cfgs[0].run_dir), params(tmp_path / "alone" / "0")) < 1e-5


def test_a_stacked_group_resumes_from_its_members_checkpoints_bit_identically(tmp_path, monkeypatch):
    """Two members with equal settings trained 10 steps, then continued to 20 (their Adam states rebuilt
    into one block from their checkpoints), equal an uninterrupted population of 20 steps."""
    common = ["task=toy_mlp", "task.batch_size=16", "train.eval_every=5", "train.log_every=5", "log.progress=never",
              "optim=adam", "optim.lr=0.01"]

    def cfgs(folder, steps):
        return [load_config([*common, f"train.steps={steps}", f"seed={seed}", f"run_dir={tmp_path / folder / str(seed)}"])
                for seed in range(2)]
    seen = _stacks_seen(monkeypatch)
    train_population(cfgs("resumed", 10))
    resumed = train_population(cfgs("resumed", 20))
    reference = train_population(cfgs("reference", 20))
    assert seen == [[[0, 1]]] * 3
    assert [s["params_sha256"] for s in resumed] == [s["params_sha256"] for s in reference]
    assert [s["step"] for s in resumed] == [20, 20]


def _start_population(spec: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "optimlab", "train", "--population", str(spec)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _members(folder: Path, extra: list[str]) -> list[list[str]]:
    return [[*BASE, "optim=adam", f"optim.lr={lr}", f"seed={i}", *extra, f"run_dir={folder / str(i)}"]
            for i, lr in enumerate((0.01, 0.03))]


def _write_spec(path: Path, folder: Path, extra: list[str]) -> Path:
    runs = [{"key": str(i), "overrides": overrides} for i, overrides in enumerate(_members(folder, extra))]
    path.write_text(json.dumps({"runs": runs, "result": str(folder / "result.json")}))
    return path


def test_kill_9_then_resume_is_bit_identical(tmp_path, plugin_env):
    extra = ["train.steps=60", "train.checkpoint_every=7", "task.delay=0.01", "train.log_every=1"]
    spec = _write_spec(tmp_path / "killed.json", tmp_path / "killed", extra)
    process = _start_population(spec, plugin_env)
    checkpoint = tmp_path / "killed" / "1" / "checkpoints" / "step-14.pt"
    deadline = time.time() + 120
    while not checkpoint.exists():
        assert process.poll() is None, process.communicate()
        assert time.time() < deadline
        time.sleep(0.01)
    time.sleep(0.05)  # past the checkpoint, before the next one
    process.send_signal(signal.SIGKILL)
    process.wait()
    for i in range(2):
        assert rundir.read_summary(tmp_path / "killed" / str(i))["status"] == "running"
    resumed = train_population([load_config(m) for m in _members(tmp_path / "killed", extra)])
    reference = train_population([load_config(m) for m in _members(tmp_path / "ref", extra)])
    for i in range(2):
        ours, theirs = resumed[i], reference[i]
        assert ours["status"] == "completed" and ours["params_sha256"] == theirs["params_sha256"]
        texts = [(d / str(i) / rundir.METRICS).read_text() for d in (tmp_path / "killed", tmp_path / "ref")]
        losses = [[(r["step"], r.get("train/loss")) for r in map(json.loads, text.splitlines())] for text in texts]
        assert losses[0] == losses[1]  # one trajectory: every step logged once, with identical losses


def test_sigterm_checkpoints_every_member_and_exits_75(tmp_path, plugin_env):
    extra = ["train.steps=400", "task.delay=0.01"]
    spec = _write_spec(tmp_path / "p.json", tmp_path / "p", extra)
    process = _start_population(spec, plugin_env)
    deadline = time.time() + 60
    while not (tmp_path / "p" / "1" / rundir.METRICS).exists() or not (tmp_path / "p" / "1" / rundir.METRICS).read_text():
        assert process.poll() is None and time.time() < deadline
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == rundir.EXIT_INTERRUPTED
    for i in range(2):
        summary = rundir.read_summary(tmp_path / "p" / str(i))
        assert summary["status"] == "interrupted"
        assert (tmp_path / "p" / str(i) / "checkpoints" / f"step-{summary['step']}.pt").exists()


def test_not_batchable_runs_are_refused_before_anything_is_written(tmp_path):
    with_dropout = [load_config([*BASE, "task.dropout=0.1", "optim=sgd", f"seed={i}", f"run_dir={tmp_path / str(i)}"])
                    for i in range(2)]
    with pytest.raises(NotBatchable, match="dropout"):
        train_population(with_dropout)
    mixed = [load_config([*BASE, "optim=sgd", f"run_dir={tmp_path / 'a'}"]),
             load_config([*BASE, "optim=sgd", "task.batch_size=8", f"run_dir={tmp_path / 'b'}"])]
    with pytest.raises(NotBatchable, match="more than seed and float"):
        train_population(mixed)
    with pytest.raises(NotBatchable, match="hyper=marthe"):
        train_population([load_config([*BASE, "optim=sgd", "hyper=marthe", f"run_dir={tmp_path / 'c'}"])])
    assert not any(tmp_path.iterdir())


def test_rules_and_keys():
    base = load_config([*BASE, "optim=adam", "optim.lr=0.01"])
    same = load_config([*BASE, "optim=adam", "optim.lr=1", "optim.betas=[0.8,0.9]", "seed=3", "run_dir=x"])
    assert population_key(base) == population_key(same)
    assert member_settings(same)["optim.lr"] == 1 and list(member_settings(same)["optim.betas"]) == [0.8, 0.9]
    assert population_key(base) != population_key(load_config([*BASE, "optim=adam", "optim.amsgrad=true"]))
    assert population_key(base) != population_key(load_config([*BASE, "optim=adam", "train.steps=21"]))
    assert population_key(base) != population_key(load_config([*BASE, "optim=sgd"]))
    for bad, reason in [(["instruments=[grad_stats]"], "instruments"), (["optim=sgd_hd"], "outside its param groups"),
                        (["optim=lbfgs"], "outside its param groups"), (["train.length_bucketing=true"], "length"),
                        (["optim=sgd_c", "optim.sampling=random"], "param-group index"),
                        (["direction=svrg"], "svrg"), (["train.sampler=loss"], "sampler"),
                        (["log.wandb=true"], "W&B")]:
        assert reason in (config_ineligibility(load_config([*BASE, "optim=sgd", *bad])) or ""), bad
    assert config_ineligibility(load_config([*BASE, "optim=sgd_c"])) is None


def test_member_state_is_the_shared_state_restricted_to_the_member():
    a, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(3))
    shared = {a: {"step": 1}, b: {"step": 2}}
    view = MemberState(shared, [a])
    assert dict(view) == {a: {"step": 1}} and len(view) == 1 and b not in view and view.get(b) is None
    view[a] = {"step": 5}
    assert shared[a] == {"step": 5}


def test_members_differing_in_seed_and_run_dir_are_validated_once_with_the_same_result():
    from optimlab.config import normalize, to_tree
    from optimlab.train.population_cli import load_members

    dirs = ["/tmp/a+b/c-d.e_f", "./runs/x", "/1", "a/b", "x y/z", "${oc.env:HOME}/r", "true", "null"]
    runs = [{"overrides": [*BASE, "optim=adam", f"optim.lr={lr}", f"seed={seed}", f"run_dir={d}"]}
            for lr in (0.1, 0.2) for seed in ("0", "007", "4294967295") for d in dirs]
    fast = load_members(runs)
    assert [to_tree(cfg) for cfg in fast] == [to_tree(load_config(run["overrides"])) for run in runs]
    cfgs = [dataclasses.replace(fast[0], seed=seed, run_dir=d) for seed in (1, 2) for d in ("a", None)]
    assert [to_tree(c) for c in population._normalized(cfgs)] == [to_tree(normalize(c)) for c in cfgs]
    for odd in (2**32, -1, "3", True):  # normalised in full, as train() normalises them
        cfg = dataclasses.replace(fast[0], seed=odd)
        try:
            expected = to_tree(normalize(cfg))
        except ConfigError:
            with pytest.raises(ConfigError, match="seed"):
                population._normalized([fast[0], cfg])
        else:
            assert to_tree(population._normalized([fast[0], cfg])[1]) == expected


def test_population_command_reports_bad_input_and_asks_for_fallback(tmp_path, capsys):
    from optimlab.cli import main

    assert main(["train", "--population", str(tmp_path / "missing.json")]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert main(["train", "--population", str(tmp_path / "x.json"), "optim=sgd"]) == 2
    # A run with bad input: nothing trains, and the result file tells the backend to train the runs alone.
    spec = _write_spec(tmp_path / "p.json", tmp_path / "p", ["optim.lr=-1"])
    assert main(["train", "--population", str(spec)]) == 2
    assert "fallback" in rundir.read_json(tmp_path / "p" / "result.json")
    assert not (tmp_path / "p" / "0").exists()
