"""RNNProp's fused deployed step (the compiled kernel of `optimlab.learned.kernels`) against the eager one."""

import copy
import io
import os
import signal
import subprocess
import time
import warnings

import pytest
import torch
from torch import nn

import optimlab.learned as lo
from optimlab.learned import kernels
from optimlab.learned.kernels import rnnprop as fused

F64 = torch.float64


@pytest.fixture(autouse=True)
def fresh_kernel():
    """Each test looks the kernel up anew, and leaves no fallback cached for the next."""
    kernels.rnnprop_kernel.cache_clear()
    yield
    kernels.rnnprop_kernel.cache_clear()


def require_kernel():
    if kernels.rnnprop_kernel() is None:
        pytest.skip("no fused kernel here (no AVX-512 or no C compiler)")


def perturbed(policy, seed=0):
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return policy.eval()


def random_inputs(policy, n, seed=1):
    g = torch.Generator().manual_seed(seed)
    state = {k: torch.randn(v.shape, generator=g) for k, v in policy.init_state(torch.zeros(n)).items()}
    state["v"] = state["v"].square() * 1e-2
    # Gradients over several orders of magnitude, some zero: the features' normalisation matters.
    scale = 10.0 ** torch.randint(-6, 1, (n,), generator=g)
    grad = torch.randn(n, generator=g) * scale * (torch.arange(n) % 7 != 0)
    return torch.randn(n, generator=g), grad, state


def both_steps(policy, param, grad, state, step, lr):
    """(param, state) after the eager and after the fused deployed step, from copies of the inputs."""
    results = []
    for use in (False, True):
        p, s = param.clone(), {k: v.clone() for k, v in state.items()}
        policy.deployed_step(p, grad, s, step, lr, fused=use)
        results.append((p, s))
    return results


CONFIGS = [{}, {"bias_correction": "standard"}, {"layers": [20, 20, 20], "alpha": 0.3, "beta_1": 0.3}]


@pytest.mark.parametrize("hparams", CONFIGS, ids=["default", "standard", "three_layers"])
@pytest.mark.parametrize("n", [1, 15, 16, 17, 64, 100, 1027])
def test_fused_step_matches_eager_float32(hparams, n):
    require_kernel()
    policy = perturbed(lo.RNNProp(**hparams))
    param, grad, state = random_inputs(policy, n)
    (p_eager, s_eager), (p_fused, s_fused) = both_steps(policy, param, grad, state, torch.tensor(3.0), 0.7)
    assert not torch.equal(p_fused, param)
    assert p_fused._version > 0 and s_fused["c1"]._version > 0  # modified in place, as autograd must know
    torch.testing.assert_close(p_fused, p_eager, rtol=1e-5, atol=1e-6)
    for key in s_eager:
        torch.testing.assert_close(s_fused[key], s_eager[key], rtol=1e-5, atol=2e-6, msg=key)
    # the moments are elementwise arithmetic done in the same order: bit for bit
    assert torch.equal(s_fused["m"], s_eager["m"]) and torch.equal(s_fused["v"], s_eager["v"])


@pytest.mark.parametrize("name", ["rnnprop-mnist1d", "rnnprop-minmax"])
def test_fused_step_matches_eager_with_the_shipped_weights(name):
    require_kernel()
    policy = lo.load(name).policy.eval()
    param, grad, state = random_inputs(policy, 999, seed=4)
    for step in (0.0, 50.0):
        (p_eager, s_eager), (p_fused, s_fused) = both_steps(policy, param, grad, state, torch.tensor(step), 1.0)
        torch.testing.assert_close(p_fused, p_eager, rtol=1e-5, atol=1e-6)
        for key in s_eager:
            torch.testing.assert_close(s_fused[key], s_eager[key], rtol=1e-5, atol=2e-6, msg=key)
        state = s_eager


def test_fused_step_as_close_to_float64_as_eager():
    """The kernel's activations and summation order cost no more accuracy than float32 eager arithmetic."""
    require_kernel()
    policy = perturbed(lo.RNNProp())
    param, grad, state = random_inputs(policy, 2000, seed=3)
    step = torch.tensor(5.0)
    (p_eager, s_eager), (p_fused, s_fused) = both_steps(policy, param, grad, state, step, 1.0)
    reference = copy.deepcopy(policy).double()
    p64, s64 = param.double(), {k: v.double() for k, v in state.items()}
    reference.deployed_step(p64, grad.double(), s64, step.double(), 1.0)
    for key in ("h0", "c0", "h1", "c1"):
        eager_error = (s_eager[key].double() - s64[key]).abs().max()
        fused_error = (s_fused[key].double() - s64[key]).abs().max()
        assert fused_error < max(4 * eager_error, 1e-6), key
    assert (p_fused.double() - p64).abs().max() < 1e-6


def test_zero_size_and_unsupported_inputs_take_their_paths():
    require_kernel()
    policy = perturbed(lo.RNNProp())
    param, grad, state = random_inputs(policy, 0)
    policy.deployed_step(param, grad, state, torch.tensor(0.0), 1.0)  # nothing to do, nothing touched
    param, grad, state = random_inputs(policy, 40)
    assert fused.supported(policy, param, grad, state)
    assert not fused.supported(policy, param.double(), grad.double(), state)
    assert not fused.supported(policy, param, grad, {**state, "h1": state["h1"][:-1]})  # wrong shape
    assert not fused.supported(policy, param, grad, {**state, "c0": state["c0"].t().contiguous().t()})
    for hparams in ({"input_layer": True}, {"layers": [8, 12]}):
        other = perturbed(lo.RNNProp(**hparams))
        _, _, other_state = random_inputs(other, 40)
        assert not fused.supported(other, param, grad, other_state)


def test_nan_gradient_gives_nan_update_like_eager():
    require_kernel()
    policy = perturbed(lo.RNNProp())
    param, grad, state = random_inputs(policy, 33)
    grad[[0, 20]] = float("nan")
    state["c1"][5, 3] = float("inf")  # a saturated cell: tanh = 1, as in the eager step
    state["c0"][6, 17] = -1e30
    (p_eager, s_eager), (p_fused, s_fused) = both_steps(policy, param, grad, state, torch.tensor(1.0), 1.0)
    assert torch.equal(p_fused.isnan(), p_eager.isnan()) and p_fused[[0, 20]].isnan().all()
    for key in s_eager:
        assert torch.equal(s_fused[key].isnan(), s_eager[key].isnan()), key
        torch.testing.assert_close(s_fused[key], s_eager[key], rtol=1e-5, atol=2e-6, equal_nan=True, msg=key)
    torch.testing.assert_close(p_fused, p_eager, rtol=1e-5, atol=1e-6, equal_nan=True)


def test_threads_split_the_coordinates_with_the_same_result():
    require_kernel()
    policy = perturbed(lo.RNNProp())
    param, grad, state = random_inputs(policy, 2 * fused.PARALLEL_MIN + 37)
    results = []
    threads = torch.get_num_threads()
    try:
        for t in (1, 3):
            torch.set_num_threads(t)
            p, s = param.clone(), {k: v.clone() for k, v in state.items()}
            policy.deployed_step(p, grad, s, torch.tensor(2.0), 1.0)
            results.append((p, s))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(results[0][0], results[1][0])
    assert all(torch.equal(results[0][1][k], results[1][1][k]) for k in state)
    assert fused.split(100, 3) == [0, 32, 64, 100] and fused.split(16, 2) == [0, 0, 16]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_threads_work_in_a_forked_child():
    """A child forked after the parent used the thread pool (a sweep's fork server) gets its own pool."""
    require_kernel()
    policy = perturbed(lo.RNNProp())
    param, grad, state = random_inputs(policy, 2 * fused.PARALLEL_MIN)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        policy.deployed_step(param, grad, state, torch.tensor(0.0), 1.0)
        pid = os.fork()
        if pid == 0:  # the child: step again, through a pool of its own
            try:
                policy.deployed_step(param, grad, state, torch.tensor(1.0), 1.0)
                os._exit(0)
            except BaseException:
                os._exit(1)
        deadline = time.monotonic() + 20
        while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        if done[0] == 0:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the forked child's step hung")
        assert os.waitstatus_to_exitcode(done[1]) == 0
    finally:
        torch.set_num_threads(threads)


def test_optimizer_through_warmup_and_state_dict_round_trip():
    """LearnedOptimizer with the kernel: the warm-up is the eager SGD step, the policy's steps agree with
    the eager ones, and a restored state_dict continues exactly as the uninterrupted run."""
    require_kernel()
    policy = perturbed(lo.RNNProp())

    def model():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(30, 40), nn.Tanh(), nn.Linear(40, 3))

    def run(steps, optimizer, net, seed=0):
        g = torch.Generator().manual_seed(seed)
        for _ in range(steps):
            optimizer.zero_grad()
            net(torch.randn(8, 30, generator=g)).pow(2).mean().backward()
            optimizer.step()

    nets = [model(), model()]
    opts = [lo.LearnedOptimizer(n.parameters(), policy, warmup_steps=1, fused=f) for n, f in zip(nets, (True, False))]
    for net, opt in zip(nets, opts):
        run(4, opt, net)
    for p, q in zip(nets[0].parameters(), nets[1].parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)

    net, resumed_net = model(), model()
    opt = lo.LearnedOptimizer(net.parameters(), policy, warmup_steps=1)
    run(2, opt, net)
    resumed_net.load_state_dict(net.state_dict())
    resumed = lo.LearnedOptimizer(resumed_net.parameters(), policy, warmup_steps=1)
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    run(2, opt, net, seed=1)
    run(2, resumed, resumed_net, seed=1)
    for p, q in zip(net.parameters(), resumed_net.parameters()):
        assert torch.equal(p, q)


def test_without_a_compiler_the_eager_step_runs_with_one_warning(monkeypatch, tmp_path):
    monkeypatch.setenv("OPTIMLAB_KERNEL_DIR", str(tmp_path))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    policy = perturbed(lo.RNNProp())
    param, grad, state = random_inputs(policy, 20)
    with pytest.warns(UserWarning, match="fused RNNProp step is unavailable"):
        assert kernels.rnnprop_kernel() is None
    (p_eager, s_eager), (p_default, s_default) = both_steps(policy, param, grad, state, torch.tensor(1.0), 1.0)
    assert torch.equal(p_default, p_eager)
    assert all(torch.equal(s_default[k], s_eager[k]) for k in state)


def test_compile_error_and_disabling_fall_back(monkeypatch, tmp_path):
    monkeypatch.setenv("OPTIMLAB_KERNEL_DIR", str(tmp_path))
    monkeypatch.setenv("CC", "cc -DOPTIMLAB_NO_SUCH_OPTION --no-such-option")
    if kernels.cpu_flags().issuperset(kernels.REQUIRED_CPU_FLAGS):
        with pytest.raises(kernels.KernelUnavailable, match="failed"):
            kernels.build()
    assert not list(tmp_path.glob("*.so")) and not list(tmp_path.iterdir())  # no partial file left
    monkeypatch.setenv("OPTIMLAB_FUSED", "0")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # turned off on purpose: no warning
        assert kernels.rnnprop_kernel() is None


def test_build_is_cached_per_machine(monkeypatch, tmp_path):
    require_kernel()
    monkeypatch.setenv("OPTIMLAB_KERNEL_DIR", str(tmp_path))
    first = kernels.build()
    assert first.parent == tmp_path and first.exists()
    calls = []
    run = subprocess.run

    def counting_run(command, **kwargs):
        calls.append(command)
        return run(command, **kwargs)

    monkeypatch.setattr(kernels.subprocess, "run", counting_run)
    assert kernels.build() == first
    assert len(calls) == 1 and calls[0][-1] == "--version"  # the compiler's identity, no compilation
    monkeypatch.setattr(kernels, "FLAGS", (*kernels.FLAGS, "-DOPTIMLAB_OTHER_FLAGS"))
    assert kernels.build() != first  # other flags: another build
