"""Hessian-vector products and the power-iteration eigenvalue against the dense Hessian (float64)."""

import torch
from torch import nn
from torch.func import functional_call

from optimlab.instruments import hessian_vector_product, top_eigenvalue


def tiny():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3)).double()
    x = torch.randn(20, 3, dtype=torch.float64)
    y = torch.randint(0, 3, (20,))
    return model, x, y


def dense_hessian(model, x, y):
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def loss(vector):
        params, offset = {}, 0
        for name, shape in zip(names, shapes):
            size = shape.numel()
            params[name] = vector[offset : offset + size].view(shape)
            offset += size
        return nn.functional.cross_entropy(functional_call(model, params, (x,)), y)

    return torch.autograd.functional.hessian(loss, flat)


def test_hvp_matches_dense_hessian():
    model, x, y = tiny()
    params = list(model.parameters())
    gradient = torch.autograd.grad(nn.functional.cross_entropy(model(x), y), params, create_graph=True)
    v = [torch.randn_like(p) for p in params]
    hv = torch.cat([h.reshape(-1) for h in hessian_vector_product(gradient, params, v)])
    expected = dense_hessian(model, x, y) @ torch.cat([t.reshape(-1) for t in v])
    torch.testing.assert_close(hv, expected, rtol=1e-10, atol=1e-12)


def test_power_iteration_finds_the_dense_top_eigenvalue():
    model, x, y = tiny()
    eigenvalues = torch.linalg.eigvalsh(dense_hessian(model, x, y))
    top = eigenvalues[eigenvalues.abs().argmax()]
    result = top_eigenvalue(
        lambda: nn.functional.cross_entropy(model(x), y),
        list(model.parameters()),
        iterations=5000,
        tol=1e-14,
        generator=torch.Generator().manual_seed(0),
    )
    assert result.converged
    assert abs(result.eigenvalue - float(top)) <= 1e-6 * abs(float(top))
    assert all(p.grad is None for p in model.parameters())
