"""`optimlab compare` arguments and grid, and the CLI's exit codes on bad input (no runs started)."""

import json

import pytest
from sweep_helpers import fake_command

from optimlab.cli import main
from optimlab.errors import ConfigError
from optimlab.sweep.compare import LR_GRIDS, CompareArgs, compare, compare_spec, lr_grid, parse_compare_args


def test_defaults_are_the_readme_job():
    args = parse_compare_args([])
    assert (args.task, args.optims, args.seeds) == ("mnist1d_mlp", ["sgd", "adam", "sgd_c", "adam_c"], 3)
    spec = compare_spec(args)
    assert spec.name == "compare-mnist1d_mlp" and len(spec.points) == 4 * 3 * 3
    assert {p["optim.lr"] for p in spec.points if p["optim"] == "sgd_c"} == set(LR_GRIDS["sgd"])
    assert {p["optim.lr"] for p in spec.points if p["optim"] == "adam_c"} == set(LR_GRIDS["adam"])


def test_arguments_lists_mappings_and_overrides():
    args = parse_compare_args(["task=digits_mlp", "optims=[sgd,adagrad]", "seeds=[0,5]", "lrs={sgd: [0.5]}",
                               "workers=1", "train.steps=50", "optim.weight_decay=0.0"])
    assert args.optims == ["sgd", "adagrad"] and args.seeds == [0, 5] and args.workers == 1
    assert args.overrides == ["train.steps=50", "optim.weight_decay=0.0"]
    assert lr_grid("sgd", args.lrs) == [0.5]
    assert lr_grid("adagrad", args.lrs) == [0.00333, 0.01, 0.03]  # its own default lr x (1/3, 1, 3)
    assert parse_compare_args(["optims=adam", "lrs=[0.1,0.2]"]).optims == ["adam"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["optim=[sgd]"], "compare sets 'optim' itself; use optims="),
        (["optimz=[sgd]"], "unknown compare key 'optimz'; did you mean optims"),
        (["steps=10"], "unknown compare key 'steps'"),
        (["seed=1"], "use seeds="),
        (["optims=[]"], "non-empty list"),
        (["optims=[sgd,nosuch]"], "unknown optimizer 'nosuch'"),
        (["lrs={adam: [0.1]}", "optims=[sgd]"], "'adam' is not in optims"),
        (["lrs=[-1]"], "positive numbers"),
        (["workers=0"], "positive integer"),
        (["backend=cloud"], "not one of fresh, local, population, ray, slurm"),
        (["task"], "expected key=value"),
    ],
)
def test_bad_compare_arguments_name_the_problem(argv, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        parse_compare_args(argv)


def test_compare_runs_the_grid_and_hands_every_run_to_the_report(tmp_path):
    calls = []

    def report(run_dirs, out, baseline=None):
        calls.append((run_dirs, out, baseline))
        out.mkdir(parents=True)
        (out / "index.html").write_text("report")
        return out / "index.html"

    args = CompareArgs(optims=["adam", "sgd"], seeds=2, lrs=[0.01, 0.1], workers=2, root=str(tmp_path / "runs"),
                       out=str(tmp_path / "report"), progress=False, overrides=["train.steps=20"])
    result = compare(args, command=fake_command(), report=report)
    assert result.exit_code == 0 and result.report == tmp_path / "report" / "index.html"
    (run_dirs, out, baseline), = calls
    assert len(run_dirs) == 8 and all((d / "summary.json").exists() for d in run_dirs)
    assert out == tmp_path / "report" and baseline == "adam"
    record = json.loads((tmp_path / "runs" / "compare-mnist1d_mlp" / "sweep.json").read_text())
    assert record["counts"] == {"completed": 8}
    assert all("train.steps=20" in r["overrides"] for r in record["runs"])


def test_unknown_optimizer_fails_before_any_run(tmp_path):
    args = CompareArgs(optims=["sgd", "adamm"], root=str(tmp_path / "runs"), progress=False)
    with pytest.raises(ConfigError, match="unknown optimizer 'adamm'"):
        compare(args, command=fake_command())
    with pytest.raises(ConfigError, match="optim.momentum"):  # adam takes no momentum: validated for every run
        compare(CompareArgs(optims=["sgd", "adam"], root=str(tmp_path / "runs"), progress=False,
                            overrides=["optim.momentum=0.9"]), command=fake_command())
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["sweep", "no_such_sweep"], "unknown sweep 'no_such_sweep'"),
        (["sweep", "missing.yaml"], "sweep spec not found"),
        (["sweep", "example", "--backend", "cloud"], "invalid choice: 'cloud'"),
        (["sweep", "example", "--workers", "0"], "--workers must be at least 1"),
        (["sweep", "example", "train.stpes=10"], "train.stpes"),
        (["sweep", "example", "--backend", "slurm", "--slurm-cluster", "local", "--slurm-time", "soon"], "--slurm-time"),
        (["compare", "optims=[sgd,nosuch]"], "unknown optimizer 'nosuch'"),
        (["compare", "colour=blue"], "unknown compare key 'colour'"),
    ],
)
def test_cli_bad_input_exits_2_before_any_run(argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_cli_empty_grid_exits_2(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty.yaml").write_text("name: empty\ngrid: {optim: []}\n")
    assert main(["sweep", "empty.yaml"]) == 2
    assert "empty grid: key 'optim' has no values" in capsys.readouterr().err


def test_dry_run_lists_runs_and_starts_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["sweep", "example", "--dry-run", "--root", "r"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 12 and all(line.startswith("pending") for line in lines)
    assert not (tmp_path / "r").exists()


def test_slurm_time_parsing():
    from optimlab.sweep.cli import parse_minutes

    assert [parse_minutes(t) for t in ("90", "1:30", "1:30:00", "0:00:30", "1-00:00:00")] == [90, 90, 90, 1, 1440]
