"""The training loop and everything a run directory holds."""

from optimlab.train.api import LoadedRun, load_run, train
from optimlab.train.loop import STOP_EXIT_CODE, request_stop
from optimlab.train.population import NotBatchable, train_population

__all__ = ["STOP_EXIT_CODE", "LoadedRun", "NotBatchable", "load_run", "request_stop", "train", "train_population"]
