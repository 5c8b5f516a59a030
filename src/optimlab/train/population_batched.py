"""A population's loss without `torch.func.vmap`, for MLPs and 2-D ConvNets.

`vmap` batches any model over the members' stacked parameters, but it wraps every operation and
decomposes some (cross-entropy goes through its reference decomposition), which for a small MLP costs as
much as the matrix products themselves. For a model built only of `nn.Sequential`, `nn.Flatten`,
`nn.Linear` and element-wise activations (the MLPs of `optimlab.tasks.models.mlp`), the batched forward is
written out instead: each linear layer is one `torch.baddbmm` of the members' stacked inputs and weights
(each member's slice is the matrix product and bias of its stand-alone `nn.functional.linear`, the same
kernel on the same operands), and a classification loss is one cross-entropy over all members' examples,
summed per member. The gradients are those of the vmapped loss bit for bit (tested), and so each
member's stand-alone gradients; the summed loss values may differ in the last bits (another summation
order), which only the logged training loss sees.

2-D ConvNets (`nn.Conv2d` and `nn.MaxPool2d` besides the above; `optimlab.tasks.models.convnet.ConvNet2d`)
are written out too, because on a CPU their populations lost to one run at a time through `vmap`: each
member's convolution is its own stand-alone call (vmap's grouped convolution costs up to twice as much on a
CPU, a 1-channel input, and sums in another order), and the max-pool takes all members' images as one batch
through a faster layout (`_MaxPool2d`). Each member's gradients are its stand-alone ones bit for bit
(tested). 1-D ConvNets stay with vmap, whose grouped 1-D convolutions are the faster ones there.

Anything else (another module, a task with its own forward, a buffer, half-precision parameters, a linear
layer on inputs that are not one row per example) returns None or raises `Unsupported` on the first batch, and the population
uses `vmap`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import Tensor, nn

from optimlab.tasks.base import Task, classification_loss, default_forward
from optimlab.tasks.models.convnet import ConvNet2d
from optimlab.tasks.models.mlp import MLP

# Modules applied to each element on its own: the member dimension in front changes nothing.
_ELEMENTWISE = (nn.ReLU, nn.Tanh, nn.Sigmoid, nn.GELU, nn.SiLU, nn.LeakyReLU, nn.ELU, nn.Softplus, nn.Identity)

Layer = Callable[[dict[str, Tensor], Tensor], Tensor]
BatchedLoss = Callable[[dict[str, Tensor], tuple[Tensor, ...]], tuple[Tensor, Tensor, Tensor]]


class Unsupported(Exception):
    """This model or batch has no written-out batched forward: use vmap."""


def batched_loss(task: Task, template: nn.Module) -> BatchedLoss | None:
    """The members' losses without vmap, or None when the task or model is not of the supported kind.

    The function takes the stacked tensors by name (trainable and frozen) and the stacked batch, and returns
    (each member's loss times 1/count, as the stand-alone backward is seeded; each member's loss sum,
    detached; each member's count)."""
    if task.forward is not default_forward or next(template.buffers(), None) is not None:
        return None
    if any(p.dtype not in (torch.float32, torch.float64) for p in template.parameters()):
        return None  # half precision: the batched and the stand-alone products may round differently
    names = {id(p): name for name, p in template.named_parameters()}
    try:
        layers = _in_place(_layers(template, names))
    except Unsupported:
        return None
    scales: dict[tuple, Tensor] = {}

    def loss(tensors: dict[str, Tensor], batch: tuple[Tensor, ...]) -> tuple[Tensor, Tensor, Tensor]:
        if len(batch) != 2:
            raise Unsupported("the model takes one input")
        outputs = batch[0]
        for layer in layers:
            outputs = layer(tensors, outputs)
        loss_sums, counts = _member_losses(task, outputs, batch)
        if loss_sums.dtype in (torch.float16, torch.bfloat16):
            loss_sums = loss_sums.float()
        # Times 1/count as the vmapped loss computes it (the same operations on the same count), computed
        # once per distinct count.
        key = (tuple(counts.tolist()), loss_sums.dtype, loss_sums.device) if counts.is_cpu else None
        scale = scales.get(key) if key is not None else None
        if scale is None:
            scale = (1.0 / counts).to(loss_sums.dtype)
            if key is not None:
                scales[key] = scale
        return loss_sums * scale, loss_sums.detach(), counts

    return loss


def _member_losses(task: Task, outputs: Tensor, batch: tuple[Tensor, ...]) -> tuple[Tensor, Tensor]:
    members = outputs.shape[0]
    if task.loss is classification_loss and outputs.dim() == 3 and batch[-1].dim() == 2:
        targets = batch[-1]
        count = torch.as_tensor(targets[0].numel(), device=outputs.device)
        if _classes_last_is_slow(outputs.shape[-1], outputs.dtype, outputs.device.type):
            if outputs.requires_grad:  # the logits' gradient in their own layout, as the products before expect
                outputs.register_hook(torch.Tensor.contiguous)
            per_example = nn.functional.cross_entropy(outputs.transpose(1, 2), targets, reduction="none")
            return per_example.sum(dim=1), count.expand(members)
        per_example = nn.functional.cross_entropy(outputs.flatten(0, 1), targets.flatten(), reduction="none")
        return per_example.view(members, -1).sum(dim=1), count.expand(members)

    def member(out: Tensor, rows: tuple[Tensor, ...]) -> tuple[Tensor, Tensor]:
        loss_sum, count = task.loss(out, rows)
        return loss_sum, torch.as_tensor(count, device=loss_sum.device)

    return torch.func.vmap(member)(outputs, batch)


@functools.cache
def _classes_last_is_slow(classes: int, dtype: torch.dtype, device: str) -> bool:
    """Whether the cross-entropy is better taken over (members, classes, rows), checked once per class count.

    torch's CPU log-softmax over the last dimension reduces a row narrower than one vector register
    (fewer than 16 float32 classes with AVX-512, 8 with AVX2) one element at a time, as its kernel over
    another dimension does for every row: the same values bit for bit, 8x slower per row for 10 classes.
    Wider rows are reduced in vector lanes, in another order. So the classes go to dimension 1 only when a
    probe (random logits at three scales, loss and gradient) finds the two layouts bit-identical."""
    if device != "cpu":
        return False
    generator = torch.Generator().manual_seed(classes)
    for scale in (0.1, 3.0, 30.0):
        logits = (torch.randn(2, 64, classes, generator=generator) * scale).to(dtype).requires_grad_()
        targets = torch.randint(0, classes, (2, 64), generator=generator)
        weights = torch.rand(2, 64, generator=generator).to(dtype)
        rows = nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none").view(2, -1)
        moved = nn.functional.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
        if not torch.equal(rows, moved):
            return False
        by_rows, by_moved = (torch.autograd.grad((loss * weights).sum(), logits)[0] for loss in (rows, moved))
        if not torch.equal(by_rows, by_moved):
            return False
    return True


def _layers(module: nn.Module, names: dict[int, str]) -> list[tuple[Layer, nn.Module]]:
    """The module's forward as a list of batched layers, each with the module it stands for; `Unsupported`
    for anything not written out here."""
    if type(module).forward is nn.Sequential.forward:
        return [layer for child in module for layer in _layers(child, names)]
    if isinstance(module, MLP) and type(module).forward is MLP.forward:
        return _layers(module.layers, names)
    if isinstance(module, ConvNet2d) and type(module).forward is ConvNet2d.forward:
        return _layers(module.features, names) + _layers(module.classifier, names)
    if type(module) is nn.Flatten:
        start, end = (d + 1 if d >= 0 else d for d in (module.start_dim, module.end_dim))  # after the member dim
        return [(lambda tensors, x: x.flatten(start, end), module)]
    if type(module) is nn.Linear:
        weight, bias = _own_parameters(module, names)
        return [(lambda tensors, x: _linear(x, tensors[weight], None if bias is None else tensors[bias]), module)]
    if type(module) is nn.Conv2d:
        if module.padding_mode != "zeros":
            raise Unsupported(f"a convolution with padding_mode={module.padding_mode!r}")
        weight, bias = _own_parameters(module, names)
        return [(lambda tensors, x: _conv2d(module, x, tensors[weight], None if bias is None else tensors[bias]),
                 module)]
    if type(module) is nn.MaxPool2d and not module.return_indices:
        return [(lambda tensors, x: _max_pool2d(module, x), module)]
    if type(module) in _ELEMENTWISE and not list(module.parameters()):
        return [(lambda tensors, x: module(x), module)]
    raise Unsupported(type(module).__name__)


def _own_parameters(module: nn.Module, names: dict[int, str]) -> tuple[str, str | None]:
    """The names of a layer's weight and bias (None: no bias) in the model; `Unsupported` for parameters that
    are not the model's own."""
    weight = names.get(id(module.weight))
    bias = None if module.bias is None else names.get(id(module.bias))
    if weight is None or (module.bias is not None and bias is None):
        raise Unsupported(f"a {type(module).__name__} whose parameters are not the model's own")
    return weight, bias


# Activations applied in place to a linear layer's or convolution's output, a fresh tensor that its backward
# does not need (baddbmm's, conv2d's and stack's gradients read their inputs): no second tensor of
# activations per layer. The values are those of the out-of-place function (the same kernel), and so are
# the gradients (from the result).
_IN_PLACE: dict[type[nn.Module], Callable[[Tensor], Tensor]] = {
    nn.ReLU: torch.relu_, nn.Tanh: torch.tanh_, nn.Sigmoid: torch.sigmoid_,
}


def _in_place(layers: list[tuple[Layer, nn.Module]]) -> list[Layer]:
    return [_applied(_IN_PLACE[type(module)])
            if type(module) in _IN_PLACE and i > 0 and type(layers[i - 1][1]) in (nn.Linear, nn.Conv2d) else layer
            for i, (layer, module) in enumerate(layers)]


def _applied(activation: Callable[[Tensor], Tensor]) -> Layer:
    return lambda tensors, x: activation(x)


def _conv2d(module: nn.Conv2d, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """Each member's own convolution, one after another: (members, rows, channels, height, width), each
    member's slice the stand-alone call on its rows (the same kernel on the same operands)."""
    if x.dim() != 5:
        raise Unsupported("a convolution on inputs that are not one image per row")
    # unbind, not indexing: its backward stacks the members' gradients at once, where each index's backward
    # would fill a zero tensor of all members.
    biases = [None] * x.shape[0] if bias is None else bias.unbind()
    return torch.stack([nn.functional.conv2d(rows, w, b, module.stride, module.padding, module.dilation, module.groups)
                        for rows, w, b in zip(x.unbind(), weight.unbind(), biases)])


def _max_pool2d(module: nn.MaxPool2d, x: Tensor) -> Tensor:
    """The max-pool of all members' images as one batch (it pools each channel of each image on its own)."""
    if x.dim() != 5:
        raise Unsupported("a max-pool on inputs that are not one image per row")
    images = x.flatten(0, 1)
    if images.is_cpu:
        pooled = _MaxPool2d.apply(images, module.kernel_size, module.stride, module.padding, module.dilation,
                                  module.ceil_mode)
    else:  # the channels-last forward is a CPU kernel's remedy (and its ties are checked on the CPU only)
        pooled = module(images)
    return pooled.unflatten(0, x.shape[:2])


class _MaxPool2d(torch.autograd.Function):
    """`max_pool2d` forward on a channels-last copy, backward by torch's own kernel on the indices.

    torch's CPU max-pool over (N, C, H, W) takes each output element on its own (~25 ns each on 8x8 images);
    over channels-last it takes a vector of channels at a time, 3x faster on digits_cnn's images. Both keep
    the first maximum of each window, so the values and indices are those of the standard layout (tested),
    and the backward is the one `max_pool2d` runs on them: the same gradient bit for bit. First-order only,
    as the population's gradient needs."""

    @staticmethod
    def forward(ctx, x, kernel, stride, padding, dilation, ceil_mode):
        last = x.contiguous(memory_format=torch.channels_last)
        values, indices = torch.ops.aten.max_pool2d_with_indices(last, kernel, stride, padding, dilation, ceil_mode)
        ctx.save_for_backward(x, indices.contiguous())
        ctx.settings = (kernel, stride, padding, dilation, ceil_mode)
        return values.contiguous()

    @staticmethod
    def backward(ctx, grad):
        x, indices = ctx.saved_tensors
        return (torch.ops.aten.max_pool2d_with_indices_backward(grad.contiguous(), x, *ctx.settings, indices),
                None, None, None, None, None)


def _linear(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """Each member's `nn.functional.linear` on its rows: (members, rows, in) -> (members, rows, out)."""
    if x.dim() != 3:  # a stand-alone linear on more than one dimension of rows folds them another way
        raise Unsupported("a linear layer on inputs with more than one dimension of rows")
    if bias is None:
        return torch.bmm(x, weight.transpose(1, 2))
    return torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))
