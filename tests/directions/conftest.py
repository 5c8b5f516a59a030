import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent.parent / "train"))
import toy_task  # noqa: F401  (registers the "toy" task)


@pytest.fixture
def toy_overrides(tmp_path):
    return [
        "task=toy", "task.batch_size=16", "optim=sgd", "optim.lr=0.1", "optim.momentum=0.9",
        "train.steps=40", "train.log_every=5", "train.eval_every=10", "train.checkpoint_every=10",
        f"run_dir={tmp_path / 'run'}", "log.progress=never",
    ]
