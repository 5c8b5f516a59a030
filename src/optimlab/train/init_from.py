"""`train.init_from=PATH`: start a run from another model's weights (only the weights).

PATH is an optimlab checkpoint (its `model` entry is used) or a file holding a plain `state_dict` (also
under a `state_dict` key, as many training scripts save it; DDP's `module.` prefixes are removed). It is
read with `torch.load(weights_only=True)`, so the file cannot run code. Loading is not strict: keys the
model has and the file lacks keep their fresh initialisation, keys only the file has are ignored, and both
lists are reported on stderr; a tensor whose shape differs from the model's is an error. Optimizer,
schedule and progress start fresh: this is fine-tuning or warm-starting, not resuming (`--restore` is).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

from optimlab.errors import ConfigError
from optimlab.train.checkpoint import CheckpointError, read_checkpoint

KEY = "train.init_from"


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"config key '{KEY}': file not found: {path}")
    try:
        saved = read_checkpoint(path)  # weights_only; checked against its .sha256 file when it has one
    except CheckpointError as error:
        raise ConfigError(f"config key '{KEY}': {path} {error}") from None
    if isinstance(saved, dict) and isinstance(saved.get("model"), dict):
        saved = saved["model"]  # an optimlab checkpoint
    elif isinstance(saved, dict) and isinstance(saved.get("state_dict"), dict):
        saved = saved["state_dict"]
    if not isinstance(saved, dict) or not all(isinstance(v, torch.Tensor) for v in saved.values()):
        raise ConfigError(f"config key '{KEY}': {path} holds neither a state_dict nor an optimlab checkpoint")
    if saved and all(k.startswith("module.") for k in saved):
        saved = {k[len("module.") :]: v for k, v in saved.items()}
    return saved


def init_from(model: nn.Module, path: str | Path) -> tuple[list[str], list[str]]:
    """Load the weights at `path` into `model`; returns (missing keys, unexpected keys), also printed."""
    state = read_state_dict(path)
    own = model.state_dict()
    for key, value in state.items():
        if key in own and own[key].shape != value.shape:
            raise ConfigError(
                f"config key '{KEY}': {key} has shape {tuple(value.shape)} in {path}, the model's is {tuple(own[key].shape)}"
            )
    result = model.load_state_dict(state, strict=False)
    loaded = len(state) - len(result.unexpected_keys)
    print(
        f"optimlab: {KEY}={path}: loaded {loaded} tensors; missing (kept fresh): {list(result.missing_keys)}; "
        f"unexpected (ignored): {list(result.unexpected_keys)}",
        file=sys.stderr,
    )
    return list(result.missing_keys), list(result.unexpected_keys)
