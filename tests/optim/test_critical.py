"""Critical-gradient optimizers against references: the literal spec transcription, a brute-force top-C,
torch.optim (kappa=0, bit for bit), and themselves across a save / load (bit for bit)."""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch
from critical_reference import ReferenceAdam_C, ReferenceRMSprop_C, ReferenceSGD_C

from optimlab.optim import Adam_C, AdamW_C, RMSprop_C, SGD_C, build_optimizer
from optimlab.optim.critical.buffer import BIRTH, BUFFER, OFFERS, PRIORITY, SUM

SHAPES = [(3, 4), (5,), (2, 3, 2)]


def _stream(steps: int, shapes=SHAPES, seed: int = 0, dtype=torch.float64) -> list[list[torch.Tensor]]:
    """Gradients whose scale varies from step to step, so the norm ranking keeps changing."""
    generator = torch.Generator().manual_seed(seed)
    stream = []
    for _ in range(steps):
        scale = math.exp(float(torch.randn((), generator=generator, dtype=torch.float64)))
        stream.append([scale * torch.randn(s, generator=generator, dtype=dtype) for s in shapes])
    return stream


def _params(shapes=SHAPES, seed: int = 123, dtype=torch.float64) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=generator, dtype=dtype).requires_grad_() for s in shapes]


def _feed(params, grads) -> None:
    for p, g in zip(params, grads):
        p.grad = g.clone()


def _memory_matches(optimizer, reference, params) -> None:
    """Our filled slots, ordered by priority, equal the reference's items (priorities and tensors)."""
    for i, p in enumerate(params):
        state = optimizer.state[p]
        items = reference.memories[i].by_priority()
        filled = min(state[OFFERS], state[BUFFER].shape[0])
        assert filled == len(items)
        order = torch.argsort(state[PRIORITY][:filled])
        for rank, slot in enumerate(order.tolist()):
            assert float(state[PRIORITY][slot]) == pytest.approx(items[rank][0], rel=1e-12)
            torch.testing.assert_close(state[BUFFER][slot], items[rank][1], rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(state[SUM], sum(item[1] for item in items), rtol=1e-10, atol=1e-12)


def _step_alongside_the_reference(ours, ours_params, reference, ref_params, steps: int = 20) -> None:
    """Both optimizers take the same gradients; parameters and memory must agree after every step."""
    for step, grads in enumerate(_stream(steps)):
        _feed(ours_params, grads)
        _feed(ref_params, grads)
        ours.step()
        reference.step()
        for a, b in zip(ours_params, ref_params):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12, msg=f"parameters differ at step {step}")
        _memory_matches(ours, reference, ours_params)


# (our class, reference class, shared kwargs, memory kwargs) -----------------------------------------
CASES = {
    "sgd_c defaults": (SGD_C, ReferenceSGD_C, {"lr": 0.05}, {}),
    "sgd_c momentum wd": (SGD_C, ReferenceSGD_C, {"lr": 0.05, "momentum": 0.9, "dampening": 0.1},
                          {"weight_decay": 0.01, "topC": 4, "decay": 0.9}),
    "sgd_c nesterov per-tensor": (SGD_C, ReferenceSGD_C, {"lr": 0.05, "momentum": 0.8, "nesterov": True},
                                  {"synced": False, "topC": 3}),
    "sgd_c global_l2 mid": (SGD_C, ReferenceSGD_C, {"lr": 0.05}, {"synced": "global_l2", "aggr": "mid"}),
    "sgd_c mean kappa": (SGD_C, ReferenceSGD_C, {"lr": 0.05}, {"aggr": "mean", "kappa": 0.5, "topC": 5}),
    "sgd_c min": (SGD_C, ReferenceSGD_C, {"lr": 0.05}, {"aggr": "min", "kappa": 2.0, "topC": 5}),
    "sgd_c median": (SGD_C, ReferenceSGD_C, {"lr": 0.05}, {"aggr": "median", "topC": 4, "synced": False}),
    "sgd_c max": (SGD_C, ReferenceSGD_C, {"lr": 0.05}, {"aggr": "max", "kappa": 2.0, "topC": 5}),
    "sgd_c median-mean": (SGD_C, ReferenceSGD_C, {"lr": 0.05}, {"aggr": "median-mean", "topC": 5}),
    "sgd_c max-mean": (SGD_C, ReferenceSGD_C, {"lr": 0.05}, {"aggr": "max-mean", "topC": 3}),
    "sgd_c min-mean": (SGD_C, ReferenceSGD_C, {"lr": 0.05}, {"aggr": "min-mean", "topC": 3}),
    "sgd_c topC=1 decay=1": (SGD_C, ReferenceSGD_C, {"lr": 0.05}, {"topC": 1, "decay": 1.0}),
    "sgd_c wd after_aggregate": (SGD_C, ReferenceSGD_C, {"lr": 0.05},
                                 {"weight_decay": 0.1, "weight_decay_mode": "after_aggregate"}),
    "sgd_c wd decoupled": (SGD_C, ReferenceSGD_C, {"lr": 0.05, "momentum": 0.5},
                           {"weight_decay": 0.1, "weight_decay_mode": "decoupled"}),
    "sgd_c recency (FIFO)": (SGD_C, ReferenceSGD_C, {"lr": 0.05}, {"priority": "recency", "topC": 4}),
    "sgd_c inverse_norm (bottom-C)": (SGD_C, ReferenceSGD_C, {"lr": 0.05}, {"priority": "inverse_norm", "topC": 4}),
    "sgd_c buffer_only": (SGD_C, ReferenceSGD_C, {"lr": 0.05}, {"update": "buffer_only", "topC": 4}),
    "sgd_c buffer_only max": (SGD_C, ReferenceSGD_C, {"lr": 0.05}, {"update": "buffer_only", "aggr": "max-mean"}),
    "sgd_c before_aggregate (double)": (SGD_C, ReferenceSGD_C, {"lr": 0.05},
                                        {"offer": "before_aggregate", "topC": 4}),
    "sgd_c double median": (SGD_C, ReferenceSGD_C, {"lr": 0.05},
                            {"offer": "before_aggregate", "aggr": "median", "topC": 4}),
    "adam_c defaults": (Adam_C, ReferenceAdam_C, {"lr": 0.01}, {}),
    "adam_c amsgrad wd": (Adam_C, ReferenceAdam_C, {"lr": 0.01, "amsgrad": True, "betas": (0.8, 0.99)},
                          {"weight_decay": 0.05, "topC": 4, "decay": 0.9}),
    "adam_c kappa max per-tensor": (Adam_C, ReferenceAdam_C, {"lr": 0.01},
                                    {"kappa": 2.0, "aggr": "max", "synced": False, "topC": 5}),
    "adam_c wd before_buffer": (Adam_C, ReferenceAdam_C, {"lr": 0.01},
                                {"weight_decay": 0.1, "weight_decay_mode": "before_buffer"}),
    "adamw_c": (AdamW_C, ReferenceAdam_C, {"lr": 0.01}, {"weight_decay": 0.1, "weight_decay_mode": "decoupled"}),
    "rmsprop_c defaults": (RMSprop_C, ReferenceRMSprop_C, {"lr": 0.01}, {}),
    "rmsprop_c centered momentum wd": (RMSprop_C, ReferenceRMSprop_C,
                                       {"lr": 0.01, "centered": True, "momentum": 0.5, "alpha": 0.9},
                                       {"weight_decay": 0.05, "topC": 3, "synced": False}),
    "rmsprop_c sum": (RMSprop_C, ReferenceRMSprop_C, {"lr": 0.01}, {"aggr": "sum", "kappa": 0.7}),
}

# (vectorized memory, decisions read on the host): the default fast path, the plain loop, and the
# device path (masked writes, no host read) that accelerators take.
PATHS = {"vectorized": (None, None), "loop": (False, None), "device": (None, False), "device loop": (False, False)}


# The device path is checked on a representative subset, to keep the suite fast.
_DEVICE_CASES = ("sgd_c defaults", "sgd_c min", "adam_c kappa max per-tensor", "sgd_c before_aggregate (double)",
                 "rmsprop_c sum", "sgd_c median")
_CASE_PATHS = [
    (case, path) for case in CASES for path in PATHS if case in _DEVICE_CASES or path in ("vectorized", "loop")
]


@pytest.mark.parametrize("case, path", _CASE_PATHS)
def test_matches_the_original_step_for_step(case: str, path: str) -> None:
    """With critical_test=False (exact top-C in the original too) we compute what the original computes."""
    cls, ref_cls, base_kwargs, memory_kwargs = CASES[case]
    foreach, on_host = PATHS[path]
    ours_params, ref_params = _params(), _params()
    ours = cls(ours_params, **base_kwargs, **memory_kwargs, critical_test=False, foreach=foreach, refresh_every=7)
    ours.decisions_on_host = on_host
    reference = ref_cls(ref_params, **base_kwargs, **memory_kwargs)
    _step_alongside_the_reference(ours, ours_params, reference, ref_params)


@pytest.mark.parametrize("critical_test", [True, False])
@pytest.mark.parametrize("decay", [0.5, 0.9, 1.0])
def test_memory_holds_the_true_top_c(decay: float, critical_test: bool) -> None:
    """Brute force: after step t the memory holds the C offers s <= t with the largest norm_s * decay^(t-s+1)."""
    capacity, steps = 5, 60
    p = torch.zeros(7, dtype=torch.float64, requires_grad=True)
    optimizer = SGD_C([p], lr=0.0, topC=capacity, decay=decay, critical_test=critical_test, diagnostics=True)
    norms = []
    for grads in _stream(steps, shapes=[(7,)], seed=3):
        p.grad = grads[0]
        norms.append(float(torch.linalg.vector_norm(grads[0])))
        optimizer.step()
        t = len(norms)
        decayed = {s: norms[s] * decay ** (t - s) for s in range(t)}
        expected = sorted(sorted(decayed, key=decayed.get, reverse=True)[:capacity])
        held = sorted(optimizer.state[p][BIRTH][: min(t, capacity)].tolist())
        assert held == expected, f"step {t}"
        priorities = optimizer.state[p][PRIORITY][: min(t, capacity)]
        births = optimizer.state[p][BIRTH][: min(t, capacity)]
        for priority, birth in zip(priorities.tolist(), births.tolist()):
            assert priority == pytest.approx(decayed[birth], rel=1e-12)


@pytest.mark.parametrize("foreach", [None, True, False])
@pytest.mark.parametrize(
    "name, torch_cls, kwargs",
    [
        ("sgd_c", torch.optim.SGD, {"lr": 0.1}),
        ("sgd_c", torch.optim.SGD, {"lr": 0.1, "momentum": 0.9, "dampening": 0.2, "weight_decay": 0.01}),
        ("sgd_c", torch.optim.SGD, {"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01}),
        ("adam_c", torch.optim.Adam, {"lr": 0.01}),
        ("adam_c", torch.optim.Adam, {"lr": 0.01, "amsgrad": True, "weight_decay": 0.01, "betas": (0.8, 0.9)}),
        ("adamw_c", torch.optim.AdamW, {"lr": 0.01}),
        ("adamw_c", torch.optim.AdamW, {"lr": 0.01, "weight_decay": 0.1, "amsgrad": True}),
        ("rmsprop_c", torch.optim.RMSprop, {"lr": 0.01}),
        ("rmsprop_c", torch.optim.RMSprop, {"lr": 0.01, "centered": True, "momentum": 0.9, "weight_decay": 0.01}),
    ],
)
def test_kappa_zero_is_the_torch_optimizer_bit_for_bit(name, torch_cls, kwargs, foreach) -> None:
    ours_params, torch_params = _params(dtype=torch.float32), _params(dtype=torch.float32)
    ours = build_optimizer(name, ours_params, kappa=0.0, foreach=foreach, **kwargs)
    base = torch_cls(torch_params, foreach=foreach, **kwargs)
    schedulers = [torch.optim.lr_scheduler.StepLR(o, step_size=3, gamma=0.5) for o in (ours, base)]
    for grads in _stream(10, dtype=torch.float32):
        _feed(ours_params, grads)
        _feed(torch_params, grads)
        ours.step()
        base.step()
        for scheduler in schedulers:
            scheduler.step()
        for a, b in zip(ours_params, torch_params):
            assert torch.equal(a, b)
    for a, b in zip(ours_params, torch_params):
        for key, value in base.state[b].items():
            assert torch.equal(ours.state[a][key], value), key
        assert BUFFER not in ours.state[a]  # kappa=0 keeps no memory at all


def test_fused_kappa_zero_is_torch_fused() -> None:
    for name, torch_cls in [("adam_c", torch.optim.Adam), ("sgd_c", torch.optim.SGD)]:
        ours_params, torch_params = _params(dtype=torch.float32), _params(dtype=torch.float32)
        ours = build_optimizer(name, ours_params, lr=0.01, kappa=0.0, fused=True)
        base = torch_cls(torch_params, lr=0.01, fused=True)
        for grads in _stream(5, dtype=torch.float32):
            _feed(ours_params, grads)
            _feed(torch_params, grads)
            ours.step()
            base.step()
        assert all(torch.equal(a, b) for a, b in zip(ours_params, torch_params))


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("sgd_c", {"lr": 0.05, "momentum": 0.9, "diagnostics": True, "topC": 3}),
        ("sgd_c", {"lr": 0.05, "sampling": "random", "critical_test": False, "synced": False, "seed": 7}),
        ("sgd_c", {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.01, "topC": 4, "fused": True}),
        ("adamw_c", {"lr": 0.01, "amsgrad": True, "topC": 4, "fused": True}),
        ("adam_c", {"lr": 0.01, "sampling": "proportional", "aggr": "median", "topC": 4}),
        ("adam_c", {"lr": 0.01, "sampling": "cos_diversity", "synced": False, "refresh_every": 3}),
        ("adamw_c", {"lr": 0.01, "sampling": "mean_diversity", "amsgrad": True}),
        ("rmsprop_c", {"lr": 0.01, "sampling": "cos_similarity", "centered": True, "momentum": 0.5}),
    ],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_resume_is_bit_identical(name, kwargs, dtype) -> None:
    """save -> torch.load(weights_only=True) -> fresh optimizer -> the next steps equal the uninterrupted run."""
    stream = _stream(16, dtype=dtype, seed=5)
    params_a = _params(dtype=dtype)
    optimizer_a = build_optimizer(name, params_a, **kwargs)
    for grads in stream[:7]:
        _feed(params_a, grads)
        optimizer_a.step()
    file = io.BytesIO()
    torch.save({"params": [p.detach() for p in params_a], "optimizer": optimizer_a.state_dict()}, file)
    file.seek(0)
    checkpoint = torch.load(file, weights_only=True)
    params_b = [p.clone().requires_grad_() for p in checkpoint["params"]]
    optimizer_b = build_optimizer(name, params_b, **kwargs)
    optimizer_b.load_state_dict(checkpoint["optimizer"])
    for a, b in zip(params_a, params_b):
        assert optimizer_b.state[b][PRIORITY].dtype == optimizer_a.state[a][PRIORITY].dtype == torch.float32
    for grads in stream[7:]:
        _feed(params_a, grads)
        _feed(params_b, grads)
        optimizer_a.step()
        optimizer_b.step()
        for a, b in zip(params_a, params_b):
            assert torch.equal(a, b)
    for a, b in zip(params_a, params_b):
        for key, value in optimizer_a.state[a].items():
            other = optimizer_b.state[b][key]
            assert torch.equal(value, other) if isinstance(value, torch.Tensor) else value == other, key


# Groups of one optimizer with different settings: the first two share every base setting (one batched
# base call), the third differs from them in lr alone; others have no memory (kappa=0), another memory size
# or decay, or other base settings.
MANY_GROUPS = {
    "sgd_c": [{"lr": 0.05, "momentum": 0.9}, {"lr": 0.05, "momentum": 0.9, "decay": 0.5}, {"lr": 0.2, "momentum": 0.9},
              {"lr": 0.1, "topC": 3, "weight_decay": 0.01}, {"lr": 0.05, "momentum": 0.9, "kappa": 0.0},
              {"lr": 0.05, "momentum": 0.9, "aggr": "max", "synced": False}],
    "adam_c": [{"lr": 0.01}, {"lr": 0.01, "decay": 0.5, "topC": 3}, {"lr": 0.03}, {"lr": 0.02, "weight_decay": 0.1},
               {"lr": 0.01, "amsgrad": True}, {"lr": 0.01, "kappa": 0.0}, {"lr": 0.01, "offer": "before_aggregate"}],
    "adamw_c": [{"lr": 0.01}, {"lr": 0.01, "decay": 0.9}, {"lr": 0.02}, {"lr": 0.03, "betas": (0.8, 0.99)}],
    "rmsprop_c": [{"lr": 0.01}, {"lr": 0.01, "decay": 0.9, "topC": 4}, {"lr": 0.02}, {"lr": 0.02, "centered": True}],
}


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("name", list(MANY_GROUPS))
def test_many_groups_step_as_one_optimizer_per_group(name, dtype, path) -> None:
    """The groups of one optimizer step together (batched memory and base calls); each group's parameters
    and state equal those of an optimizer holding that group alone, bit for bit."""
    foreach, on_host = PATHS[path]
    settings = MANY_GROUPS[name]
    shared = [_params(dtype=dtype, seed=10 + k) for k in range(len(settings))]
    alone = [[p.detach().clone().requires_grad_() for p in params] for params in shared]
    together = build_optimizer(name, [{"params": params, **s} for params, s in zip(shared, settings)],
                               foreach=foreach, refresh_every=5)
    separate = [build_optimizer(name, params, foreach=foreach, refresh_every=5, **s) for params, s in zip(alone, settings)]
    for optimizer in [together, *separate]:
        optimizer.decisions_on_host = on_host
    streams = [_stream(14, dtype=dtype, seed=k) for k in range(len(settings))]
    for step in range(14):
        for k in range(len(settings)):
            _feed(shared[k], streams[k][step])
            _feed(alone[k], streams[k][step])
            separate[k].step()
        together.step()
        for k in range(len(settings)):
            for a, b in zip(shared[k], alone[k]):
                assert torch.equal(a, b), (step, k)
    for k in range(len(settings)):
        for a, b in zip(shared[k], alone[k]):
            for key, value in together.state[a].items():
                other = separate[k].state[b][key]
                assert torch.equal(value, other) if isinstance(value, torch.Tensor) else value == other, key


def test_random_policies_are_seeded_and_differ_by_seed() -> None:
    def run(seed):
        params = _params()
        optimizer = SGD_C(params, lr=0.05, sampling="random", critical_test=False, topC=3, seed=seed)
        for grads in _stream(20):
            _feed(params, grads)
            optimizer.step()
        return torch.cat([p.detach().flatten() for p in params])

    assert torch.equal(run(1), run(1))
    assert not torch.equal(run(1), run(2))


def test_kappa_does_not_corrupt_the_stored_gradients() -> None:
    """Spec A.8 #4: the original scaled the stored item in place with kappa != 1 under 'min'/'max'."""
    p = torch.zeros(4, dtype=torch.float64, requires_grad=True)
    optimizer = SGD_C([p], lr=0.0, kappa=2.0, aggr="max", topC=3, decay=1.0)
    g = torch.tensor([0.1, -0.2, 0.05, 0.3], dtype=torch.float64)
    for _ in range(6):
        p.grad = g.clone()
        optimizer.step()
    for slot in optimizer.state[p][BUFFER]:
        assert torch.equal(slot, g)


def test_running_sum_refresh_keeps_it_exact() -> None:
    """After `refresh_every` offers the running sum equals the sum of the slots exactly."""
    params = _params()
    optimizer = Adam_C(params, lr=0.01, topC=4, refresh_every=5)
    for grads in _stream(10):
        _feed(params, grads)
        optimizer.step()
    for p in params:
        state = optimizer.state[p]
        assert torch.equal(state[SUM], state[BUFFER].sum(0))


def test_gradients_are_never_modified() -> None:
    params = _params()
    optimizer = SGD_C(params, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.1, foreach=True)
    for grads in _stream(4):
        _feed(params, grads)
        optimizer.step()
        for p, g in zip(params, grads):
            assert torch.equal(p.grad, g)


def test_adam_c_closure_runs_with_gradients_enabled() -> None:
    """Spec A.8 #9: the original ran the closure under no_grad."""
    w = torch.tensor([1.0, -2.0], requires_grad=True)
    optimizer = Adam_C([w], lr=0.1)

    def closure():
        optimizer.zero_grad()
        loss = (w**2).sum()
        loss.backward()
        return loss

    for _ in range(3):
        assert optimizer.step(closure) is not None
    assert float((w.detach() ** 2).sum()) < 5.0


def test_original_argument_names_and_defaults() -> None:
    w = [torch.zeros(2, requires_grad=True)]
    sgd = build_optimizer("sgd_c", w, lr=0.1, topC=10, decay=0.7, kappa=1.0, aggr="sum", sampling=None,
                          critical_test=True, synced=True, momentum=0.9, dampening=0.0, weight_decay=0.0)
    group = sgd.param_groups[0]
    assert (group["topC"], group["decay"], group["kappa"], group["aggr"]) == (10, 0.7, 1.0, "sum")
    assert build_optimizer("adam_c", w).param_groups[0]["aggr"] == "mean"
    assert build_optimizer("rmsprop_c", w).param_groups[0]["aggr"] == "mean"
    assert build_optimizer("rmsprop_c", w).param_groups[0]["lr"] == 1e-2
    adamw = build_optimizer("adamw_c", w).param_groups[0]
    assert (adamw["weight_decay"], adamw["weight_decay_mode"]) == (1e-2, "decoupled")
    assert build_optimizer("sgd_c", w).param_groups[0]["weight_decay_mode"] == "before_buffer"
    assert build_optimizer("adam_c", w).param_groups[0]["weight_decay_mode"] == "after_aggregate"
    # the original's positional order
    positional = SGD_C(w, 0.5, 0.3, 0.1, 0.01, 0.9, 0.8, 6, "mid")
    group = positional.param_groups[0]
    assert [group[k] for k in ("lr", "kappa", "dampening", "weight_decay", "momentum", "decay", "topC", "aggr")] == [
        0.5, 0.3, 0.1, 0.01, 0.9, 0.8, 6, "mid"]


def test_diagnostics_are_opt_in() -> None:
    params = _params()
    quiet = SGD_C(params, lr=0.01, topC=3)
    loud = SGD_C(_params(), lr=0.01, topC=3, diagnostics=True)
    for grads in _stream(8):
        _feed(params, grads)
        _feed(loud.param_groups[0]["params"], grads)
        quiet.step()
        loud.step()
    assert BIRTH not in quiet.state[params[0]]
    assert "admission_rate" not in quiet.critical_stats()
    stats = loud.critical_stats()
    assert 3 / 8 <= stats["admission_rate"] <= 1.0
    assert 1.0 <= stats["mean_buffer_age"] <= stats["max_buffer_age"] <= 8
    assert stats["mean_buffered_norm"] > 0
    # the diagnostics do not change the trajectory
    assert all(torch.equal(a, b) for a, b in zip(params, loud.param_groups[0]["params"]))


def test_kappa_can_be_scheduled() -> None:
    """Hyperparameters are read from the group every step; kappa=0 mid-run skips the memory."""
    params = _params()
    optimizer = Adam_C(params, lr=0.01, topC=3)
    for step, grads in enumerate(_stream(6)):
        optimizer.param_groups[0]["kappa"] = 0.0 if step >= 3 else 1.0
        _feed(params, grads)
        optimizer.step()
    assert optimizer.state[params[0]][OFFERS] == 3


def test_parameter_groups_keep_their_own_settings() -> None:
    a, b = _params()[:2]
    optimizer = SGD_C([{"params": [a], "topC": 2}, {"params": [b], "topC": 5, "kappa": 0.0}], lr=0.1)
    for grads in _stream(3, shapes=[(3, 4), (5,)]):
        _feed([a, b], grads)
        optimizer.step()
    assert optimizer.state[a][BUFFER].shape[0] == 2
    assert BUFFER not in optimizer.state[b]


def test_copy_and_deepcopy_keep_working() -> None:
    params = _params()
    optimizer = RMSprop_C(params, lr=0.01)
    _feed(params, _stream(1)[0])
    optimizer.step()
    clone = copy.deepcopy(optimizer)
    assert clone.state_dict()["state"].keys() == optimizer.state_dict()["state"].keys()


# --- SGD_C(fused=True): the compiled one-pass step ------------------------------------------------


class _CountFusedSteps:
    """Wraps `run_fused` where the optimizer classes call it, to count the steps that took the fused path."""

    def __init__(self, monkeypatch) -> None:
        import optimlab.optim.critical.adam_c as adam_c_module
        import optimlab.optim.critical.sgd_c as sgd_c_module

        self.calls = 0
        original = sgd_c_module.run_fused

        def counted(*args, **kwargs):
            self.calls += 1
            return original(*args, **kwargs)

        for module in (sgd_c_module, adam_c_module):
            monkeypatch.setattr(module, "run_fused", counted)


_FUSABLE = ("sgd_c defaults", "sgd_c momentum wd", "sgd_c nesterov per-tensor", "sgd_c global_l2 mid",
            "sgd_c mean kappa", "sgd_c topC=1 decay=1", "sgd_c wd after_aggregate", "sgd_c wd decoupled",
            "sgd_c recency (FIFO)", "sgd_c inverse_norm (bottom-C)", "adam_c defaults", "adam_c amsgrad wd",
            "adam_c wd before_buffer", "adamw_c")


@pytest.mark.parametrize("case", [case for case in CASES if CASES[case][0] in (SGD_C, Adam_C, AdamW_C)])
def test_fused_matches_the_original_step_for_step(case: str, monkeypatch) -> None:
    """fused=True against the literal reference, float64; the fusable cases must really take the fused path."""
    cls, ref_cls, base_kwargs, memory_kwargs = CASES[case]
    fused_steps = _CountFusedSteps(monkeypatch)
    ours_params, ref_params = _params(), _params()
    ours = cls(ours_params, **base_kwargs, **memory_kwargs, critical_test=False, fused=True, refresh_every=7)
    reference = ref_cls(ref_params, **base_kwargs, **memory_kwargs)
    _step_alongside_the_reference(ours, ours_params, reference, ref_params)
    if case in _FUSABLE:
        # At least every filling step (all tensors admitted) but a first momentum step (torch creates the buffers).
        assert fused_steps.calls >= max(1, memory_kwargs.get("topC", 10) - 1)
    else:
        assert fused_steps.calls == 0


@pytest.mark.parametrize(
    "cls, kwargs",
    [
        (SGD_C, {"lr": 0.05, "momentum": 0.9, "weight_decay": 1e-3, "topC": 4, "decay": 0.9}),
        (Adam_C, {"lr": 1e-2, "amsgrad": True, "weight_decay": 1e-3, "topC": 4, "decay": 0.9}),
        (AdamW_C, {"lr": 1e-2, "topC": 4}),
    ],
)
def test_fused_equals_the_eager_step_float32(cls, kwargs) -> None:
    """On a real model in float32 the fused pass and the eager ops differ by rounding only."""
    torch.manual_seed(0)
    models = [torch.nn.Sequential(torch.nn.Linear(20, 32), torch.nn.Tanh(), torch.nn.Linear(32, 3)) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    optimizers = [cls(models[0].parameters(), **kwargs, fused=True), cls(models[1].parameters(), **kwargs)]
    x, y = torch.randn(64, 20), torch.randint(0, 3, (64,))
    for _ in range(30):
        for model, optimizer in zip(models, optimizers):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
    for a, b in zip(models[0].parameters(), models[1].parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_fused_sgd_c_runs_eagerly_when_compilation_fails(monkeypatch) -> None:
    """No C++ toolchain (or any compile failure): one warning, then the same step computed eagerly."""
    import optimlab.optim.critical.fused as fused_module

    def broken(*args, **kwargs):
        raise torch._dynamo.exc.TorchDynamoException("no working C++ compiler")

    monkeypatch.setattr(fused_module, "_compiled", {fused_module.sgd_c_step: broken})
    monkeypatch.setattr(fused_module, "_failed", False)
    params_fused, params_eager = _params(), _params()
    fused = SGD_C(params_fused, lr=0.05, momentum=0.5, fused=True)
    eager = SGD_C(params_eager, lr=0.05, momentum=0.5)
    with pytest.warns(UserWarning, match="no working C"):
        for grads in _stream(12):
            _feed(params_fused, grads)
            _feed(params_eager, grads)
            fused.step()
            eager.step()
    assert fused_module._failed
    for a, b in zip(params_fused, params_eager):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
