"""Image datasets: our readers on files written in the real formats; loading, normalising, splitting,
augmentation and the errors for missing files (no torchvision, no network)."""

from __future__ import annotations

import builtins
import pickle

import numpy as np
import pytest
import torch

from optimlab.errors import ConfigError
from optimlab.tasks import build_task
from optimlab.tasks.formats import read_cifar, read_idx, read_pickle, read_svhn
from optimlab.tasks.vision import DATASETS, random_crop_flip
from tasks_formats_writers import fake_images, write_cifar_batch, write_idx, write_svhn


@pytest.mark.parametrize("compress", [True, False])
def test_idx_reader_round_trips(tmp_path, compress):
    images = np.random.default_rng(0).integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    path = tmp_path / ("images.gz" if compress else "images")
    write_idx(path, images, compress)
    np.testing.assert_array_equal(read_idx(path), images)
    labels = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    write_idx(tmp_path / "labels", labels, compress=False)
    np.testing.assert_array_equal(read_idx(tmp_path / "labels"), labels)


def test_idx_reader_rejects_bad_files(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x08\x03\x00\x00" + bytes(10))
    with pytest.raises(ValueError, match="magic"):
        read_idx(tmp_path / "bad")
    write_idx(tmp_path / "short", np.zeros((2, 3), dtype=np.uint8), compress=False)
    (tmp_path / "short").write_bytes((tmp_path / "short").read_bytes()[:-1])
    with pytest.raises(ValueError, match="bytes of data"):
        read_idx(tmp_path / "short")


@pytest.mark.parametrize("numpy1", [True, False])
def test_cifar_reader_round_trips(tmp_path, numpy1):
    images, labels = fake_images(0, 7, 3, 32, 10)
    write_cifar_batch(tmp_path / "a", images[:4], labels[:4], numpy1=numpy1)
    write_cifar_batch(tmp_path / "b", images[4:], labels[4:], numpy1=numpy1)
    x, y = read_cifar([tmp_path / "a", tmp_path / "b"])
    np.testing.assert_array_equal(x, images)
    np.testing.assert_array_equal(y, labels)
    assert x.dtype == np.uint8 and y.dtype == np.int64


def test_cifar_layout_is_channel_planes_row_major(tmp_path):
    """A CIFAR row is 1024 red, 1024 green, 1024 blue values; pixel (r, c) of a plane is at 32 r + c."""
    row = np.zeros((1, 3072), dtype=np.uint8)
    row[0, 1024 + 32 * 2 + 5] = 200  # green, row 2, column 5
    (tmp_path / "batch").write_bytes(pickle.dumps({"data": row, "labels": [7]}, protocol=2))
    x, y = read_cifar([tmp_path / "batch"])
    assert x[0, 1, 2, 5] == 200 and x.sum() == 200 and y.tolist() == [7]


def test_cifar100_labels_and_bytes_keys(tmp_path):
    images, labels = fake_images(1, 6, 3, 32, 100)
    record = {b"data": images.reshape(6, -1), b"fine_labels": labels.tolist(), b"coarse_labels": [0] * 6}
    (tmp_path / "train").write_bytes(pickle.dumps(record, protocol=2))
    x, y = read_cifar([tmp_path / "train"], "fine_labels")
    np.testing.assert_array_equal(x, images)
    np.testing.assert_array_equal(y, labels)


def test_pickle_reader_refuses_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (builtins.print, ("pwned",))

    (tmp_path / "evil").write_bytes(pickle.dumps({"data": Evil()}, protocol=2))
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        read_pickle(tmp_path / "evil")


def test_svhn_reader_round_trips_and_maps_label_10_to_0(tmp_path):
    images, labels = fake_images(2, 12, 3, 32, 10)
    write_svhn(tmp_path / "train_32x32.mat", images, labels)
    x, y = read_svhn(tmp_path / "train_32x32.mat")
    np.testing.assert_array_equal(x, images)
    np.testing.assert_array_equal(y, labels)
    assert 0 in y.tolist() and 10 not in y.tolist()


@pytest.mark.parametrize("dataset", sorted(DATASETS))
def test_dataset_loads_normalised_and_split(dataset, vision_arrays):
    data_dir, arrays = vision_arrays
    x_train, y_train, x_test, y_test = arrays[dataset]
    info = DATASETS[dataset]
    task = build_task(f"{dataset}_lenet5", {"val_fraction": 0.2}, data_dir)
    assert (len(task.train), len(task.val), len(task.test)) == (24, 6, len(x_test))
    mean = torch.tensor(info.mean).view(1, -1, 1, 1)
    std = torch.tensor(info.std).view(1, -1, 1, 1)
    expected_test = (torch.as_tensor(x_test).float() / 255 - mean) / std
    torch.testing.assert_close(task.test.tensors[0], expected_test)
    assert torch.equal(task.test.tensors[1], torch.as_tensor(y_test))
    # train and val together are the official training set, without overlap.
    seen = torch.cat([task.train.tensors[0], task.val.tensors[0]])
    expected_train = (torch.as_tensor(x_train).float() / 255 - mean) / std
    order = lambda t: t.flatten(1)[:, :8].tolist()  # noqa: E731
    assert sorted(order(seen)) == sorted(order(expected_train))
    assert task.train.tensors[0].dtype == torch.float32 and task.train.tensors[1].dtype == torch.int64


def test_cifar_tasks_augment_and_others_do_not(data_dir):
    assert build_task("cifar10_cnn", {}, data_dir).augment is not None
    assert build_task("cifar100_lenet5", {}, data_dir).augment is not None
    assert build_task("cifar10_cnn", {"augment": False}, data_dir).augment is None
    assert build_task("svhn_cnn", {}, data_dir).augment is None
    assert build_task("mnist_cnn", {}, data_dir).augment is None


def _crops(padded: torch.Tensor, size: int) -> list[torch.Tensor]:
    """Every crop of `padded` (C, H, W) and its mirror image: the reference set."""
    out = []
    for dy in range(padded.shape[1] - size + 1):
        for dx in range(padded.shape[2] - size + 1):
            crop = padded[:, dy : dy + size, dx : dx + size]
            out += [crop, crop.flip(-1)]
    return out


def test_random_crop_flip_matches_a_slow_reference():
    x = torch.randn(6, 3, 8, 8)
    fill = torch.tensor([-1.0, -2.0, -3.0])
    augment = random_crop_flip(fill, pad=2)
    out, labels = augment((x, torch.arange(6)), torch.Generator().manual_seed(0))
    assert out.shape == x.shape and torch.equal(labels, torch.arange(6))
    for image, result in zip(x, out):
        padded = fill.view(3, 1, 1).repeat(1, 12, 12)
        padded[:, 2:10, 2:10] = image
        assert any(torch.equal(result, crop) for crop in _crops(padded, 8))
    # Deterministic in the generator, and it does change images.
    again, _ = augment((x, torch.arange(6)), torch.Generator().manual_seed(0))
    other, _ = augment((x, torch.arange(6)), torch.Generator().manual_seed(1))
    assert torch.equal(out, again) and not torch.equal(out, other) and not torch.equal(out, x)


def test_augmentation_pads_with_black_pixels(data_dir):
    task = build_task("cifar10_cnn", {}, data_dir)
    black = torch.zeros(1, 3, 32, 32)
    info = DATASETS["cifar10"]
    black = (black - torch.tensor(info.mean).view(1, 3, 1, 1)) / torch.tensor(info.std).view(1, 3, 1, 1)
    out, _ = task.augment((black.repeat(16, 1, 1, 1), torch.zeros(16)), torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, black.repeat(16, 1, 1, 1))


def test_missing_files_without_torchvision_are_one_clear_error(tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_torchvision(name, *args, **kwargs):
        if name == "torchvision" or name.startswith("torchvision."):
            raise ImportError("No module named 'torchvision'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_torchvision)
    with pytest.raises(ConfigError) as error:
        build_task("cifar10_resnet", {"depth": 8, "width": 4}, tmp_path)
    message = str(error.value)
    assert "\n" not in message
    assert str(tmp_path / "cifar-10-batches-py" / "data_batch_1") in message
    assert "optimlab[vision]" in message


def test_missing_files_with_download_off(tmp_path):
    with pytest.raises(ConfigError, match=r"MNIST data file not found: .*train-images-idx3-ubyte.*download=false"):
        build_task("mnist_mlp", {"download": False}, tmp_path)


def test_download_failure_is_a_config_error(tmp_path, monkeypatch):
    import optimlab.tasks.vision as vision

    def failing_fetch(data_dir):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")

    monkeypatch.setitem(vision.DATASETS, "mnist", vision.DATASETS["mnist"].__class__(
        **{**vision.DATASETS["mnist"].__dict__, "fetch": failing_fetch}))  # fmt: skip
    with pytest.raises(ConfigError, match="downloading failed"):
        vision.read_dataset(vision.DATASETS["mnist"], tmp_path, download=True)


def test_corrupt_file_is_a_config_error(tmp_path, vision_arrays):
    import shutil

    shutil.copytree(vision_arrays[0] / "cifar-100-python", tmp_path / "cifar-100-python")
    (tmp_path / "cifar-100-python" / "test").write_bytes(b"garbage")
    with pytest.raises(ConfigError, match="cannot read the CIFAR-100 files"):
        build_task("cifar100_cnn", {}, tmp_path)


@pytest.mark.parametrize(
    ("options", "match"),
    [({"depth": 19, "width": 4}, "depth"), ({"init": "orthogonal"}, "init"), ({"val_fraction": 0.0}, "val_fraction")],
)
def test_bad_vision_options(options, match, data_dir):
    with pytest.raises(ConfigError, match=match):
        build_task("cifar10_resnet", options, data_dir)


def test_xavier_init_option(data_dir):
    torch.manual_seed(0)
    task = build_task("mnist_lenet5", {"init": "xavier"}, data_dir)
    conv = task.model.features[0]
    assert torch.equal(conv.bias, torch.zeros_like(conv.bias))
    bound = (2.0**0.5) * (6.0 / (1 * 25 + 6 * 25)) ** 0.5
    assert conv.weight.abs().max() <= bound and conv.weight.abs().max() > 0.5 * bound
