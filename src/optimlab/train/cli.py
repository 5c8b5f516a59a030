"""`optimlab train [--config FILE] [key=value ...]`."""

from __future__ import annotations

import argparse
import sys

from optimlab.config import load_config, load_config_file
from optimlab.errors import ConfigError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # bad arguments are bad input: one line and exit code 2 through ConfigError
        raise ConfigError(message)


def train_main(argv: list[str]) -> int:
    parser = _Parser(prog="optimlab train", description="Train one run (resumes its run directory).")
    parser.add_argument("--config", help="a YAML config file (e.g. a run's config.yaml); overrides apply on top")
    parser.add_argument(
        "--restore", metavar="CHECKPOINT",
        help="start a new run directory from a checkpoint file: its config and full state, overrides on top",
    )  # fmt: skip
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. task=mnist1d_mlp optim=adam optim.lr=3e-3")
    args = parser.parse_args(argv)
    if args.restore and args.config:
        parser.error("--restore takes its config from the checkpoint; pass changes as key=value overrides")
    if args.restore:
        from optimlab.train.restore import prepare_restore

        cfg = prepare_restore(args.restore, args.overrides)
    else:
        cfg = load_config_file(args.config, args.overrides) if args.config else load_config(args.overrides)

    from optimlab.train import STOP_EXIT_CODE, train

    summary = train(cfg, handle_signals=True)
    status = summary["status"]
    line = f"{status}: {summary['step']}/{summary['steps']} steps"
    final = summary.get("final") or {}
    shown = [f"{k}={v:.4g}" for k, v in final.items() if isinstance(v, float)]
    print(" ".join([line, *shown]), file=sys.stderr)
    if status == "interrupted":
        return STOP_EXIT_CODE
    return 0
