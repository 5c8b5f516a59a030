"""What a new user meets first: help that lists every config key, --print-config, `list`, and the override
grammar Hydra users type (+key, ++key, ~key, several --config files, a multirun list)."""

import dataclasses

import pytest
import yaml

from optimlab.cli import main
from optimlab.config import Config, config_hash, load_config, load_config_file
from optimlab.config_help import config_keys, field_comments
from optimlab.errors import ConfigError


def _every_key():
    """Every config key, read from the dataclasses themselves (not from the help module)."""
    keys = []
    for f in dataclasses.fields(Config):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            keys += [f"{f.name}.{g.name}" for g in dataclasses.fields(default) if g.name not in ("options", "kwargs")]
        else:
            keys.append(f.name)
    return keys


def test_train_help_lists_every_key_with_default_and_meaning(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for key in _every_key():
        assert f"    {key}=" in out, key
    assert "train.steps=1000" in out and "optimizer steps (iterations) in the whole run" in out
    assert "optim.<argument>=value" in out and "task.<option>=value" in out
    rows = {key: meaning for key, _, meaning in config_keys()}
    assert set(rows) == set(_every_key())
    assert all(rows.values()), [k for k, m in rows.items() if not m]  # every key has a one-line meaning


def test_train_help_ends_with_the_config_keys_built_only_when_help_is_printed(capsys):
    # The epilog is computed on demand: parsing a run's arguments never reads the dataclasses' source,
    # and the printed help is the one argparse prints with the epilog given up front.
    import argparse
    import subprocess
    import sys

    from optimlab.config_help import config_help
    from optimlab.train.cli import DESCRIPTION, build_parser

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    eager = build_parser()
    eager.epilog = config_help()
    assert out == argparse.ArgumentParser.format_help(eager) and out.endswith(config_help() + "\n")
    assert DESCRIPTION.splitlines()[0] in out
    probe = (
        "import sys; from optimlab.train.cli import build_parser; "
        "build_parser().parse_intermixed_args(['task=toy', '--print-config']); "
        "print('optimlab.config_help' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.split() == ["False"], done.stderr


def test_help_anywhere_on_the_line(capsys):
    with pytest.raises(SystemExit):
        main(["train", "optim=sgd", "--help"])
    assert "config keys" in capsys.readouterr().out
    for argv, text in [(["sweep", "example", "--workers", "2", "--help"], "usage: optimlab sweep"),
                       (["compare", "optims=[sgd]", "-h"], "usage: optimlab compare"),
                       (["list", "--help"], "usage: optimlab list"),
                       (["list", "optimizers", "-h"], "usage: optimlab list")]:
        assert main(argv) == 0
        assert text in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        main(["report", "runs", "--help"])
    assert exit_.value.code == 0 and "usage: optimlab report" in capsys.readouterr().out


def test_comments_are_parsed_from_the_source():
    @dataclasses.dataclass
    class Example:
        a: int = 1  # trailing wins
        # a block above
        # on two lines
        b: str = "x"
        c: float = 0.5

    assert field_comments(Example) == {"a": "trailing wins", "b": "a block above on two lines"}


def test_print_config_prints_the_resolved_config_and_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "optim=sgd", "optim.lr=0.05", "--print-config"]) == 0
    tree = yaml.safe_load(capsys.readouterr().out)
    assert tree["optim"]["name"] == "sgd" and tree["optim"]["lr"] == 0.05 and tree["optim"]["momentum"] == 0
    cfg = load_config(["optim=sgd", "optim.lr=0.05"])
    assert tree["run_dir"] == f"runs/mnist1d_mlp/sgd-{config_hash(cfg)}"
    assert list(tmp_path.iterdir()) == []


def test_list_optimizers_describes_each_and_one_in_detail(capsys):
    assert main(["list", "optimizers"]) == 0
    lines = capsys.readouterr().out.splitlines()
    sgd = next(line for line in lines if line.startswith("sgd "))
    assert "stochastic gradient descent" in sgd
    assert main(["list", "optimizers", "adam_hd"]) == 0
    out = capsys.readouterr().out
    assert "hypergradient" in out and "hypergrad_lr" in out and "1e-08" in out and "betas" in out
    assert main(["list", "optimizers", "adamm"]) == 2
    assert "did you mean" in capsys.readouterr().err


def test_plus_and_double_plus_set_a_key_like_plain():
    plain = load_config(["optim=sgd", "optim.lr=0.1", "train.steps=7"])
    assert load_config(["optim=sgd", "+optim.lr=0.1", "++train.steps=7"]) == plain


def test_tilde_removes_a_key_back_to_its_default(tmp_path):
    path = tmp_path / "a.yaml"
    path.write_text("optim: {name: sgd, lr: 0.1, momentum: 0.9}\ntrain: {steps: 7}\n")
    cfg = load_config_file(path, ["~optim.momentum", "~train.steps"])
    assert cfg.optim.kwargs["momentum"] == 0 and cfg.optim.kwargs["lr"] == 0.1 and cfg.train.steps == 1000
    # an override set earlier on the line is removed too; a later one sets it again
    assert load_config(["train.steps=5", "~train.steps"]).train.steps == 1000
    assert load_config(["~train.steps", "train.steps=5"]).train.steps == 5
    assert load_config(["~schedule"]).schedule.name == "constant"
    with pytest.raises(ConfigError, match="unknown config key 'trian"):
        load_config(["~trian.steps"])


def test_several_config_files_compose_in_order(tmp_path):
    (tmp_path / "a.yaml").write_text("optim: {name: sgd, lr: 0.1}\ntrain: {steps: 7}\n")
    (tmp_path / "b.yaml").write_text("optim.lr: 0.2\nseed: 3\n")
    cfg = load_config_file([tmp_path / "a.yaml", tmp_path / "b.yaml"], ["seed=4"])
    assert (cfg.optim.name, cfg.optim.kwargs["lr"], cfg.train.steps, cfg.seed) == ("sgd", 0.2, 7, 4)


def test_several_config_flags_on_the_command_line(tmp_path, capsys):
    (tmp_path / "a.yaml").write_text("optim: {name: sgd, lr: 0.1}\n")
    (tmp_path / "b.yaml").write_text("optim: {lr: 0.2}\n")
    argv = ["train", "--config", str(tmp_path / "a.yaml"), "train.steps=3", "--config", str(tmp_path / "b.yaml"),
            "--print-config"]
    assert main(argv) == 0
    tree = yaml.safe_load(capsys.readouterr().out)
    assert (tree["optim"]["name"], tree["optim"]["lr"], tree["train"]["steps"]) == ("sgd", 0.2, 3)


@pytest.mark.parametrize("item", ["optim.lr=1e-3,1e-2", "seed=0,1,2"])
def test_multirun_lists_get_a_one_line_hint(item, capsys):
    with pytest.raises(ConfigError, match="optimlab compare"):
        load_config([item])
    assert main(["train", item]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "sweep" in err


def test_commas_inside_brackets_or_quotes_are_values():
    cfg = load_config(["optim=adam", "optim.betas=[0.8,0.9]", "instruments=[grad_stats,hessian_top]"])
    assert cfg.optim.kwargs["betas"] == (0.8, 0.9) and cfg.instruments.names == ["grad_stats", "hessian_top"]
    assert load_config(["run_dir='runs/a,b'"]).run_dir == "runs/a,b"


def test_a_pair_given_one_value_is_a_one_line_error(capsys):
    with pytest.raises(ConfigError, match=r"config key 'optim.betas': expected a list of 2 values like \[0.9, 0.999\]"):
        load_config(["optim=adam", "optim.betas=[0.9]"])
    assert main(["train", "optim.betas=[0.9]"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
