"""`optimlab report RUNS... --out DIR [--baseline NAME] [--metric NAME[:max|:min]] [--select final|best]
[--target TOL | --target TASK=VALUE ...] [--series NAME [NAME ...]]`."""

from __future__ import annotations

import argparse

from optimlab.errors import ConfigError
from optimlab.report.analysis import DEFAULT_TOLERANCE


class _Parser(argparse.ArgumentParser):
    """argparse that raises ConfigError (one line, exit 2 from the top-level CLI) instead of exiting."""

    def error(self, message: str):
        raise ConfigError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="optimlab report",
        description="Tables, plots and performance profiles from run directories (reads nothing else).",
    )
    add = parser.add_argument
    add("runs", nargs="+", metavar="RUNS", help="run directories or folders containing them")
    add("--out", required=True, metavar="DIR", help="report directory (index.html, report.md, CSV, PNG)")
    add("--baseline", metavar="NAME", help="optimizer label to test against (default: best on validation)")
    add("--metric", metavar="NAME[:max|:min]", help="main metric override (default: each run's summary)")
    parser.add_argument(
        "--select",
        choices=("final", "best"),
        default="final",
        help="choose configurations on each run's final (default) or best validation value",
    )
    parser.add_argument(
        "--target",
        action="append",
        default=[],
        metavar="TOL|TASK=VALUE",
        help=f"performance-profile target: a tolerance in [0, 1) (default {DEFAULT_TOLERANCE}) or an explicit "
        "val/<metric> value for one task; repeatable",
    )
    parser.add_argument(
        "--series",
        nargs="+",
        default=[],
        metavar="NAME",
        help="metrics.jsonl series to plot over steps (mean and min-max band over seeds, one figure per task "
        "and series): exact keys such as train/grad_norm, or patterns such as 'optim/*'",
    )
    return parser


def report_main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    tolerance, targets = parse_targets(args.target)
    from optimlab.report import write_report

    index = write_report(
        args.runs,
        args.out,
        baseline=args.baseline,
        metric=args.metric,
        select=args.select,
        tolerance=tolerance,
        targets=targets,
        series=args.series,
    )
    print(index)
    return 0


def parse_targets(items: list[str]) -> tuple[float, dict[str, float]]:
    tolerance, targets = DEFAULT_TOLERANCE, {}
    for item in items:
        task, sep, value = item.rpartition("=")
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(f"--target {item!r}: expected a number or TASK=NUMBER") from None
        if sep:
            targets[task] = number
        else:
            tolerance = number
    return tolerance, targets
