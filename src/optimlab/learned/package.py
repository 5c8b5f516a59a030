"""A learned optimizer on disk: a directory holding `config.json` and `weights.safetensors`, no pickle.

    DIR/config.json            {"format": "optimlab.learned/1", "policy": "rnnprop", "hparams": {...},
                                "deploy": {"warmup_steps": 0, "warmup_lr": 0.05}, "metadata": {...}}
    DIR/weights.safetensors    the policy's parameters by name (safetensors: tensors only, never code)

`path` arguments accept such a directory or the name of an optimizer shipped with optimlab (a folder in
`optimlab/learned/pretrained/`). The weights file's sha256 identifies the optimizer: runs record it, and a
run whose recorded sha256 does not match the file refuses to start.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from optimlab.atomic import atomic_write_bytes
from optimlab.errors import ConfigError
from optimlab.learned.policies import Policy, build_policy
from optimlab.rundir import write_json

FORMAT = "optimlab.learned/1"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.safetensors"
PRETRAINED_DIR = Path(__file__).resolve().parent / "pretrained"


def save(
    policy: Policy, path: str | Path, *, warmup_steps: int = 0, warmup_lr: float = 0.05, metadata: dict | None = None
) -> Path:
    """Write `policy` as a learned-optimizer directory (weights first, so config.json marks a complete save)."""
    path = Path(path)
    tensors = {name: p.detach().cpu().contiguous() for name, p in policy.named_parameters()}
    # No safetensors metadata: it is a hash map whose serialised order varies between processes, and the
    # file's bytes (its sha256) must depend on the weights alone.
    blob = save_safetensors(tensors)
    atomic_write_bytes(path / WEIGHTS_FILE, lambda file: file.write(blob))
    config = {
        "format": FORMAT,
        "policy": policy.name,
        "hparams": policy.hparams,
        "deploy": {"warmup_steps": int(warmup_steps), "warmup_lr": float(warmup_lr)},
        "metadata": metadata or {},
    }
    write_json(path / CONFIG_FILE, config)
    return path


def available_pretrained() -> list[str]:
    if not PRETRAINED_DIR.is_dir():
        return []
    return sorted(p.name for p in PRETRAINED_DIR.iterdir() if (p / CONFIG_FILE).is_file())


def resolve_path(path_or_name: str | Path) -> Path:
    """A learned-optimizer directory: `path_or_name` itself, or the shipped optimizer of that name."""
    path = Path(path_or_name).expanduser()
    if (path / CONFIG_FILE).is_file():
        return path
    shipped = PRETRAINED_DIR / str(path_or_name)
    if str(path_or_name) and "/" not in str(path_or_name) and (shipped / CONFIG_FILE).is_file():
        return shipped
    names = available_pretrained()
    hint = f"; shipped optimizers: {', '.join(names)}" if names else ""
    raise ConfigError(
        f"optim.path: {str(path_or_name)!r} is neither a learned-optimizer directory (with {CONFIG_FILE}) nor a shipped name{hint}"
    )


def weights_sha256(path_or_name: str | Path) -> str:
    """sha256 of the weights file: the learned optimizer's identity."""
    return hashlib.sha256((resolve_path(path_or_name) / WEIGHTS_FILE).read_bytes()).hexdigest()


class LearnedOptimizerSpec:
    """A loaded learned optimizer: its policy, config and sha256; `.optimizer(params)` builds a torch optimizer."""

    def __init__(self, policy: Policy, config: dict[str, Any], sha256: str, path: Path | None = None):
        self.policy, self.config, self.sha256, self.path = policy, config, sha256, path

    def optimizer(
        self, params, lr: float = 1.0, warmup_steps: int | None = None, warmup_lr: float | None = None, **kwargs: Any
    ):
        """A `torch.optim.Optimizer` running this policy on `params` (any model); `lr` multiplies every step."""
        from optimlab.learned.optimizer import LearnedOptimizer

        deploy = self.config.get("deploy", {})
        return LearnedOptimizer(
            params,
            self.policy,
            lr=lr,
            warmup_steps=deploy.get("warmup_steps", 0) if warmup_steps is None else warmup_steps,
            warmup_lr=deploy.get("warmup_lr", 0.05) if warmup_lr is None else warmup_lr,
            **kwargs,
        )

    __call__ = optimizer

    def __repr__(self) -> str:
        return (
            f"LearnedOptimizerSpec(policy={self.policy.name!r}, sha256={self.sha256[:12]}..., path={str(self.path)!r})"
        )


def load(path_or_name: str | Path, *, sha256: str | None = None) -> LearnedOptimizerSpec:
    """Load a learned optimizer directory (or shipped name); `sha256`, when given, must match the weights."""
    path = resolve_path(path_or_name)
    try:
        config = json.loads((path / CONFIG_FILE).read_text())
    except ValueError as error:
        raise ConfigError(f"optim.path: {path / CONFIG_FILE} is not valid JSON: {error}") from None
    if config.get("format") != FORMAT:
        raise ConfigError(f"optim.path: {path / CONFIG_FILE} has format {config.get('format')!r}, expected {FORMAT!r}")
    blob = (path / WEIGHTS_FILE).read_bytes()
    digest = hashlib.sha256(blob).hexdigest()
    if sha256 is not None and sha256 != digest:
        raise ConfigError(
            f"optim.sha256: the weights in {path} have sha256 {digest[:12]}..., not the recorded {sha256[:12]}..."
        )
    policy = policy_from_config(config)
    load_weights(policy, load_safetensors(blob), where=str(path / WEIGHTS_FILE))
    return LearnedOptimizerSpec(policy.eval().requires_grad_(False), config, digest, path)


def policy_from_config(config: dict[str, Any]) -> Policy:
    return build_policy(config["policy"], **config.get("hparams", {}))


def load_weights(policy: Policy, tensors: dict[str, torch.Tensor], where: str) -> None:
    expected = dict(policy.named_parameters())
    if set(tensors) != set(expected):
        missing, extra = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
        raise ConfigError(
            f"optim.path: {where} does not match policy {policy.name!r} (missing {missing}, unexpected {extra})"
        )
    with torch.no_grad():
        for name, param in expected.items():
            if tensors[name].shape != param.shape:
                raise ConfigError(
                    f"optim.path: {where}: {name} has shape {tuple(tensors[name].shape)}, expected {tuple(param.shape)}"
                )
            param.copy_(tensors[name])
