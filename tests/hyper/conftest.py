import sys
from pathlib import Path

import pytest
import torch

# Makes `hyper_helpers` (shared fixtures of the hypergradient tests) importable.
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(autouse=True)
def _one_thread():
    """These tests use tiny tensors: intra-op threads only add barrier waits on a loaded machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
