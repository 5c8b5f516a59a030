"""Reports over run directories: per-task tables of each optimizer's best configuration with seeds,
confidence intervals and significance tests, learning-rate sensitivity, curves, lr traces, and
performance profiles. Reads only run directories (docs/run-directory.md); see docs/reports.md.

    from optimlab.report import write_report
    write_report(["runs/"], "report/", baseline="adam")   # -> report/index.html
"""

from optimlab.report.build import write_report

__all__ = ["write_report"]
