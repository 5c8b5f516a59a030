import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "train"))
import toy_task  # noqa: F401  (registers the "toy" task: dropout)

TOY_TASK_FILE = str(Path(__file__).parents[1] / "train" / "toy_task.py")


@pytest.fixture
def plugin_env():
    """Environment for `python -m optimlab` subprocesses that need the toy task."""
    import os

    return dict(os.environ, OPTIMLAB_PLUGINS=TOY_TASK_FILE, OMP_NUM_THREADS="1")
