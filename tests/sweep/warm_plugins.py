"""Tasks for the warm-worker tests, loaded by runs through OPTIMLAB_PLUGINS.

`leaky` changes process-wide torch settings while it builds (a run forked by a warm worker must not pass
them on to the next run); `crashy` raises in its first forward.
"""

import random
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "train"))
from toy_task import ToyOptions, build_toy  # noqa: E402

from optimlab.tasks.registry import _TASKS, register_task  # noqa: E402


def build_leaky(options: ToyOptions, data_dir):
    task = build_toy(options, data_dir)
    torch.set_num_threads(2)
    torch.set_default_dtype(torch.float64)
    torch.use_deterministic_algorithms(True)
    random.seed(12345)
    torch.nn.Linear.forward_leak = True  # a module-level attribute a later run would see if state leaked
    return task


class Crash(torch.nn.Module):
    def forward(self, x):
        raise RuntimeError("crashy task: forward failed on purpose")


def build_crashy(options: ToyOptions, data_dir):
    task = build_toy(options, data_dir)
    task.model = torch.nn.Sequential(Crash(), task.model)
    return task


if "leaky" not in _TASKS:  # registered at import; tests/sweep/test_sweep_warm.py removes them afterwards
    register_task("leaky", options=ToyOptions, description="toy, changing process-wide settings")(build_leaky)
    register_task("crashy", options=ToyOptions, description="toy, raising in forward")(build_crashy)
