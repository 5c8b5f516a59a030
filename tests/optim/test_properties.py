"""Property tests run by every optimizer in `optimizers_under_test.OPTIMIZERS_UNDER_TEST`.

Convergence on a quadratic and on Rosenbrock, a state_dict round trip through
``torch.load(weights_only=True)`` that continues bit-identically in lockstep, dtypes kept, parameters
without gradients untouched (no state created), ``step(closure)``, lr schedulers, invalid arguments
rejected, and the foreach path equal to the for-loop path in float64.
"""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch
from optimizers_under_test import OPTIMIZERS_UNDER_TEST, OptimizerUnderTest

from optimlab.optim import build_optimizer, get_optimizer_class

ENTRIES = [pytest.param(entry, id=entry.id) for entry in OPTIMIZERS_UNDER_TEST]


def _skip_if_listed(entry: OptimizerUnderTest, test_name: str) -> None:
    if test_name in entry.skips:
        pytest.skip(entry.skips[test_name])


def _step(optimizer: torch.optim.Optimizer, closure) -> object:
    """One step; the closure recomputes the loss and gradients."""
    return optimizer.step(closure)


def _closure_for(optimizer: torch.optim.Optimizer, loss_fn):
    def closure():
        optimizer.zero_grad()
        loss = loss_fn()
        loss.backward()
        return loss

    return closure


def _run(entry: OptimizerUnderTest, params: list[torch.Tensor], loss_fn, steps: int, problem: str) -> None:
    optimizer = build_optimizer(entry.name, params, **entry.kwargs_for(problem))
    closure = _closure_for(optimizer, loss_fn)
    for _ in range(steps):
        _step(optimizer, closure)


# --- convergence -----------------------------------------------------------------------------------


@pytest.mark.parametrize("entry", ENTRIES)
def test_converges_quadratic(entry: OptimizerUnderTest) -> None:
    _skip_if_listed(entry, "test_converges_quadratic")
    generator = torch.Generator().manual_seed(0)
    curvature = 1.0 + 3.0 * torch.rand(4, 5, generator=generator, dtype=torch.float64)
    target = torch.randn(4, 5, generator=generator, dtype=torch.float64)
    x = torch.zeros(4, 5, dtype=torch.float64, requires_grad=True)

    def loss_fn():
        return 0.5 * (curvature * (x - target) ** 2).sum()

    initial = float(loss_fn().detach())
    _run(entry, [x], loss_fn, 300, "quadratic")
    final = float(loss_fn().detach())
    assert math.isfinite(final) and final < 1e-2 * initial, (initial, final)


@pytest.mark.parametrize("entry", ENTRIES)
def test_converges_rosenbrock(entry: OptimizerUnderTest) -> None:
    _skip_if_listed(entry, "test_converges_rosenbrock")
    x = torch.tensor([-1.2, 1.0], dtype=torch.float64, requires_grad=True)

    def loss_fn():
        return (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2

    initial = float(loss_fn().detach())
    _run(entry, [x], loss_fn, 600, "rosenbrock")
    final = float(loss_fn().detach())
    assert math.isfinite(final) and final < 0.1 * initial, (initial, final)


# --- a tiny model for the bookkeeping tests ------------------------------------------------------


def _model_params(dtype=torch.float64, seed=0) -> list[torch.Tensor]:
    """Two weight matrices (with gradients) and a third matrix that never gets a gradient."""
    generator = torch.Generator().manual_seed(seed)
    shapes = [(4, 3), (2, 4), (2, 2)]
    return [torch.randn(s, generator=generator, dtype=dtype).requires_grad_() for s in shapes]


def _batches(count: int, dtype=torch.float64, seed=1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(8, 3, generator=generator, dtype=dtype), torch.randn(8, 2, generator=generator, dtype=dtype))
        for _ in range(count)
    ]


def _model_loss(params, batch):
    w1, w2, _unused = params
    x, y = batch
    return ((torch.tanh(x @ w1.T) @ w2.T - y) ** 2).mean()


def _train(optimizer, params, batches) -> None:
    for batch in batches:
        closure = _closure_for(optimizer, lambda batch=batch: _model_loss(params, batch))
        _step(optimizer, closure)


def _assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], torch.Tensor):
            assert isinstance(b[key], torch.Tensor), key
            assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key
        elif isinstance(a[key], dict):
            _assert_same_state(a[key], b[key])
        elif isinstance(a[key], (list, tuple)):
            _assert_same_state(dict(enumerate(a[key])), dict(enumerate(b[key])))
        else:
            assert a[key] == b[key], key


def _is_plain(value) -> bool:
    """Tensors, numbers, strings, None and containers of them: what weights_only loading accepts."""
    if isinstance(value, (torch.Tensor, int, float, bool, str, type(None))):
        return True
    if isinstance(value, (list, tuple)):
        return all(_is_plain(v) for v in value)
    if isinstance(value, dict):
        return all(_is_plain(k) and _is_plain(v) for k, v in value.items())
    return False


@pytest.mark.parametrize("entry", ENTRIES)
def test_state_dict_round_trip_continues_in_lockstep(entry: OptimizerUnderTest) -> None:
    _skip_if_listed(entry, "test_state_dict_round_trip_continues_in_lockstep")
    batches = _batches(9)
    params_a = _model_params()
    optimizer_a = build_optimizer(entry.name, params_a, **entry.kwargs)
    _train(optimizer_a, params_a, batches[:4])

    saved = optimizer_a.state_dict()
    assert _is_plain(saved["state"])
    before = copy.deepcopy(saved)
    _assert_same_state(saved, optimizer_a.state_dict())  # deterministic
    stream = io.BytesIO()
    torch.save(saved, stream)
    stream.seek(0)
    loaded = torch.load(stream, weights_only=True)

    params_b = [p.detach().clone().requires_grad_() for p in params_a]
    optimizer_b = build_optimizer(entry.name, params_b, **entry.kwargs)
    optimizer_b.load_state_dict(loaded)
    _assert_same_state(saved, before)  # loading did not mutate the source

    _train(optimizer_a, params_a, batches[4:])
    _train(optimizer_b, params_b, batches[4:])
    for a, b in zip(params_a, params_b):
        assert torch.equal(a, b)
    _assert_same_state(optimizer_a.state_dict()["state"], optimizer_b.state_dict()["state"])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("entry", ENTRIES)
def test_dtypes_kept(entry: OptimizerUnderTest, dtype: torch.dtype) -> None:
    _skip_if_listed(entry, "test_dtypes_kept")
    params = _model_params(dtype)
    optimizer = build_optimizer(entry.name, params, **entry.kwargs)
    _train(optimizer, params, _batches(3, dtype))
    for p in params:
        assert p.dtype == dtype
        for key, value in optimizer.state.get(p, {}).items():
            if isinstance(value, torch.Tensor) and value.is_floating_point() and value.dim() > 0:
                assert value.dtype == dtype, key


@pytest.mark.parametrize("entry", ENTRIES)
def test_parameters_without_gradients_untouched(entry: OptimizerUnderTest) -> None:
    _skip_if_listed(entry, "test_parameters_without_gradients_untouched")
    params = _model_params()
    unused = params[2]
    before = unused.detach().clone()
    optimizer = build_optimizer(entry.name, params, **entry.kwargs)
    _train(optimizer, params, _batches(3))
    assert unused.grad is None
    assert torch.equal(unused, before)
    assert len(optimizer.state.get(unused, {})) == 0
    assert not torch.equal(params[0], _model_params()[0])  # the others moved


@pytest.mark.parametrize("entry", ENTRIES)
def test_step_with_closure_returns_loss(entry: OptimizerUnderTest) -> None:
    _skip_if_listed(entry, "test_step_with_closure_returns_loss")
    params = _model_params()
    optimizer = build_optimizer(entry.name, params, **entry.kwargs)
    batch = _batches(1)[0]
    calls = []

    def closure():
        optimizer.zero_grad()
        loss = _model_loss(params, batch)
        loss.backward()
        calls.append(loss)
        return loss

    start = params[0].detach().clone()
    loss = optimizer.step(closure)
    assert calls and loss is calls[0]
    assert not torch.equal(params[0], start)


@pytest.mark.parametrize("entry", ENTRIES)
def test_lr_scheduler_controls_the_step(entry: OptimizerUnderTest) -> None:
    _skip_if_listed(entry, "test_lr_scheduler_controls_the_step")
    params = _model_params()
    optimizer = build_optimizer(entry.name, params, **entry.kwargs)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0 if epoch == 0 else 0.0)
    batches = _batches(4)
    _train(optimizer, params, batches[:1])
    scheduler.step()
    assert optimizer.param_groups[0]["lr"] == 0.0
    _train(optimizer, params, batches[1:2])  # optimizers may apply a step size computed one step earlier
    frozen = [p.detach().clone() for p in params]
    _train(optimizer, params, batches[2:])
    if entry.lr_scales_update:
        for p, q in zip(params, frozen):
            assert torch.equal(p, q)


@pytest.mark.parametrize("entry", ENTRIES)
def test_invalid_arguments_rejected(entry: OptimizerUnderTest) -> None:
    if not entry.bad_kwargs:
        pytest.skip("this configuration lists no invalid arguments (another entry of the optimizer does)")
    cls = get_optimizer_class(entry.name)
    for bad in entry.bad_kwargs:
        with pytest.raises(ValueError) as error:
            cls(_model_params(), **{**entry.kwargs, **bad})
        if entry.name.endswith("_c"):  # optimlab's messages name the argument
            assert next(iter(bad)) in str(error.value)


@pytest.mark.parametrize("entry", ENTRIES)
def test_foreach_matches_forloop_float64(entry: OptimizerUnderTest) -> None:
    if not entry.has_foreach:
        pytest.skip(f"{entry.name} has no foreach implementation")
    _skip_if_listed(entry, "test_foreach_matches_forloop_float64")
    batches = _batches(8)
    results = []
    for foreach in (False, True):
        params = _model_params()
        optimizer = build_optimizer(entry.name, params, **{**entry.kwargs, "foreach": foreach})
        _train(optimizer, params, batches)
        results.append((params, optimizer.state_dict()["state"]))
    (loop_params, loop_state), (vec_params, vec_state) = results
    for a, b in zip(loop_params, vec_params):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    assert loop_state.keys() == vec_state.keys()
    for index in loop_state:
        assert loop_state[index].keys() == vec_state[index].keys()
        for key, value in loop_state[index].items():
            if isinstance(value, torch.Tensor):
                torch.testing.assert_close(value, vec_state[index][key], rtol=1e-12, atol=1e-14)
            else:
                assert value == vec_state[index][key], key
