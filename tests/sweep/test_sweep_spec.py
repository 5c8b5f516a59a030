"""Sweep specs: grid expansion, named sweeps, validation of every run before any starts."""

import textwrap

import pytest

from optimlab.config import config_hash, load_config
from optimlab.errors import ConfigError
from optimlab.sweep import expand, load_spec, parse_spec, register_sweep
from optimlab.sweep.expand import format_value
from optimlab.sweep.spec import available_sweeps


def test_product_union_and_seeds_outermost():
    spec = parse_spec({
        "name": "s",
        "base": {"train": {"steps": 10}, "optim.weight_decay": 0.0},
        "grid": [{"task": "logreg", "optim": ["sgd", "adam"], "optim.lr": [0.1, 0.01]}, {"task": "quadratic", "optim": "adam"}],
        "seeds": 2,
    })
    assert len(spec.points) == 2 * (4 + 1)
    first, last = spec.points[0], spec.points[-1]
    assert first == {"train.steps": 10, "optim.weight_decay": 0.0, "task": "logreg", "optim": "sgd", "optim.lr": 0.1, "seed": 0}
    assert last == {"train.steps": 10, "optim.weight_decay": 0.0, "task": "quadratic", "optim": "adam", "seed": 1}
    assert [p["seed"] for p in spec.points] == [0] * 5 + [1] * 5  # a half-done sweep has whole grids


def test_seed_list_repeats_and_linked_values():
    assert [p["seed"] for p in parse_spec({"name": "s", "grid": {"optim": "sgd"}, "seeds": [3, 7]}).points] == [3, 7]
    assert len(parse_spec({"name": "s", "grid": {"optim": "sgd"}, "repeats": 4}).points) == 4
    linked = parse_spec({"name": "s", "grid": {"optim": [{"name": "sgd", "lr": 0.1}, {"name": "adam", "lr": 1e-3}]}})
    assert linked.points == [{"optim.name": "sgd", "optim.lr": 0.1}, {"optim.name": "adam", "optim.lr": 1e-3}]


@pytest.mark.parametrize(
    "data, message",
    [
        ({"name": "s", "grid": {"optim": ["sgd"]}, "seed": 3}, "unknown spec key 'seed'; did you mean seeds"),
        ({"name": "s", "grid": []}, "empty grid"),
        ({"name": "s", "grid": {}}, "empty grid"),
        ({"name": "s", "grid": {"optim": []}}, "empty grid: key 'optim' has no values"),
        ({"name": "s", "grid": [{"optim": "sgd"}, {}]}, "grid[1]: empty grid"),
        ({"name": "s"}, "no 'grid'"),
        ({"name": "s", "grid": "optim=sgd"}, "'grid' must be a mapping"),
        ({"name": "s", "grid": {"optim": "sgd"}, "seeds": 0}, "'seeds' must be at least 1"),
        ({"name": "s", "grid": {"optim": "sgd"}, "seeds": [1, 1]}, "duplicates"),
        ({"name": "s", "grid": {"optim": "sgd"}, "seeds": 2, "repeats": 2}, "either 'seeds' or 'repeats'"),
        ({"name": "s", "grid": {"seed": [1, 2]}, "seeds": 2}, "'seed' is set both"),
        ({"name": "a/b", "grid": {"optim": "sgd"}}, "sweep name must be"),
        (["not", "a", "mapping"], "expected a mapping"),
    ],
)
def test_malformed_specs_name_the_problem(data, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_spec(data, name="s")


def test_every_run_validated_before_any_starts(tmp_path):
    spec = parse_spec({"name": "s", "grid": [{"optim": ["sgd", "adam"]}, {"optim": "adam", "optim.lrr": 0.1}]})
    with pytest.raises(ConfigError, match=r"run 2 .*'optim.lrr'.*did you mean lr"):
        expand(spec, tmp_path / "runs")
    with pytest.raises(ConfigError, match="unknown optimizer 'adamm'"):
        expand(parse_spec({"name": "s", "grid": {"optim": ["sgd", "adamm"]}}), tmp_path / "runs")
    with pytest.raises(ConfigError, match="unknown config key 'trian'"):
        expand(parse_spec({"name": "s", "grid": {"trian.steps": [1]}}), tmp_path / "runs")
    with pytest.raises(ConfigError, match="'run_dir' is set by the sweep"):
        expand(parse_spec({"name": "s", "grid": {"run_dir": ["x"]}}), tmp_path / "runs")
    assert not (tmp_path / "runs").exists()


def test_run_directories_are_derived_from_the_config(tmp_path, small_spec):
    runs = expand(small_spec, tmp_path, extra=["train.eval_every=5"])
    assert len(runs) == 6 and len({r.run_dir for r in runs}) == 6
    for run in runs:
        cfg = load_config(run.overrides)
        assert cfg == run.config
        assert run.run_dir == tmp_path / "small" / cfg.task.name / f"{cfg.optim.name}-{config_hash(cfg)}"
        assert run.overrides[-1] == "train.eval_every=5"  # extra overrides come last
    assert [r.run_dir for r in expand(small_spec, tmp_path, extra=["train.eval_every=5"])] == [r.run_dir for r in runs]
    assert expand(small_spec, tmp_path)[0].run_dir != runs[0].run_dir  # a different config, a different place


def test_a_shared_cache_validates_each_configuration_once(tmp_path, monkeypatch):
    import sys

    config_module = sys.modules["optimlab.config"]  # where load_config_cached finds load_config

    loaded = []
    monkeypatch.setattr(config_module, "load_config", lambda o: loaded.append(o) or load_config(o))
    grid = {"name": "s", "grid": {"task": "logreg", "optim": "sgd", "optim.lr": [0.1, 0.3]}, "seeds": 2}
    cache: dict = {}
    first = expand(parse_spec(grid), tmp_path, cache=cache)
    assert len(first) == 4 and len(loaded) == 2  # one validation per configuration, not per seed
    extended = expand(parse_spec({**grid, "grid": {**grid["grid"], "optim.lr": [0.1, 0.3, 1.0]}}), tmp_path, cache=cache)
    assert len(loaded) == 3  # only the new learning rate
    assert [r.config for r in extended[:2]] == [r.config for r in first[:2]]
    assert [r.config for r in extended] == [r.config for r in expand(parse_spec({**grid, "grid": {**grid["grid"], "optim.lr": [0.1, 0.3, 1.0]}}), tmp_path)]


def test_duplicate_points_run_once_and_log_only_differences_are_refused(tmp_path):
    union = parse_spec({"name": "s", "grid": [{"optim": ["sgd", "adam"]}, {"optim": "adam"}]})
    assert len(expand(union, tmp_path)) == 2
    clash = parse_spec({"name": "s", "grid": {"optim": "adam", "train.log_every": [5, 10]}})
    with pytest.raises(ConfigError, match="share one directory"):
        expand(clash, tmp_path)


@pytest.mark.parametrize("value", [1e-5, 0.1, 3, True, None, "sgd", "1", "true", "a b", "", [0.9, 0.999], {"a": 1, "b": [1, "x"]}])
def test_override_values_read_back_exactly(value):
    from omegaconf import OmegaConf

    from optimlab.config import parse_overrides

    assert OmegaConf.to_container(parse_overrides([f"x={format_value(value)}"]))["x"] == value


def test_named_yaml_specs_python_sweeps_and_module_functions(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sweeps").mkdir()
    (tmp_path / "sweeps" / "mine.yaml").write_text(textwrap.dedent("""
        description: my sweep
        grid: {optim: [sgd, adam]}
        seeds: 2
    """))
    spec = load_spec("mine")
    assert spec.name == "mine" and spec.description == "my sweep" and len(spec.points) == 4
    assert load_spec(str(tmp_path / "sweeps" / "mine.yaml")).points == spec.points

    @register_sweep("test_python_sweep")
    def python_sweep():
        """Two runs from Python."""
        return [{"optim": "sgd", "optim.lr": lr} for lr in (0.1, 0.3)]

    spec = load_spec("test_python_sweep")
    assert spec.points == [{"optim": "sgd", "optim.lr": 0.1}, {"optim": "sgd", "optim.lr": 0.3}]
    assert spec.description == "Two runs from Python."

    (tmp_path / "my_sweeps_module.py").write_text("def grid():\n    return [{'optim': {'name': 'adam', 'lr': 0.01}}]\n")
    spec = load_spec("my_sweeps_module:grid")
    assert spec.name == "grid" and spec.points == [{"optim.name": "adam", "optim.lr": 0.01}]

    names = available_sweeps()
    assert {"mine", "test_python_sweep", "lr_scan", "example"} <= set(names)  # example: the repo's sweeps/
    with pytest.raises(ConfigError, match="unknown sweep 'mien'.*did you mean mine"):
        load_spec("mien")
    with pytest.raises(ConfigError, match="has no function 'nope'"):
        load_spec("my_sweeps_module:nope")
    (tmp_path / "broken.yaml").write_text("grid: {optim: [sgd\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_spec("broken.yaml")
    with pytest.raises(ConfigError, match="sweep spec not found"):
        load_spec("missing.yaml")


def test_repository_specs_expand():
    for name in available_sweeps():
        expand(load_spec(name))  # every shipped sweep is valid


def test_configs_validated_once_per_seedless_override_set_equal_full_validation(tmp_path):
    spec = parse_spec({"name": "s", "grid": {"optim": ["sgd", "adam"], "optim.lr": [0.1, 0.01]}, "seeds": [0, 3, 5]})
    for extra in ((), ("seed=9",)):
        runs = expand(spec, tmp_path, extra=extra)
        assert len(runs) == (12 if not extra else 4)
        for run in runs:
            assert run.config == load_config(run.overrides)
    with pytest.raises(ConfigError, match="'seed'"):
        expand(parse_spec({"name": "s", "grid": {"optim": "sgd"}, "seeds": 1}), tmp_path, extra=("seed=abc",))
