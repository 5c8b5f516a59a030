"""Imports every built-in task module so that each registers itself; the classification tasks (MNIST-1D,
digits, the image datasets) take the data variants' options (`tasks/variants.py`)."""

from optimlab.tasks import digits, gru_repeat, mnist1d, shakespeare, study, synthetic, vision  # noqa: F401
from optimlab.tasks.registry import _TASKS
from optimlab.tasks.variants import with_variants

for _name, _spec in list(_TASKS.items()):
    if _spec.build.__module__ in (digits.__name__, mnist1d.__name__, vision.__name__):
        _TASKS[_name] = with_variants(_spec)
