"""Shared fixtures for the task tests: one data directory per session, the shared data folder."""

from __future__ import annotations

from pathlib import Path

import pytest

# CI clones the repository with shared/ beside it: <clone>/../shared/data.
SHARED_DATA = (Path(__file__).parents[2] / "../shared/data").resolve()


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """A data directory shared by the session (generated MNIST-1D is cached here once)."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Tests never download: any attempt fails loudly instead of reaching the network."""

    def refuse(*args, **kwargs):
        raise OSError("network access is disabled in tests")

    monkeypatch.setattr("urllib.request.urlopen", refuse)
