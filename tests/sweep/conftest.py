import sys
from pathlib import Path

import pytest

from optimlab.sweep.spec import parse_spec

sys.path.insert(0, str(Path(__file__).parent))  # sweep_helpers


@pytest.fixture
def small_spec():
    """2 optimizers x 3 seeds of a cheap generated task: 6 runs."""
    return parse_spec({"name": "small", "base": {"train.steps": 20},
                       "grid": {"task": "logreg", "optim": ["sgd", "adam"]}, "seeds": 3})
