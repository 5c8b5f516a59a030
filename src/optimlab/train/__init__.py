"""The training loop and everything a run directory holds."""

from optimlab.train.loop import STOP_EXIT_CODE, request_stop, train

__all__ = ["STOP_EXIT_CODE", "request_stop", "train"]
