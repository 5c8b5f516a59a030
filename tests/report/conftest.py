"""Fixtures: the fake runs of report_fakes.PLAN and their report, built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest
from report_fakes import write_plan


@pytest.fixture(scope="session")
def plan_root(tmp_path_factory) -> Path:
    return write_plan(tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="session")
def plan_report(plan_root, tmp_path_factory) -> Path:
    """The report of the whole plan, baseline sgd: `<out>/index.html`."""
    from optimlab.report import write_report

    out = tmp_path_factory.mktemp("report")
    return write_report([plan_root / "cls", plan_root / "quad"], out, baseline="sgd")
