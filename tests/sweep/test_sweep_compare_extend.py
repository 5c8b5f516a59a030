"""`optimlab compare` extends a learning-rate grid while its best value is on the edge (`extend=N`)."""

import json

import pytest
from sweep_helpers import fake_lr_command

from optimlab.sweep.compare import CompareArgs, compare, parse_compare_args
from optimlab.sweep.lr_extension import Edge, extend_grids, grid_ratio, next_lr


def test_grid_ratio_and_next_lr():
    assert grid_ratio([0.1, 0.3, 1.0]) == pytest.approx(10**0.5)
    assert grid_ratio([0.5]) is None and grid_ratio([0.5, 0.5]) is None
    ratio = grid_ratio([0.1, 0.3, 1.0])
    assert [next_lr([0.1, 0.3, 1.0], "high", k, ratio) for k in (1, 2, 3)] == [3.16, 10.0, 31.6]
    assert [next_lr([0.1, 0.3, 1.0], "low", k, ratio) for k in (1, 2)] == [0.0316, 0.01]
    adam = grid_ratio([3e-3, 1e-2, 3e-2])
    assert next_lr([3e-3, 1e-2, 3e-2], "high", 1, adam) == 0.0949


def test_extend_grids_logic_without_runs():
    """A fake 'best lr' per optimizer: sgd's optimum at 10, adam's inside its grid, rms's far below it."""
    peaks = {"sgd": 10.0, "adam": 1e-2, "rms": 1e-9}
    grids = {"sgd": [0.1, 0.3, 1.0], "adam": [3e-3, 1e-2, 3e-2], "rms": [1e-3, 1e-2]}
    runs = []

    def edges():
        out = []
        for optim, lrs in grids.items():
            best = min(lrs, key=lambda lr: abs(lr - peaks[optim]) / peaks[optim])
            if best in (min(lrs), max(lrs)):
                out.append(Edge(optim, "low" if best == min(lrs) else "high", best))
        return out

    notes = extend_grids(grids, 3, edges, lambda g: runs.append({k: list(v) for k, v in g.items()}) or True)
    assert grids["sgd"] == [0.1, 0.3, 1.0, 3.16, 10.0, 31.6]  # 10 is inside the grid after three steps
    assert grids["adam"] == [3e-3, 1e-2, 3e-2]
    assert grids["rms"] == [1e-6, 1e-5, 1e-4, 1e-3, 1e-2]  # the bound: still on the edge
    assert len(runs) == 3
    assert sum("added lr" in n for n in notes) == 6
    assert notes[-1].startswith("Warning: rms's best lr 1e-06 is still the smallest of its grid")
    assert "after 3 extensions (extend=3)" in notes[-1]
    assert extend_grids({"sgd": [0.1, 1.0]}, 0, edges, lambda g: True) == []  # extend=0: nothing


def test_extend_key():
    assert parse_compare_args([]).extend == 3
    assert parse_compare_args(["extend=0"]).extend == 0
    from optimlab.errors import ConfigError

    with pytest.raises(ConfigError, match="compare key 'extend': expected a non-negative integer"):
        parse_compare_args(["extend=-1"])


def test_compare_extends_the_grid_and_reports_why(tmp_path):
    seen = {}

    def report(run_dirs, out, baseline=None, notes=()):
        seen.update(run_dirs=run_dirs, notes=list(notes), baseline=baseline)
        from optimlab.report import write_report

        return write_report(run_dirs, out, baseline=baseline, notes=notes)

    # sgd's accuracy peaks at lr 1.5: just above its grid {0.1, 0.3, 1}, below the next value 3.16;
    # adam_c's far below its grid {3e-3, 1e-2, 3e-2}
    command = fake_lr_command({"sgd": 1.5, "adam_c": 1e-9})
    args = CompareArgs(task="logreg", optims=["sgd", "adam_c"], seeds=1, workers=2, extend=2,
                       root=str(tmp_path / "runs"), out=str(tmp_path / "report"), progress=False)
    result = compare(args, command=command, report=report)
    assert result.exit_code == 0
    lrs = {}
    for run in json.loads((tmp_path / "runs" / "compare-logreg" / "sweep.json").read_text())["runs"]:
        items = dict(o.split("=", 1) for o in run["overrides"])
        lrs.setdefault(items["optim"], []).append(float(items["optim.lr"]))
    assert sorted(lrs["sgd"]) == [0.1, 0.3, 1.0, 3.16]  # 3.16 is worse than 1: 1 is inside the grid now
    assert sorted(lrs["adam_c"]) == [3e-4, 9.49e-4, 3e-3, 1e-2, 3e-2]  # two extensions: the bound
    assert len(seen["run_dirs"]) == 9
    notes = seen["notes"]
    assert notes[0] == ("Learning-rate grid extended: added lr 3.16 to sgd's grid because its best lr 1 was the "
                        "largest of {0.1, 0.3, 1}.")
    assert notes[-1].startswith("Warning: adam_c's best lr 0.0003 is still the smallest of its grid")
    assert len(notes) == 4
    md = (tmp_path / "report" / "report.md").read_text()
    top = md[: md.index("## Runs")]
    assert "- Learning-rate grid extended: added lr 0.0003 to adam_c's grid" in top
    assert "Warning: adam_c's best lr 0.0003 is the smallest of its grid" in top  # the report's own check
    assert "Warning: sgd" not in top
    # the same command again reuses every run and extends nothing further
    seen.clear()
    again = compare(args, command=command, report=lambda run_dirs, out, baseline=None, notes=(): seen.update(
        run_dirs=run_dirs, notes=list(notes)) or out / "index.html")
    assert again.sweep.skipped == 9 and len(seen["run_dirs"]) == 9
    assert seen["notes"][-1].startswith("Warning: adam_c's best lr 0.0003 is still the smallest")


def test_an_optimizer_is_extended_while_another_still_trains(tmp_path):
    """adam_c's grid is extended as soon as its own runs have ended: sgd's run, on the other worker, waits
    for adam_c's extension run to start (with a second round after all runs it would wait in vain)."""
    started = tmp_path / "extension-started"
    base = fake_lr_command({"sgd": 0.3, "adam_c": 1e-9})

    def command(run):
        if run.config.optim.name == "sgd":
            return [*base(run), "--wait", str(started)]
        if run.config.optim.kwargs["lr"] < 3e-3:
            return [*base(run), "--touch", str(started)]
        return base(run)

    args = CompareArgs(task="logreg", optims=["sgd", "adam_c"], lrs={"sgd": [0.3], "adam_c": [3e-3, 1e-2, 3e-2]},
                       seeds=1, workers=2, extend=1, root=str(tmp_path / "runs"), out=str(tmp_path / "report"),
                       progress=False)
    result = compare(args, command=command, report=lambda run_dirs, out, baseline=None, notes=(): out / "index.html")
    assert result.exit_code == 0 and started.exists()
    assert sorted(run.config.optim.kwargs["lr"] for run in result.sweep.runs if run.config.optim.name == "adam_c") == [
        9.49e-4, 3e-3, 1e-2, 3e-2]


def test_the_report_modules_are_imported_by_one_thread_at_a_time(monkeypatch):
    """The backend's idle thread imports the report's modules while the grid extension may need them: two
    threads importing one package at once can meet a module half initialised, so they take turns."""
    import importlib
    import threading

    module = importlib.import_module("optimlab.sweep.compare")
    monkeypatch.setattr(module, "edges_from_runs", lambda run_dirs, baseline: ["edges"])
    done = []
    with module._REPORT_IMPORTS:  # the idle thread importing
        thread = threading.Thread(target=lambda: done.append(module._edges([], "sgd")))
        thread.start()
        thread.join(0.5)
        assert thread.is_alive() and not done  # the extension waits for it
    thread.join(30)
    assert done == [["edges"]]
