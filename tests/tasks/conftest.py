"""Shared fixtures for the task tests: one data directory per session, the shared data folder."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import torch

from tasks_formats_writers import write_fake_vision_data
from tasks_text_writers import write_multiwoz, write_ptb, write_snli, write_tiny_roberta, write_wikitext

# CI clones the repository with shared/ beside it: <clone>/../shared/data.
SHARED_DATA = (Path(__file__).parents[2] / "../shared/data").resolve()
SHAKESPEARE = SHARED_DATA / "tinyshakespeare.txt"

needs_shakespeare = pytest.mark.skipif(not SHAKESPEARE.exists(), reason=f"{SHAKESPEARE} not present")


@pytest.fixture(scope="session")
def vision_arrays(tmp_path_factory):
    """Small image datasets in their real formats under a session data directory, and their arrays."""
    data_dir = tmp_path_factory.mktemp("data")
    return data_dir, write_fake_vision_data(data_dir)


@pytest.fixture(scope="session")
def data_dir(vision_arrays) -> Path:
    """A data directory shared by the session: fake image files, Tiny Shakespeare (linked from shared/),
    and the MNIST-1D cache once generated."""
    data_dir = vision_arrays[0]
    if not (data_dir / "ptb").exists():  # small text corpora in their real formats
        write_ptb(data_dir / "ptb")
        write_wikitext(data_dir / "wikitext-2")
        write_wikitext(data_dir / "wikitext-103")
        write_snli(data_dir / "snli_1.0")
        write_multiwoz(data_dir / "multiwoz")
        if importlib.util.find_spec("transformers") is not None:
            write_tiny_roberta(data_dir / "roberta-base")
    if SHAKESPEARE.exists() and not (data_dir / SHAKESPEARE.name).exists():
        os.symlink(SHAKESPEARE, data_dir / SHAKESPEARE.name)
    return data_dir


@pytest.fixture(autouse=True)
def single_thread():
    """One intra-op thread: these tests run tiny models, and on a small shared machine OpenMP threads that
    wait for each other under contention make a tiny convolution up to 100x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Tests never download: any attempt fails loudly instead of reaching the network."""

    def refuse(*args, **kwargs):
        raise OSError("network access is disabled in tests")

    monkeypatch.setattr("urllib.request.urlopen", refuse)


# Tasks that need an optional library: every test parametrized by task `name` skips them without it.
NEEDS = {"multiwoz_roberta": "transformers"}


@pytest.fixture(autouse=True)
def _optional_library(request):
    callspec = getattr(request.node, "callspec", None)
    name = callspec.params.get("name") if callspec is not None else None
    if name in NEEDS:
        pytest.importorskip(NEEDS[name], reason=f"task {name} needs {NEEDS[name]}")
