"""Per-layer inputs and output gradients of Linear, Conv1d and Conv2d layers, as (examples, positions, features).

For these layers the per-example weight gradient is a sum of outer products: with `a_t` the layer's input
at position t (a Conv's unfolded receptive field; a Linear's input, one position per token) with a constant
1 appended when the layer has a bias, and `d_t` the gradient of the example's loss with respect to the
layer's output at t, the gradient of `[weight.flatten(1) | bias]` is `sum_t d_t a_t^T`. K-FAC's factors and
gradient clustering's distances are computed from `(a, d)` alone, never from per-example gradients
(Grosse & Martens 2016, "A Kronecker-factored approximate Fisher matrix for convolution layers";
Faghri et al. 2020, "A Study of Gradient Variance in Deep Learning").
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from typing_extensions import Self

SUPPORTED = (nn.Linear, nn.Conv1d, nn.Conv2d)


def supported_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The model's Linear/Conv1d/Conv2d layers with a trainable weight that the (a, d) form covers."""
    found = {}
    for name, module in model.named_modules():
        if not isinstance(module, SUPPORTED) or not module.weight.requires_grad:
            continue
        conv = isinstance(module, (nn.Conv1d, nn.Conv2d))
        if conv and (module.groups != 1 or module.padding_mode != "zeros" or module.padding == "same"):
            continue  # grouped, circular/reflect-padded and 'same'-padded convolutions are left out
        found[name] = module
    return found


def layer_parameters(module: nn.Module) -> list[nn.Parameter]:
    return [module.weight] + ([module.bias] if module.bias is not None else [])


def input_patches(module: nn.Module, x: Tensor) -> Tensor:
    """(B, T, d_in [+1]): the input vectors that multiply `weight.flatten(1)`, a 1 appended for the bias."""
    if isinstance(module, nn.Linear):
        a = x.reshape(x.shape[0], -1, x.shape[-1])
    else:
        padding = 0 if module.padding == "valid" else module.padding
        if isinstance(module, nn.Conv1d):
            x = x.unsqueeze(2)
            kernel, dilation = (1, module.kernel_size[0]), (1, module.dilation[0])
            padding, stride = (0, padding[0] if isinstance(padding, tuple) else padding), (1, module.stride[0])
        else:
            kernel, dilation, stride = module.kernel_size, module.dilation, module.stride
        a = F.unfold(x, kernel, dilation=dilation, padding=padding, stride=stride).transpose(1, 2)
    if module.bias is not None:
        a = torch.cat([a, a.new_ones(a.shape[:-1] + (1,))], dim=-1)
    return a


def output_grads(module: nn.Module, grad: Tensor) -> Tensor:
    """(B, T, d_out): the gradient with respect to the layer's output, positions in `input_patches` order."""
    if isinstance(module, nn.Linear):
        return grad.reshape(grad.shape[0], -1, grad.shape[-1])
    return grad.flatten(2).transpose(1, 2)


def weight_matrix(module: nn.Module, tensors: dict[str, Tensor] | None = None) -> Tensor:
    """`[weight.flatten(1) | bias]` (d_out, d_in [+1]) from the module or from same-shaped `tensors`."""
    weight = module.weight if tensors is None else tensors["weight"]
    parts = [weight.flatten(1)]
    if module.bias is not None:
        bias = module.bias if tensors is None else tensors["bias"]
        parts.append(bias.unsqueeze(1))
    return torch.cat(parts, dim=1)


def split_matrix(module: nn.Module, matrix: Tensor) -> dict[str, Tensor]:
    """The inverse of `weight_matrix`: {'weight': ..., 'bias': ...} in the parameters' shapes."""
    weight = matrix[:, : module.weight[0].numel()].reshape(module.weight.shape)
    out = {"weight": weight}
    if module.bias is not None:
        out["bias"] = matrix[:, -1].reshape(module.bias.shape)
    return out


class LayerCapture:
    """Records each layer's `(a, d)` for a forward run inside `with capture:` and `capture.backward(loss)`.

    `a` is stored (detached) at the forward; `backward` differentiates the loss with respect to the layers'
    outputs only, which skips the weight-gradient products. Hooks exist only inside the `with` block, so
    copies of the model (`copy.deepcopy`) never carry them.
    """

    def __init__(self, layers: dict[str, nn.Module]):
        self.layers = layers
        self.inputs: dict[str, Tensor] = {}
        self.outputs: dict[str, Tensor] = {}
        self.grads: dict[str, Tensor] = {}
        self._handles: list = []

    def __enter__(self) -> Self:
        self.inputs.clear()
        self.outputs.clear()
        self.grads.clear()
        for name, module in self.layers.items():
            self._handles.append(module.register_forward_hook(self._forward_hook(name)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _forward_hook(self, name: str):
        def hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
            self.inputs[name] = self._layer_input(name, module, inputs[0].detach())
            if output.requires_grad:
                self.outputs[name] = output

        return hook

    def _layer_input(self, name: str, module: nn.Module, x: Tensor) -> Tensor:
        """What is recorded of a layer's input `x` (here `a`)."""
        return input_patches(module, x)

    def _output_grad(self, name: str, module: nn.Module, grad: Tensor) -> Tensor:
        """What is recorded of the gradient of the loss with respect to a layer's output (here `d`)."""
        return output_grads(module, grad)

    def backward(self, loss: Tensor) -> None:
        """Differentiate `loss` with respect to the recorded layer outputs only (no weight gradients)."""
        names = list(self.outputs)
        grads = torch.autograd.grad(loss, [self.outputs[n] for n in names], allow_unused=True)
        for name, grad in zip(names, grads):
            if grad is not None:
                self.grads[name] = self._output_grad(name, self.layers[name], grad.detach())
        self.outputs.clear()

    def pairs(self) -> Iterator[tuple[str, Tensor, Tensor]]:
        """(name, a, d) of every layer that saw both a forward and a backward."""
        for name in self.layers:
            if name in self.inputs and name in self.grads:
                yield name, self.inputs[name], self.grads[name]


@contextlib.contextmanager
def capture(model: nn.Module, layers: dict[str, nn.Module] | None = None) -> Iterator[LayerCapture]:
    with LayerCapture(supported_layers(model) if layers is None else layers) as recorder:
        yield recorder
