"""Errors raised for bad user input.

`ConfigError` is a `ValueError`, so Python callers can catch either; the CLI turns it into one line on
stderr and exit code 2.
"""

import difflib


class ConfigError(ValueError):
    """A user-supplied name, type or value is invalid."""


def suggest(name: str, choices) -> str:
    """'; did you mean a, b?' for close matches, else the full list of choices."""
    choices = sorted(str(c) for c in choices)
    close = difflib.get_close_matches(str(name), choices, n=3, cutoff=0.5)
    return f"; did you mean {', '.join(close)}?" if close else f"; choose from {', '.join(choices)}"


def unknown_name(kind: str, name: str, choices) -> ConfigError:
    """The error for an unknown registry name, suggesting close matches."""
    return ConfigError(f"unknown {kind} {name!r}{suggest(name, choices)}")


class RunFailed(RuntimeError):
    """A run stopped on an error of its environment, not of its input (a full or read-only disk).

    The message is one line naming what could not be done; the CLI prints it and exits with code 1.
    """
