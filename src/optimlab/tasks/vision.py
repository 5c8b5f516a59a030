"""Image classification: MNIST, Fashion-MNIST, CIFAR-10, CIFAR-100 and SVHN with the model zoo.

Files are read by our own readers (`formats.py`) from torchvision's layout under the data directory:

| dataset | files |
|---|---|
| MNIST | `DATA_DIR/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]` |
| Fashion-MNIST | `DATA_DIR/FashionMNIST/raw/...` (same names) |
| CIFAR-10 | `DATA_DIR/cifar-10-batches-py/{data_batch_1..5,test_batch}` |
| CIFAR-100 | `DATA_DIR/cifar-100-python/{train,test}` |
| SVHN | `DATA_DIR/svhn/{train,test}_32x32.mat` |

Missing files are downloaded with torchvision (the optional `optimlab[vision]` extra) when it is installed and
`download=true`; otherwise the build fails with one line naming the missing file and how to get it.

Each split is loaded whole into memory and normalised to float32 with the usual per-channel constants.
Validation is carved out of the official training set (`val_fraction`, seeded by `data_seed`); the official
test set is the test split. CIFAR training batches are augmented (`augment=true`) with the standard random
crop (4-pixel zero padding) and horizontal flip, applied on batch tensors by `Task.augment` with the
trainer's generator.
"""

from __future__ import annotations

import dataclasses
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import Tensor, nn

from optimlab.errors import ConfigError
from optimlab.tasks.base import Batch, Task
from optimlab.tasks.common import INITS, model_factory
from optimlab.tasks.data import check_non_negative, check_positive, classification_splits
from optimlab.tasks.formats import read_cifar, read_idx, read_svhn
from optimlab.tasks.models import MLP, VGG, ConvNet2d, DenseNetBC, LeNet5, LogisticRegression, ResNet, WideResNet


@dataclass(frozen=True)
class ImageDataset:
    name: str  # task name prefix
    title: str
    channels: int
    size: int
    classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    # (data_dir) -> (x_train, y_train, x_test, y_test), uint8 (N, C, H, W); raises FileNotFoundError
    read: Callable[[Path], tuple[np.ndarray, ...]]
    # (data_dir) -> None: download the files with torchvision
    fetch: Callable[[Path], None]
    augment: bool = False  # random crop + flip available (CIFAR)


# --------------------------------------------------------------------------------------------------------
# Reading and downloading


def _first_existing(folder: Path, names: list[str]) -> Path:
    for name in names:
        if (folder / name).exists():
            return folder / name
    raise FileNotFoundError(folder / names[0])


def _read_idx_pair(folder: Path, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    images = read_idx(_first_existing(folder, [f"{prefix}-images-idx3-ubyte", f"{prefix}-images-idx3-ubyte.gz"]))
    labels = read_idx(_first_existing(folder, [f"{prefix}-labels-idx1-ubyte", f"{prefix}-labels-idx1-ubyte.gz"]))
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(f"IDX files in {folder} disagree: images {images.shape}, labels {labels.shape}")
    return images[:, None].astype(np.uint8), labels.astype(np.int64)


def _idx_reader(folder: str) -> Callable[[Path], tuple[np.ndarray, ...]]:
    def read(data_dir: Path) -> tuple[np.ndarray, ...]:
        raw = data_dir / folder / "raw"
        return (*_read_idx_pair(raw, "train"), *_read_idx_pair(raw, "t10k"))

    return read


def _read_cifar10(data_dir: Path) -> tuple[np.ndarray, ...]:
    folder = data_dir / "cifar-10-batches-py"
    train = [_first_existing(folder, [f"data_batch_{i}"]) for i in range(1, 6)]
    return (*read_cifar(train), *read_cifar([_first_existing(folder, ["test_batch"])]))


def _read_cifar100(data_dir: Path) -> tuple[np.ndarray, ...]:
    folder = data_dir / "cifar-100-python"
    train, test = _first_existing(folder, ["train"]), _first_existing(folder, ["test"])
    return (*read_cifar([train], "fine_labels"), *read_cifar([test], "fine_labels"))


def _read_svhn(data_dir: Path) -> tuple[np.ndarray, ...]:
    folder = data_dir / "svhn"
    train, test = _first_existing(folder, ["train_32x32.mat"]), _first_existing(folder, ["test_32x32.mat"])
    return (*read_svhn(train), *read_svhn(test))


def _torchvision():
    try:
        import torchvision
    except ImportError:
        raise ModuleNotFoundError("torchvision") from None
    return torchvision


def _fetch(dataset_class: str, root: str = "", **kwargs) -> Callable[[Path], None]:
    def fetch(data_dir: Path) -> None:
        cls = getattr(_torchvision().datasets, dataset_class)
        cls(root=str(data_dir / root), download=True, **kwargs)

    return fetch


def _fetch_svhn(data_dir: Path) -> None:
    svhn = _torchvision().datasets.SVHN
    for split in ("train", "test"):
        svhn(root=str(data_dir / "svhn"), split=split, download=True)


DATASETS = {
    d.name: d
    for d in [
        ImageDataset("mnist", "MNIST", 1, 28, 10, (0.1307,), (0.3081,), _idx_reader("MNIST"), _fetch("MNIST")),
        ImageDataset(
            "fashion_mnist", "Fashion-MNIST", 1, 28, 10, (0.2860,), (0.3530,),
            _idx_reader("FashionMNIST"), _fetch("FashionMNIST"),
        ),
        ImageDataset(
            "cifar10", "CIFAR-10", 3, 32, 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616),
            _read_cifar10, _fetch("CIFAR10"), augment=True,
        ),
        ImageDataset(
            "cifar100", "CIFAR-100", 3, 32, 100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762),
            _read_cifar100, _fetch("CIFAR100"), augment=True,
        ),
        ImageDataset(
            "svhn", "SVHN", 3, 32, 10, (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970), _read_svhn, _fetch_svhn
        ),
    ]
}  # fmt: skip


def read_dataset(dataset: ImageDataset, data_dir: Path, download: bool) -> tuple[np.ndarray, ...]:
    """(x_train, y_train, x_test, y_test) as uint8 images (N, C, H, W) and int64 labels; downloads if needed."""
    try:
        return _read(dataset, data_dir)
    except FileNotFoundError as error:
        missing = Path(error.filename if error.filename else str(error))
    how = f"place the {dataset.title} files there"
    if not download:
        raise ConfigError(f"{dataset.title} data file not found: {missing}; {how} (download=false)")
    try:
        dataset.fetch(data_dir)
    except ModuleNotFoundError:
        raise ConfigError(
            f"{dataset.title} data file not found: {missing}; install optimlab[vision] (torchvision) to "
            f"download it, or {how}"
        ) from None
    except Exception as error:  # network or checksum failures inside torchvision
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ConfigError(f"{dataset.title} data file not found: {missing}, and downloading failed ({message}); {how}") from None
    try:
        return _read(dataset, data_dir)
    except FileNotFoundError as error:
        raise ConfigError(f"{dataset.title} data file still missing after download: {error.filename}; {how}") from None


def _read(dataset: ImageDataset, data_dir: Path) -> tuple[np.ndarray, ...]:
    """The dataset's arrays; a file that exists but cannot be read is a ConfigError naming it."""
    try:
        return dataset.read(data_dir)
    except FileNotFoundError:
        raise
    except (OSError, ValueError, KeyError, EOFError, pickle.UnpicklingError) as error:
        raise ConfigError(f"cannot read the {dataset.title} files under {data_dir}: {error}") from None


def normalise(images: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> Tensor:
    """uint8 (N, C, H, W) -> float32 (x / 255 - mean) / std per channel."""
    shape = (1, len(mean), 1, 1)
    x = torch.from_numpy(np.ascontiguousarray(images)).float().div_(255.0)
    return x.sub_(torch.tensor(mean).view(shape)).div_(torch.tensor(std).view(shape))


# --------------------------------------------------------------------------------------------------------
# Augmentation


def random_crop_flip(fill: Tensor, pad: int = 4) -> Callable[[Batch, torch.Generator], Batch]:
    """Random crop of the image padded by `pad` pixels of value `fill` (per channel), then a horizontal flip
    with probability 1/2: torchvision's RandomCrop(size, padding=pad) + RandomHorizontalFlip, on a batch.

    Random draws come from `generator` (on its own device), so augmentation is reproducible.
    """

    def augment(batch: Batch, generator: torch.Generator) -> Batch:
        x = batch[0]
        n, c, h, w = x.shape
        padded = fill.to(x.device, x.dtype).view(1, c, 1, 1).repeat(n, 1, h + 2 * pad, w + 2 * pad)
        padded[:, :, pad : pad + h, pad : pad + w] = x
        device = generator.device
        dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=device).to(x.device)
        dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=device).to(x.device)
        flip = (torch.rand(n, generator=generator, device=device) < 0.5).to(x.device)
        rows = dy[:, None] + torch.arange(h, device=x.device)
        steps = torch.arange(w, device=x.device)
        cols = dx[:, None] + torch.where(flip[:, None], w - 1 - steps, steps)
        out = padded[
            torch.arange(n, device=x.device)[:, None, None, None],
            torch.arange(c, device=x.device)[None, :, None, None],
            rows[:, None, :, None],
            cols[:, None, None, :],
        ]
        return (out, *batch[1:])

    return augment


# --------------------------------------------------------------------------------------------------------
# Options and models


@dataclass
class ImageOptions:
    val_fraction: float = 0.1  # share of the official training set held out for validation
    data_seed: int = 0  # seed of the validation split
    train_samples: Optional[int] = None  # use only this many training samples (after the val split)
    download: bool = True  # download missing files with torchvision (optimlab[vision])
    init: str = "default"  # default (PyTorch's) | xavier (AdaTune: Xavier-uniform, gain sqrt 2, for convs)


@dataclass
class AugmentedImageOptions(ImageOptions):
    augment: bool = True  # random crop (4-pixel padding) + horizontal flip of training batches


@dataclass
class NoModelOptions:
    pass


@dataclass
class MLPModelOptions:
    width: int = 256  # hidden units per layer
    depth: int = 2  # hidden layers
    activation: str = "relu"  # relu | tanh | sigmoid


@dataclass
class CNNModelOptions:
    channels: list[int] = dataclasses.field(default_factory=lambda: [32, 64])  # conv + max-pool stages
    hidden: int = 128  # hidden linear layer (0: none)
    batch_norm: bool = False


@dataclass
class ResNetModelOptions:
    depth: int = 20  # 6n+2 (CIFAR ResNet: 20, 32, 44, 56, 110) or 18 / 34 (ImageNet layout, AdaTune's ResNet-18)
    width: Optional[int] = None  # channels of the first stage (default 16 for 6n+2, 64 for 18/34)
    batch_norm: bool = True


@dataclass
class VGGModelOptions:
    width: int = 64  # channels of the first layer (64 in VGG-11)
    batch_norm: bool = True


@dataclass
class WRNModelOptions:
    depth: int = 28  # 6n+4
    widen: int = 10  # widening factor k (WRN-28-10)
    dropout: float = 0.0


@dataclass
class DenseNetModelOptions:
    depth: int = 100  # 6n+4 (DenseNet-BC-100)
    growth: int = 12  # growth rate k
    reduction: float = 0.5  # channel compression in transitions


def _mlp(d: ImageDataset, o) -> nn.Module:
    check_positive(width=o.width)
    check_non_negative(depth=o.depth)
    return MLP(d.channels * d.size * d.size, [o.width] * o.depth, d.classes, o.activation)


@dataclass(frozen=True)
class ModelFamily:
    name: str  # task name suffix
    description: str
    options: type
    make: Callable[[ImageDataset, object], nn.Module]


FAMILIES = {
    f.name: f
    for f in [
        ModelFamily("logreg", "logistic regression", NoModelOptions,
                    lambda d, o: LogisticRegression(d.channels * d.size * d.size, d.classes)),
        ModelFamily("mlp", "MLP (2 x 256 ReLU)", MLPModelOptions, _mlp),
        ModelFamily("cnn", "2-D ConvNet (32, 64; hidden 128)", CNNModelOptions,
                    lambda d, o: ConvNet2d(d.channels, d.size, d.classes, list(o.channels), o.hidden, o.batch_norm)),
        ModelFamily("lenet5", "LeNet-5", NoModelOptions, lambda d, o: LeNet5(d.channels, d.size, d.classes)),
        ModelFamily("resnet", "ResNet (depth 20; 18/34 or 6n+2)", ResNetModelOptions,
                    lambda d, o: ResNet(o.depth, d.classes, d.channels, o.width, o.batch_norm)),
        ModelFamily("vgg11", "VGG-11 with BatchNorm", VGGModelOptions,
                    lambda d, o: VGG("vgg11", d.classes, d.channels, o.width, o.batch_norm)),
        ModelFamily("wrn", "Wide-ResNet (WRN-28-10)", WRNModelOptions,
                    lambda d, o: WideResNet(o.depth, o.widen, d.classes, d.channels, o.dropout)),
        ModelFamily("densenet", "DenseNet-BC (depth 100, growth 12)", DenseNetModelOptions,
                    lambda d, o: DenseNetBC(o.depth, o.growth, o.reduction, d.classes, d.channels)),
    ]
}  # fmt: skip

# Which models each dataset is offered with (task name: <dataset>_<model>).
CATALOGUE = {
    "mnist": ["logreg", "mlp", "cnn", "lenet5"],
    "fashion_mnist": ["logreg", "mlp", "cnn", "lenet5"],
    "cifar10": ["mlp", "cnn", "lenet5", "resnet", "vgg11", "wrn", "densenet"],
    "cifar100": ["cnn", "lenet5", "resnet", "vgg11", "wrn", "densenet"],
    "svhn": ["cnn", "lenet5", "resnet"],
}


def build_image_task(name: str, dataset: ImageDataset, family: ModelFamily, options, data_dir: Path) -> Task:
    if options.init not in INITS:
        raise ConfigError(f"task option 'init' must be one of {', '.join(INITS)}, got {options.init!r}")
    factory = model_factory(name, lambda: family.make(dataset, options), options.init)
    model = factory()  # before reading the data, as always: the initial weights depend only on the seed
    x_train, y_train, x_test, y_test = read_dataset(dataset, Path(data_dir), options.download)
    if x_train.shape[1:] != (dataset.channels, dataset.size, dataset.size):
        raise ConfigError(f"{dataset.title} training images have shape {x_train.shape[1:]}, expected "
                          f"{(dataset.channels, dataset.size, dataset.size)}")  # fmt: skip
    train, val, test = classification_splits(
        x_train, y_train, x_test, y_test,
        val_fraction=options.val_fraction, seed=options.data_seed, train_samples=options.train_samples,
        inputs=lambda x: normalise(x, dataset.mean, dataset.std),
    )  # fmt: skip
    augment = None
    if dataset.augment and options.augment:
        fill = -torch.tensor(dataset.mean) / torch.tensor(dataset.std)  # a black pixel, as torchvision pads
        augment = random_crop_flip(fill)
    info = {"input_shape": [dataset.channels, dataset.size, dataset.size], "classes": dataset.classes}
    return Task(name, train, val, test, model, augment=augment, info=info, model_factory=factory)
