"""What a run records about itself that needs torch: the parameters' hash, versions, the git commit.

The run directory's files, statuses and records are `optimlab.rundir`'s (docs/run-directory.md).
"""

from __future__ import annotations

import functools
import hashlib
import platform
import subprocess
from pathlib import Path

import torch
from torch import nn

import optimlab


def params_sha256(model: nn.Module) -> str:
    """sha256 of the parameters' raw bytes, in name order: equal hashes mean bit-identical parameters."""
    digest = hashlib.sha256()
    for name, param in sorted(model.named_parameters()):
        digest.update(name.encode())
        digest.update(param.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def versions() -> dict[str, str]:
    return {"optimlab": optimlab.__version__, "torch": torch.__version__, "python": platform.python_version()}


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the optimlab checkout, when it runs from one."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None
