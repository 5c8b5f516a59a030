"""MNIST-1D: loading cached data does not import the `mnist1d` package; the generator's arguments are its own."""

import sys

import numpy as np

from optimlab.tasks.mnist1d import GENERATOR_ARGS, MNIST1DOptions, load_mnist1d


def test_generator_args_are_the_packages_defaults():
    from mnist1d.data import get_dataset_args

    package = get_dataset_args(as_dict=True)
    package.pop("url", None)
    assert GENERATOR_ARGS == package


def test_cached_data_loads_without_the_package(tmp_path, monkeypatch):
    options = MNIST1DOptions(num_samples=100)
    generated = load_mnist1d(options, tmp_path)  # generates and caches
    monkeypatch.setitem(sys.modules, "mnist1d", None)  # any import of mnist1d now raises ImportError
    monkeypatch.setitem(sys.modules, "mnist1d.data", None)
    cached = load_mnist1d(options, tmp_path)
    assert generated.keys() == cached.keys()
    for name in generated:
        np.testing.assert_array_equal(generated[name], cached[name])
