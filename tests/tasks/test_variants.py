"""Data variants of the classification tasks: each does what it says to the training split only."""

from types import SimpleNamespace

import pytest
import torch

from optimlab.errors import ConfigError
from optimlab.tasks import Split
from optimlab.tasks.variants import VARIANT_DEFAULTS, apply_variants


def options(**changes):
    return SimpleNamespace(**{**VARIANT_DEFAULTS, **changes})


def split(n=200, classes=4):
    x = torch.arange(n, dtype=torch.float32)[:, None]
    return Split((x, torch.arange(n) % classes))


def test_defaults_leave_the_split_unchanged():
    original = split()
    out = apply_variants(original, options(), 4)
    assert all(torch.equal(a, b) for a, b in zip(out.tensors, original.tensors))


def test_duplicates_repeat_chosen_examples():
    out = apply_variants(split(), options(duplicates=5, duplicate_copies=3), 4)
    assert len(out) == 200 + 15
    values, counts = out.tensors[0].squeeze(1).unique(return_counts=True)
    assert len(values) == 200 and sorted(counts.tolist())[-5:] == [4] * 5 and counts.sum() == 215


def test_imbalance_keeps_a_share_of_one_class():
    out = apply_variants(split(), options(imbalance_class=2, imbalance_ratio=0.1), 4)
    counts = torch.bincount(out.tensors[1], minlength=4).tolist()
    assert counts == [50, 50, 5, 50]
    assert torch.all(out.tensors[1] == out.tensors[0].squeeze(1).long() % 4)  # inputs keep their labels


def test_label_noise_changes_that_share_of_labels_to_another_class():
    original = split()
    out = apply_variants(original, options(label_noise=0.25, variant_seed=3), 4)
    changed = out.tensors[1] != original.tensors[1]
    assert int(changed.sum()) == 50 and out.tensors[1].max() < 4


def test_bad_values_name_the_option():
    with pytest.raises(ConfigError, match="label_noise"):
        apply_variants(split(), options(label_noise=1.5), 4)
    with pytest.raises(ConfigError, match="imbalance_class"):
        apply_variants(split(), options(imbalance_class=7), 4)
