"""The param-group policy: which of a model's parameters an optimizer treats how.

`build_param_groups(model, optimizer_name, no_decay)` returns the list of param-group dicts to pass to the
optimizer in place of `model.parameters()`:

- **No weight decay on biases and normalisation layers** (`optim.no_decay=[bias,norm]`). Decaying a bias
  or a normalisation gain towards zero regularises nothing useful (the scale of a normalised layer does not
  change its function) and is commonly switched off ("no bias decay": He et al. 2019, "Bag of Tricks for
  Image Classification with Convolutional Neural Networks", arXiv:1812.01187, section 3.1). `bias` selects
  every parameter whose own name starts with `bias` (`bias`, and a recurrent layer's `bias_ih_l0`,
  `bias_hh_l0`); `norm` selects every parameter of a normalisation layer (`NORM_LAYERS`: batch, instance,
  layer, group and RMS norm). They go to a second group with `weight_decay=0.0`.
- **Muon's split** (optimizer `muon`): Muon is for the 2-D weights of hidden layers; embeddings, the output
  layer, biases and normalisation gains go to its AdamW fallback (Jordan 2024,
  https://kellerjordan.github.io/posts/muon/, and `torch.optim.Muon`'s documentation). The output layer is
  the last `nn.Linear` registered in the model, which is the classifier or readout of every optimlab model.
  Convolution filters (4-D) go to AdamW too, since `torch.optim.Muon` takes 2-D parameters only.

With neither (the default), the result is one group holding `model.parameters()` in order, so the
optimizer computes exactly what `optimizer(model.parameters())` does. Shared parameters appear once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from torch import nn

from optimlab.errors import ConfigError

NO_DECAY_CHOICES = ("bias", "norm")

NORM_LAYERS: tuple[type[nn.Module], ...] = (
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm,
    nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d,
    nn.LayerNorm, nn.GroupNorm, nn.RMSNorm,
)  # fmt: skip

EMBEDDINGS: tuple[type[nn.Module], ...] = (nn.Embedding, nn.EmbeddingBag)


def check_no_decay(value: Any, optimizer_name: str, key: str = "optim.no_decay") -> list[str]:
    """`value` as a list of distinct choices in `NO_DECAY_CHOICES` order; a ConfigError naming `key` if it
    is not a list of them, or if the optimizer has no weight decay to exclude anything from."""
    from optimlab.optim.registry import optimizer_arguments

    choices = ", ".join(NO_DECAY_CHOICES)
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"config key {key!r}: expected a list of {choices}, got {value!r}")
    unknown = [v for v in value if v not in NO_DECAY_CHOICES]
    if unknown:
        raise ConfigError(f"config key {key!r}: {unknown[0]!r} is not one of {choices}")
    if value and "weight_decay" not in optimizer_arguments(optimizer_name):
        raise ConfigError(f"config key {key!r}: optimizer {optimizer_name!r} has no weight_decay to exclude from")
    return [c for c in NO_DECAY_CHOICES if c in value]


def excluded_from_decay(name: str, module: nn.Module, no_decay: Iterable[str]) -> bool:
    """Whether the parameter `name` (its own name in `module`) is exempt from weight decay."""
    no_decay = set(no_decay)
    return ("bias" in no_decay and name.startswith("bias")) or ("norm" in no_decay and isinstance(module, NORM_LAYERS))


def owned_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter, nn.Module]]:
    """(own name, parameter, module holding it) in `model.parameters()` order, each parameter once."""
    seen: set[int] = set()
    owned = []
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if id(param) not in seen:
                seen.add(id(param))
                owned.append((name, param, module))
    return owned


def muon_parameters(model: nn.Module) -> set[int]:
    """The ids of the parameters Muon should train: 2-D, outside embeddings and the output layer."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    excluded = {id(p) for m in model.modules() if isinstance(m, EMBEDDINGS) for p in m.parameters()}
    if linears:
        excluded |= {id(p) for p in linears[-1].parameters()}  # a tied embedding/readout weight stays out
    return {id(p) for p in model.parameters() if p.ndim == 2 and id(p) not in excluded}


def build_param_groups(model: nn.Module, optimizer_name: str, no_decay: Sequence[str] = ()) -> list[dict[str, Any]]:
    """The optimizer's param groups for `model` under the policy above (empty groups left out).

    Groups hold plain keys only (`params`, and `weight_decay=0.0` / `use_muon` where they apply), so
    the optimizer's own defaults and `optim.*` arguments fill in the rest.
    """
    from optimlab.optim.muon import MuonWithAdamW
    from optimlab.optim.registry import get_optimizer_class

    no_decay = check_no_decay(list(no_decay), optimizer_name)
    cls = get_optimizer_class(optimizer_name)
    split_muon = isinstance(cls, type) and issubclass(cls, MuonWithAdamW)
    owned = owned_parameters(model)
    if not no_decay and not split_muon:
        return [{"params": [param for _, param, _ in owned]}]
    muon = muon_parameters(model) if split_muon else set()
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, param, module in owned:
        key = (id(param) in muon, excluded_from_decay(name, module, no_decay))
        groups.setdefault(key, []).append(param)
    result = []
    for use_muon in (True, False):
        for exempt in (False, True):
            params = groups.get((use_muon, exempt))
            if params:
                group: dict[str, Any] = {"params": params}
                if exempt:
                    group["weight_decay"] = 0.0
                if split_muon:
                    group["use_muon"] = use_muon
                result.append(group)
    return result
