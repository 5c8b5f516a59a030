"""Imports every built-in task module so that each registers itself."""

from optimlab.tasks import digits, gru_repeat, mnist1d, shakespeare, synthetic, vision, word_lm  # noqa: F401
