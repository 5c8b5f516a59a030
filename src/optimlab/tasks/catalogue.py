"""Imports every built-in task module so that each registers itself."""

from optimlab.tasks import digits, gru_repeat, mnist1d, multiwoz, shakespeare, snli, synthetic, vision, word_lm  # noqa: F401
