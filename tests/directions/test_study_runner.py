"""studies/gradient_variance.py runs its design end to end on a few steps and writes one line per estimator."""

import json
import runpy
import sys
from pathlib import Path

STUDY = Path(__file__).parents[2] / "studies" / "gradient_variance.py"


def test_the_study_runner_measures_every_estimator(tmp_path, monkeypatch):
    out = tmp_path / "gv.jsonl"
    argv = ["gradient_variance.py", "--task", "digits_mlp", "--steps", "8", "--points", "2", "--draws", "3",
            "--snapshot-every", "4", "--clusters", "3", "--batch-size", "32", "--duplicates", "20",
            "--out", str(out)]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(STUDY), run_name="__main__")
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["step"] for r in records] == [0] * 5 + [3] * 5
    assert {r["estimator"] for r in records} == {"sg_b", "sg_2b", "svrg", "gc", "kfac"}
    by_name = {r["estimator"]: r for r in records if r["step"] == 0}
    assert by_name["svrg"]["var"] < 1e-12  # at the snapshot the SVRG direction is the full gradient exactly
    assert by_name["sg_2b"]["var"] < by_name["sg_b"]["var"]
