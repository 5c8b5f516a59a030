import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import toy_task  # noqa: E402,F401  (registers the "toy" task)

TOY_TASK_FILE = str(Path(__file__).parent / "toy_task.py")


@pytest.fixture
def toy_overrides(tmp_path):
    return [
        "task=toy", "task.batch_size=16", "optim=sgd", "optim.lr=0.1", "optim.momentum=0.9",
        "train.steps=40", "train.log_every=5", "train.eval_every=10", "train.checkpoint_every=10",
        f"run_dir={tmp_path / 'run'}", "log.progress=never",
    ]


@pytest.fixture
def plugin_env(monkeypatch):
    """Environment for `python -m optimlab` subprocesses that need the toy task."""
    import os

    env = dict(os.environ, OPTIMLAB_PLUGINS=TOY_TASK_FILE, OMP_NUM_THREADS="1")
    return env
