"""MNIST-1D and digits: splits, determinism, caching, options."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from optimlab.errors import ConfigError
from optimlab.tasks import build_task
from optimlab.tasks.data import cache_key

SMALL = ["mnist1d_logreg", "mnist1d_mlp", "mnist1d_cnn", "digits_logreg", "digits_mlp", "digits_cnn"]


def _rows(split) -> set[bytes]:
    return {row.numpy().tobytes() for row in split.tensors[0]}


@pytest.mark.parametrize("name", SMALL)
def test_splits_are_disjoint_and_typed(name, data_dir):
    task = build_task(name, {}, data_dir)
    train, val, test = _rows(task.train), _rows(task.val), _rows(task.test)
    assert train and val and test
    assert not train & val and not train & test and not val & test
    for split in (task.train, task.val, task.test):
        x, y = split.tensors
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert set(y.unique().tolist()) <= set(range(10))


def test_mnist1d_sizes_follow_the_generator(data_dir):
    task = build_task("mnist1d_mlp", {}, data_dir)
    assert (len(task.train), len(task.val), len(task.test)) == (3600, 400, 1000)
    assert task.train.tensors[0].shape[1:] == (40,)
    assert task.main_metric == "accuracy" and task.higher_is_better


def test_mnist1d_matches_the_mnist1d_generator(data_dir):
    """The cached arrays are exactly what mnist1d.data.make_dataset produces for the same arguments."""
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples, args.seed = 500, 3
    reference = make_dataset(args)
    task = build_task("mnist1d_logreg", {"num_samples": 500, "data_seed": 3, "val_fraction": 0.25}, data_dir)
    x = torch.cat([task.train.tensors[0], task.val.tensors[0]])
    assert len(x) == len(reference["x"]) == 400
    assert _rows(task.train) | _rows(task.val) == {r.astype(np.float32).tobytes() for r in reference["x"]}
    torch.testing.assert_close(task.test.tensors[0], torch.as_tensor(reference["x_test"], dtype=torch.float32))


def test_mnist1d_generation_leaves_global_generators_alone(tmp_path):
    random.seed(1), np.random.seed(1)
    expected = (random.random(), np.random.rand())
    random.seed(1), np.random.seed(1)
    build_task("mnist1d_logreg", {"num_samples": 200}, tmp_path)
    assert (random.random(), np.random.rand()) == expected


def test_mnist1d_cache_is_written_once_and_reused(tmp_path, monkeypatch):
    options = {"num_samples": 200, "data_seed": 7}
    first = build_task("mnist1d_mlp", options, tmp_path)
    files = list((tmp_path / "mnist1d").glob("*.npz"))
    assert len(files) == 1 and not list((tmp_path / "mnist1d").glob("*.tmp"))

    import mnist1d.data

    def fail(*args, **kwargs):
        raise AssertionError("regenerated although cached")

    monkeypatch.setattr(mnist1d.data, "make_dataset", fail)
    second = build_task("mnist1d_mlp", options, tmp_path)
    for a, b in zip(first.train.tensors + first.test.tensors, second.train.tensors + second.test.tensors):
        assert torch.equal(a, b)
    # Other arguments are another file (and need the generator).
    with pytest.raises(AssertionError, match="regenerated"):
        build_task("mnist1d_mlp", {"num_samples": 200, "data_seed": 8}, tmp_path)


def test_corrupt_cache_is_regenerated(tmp_path):
    options = {"num_samples": 200}
    reference = build_task("mnist1d_logreg", options, tmp_path)
    (path,) = (tmp_path / "mnist1d").glob("*.npz")
    path.write_bytes(b"not an npz file")
    again = build_task("mnist1d_logreg", options, tmp_path)
    assert torch.equal(again.train.tensors[0], reference.train.tensors[0])


def test_cache_key_depends_on_arguments():
    assert cache_key("mnist1d", {"a": 1, "b": 2}) == cache_key("mnist1d", {"b": 2, "a": 1})
    assert cache_key("mnist1d", {"a": 1}) != cache_key("mnist1d", {"a": 2})
    assert cache_key("mnist1d", {"a": 1}) != cache_key("other", {"a": 1})


@pytest.mark.parametrize("name", ["mnist1d_mlp", "digits_cnn"])
def test_data_is_independent_of_the_torch_seed_but_the_model_is_not(name, data_dir):
    torch.manual_seed(0)
    a = build_task(name, {}, data_dir)
    torch.manual_seed(1)
    b = build_task(name, {}, data_dir)
    torch.manual_seed(0)
    c = build_task(name, {}, data_dir)
    for split in ("train", "val", "test"):
        for x, y in zip(getattr(a, split).tensors, getattr(b, split).tensors):
            assert torch.equal(x, y)
    pa, pb, pc = (torch.nn.utils.parameters_to_vector(t.model.parameters()) for t in (a, b, c))
    assert not torch.equal(pa, pb) and torch.equal(pa, pc)


def test_data_seed_and_val_fraction_change_the_split(data_dir):
    base = build_task("digits_mlp", {}, data_dir)
    other = build_task("digits_mlp", {"data_seed": 1}, data_dir)
    assert _rows(base.test) != _rows(other.test)
    bigger = build_task("digits_mlp", {"val_fraction": 0.3}, data_dir)
    assert len(bigger.val) == round(0.3 * (len(base.train) + len(base.val)))
    assert _rows(bigger.test) == _rows(base.test)


def test_train_samples_limits_only_the_training_set(data_dir):
    base = build_task("digits_logreg", {}, data_dir)
    small = build_task("digits_logreg", {"train_samples": 100}, data_dir)
    assert len(small.train) == 100 and _rows(small.train) <= _rows(base.train)
    assert _rows(small.val) == _rows(base.val)


def test_digits_are_standardised_with_training_statistics(data_dir):
    task = build_task("digits_cnn", {}, data_dir)
    x = torch.cat([task.train.tensors[0], task.val.tensors[0]])
    assert x.shape[1:] == (1, 8, 8)
    assert abs(float(x.mean())) < 1e-4 and abs(float(x.std()) - 1) < 1e-3


@pytest.mark.parametrize(
    ("name", "options", "match"),
    [
        ("mnist1d_mlp", {"val_fraction": 1.5}, "val_fraction"),
        ("mnist1d_mlp", {"width": 0}, "width"),
        ("mnist1d_mlp", {"activation": "swish"}, "swish"),
        ("digits_mlp", {"depth": -1}, "depth"),
        ("digits_cnn", {"channels": [8, 8, 8, 8]}, "too small"),
        ("digits_logreg", {"test_fraction": 0.0}, "test_fraction"),
        ("mnist1d_logreg", {"num_samples": 10}, "num_samples"),
    ],
)
def test_bad_options_are_config_errors(name, options, match, data_dir):
    with pytest.raises(ConfigError, match=match):
        build_task(name, options, data_dir)


def test_shipped_digits_equal_scikit_learns():
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    from optimlab.tasks.digits import digits_arrays

    images, target = digits_arrays()
    bunch = sklearn_datasets.load_digits()
    assert images.shape == (1797, 8, 8) and np.array_equal(images.astype(np.float64), bunch.images)
    assert np.array_equal(target.astype(np.int64), bunch.target)
