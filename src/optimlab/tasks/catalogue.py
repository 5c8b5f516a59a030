"""Imports every built-in task module so that each registers itself."""

from optimlab.tasks import digits, mnist1d  # noqa: F401
