"""`optimlab train [--config FILE ...] [--print-config] [key=value ...]`."""

from __future__ import annotations

import argparse
import dataclasses
import sys

from optimlab.config import default_run_dir, load_config, load_config_file, to_yaml
from optimlab.errors import ConfigError

DESCRIPTION = """Train one run (resumes its run directory).

overrides (Hydra's grammar): key=value or +key=value or ++key=value sets a key; ~key removes one set by a
--config file or an earlier override (back to its default). Several --config files compose in order.
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # bad arguments are bad input: one line and exit code 2 through ConfigError
        raise ConfigError(message)

    def format_help(self) -> str:
        # The epilog lists every config key, parsed from the config dataclasses' source (a quarter to half a
        # second): built only when help is printed, so that a run never pays for it.
        if self.epilog is None:
            from optimlab.config_help import config_help

            self.epilog = config_help()
        return super().format_help()


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="optimlab train", description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument(
        "--config", action="append", metavar="FILE",
        help="a YAML config file (e.g. a run's config.yaml); repeatable, later files win; overrides apply on top",
    )  # fmt: skip
    parser.add_argument(
        "--restore", metavar="CHECKPOINT",
        help="start a new run directory from a checkpoint file: its config and full state, overrides on top",
    )  # fmt: skip
    parser.add_argument("--print-config", action="store_true", help="print the resolved config (YAML) and exit")
    parser.add_argument(
        "--population", metavar="FILE",
        help="train the runs listed in FILE (JSON, written by `optimlab sweep --backend population`) as one "
             "population (docs/sweeps.md)",
    )  # fmt: skip
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. task=mnist1d_mlp optim=adam optim.lr=3e-3")
    return parser


def train_main(argv: list[str]) -> int:
    parser = build_parser()
    # intermixed: `--config` and `--print-config` may come after key=value overrides, as users type them
    args = parser.parse_intermixed_args(argv)
    if args.population:
        if args.restore or args.config or args.overrides or args.print_config:
            parser.error("--population takes every run's settings from its file")
        from optimlab.train.population_cli import population_main

        return population_main(args.population)
    if args.restore and args.config:
        parser.error("--restore takes its config from the checkpoint; pass changes as key=value overrides")
    if args.restore:
        from optimlab.train.restore import prepare_restore

        cfg = prepare_restore(args.restore, args.overrides)
    else:
        cfg = load_config_file(args.config, args.overrides) if args.config else load_config(args.overrides)
    cfg = dataclasses.replace(cfg, run_dir=str(cfg.run_dir or default_run_dir(cfg)))
    if args.print_config:
        print(to_yaml(cfg), end="")
        return 0

    # load_config and prepare_restore validated and normalised `cfg` already: the loop itself, not
    # optimlab.train.train, which would do it again for a Config built in Python (tens of ms per run).
    from optimlab.train.loop import STOP_EXIT_CODE, train

    # on stdout, so that stderr keeps its contract: bad input is one line there
    print(f"run directory: {cfg.run_dir}", flush=True)
    summary = train(cfg, handle_signals=True)
    status = summary["status"]
    line = f"{status}: {summary['step']}/{summary['steps']} steps"
    final = summary.get("final") or {}
    shown = [f"{k}={v:.4g}" for k, v in final.items() if isinstance(v, float)]
    print(" ".join([line, *shown, f"({cfg.run_dir})"]), file=sys.stderr)
    if status == "interrupted":
        return STOP_EXIT_CODE
    return 0
