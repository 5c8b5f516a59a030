"""RNNProp's deployed step through the fused kernel (`rnnprop_step.c`): the packed weights and the call."""

from __future__ import annotations

import ctypes
import math
import os
import weakref
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import Tensor

from optimlab.learned.kernels import rnnprop_kernel

HIDDEN = 20  # the kernel's LSTM width (RNNProp's default layers are (20, 20))
MAX_LAYERS = 8
LOG2E = 1.0 / math.log(2.0)


def supported(policy, param: Tensor, grad: Tensor, state: dict[str, Tensor]) -> bool:
    """Whether the kernel computes this step: 20-wide LSTM layers and no input layer; float32, contiguous
    CPU tensors of the shapes `init_state` gives (the kernel trusts them: a wrong shape would make it read
    and write out of bounds)."""
    hp = policy.hparams
    if policy.input is not None or any(h != HIDDEN for h in hp["layers"]) or len(hp["layers"]) > MAX_LAYERS:
        return False
    n = param.numel()
    flat = [param, grad, state["m"], state["v"]]
    recurrent = [state[k] for k in policy.recurrent_keys]
    if any(t.shape != (n,) for t in flat) or any(t.shape != (n, HIDDEN) for t in recurrent):
        return False
    return all(t.dtype == torch.float32 and t.device.type == "cpu" and t.is_contiguous() for t in flat + recurrent)


def pack_weights(cell) -> Tensor:
    """The cell's kernels and bias as the kernel's [F + H + 1, 80] operand: rows x, h, bias; gate columns
    i0-15 f0-15 o0-15 g0-15 | i16-19 f16-19 o16-19 g16-19, scaled by -log2(e) (sigmoid gates) and
    -2 log2(e) (cell input), so each output is the exponent a of 1 / (1 + 2^a)."""
    H = cell.hidden_size
    w = torch.cat([cell.weight_ih.t(), cell.weight_hh.t(), cell.bias[None]]).double()  # columns i, f, c, o
    i, f, g, o = (torch.arange(k * H, (k + 1) * H) for k in range(4))
    order = torch.cat([i[:16], f[:16], o[:16], g[:16], i[16:], f[16:], o[16:], g[16:]])
    scale = torch.full((4 * H,), -LOG2E, dtype=torch.float64)
    scale[2 * H : 3 * H] = -2 * LOG2E
    return (w * scale)[:, order].float().contiguous()


def packed_weights(policy) -> tuple[list[Tensor], ctypes.Array, Tensor, float]:
    """`pack_weights` of each cell, their addresses, the output weights and bias, remade only when one of
    these tensors changed (in place, as `load_state_dict` does, or replaced)."""
    used = [t for cell in policy.recurrent for t in (cell.weight_ih, cell.weight_hh, cell.bias)]
    used += [policy.delta.weight, policy.delta.bias]
    key = tuple((t.data_ptr(), t._version) for t in used)
    cached = _packed.get(policy)
    if cached is None or cached[0] != key:
        with torch.no_grad():
            packed = [pack_weights(cell) for cell in policy.recurrent]
            w_out = policy.delta.weight[0].detach().float().contiguous()
            b_out = float(policy.delta.bias[0])
        pointers = (ctypes.c_void_p * len(packed))(*(w.data_ptr() for w in packed))
        cached = (key, (packed, pointers, w_out, b_out))
        _packed[policy] = cached
    return cached[1]


# Kept outside the policy, so that copying or pickling a policy never meets the ctypes pointers.
_packed: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def fused_step(policy, param: Tensor, grad: Tensor, state: dict[str, Tensor], c1: float, c2: float, lr: float) -> bool:
    """`param -= lr * delta` and the state updated in place by the kernel; False (nothing done) where the
    kernel is unavailable or does not apply."""
    if not supported(policy, param, grad, state):  # first: no build, and no warning, where it would not apply
        return False
    kernel = rnnprop_kernel()
    if kernel is None:
        return False
    hp = policy.hparams
    packed, w_ptrs, w_out, b_out = packed_weights(policy)
    layers = len(packed)
    hs = (ctypes.c_void_p * layers)(*(state[f"h{i}"].data_ptr() for i in range(layers)))
    cs = (ctypes.c_void_p * layers)(*(state[f"c{i}"].data_ptr() for i in range(layers)))
    scalars = (ctypes.c_float * 8)(b_out, 1 - hp["beta_1"], 1 - hp["beta_2"], c1, c2, hp["epsilon"], hp["alpha"], lr)
    args = (layers, param.data_ptr(), grad.data_ptr(), state["m"].data_ptr(), state["v"].data_ptr(), hs, cs, w_ptrs,
            w_out.data_ptr(), scalars)  # fmt: skip
    n, threads = param.numel(), torch.get_num_threads()
    if threads > 1 and n >= PARALLEL_MIN * 2:
        # ctypes releases the GIL during the call: the parts run at once on the pool's threads.
        bounds = split(n, min(threads, n // PARALLEL_MIN))
        futures = [_pool(threads).submit(kernel, a, b, *args) for a, b in zip(bounds[1:-1], bounds[2:])]
        codes = [kernel(0, bounds[1], *args), *(f.result() for f in futures)]
    else:
        codes = [kernel(0, n, *args)]
    if any(codes):
        raise RuntimeError(f"optimlab_rnnprop_step returned {max(codes)}")
    # The kernel wrote through raw pointers: mark the tensors modified in place, as the eager ops would, so
    # that autograd still detects a backward through a stepped tensor.
    torch.autograd.graph.increment_version([param, state["m"], state["v"], *(state[k] for k in policy.recurrent_keys)])
    return True


PARALLEL_MIN = 16384  # coordinates per thread, at least: below, a thread's start costs more than it saves


def split(n: int, parts: int) -> list[int]:
    """Bounds 0 = b0 < b1 < ... = n of `parts` nearly equal ranges, each a multiple of 16 long but the last
    (the kernel's block: only the last block of a range is padded)."""
    blocks = -(-n // 16)
    return [min(n, 16 * (blocks * k // parts)) for k in range(parts + 1)]


_pools: dict[tuple[int, int], ThreadPoolExecutor] = {}


def _pool(threads: int) -> ThreadPoolExecutor:
    # Per process: a forked child (the sweeps' fork server) has none of its parent's pool threads.
    key = (os.getpid(), threads)
    if key not in _pools:
        _pools[key] = ThreadPoolExecutor(threads - 1, thread_name_prefix="optimlab-rnnprop")
    return _pools[key]
