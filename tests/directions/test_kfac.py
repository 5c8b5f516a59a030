"""K-FAC against dense references in float64: the Kronecker-factored solve from brute-force per-layer factors
on tiny Linear/Conv1d/Conv2d nets, the dense Fisher block where K-FAC is exact, label sampling, clipping,
training and resume."""

import pytest
import torch
from resume_helpers import logged, stop_resume_matches
from torch import nn
from torch.nn import functional as F

from optimlab.config import load_config
from optimlab.directions import Objective
from optimlab.precond import KFAC, kronecker_solve
from optimlab.precond import kfac as kfac_module
from optimlab.precond.capture import input_rows, output_rows
from optimlab.train import train


def conv_net_2d():
    return nn.Sequential(
        nn.Conv2d(2, 3, (2, 3), stride=(1, 2), padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(3 * 5 * 3, 4)
    ).double()


def conv_net_1d():
    return nn.Sequential(
        nn.Conv1d(2, 3, 3, stride=2, padding=1, dilation=2), nn.Tanh(), nn.Flatten(), nn.Linear(3 * 4, 4, bias=False)
    ).double()


def brute_patches(module, x):
    """Receptive fields by explicit slicing, position by position (row-major), a 1 appended for the bias."""
    if isinstance(module, nn.Linear):
        a = x.unsqueeze(1)
    else:
        two_d = isinstance(module, nn.Conv2d)
        x = x if two_d else x.unsqueeze(2)
        k = module.kernel_size if two_d else (1, module.kernel_size[0])
        s = module.stride if two_d else (1, module.stride[0])
        d = module.dilation if two_d else (1, module.dilation[0])
        p = module.padding if two_d else (0, module.padding[0])
        xp = F.pad(x, (p[1], p[1], p[0], p[0]))
        rows = (xp.shape[2] - d[0] * (k[0] - 1) - 1) // s[0] + 1
        cols = (xp.shape[3] - d[1] * (k[1] - 1) - 1) // s[1] + 1
        patches = []
        for i in range(rows):
            for j in range(cols):
                window = xp[:, :, i * s[0] : i * s[0] + d[0] * (k[0] - 1) + 1 : d[0],
                            j * s[1] : j * s[1] + d[1] * (k[1] - 1) + 1 : d[1]]  # fmt: skip
                patches.append(window.reshape(x.shape[0], -1))
        a = torch.stack(patches, dim=1)
    if module.bias is not None:
        a = torch.cat([a, torch.ones(a.shape[:2] + (1,), dtype=a.dtype)], dim=-1)
    return a


def dense_reference(model, batch, damping):
    """Per layer: brute-force factors A, G and the dense solve (A (x) G + damping I)^-1 vec(mean gradient)."""
    x, y = batch
    inputs, outputs, layers = {}, {}, [m for m in model if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d))]

    def record(module, args, output):
        inputs[module], outputs[module] = args[0], output

    handles = [m.register_forward_hook(record) for m in layers]
    loss_sum = F.cross_entropy(model(x), y, reduction="sum")
    for h in handles:
        h.remove()
    out_grads = torch.autograd.grad(loss_sum, [outputs[m] for m in layers], retain_graph=True)
    mean_grads = torch.autograd.grad(loss_sum / len(y), [p for m in layers for p in (m.weight, m.bias) if p is not None])
    expected, k = {}, 0
    for m, g_out in zip(layers, out_grads):
        a = brute_patches(m, inputs[m].detach())
        d = g_out.reshape(len(y), -1, g_out.shape[-1]) if isinstance(m, nn.Linear) else g_out.flatten(2).transpose(1, 2)
        a_ref = torch.einsum("bti,btj->ij", a, a) / (a.shape[0] * a.shape[1])
        g_ref = torch.einsum("bto,btp->op", d, d) / a.shape[0]
        grad = [mean_grads[k].flatten(1)]
        k += 1
        if m.bias is not None:
            grad.append(mean_grads[k].unsqueeze(1))
            k += 1
        matrix = torch.cat(grad, dim=1)
        fisher = torch.kron(a_ref, g_ref) + damping * torch.eye(a_ref.shape[0] * g_ref.shape[0], dtype=a.dtype)
        solved = torch.linalg.solve(fisher, matrix.T.reshape(-1)).reshape(matrix.shape[1], matrix.shape[0]).T
        expected[m] = solved
    return expected


@pytest.mark.parametrize("make, shape", [(conv_net_2d, (5, 2, 4, 6)), (conv_net_1d, (5, 2, 9))])
def test_kfac_matches_the_dense_kronecker_solve_from_brute_force_factors(make, shape):
    torch.manual_seed(0)
    model = make()
    batch = (torch.randn(shape, dtype=torch.float64), torch.randint(0, 4, (shape[0],)))
    kfac = KFAC(model, decay=0.0, damping=0.1, fisher="empirical", kl_clip=None)
    kfac.update_factors(batch)
    direction = kfac.direction(model, Objective(), batch)
    expected = dense_reference(model, batch, 0.1)
    for name, module in model.named_children():
        if module in expected:
            got = [direction[f"{name}.weight"].flatten(1)]
            if module.bias is not None:
                got.append(direction[f"{name}.bias"].unsqueeze(1))
            torch.testing.assert_close(torch.cat(got, dim=1), expected[module], rtol=1e-9, atol=1e-11)


def test_kfac_is_the_dense_fisher_solve_for_one_linear_layer_and_one_example():
    torch.manual_seed(1)
    model = nn.Linear(4, 3).double()
    x, y = torch.randn(1, 4, dtype=torch.float64), torch.tensor([2])
    grads = torch.autograd.grad(F.cross_entropy(model(x), y), [model.weight, model.bias])
    matrix = torch.cat([grads[0], grads[1].unsqueeze(1)], dim=1)
    g = matrix.T.reshape(-1)  # vec, column-major
    kfac = KFAC(model, decay=0.0, damping=1e-2, fisher="empirical", kl_clip=None)
    kfac.update_factors((x, y))
    a, gg = kfac.factors[""]
    torch.testing.assert_close(torch.kron(a, gg), torch.outer(g, g), rtol=1e-12, atol=1e-14)
    expected = torch.linalg.solve(torch.outer(g, g) + 1e-2 * torch.eye(len(g), dtype=g.dtype), g)
    direction = kfac.direction(model, Objective(), (x, y))
    got = torch.cat([direction["weight"], direction["bias"].unsqueeze(1)], dim=1).T.reshape(-1)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


def test_true_fisher_samples_labels_from_the_model_with_its_own_generator():
    # For one Linear layer and softmax cross-entropy, E_y[d d^T] = diag(p) - p p^T with y ~ softmax.
    torch.manual_seed(2)
    model = nn.Linear(3, 4).double()
    x = torch.randn(1, 3, dtype=torch.float64).expand(20000, 3)
    batch = (x, torch.zeros(20000, dtype=torch.long))
    kfac = KFAC(model, decay=0.0, fisher="true", kl_clip=None, seed=5)
    rng = torch.get_rng_state()
    kfac.update_factors(batch)
    assert torch.equal(torch.get_rng_state(), rng)
    p = torch.softmax(model(x[:1]), dim=-1).detach().squeeze(0)
    torch.testing.assert_close(kfac.factors[""][1], torch.diag(p) - torch.outer(p, p), rtol=0, atol=0.01)


def test_kfac_step_preconditions_grad_on_schedule_with_kl_clipping():
    torch.manual_seed(3)
    model = conv_net_2d()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    kfac = KFAC(model, optimizer, t_cov=2, t_inv=3, kl_clip=1e-6, damping=0.1)
    batch = (torch.randn(5, 2, 4, 6, dtype=torch.float64), torch.randint(0, 4, (5,)))
    for step in range(4):
        optimizer.zero_grad()
        F.cross_entropy(model(batch[0]), batch[1]).backward()
        gradient = {n: p.grad.clone() for n, p in model.named_parameters()}
        expected = kfac.precondition(gradient) if step % 2 and step % 3 else None
        kfac.step(batch)
        vg = sum(float((kfac.precondition(gradient)[n] * gradient[n]).sum()) for n in gradient) * 0.25
        assert kfac.last_scale == pytest.approx(min(1.0, (1e-6 / vg) ** 0.5), rel=1e-12)
        if expected is not None:  # no factor or inverse update at this step: same factors as before
            for n, p in model.named_parameters():
                torch.testing.assert_close(p.grad, expected[n] * kfac.last_scale)
        optimizer.step()
    assert kfac.costs.grad_evals == 2 and kfac.inversions == 2  # factors at 0, 2; inverses at 0, 3


def test_kfac_trains_from_the_config_with_any_base_optimizer(tmp_path, toy_overrides):
    for optim in (["optim=sgd", "optim.lr=0.05"], ["optim=adam", "optim.lr=1e-3"]):
        overrides = [o for o in toy_overrides if not o.startswith(("optim", "run_dir"))]
        run_dir = tmp_path / optim[0]
        summary = train(load_config([*overrides, *optim, "precond=kfac", "precond.t_cov=2", "precond.t_inv=5",
                                     "train.steps=20", f"run_dir={run_dir}"]))  # fmt: skip
        assert summary["status"] == "completed"
        assert logged(run_dir, "precond/inversions")[-1] == 4.0
        assert logged(run_dir, "precond/extra_grad_evals")[-1] == 10.0


def test_kfac_and_svrg_resume_bit_exactly(monkeypatch, tmp_path, toy_overrides):
    overrides = [o for o in toy_overrides if not o.startswith("run_dir")]
    extra = ["precond=kfac", "precond.t_cov=3", "precond.t_inv=4", "direction=svrg", "direction.snapshot_every=9"]
    reference, resumed = stop_resume_matches(monkeypatch, tmp_path, [*overrides, *extra])
    assert resumed["params_sha256"] == reference["params_sha256"]


def test_running_factors_are_the_decayed_average_of_the_brute_force_factors():
    torch.manual_seed(4)
    model = conv_net_2d()
    kfac = KFAC(model, decay=0.7, fisher="empirical", kl_clip=None)
    batches = [(torch.randn(5, 2, 4, 6, dtype=torch.float64), torch.randint(0, 4, (5,))) for _ in range(2)]
    expected = {name: [f.clone() for f in factors] for name, factors in kfac.factors.items()}
    for batch in batches:
        x, _ = batch
        kfac.update_factors(batch)
        inputs = {"0": x, "3": model[2](model[1](model[0](x)))}
        outputs = [model[0](x)]
        outputs.append(model[3](model[2](model[1](outputs[0]))))
        out_grads = torch.autograd.grad(F.cross_entropy(outputs[1], batch[1], reduction="sum"), outputs)
        for (name, module), d_out in zip((("0", model[0]), ("3", model[3])), out_grads):
            a = brute_patches(module, inputs[name].detach())
            d = d_out.unsqueeze(1) if d_out.dim() == 2 else d_out.flatten(2).transpose(1, 2)
            new = [torch.einsum("bti,btj->ij", a, a) / (a.shape[0] * a.shape[1]), torch.einsum("bto,btp->op", d, d) / 5]
            expected[name] = [0.7 * old + 0.3 * n for old, n in zip(expected[name], new)]
    for name in expected:
        for got, want in zip(kfac.factors[name], expected[name]):
            torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_kfac_step_leaves_parameters_without_grad_alone_and_treats_a_missing_bias_grad_as_zero():
    torch.manual_seed(5)
    model = conv_net_2d()
    kfac = KFAC(model, damping=0.1, kl_clip=None)
    batch = (torch.randn(5, 2, 4, 6, dtype=torch.float64), torch.randint(0, 4, (5,)))
    kfac.update_factors(batch)
    kfac.update_inverse()
    kfac.steps = 1  # neither factors nor inverses due: the step only preconditions
    F.cross_entropy(model(batch[0]), batch[1]).backward()
    model[0].bias.grad = None
    model[3].weight.grad = None
    model[3].bias.grad = None
    gradient = {n: p.grad.clone() if p.grad is not None else torch.zeros_like(p) for n, p in model.named_parameters()}
    expected = kfac.precondition(gradient)
    kfac.step(batch)
    torch.testing.assert_close(model[0].weight.grad, expected["0.weight"])
    assert model[0].bias.grad is None and model[3].weight.grad is None and model[3].bias.grad is None


@pytest.mark.parametrize(
    "module, shape",
    [
        (nn.Conv2d(2, 3, (2, 3), stride=(1, 2), padding=1), (4, 2, 5, 7)),
        (nn.Conv2d(2, 3, 3, stride=(2, 3), padding=(2, 1), dilation=(2, 1), bias=False), (4, 2, 9, 11)),
        (nn.Conv2d(2, 3, 2, padding="valid"), (4, 2, 5, 6)),
        (nn.Conv1d(2, 3, 3, stride=2, padding=1, dilation=2), (4, 2, 9)),
        (nn.Linear(4, 3), (4, 6, 4)),
        (nn.Linear(4, 3, bias=False), (4, 4)),
    ],
)
def test_feature_major_rows_are_the_brute_force_patches_and_output_gradients(module, shape):
    torch.manual_seed(6)
    module = module.double()
    x = torch.randn(shape, dtype=torch.float64)
    out = module(x)
    grad = torch.randn_like(out)
    if isinstance(module, nn.Linear):
        a = x.reshape(-1, 4)
        if module.bias is not None:
            a = torch.cat([a, torch.ones(len(a), 1, dtype=x.dtype)], dim=1)
        d = grad.reshape(-1, 3)
    else:
        same_without_string = nn.Conv2d(2, 3, 2) if module.padding == "valid" else module  # padding 0
        patches = brute_patches(same_without_string, x)  # (B, T, features), positions row-major
        a = patches.reshape(-1, patches.shape[-1])
        d = grad.flatten(2).transpose(1, 2).reshape(-1, 3)
    stale = torch.full((7, 7), float("nan"), dtype=x.dtype)  # a buffer of the wrong shape is not written
    assert torch.equal(input_rows(module, x, stale), a.T)
    assert torch.equal(output_rows(module, grad, stale), d.T)
    # into a reused buffer of the right shape: every element written
    buffer = torch.full_like(a.T, float("nan"))
    assert input_rows(module, x, buffer) is buffer and torch.equal(buffer, a.T)
    if not isinstance(module, nn.Linear):
        buffer = torch.full_like(d.T, float("nan"))
        assert output_rows(module, grad, buffer) is buffer and torch.equal(buffer, d.T)


def test_factors_with_reused_buffers_follow_a_change_of_batch_size_and_checkpoints_are_copies():
    torch.manual_seed(7)
    model = conv_net_2d()
    kfac = KFAC(model, decay=0.5, fisher="empirical", kl_clip=None)
    fresh = KFAC(model, decay=0.0, fisher="empirical", kl_clip=None)
    batches = [(torch.randn(n, 2, 4, 6, dtype=torch.float64), torch.randint(0, 4, (n,))) for n in (5, 3, 5)]
    expected = {name: [f.clone() for f in factors] for name, factors in kfac.factors.items()}
    saved = None
    for batch in batches:
        kfac.update_factors(batch)
        fresh.update_factors(batch)  # decay 0: this batch's factors alone
        expected = {name: [0.5 * old + 0.5 * new for old, new in zip(expected[name], fresh.factors[name])]
                    for name in expected}  # fmt: skip
        saved = saved or kfac.state_dict()
        for name in expected:
            for got, want in zip(kfac.factors[name], expected[name]):
                torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)
    # the first state_dict still holds the factors of the first batch, though they are updated in place
    first = KFAC(model, decay=0.5, fisher="empirical", kl_clip=None)
    first.update_factors(batches[0])
    for name in expected:
        for got, want in zip(saved["factors"][name], first.factors[name]):
            torch.testing.assert_close(got, want, rtol=0, atol=0)



def test_the_blocked_kronecker_solve_is_the_dense_solve_for_a_layer_wider_than_a_block():
    # 151 inputs with the bias: two blocks of 128 eigenvectors and a partial one, against the dense solve
    torch.manual_seed(8)
    assert kfac_module._BLOCK < 151
    a = torch.randn(151, 300, dtype=torch.float64)
    a = a @ a.T / 300
    g = torch.randn(3, 3, dtype=torch.float64)
    g = g @ g.T / 3
    gradient = torch.randn(3, 151, dtype=torch.float64)
    expected = torch.linalg.solve(torch.kron(a, g) + 0.01 * torch.eye(453, dtype=torch.float64), gradient.T.reshape(-1))
    got = kronecker_solve(gradient, kfac_module.eigen_pairs(a, g), 0.01)
    torch.testing.assert_close(got.T.reshape(-1), expected, rtol=1e-9, atol=1e-11)
