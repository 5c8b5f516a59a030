"""The intra-op CPU thread count of a run: applied before the run builds anything, recorded in config.yaml.

The number of threads changes the order of float reductions (matrix products, sums), so a run re-run with
another count differs in its last bits. `train.threads` set: the run uses that many; unset: the process's
own count (OMP_NUM_THREADS when torch started), which config.yaml then records.
"""

from __future__ import annotations

import dataclasses

import torch

from optimlab.config import Config


def apply_threads(cfg: Config) -> None:
    """Set torch's intra-op threads to `train.threads` when the config names a count."""
    if cfg.train.threads is not None and torch.get_num_threads() != cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)


def with_threads(cfg: Config) -> Config:
    """`cfg` with `train.threads` resolved to the count this process computes with."""
    if cfg.train.threads is not None:
        return cfg
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, threads=torch.get_num_threads()))
