"""`optimlab meta-train`, `optimlab evaluate` and `optimlab baseline` (docs/learned.md)."""

from __future__ import annotations

import argparse
import math
import sys

from optimlab import rundir


def meta_train_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="optimlab meta-train", description="Meta-train a learned optimizer (resumes its run directory)."
    )
    parser.add_argument("--config", help="a YAML file (e.g. a run's config.yaml); overrides apply on top")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="e.g. preset=quick policy=rnnprop tasks=[mnist1d_mlp] run_dir=DIR",
    )
    args = parser.parse_args(argv)
    from optimlab.learned.metaconfig import load_meta_config, load_meta_config_file

    cfg = load_meta_config_file(args.config, args.overrides) if args.config else load_meta_config(args.overrides)
    from optimlab.learned.metatrain import meta_train

    summary = meta_train(cfg, handle_signals=True)
    final = summary.get("final") or {}
    print(f"{summary['status']}: {summary['iterations']} meta-iterations, {summary['wall_time']:.1f} s; "
          f"selected {final.get('checkpoint')} (validation {final.get('validation')}); optimizer in {cfg.run_dir or 'the run directory'}",
          file=sys.stderr)  # fmt: skip
    return rundir.EXIT_INTERRUPTED if summary["status"] == rundir.INTERRUPTED else rundir.EXIT_OK


def _print_table(report: dict) -> None:
    for task, results in report["results"].items():
        for label, entry in results.items():
            if label == "best":
                continue
            mark = "  <- best lr" if results.get("best") == label else ""
            two_se = "" if math.isnan(entry["two_se"]) else f" ± {entry['two_se']:.4f}"
            print(f"{task:20s} {label:28s} {entry['mean']:.4f}{two_se}{mark}")


def evaluate_main(argv: list[str]) -> int:
    from optimlab.learned.evaluation import evaluate_learned

    return _protocol_main(
        argv, "optimlab evaluate", "Train fresh models on tasks with a learned optimizer.",
        "path=DIR tasks=[mnist1d_mlp] repeats=3 steps=1000 run_dir=OUT, or path=DIR suite=amalgamation",
        evaluate_learned,
    )  # fmt: skip


def baseline_main(argv: list[str]) -> int:
    from optimlab.learned.evaluation import evaluate_baseline

    return _protocol_main(
        argv, "optimlab baseline", "The evaluation protocol with an analytical optimizer and an lr grid.",
        "optim=adam lrs=[1e-3,3e-3] tasks=[mnist1d_mlp] run_dir=OUT, or suite=amalgamation",
        evaluate_baseline,
    )  # fmt: skip


def _protocol_main(argv: list[str], prog: str, description: str, usage: str, run) -> int:
    """`optimlab evaluate` and `optimlab baseline`: key=value overrides, the protocol, its table."""
    from optimlab.learned.evaluation import load_evaluate_config

    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("overrides", nargs="*", metavar="key=value", help=usage)
    args = parser.parse_args(argv)
    _print_table(run(load_evaluate_config(args.overrides)))
    return 0
