"""Random and quasi-random search in sweep specs: ranges, determinism, coverage, and the errors."""

import math

import numpy as np
import pytest

from optimlab.errors import ConfigError
from optimlab.sweep.search import scale, search_points, unit_samples
from optimlab.sweep.spec import parse_spec

SPACE = {"optim.lr": {"log": [1e-4, 1e-1]}, "optim.momentum": {"linear": [0.0, 0.9]},
         "task.width": {"int": [32, 64]}, "optim.nesterov": [True, False]}


def test_scale_maps_the_unit_interval_onto_each_range():
    assert scale(0.0, {"log": [1e-4, 1e-1]}) == pytest.approx(1e-4)
    assert scale(0.5, {"log": [1e-4, 1e-2]}) == pytest.approx(1e-3)  # the geometric middle
    assert scale(0.25, {"linear": [0.0, 0.8]}) == pytest.approx(0.2)
    assert [scale(u, {"int": [1, 3]}) for u in (0.0, 0.34, 0.67, 0.999)] == [1, 2, 3, 3]
    assert [scale(u, ["a", "b"]) for u in (0.0, 0.49, 0.5, 0.999)] == ["a", "a", "b", "b"]


@pytest.mark.parametrize("method", ["random", "sobol", "halton"])
def test_trials_are_in_range_and_reproducible(method):
    search = {"trials": 16, "method": method, "seed": 3, "space": SPACE}
    points = search_points(search, "spec")
    assert points == search_points(search, "spec") and len(points) == 16
    for p in points:
        assert 1e-4 <= p["optim.lr"] <= 1e-1 and 0.0 <= p["optim.momentum"] <= 0.9
        assert 32 <= p["task.width"] <= 64 and p["optim.nesterov"] in (True, False)
    assert points != search_points({**search, "seed": 4}, "spec")


def test_quasi_random_covers_the_box_more_evenly_than_random():
    def worst_gap(u):  # the largest empty stretch of [0, 1) in the first coordinate
        x = np.sort(np.concatenate([[0.0], u[:, 0], [1.0]]))
        return np.diff(x).max()

    gaps = {m: np.mean([worst_gap(unit_samples(m, 32, 2, s)) for s in range(20)]) for m in ("random", "sobol")}
    assert gaps["sobol"] < 0.5 * gaps["random"]
    strata = np.floor(unit_samples("sobol", 32, 2, 0)[:, 0] * 32)
    assert sorted(strata.tolist()) == list(range(32))  # scrambled Sobol: one point in each 1/32 stratum


def test_a_spec_with_grid_and_search_gives_every_grid_point_the_same_trials():
    spec = parse_spec({"name": "s", "grid": {"optim": ["sgd", "adam"]}, "seeds": 2,
                       "search": {"trials": 4, "space": {"optim.lr": {"log": [1e-3, 1e-1]}}}})
    assert len(spec.points) == 2 * 4 * 2
    lrs = {o: [p["optim.lr"] for p in spec.points if p["optim"] == o and p["seed"] == 0] for o in ("sgd", "adam")}
    assert lrs["sgd"] == lrs["adam"] and len(set(lrs["sgd"])) == 4
    assert all(math.isclose(float(f"{v:.6g}"), v) for v in lrs["sgd"])
    only_search = parse_spec({"name": "t", "search": {"trials": 3, "space": {"optim.lr": {"linear": [0.1, 0.2]}}}})
    assert len(only_search.points) == 3


@pytest.mark.parametrize("search, message", [
    ({"trials": 0, "space": SPACE}, "'trials' must be a positive integer"),
    ({"trials": 2, "method": "grid", "space": SPACE}, "'method' 'grid' is not one of random, sobol, halton"),
    ({"trials": 2, "space": {"optim.lr": {"log": [0, 1]}}}, "log range needs low > 0"),
    ({"trials": 2, "space": {"optim.lr": {"uniform": [0, 1]}}}, "expected {log: "),
    ({"trials": 2, "space": {"optim.lr": {"linear": [1, 0]}}}, "low <= high"),
    ({"trials": 2, "spaces": {}}, "unknown search key 'spaces'; did you mean space"),
])
def test_bad_searches_name_the_problem(search, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("{", r"\{")):
        parse_spec({"name": "s", "search": search})
