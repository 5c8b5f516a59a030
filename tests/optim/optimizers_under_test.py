"""The registry of optimizers under test: every entry runs the shared property suite (test_properties.py).

To add an optimizer, append one or more `OptimizerUnderTest` entries to `OPTIMIZERS_UNDER_TEST`:

    OptimizerUnderTest("my_opt", {"lr": 0.1, "beta": 0.9}, "default betas",
                       bad_kwargs=[{"lr": -1.0}, {"beta": 2.0}])

- `name` is the registry name (`optimlab.optim.build_optimizer(name, params, **kwargs)`).
- `kwargs` must make the optimizer converge on the quadratic and the Rosenbrock problem of the suite
  within its step budget; `problem_kwargs` overrides them per problem ("quadratic", "rosenbrock").
- `bad_kwargs`: invalid hyperparameters that must raise ValueError (ConfigError is one).
- `skips`: {test name: reason} for tests that do not apply; the reason is shown in the report.
- Capabilities: `needs_closure` (LBFGS), `lr_scales_update` (False where `lr` does not scale the step,
  e.g. Rprop's initial step size), `matrix_only` (Muon: 2-D parameters only), `has_foreach`.

Each entry is one configuration; add several entries with different `desc` to cover options.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class OptimizerUnderTest:
    name: str
    kwargs: dict[str, Any]
    desc: str = "defaults"
    bad_kwargs: list[dict[str, Any]] = field(default_factory=list)
    problem_kwargs: dict[str, dict[str, Any]] = field(default_factory=dict)
    skips: dict[str, str] = field(default_factory=dict)
    needs_closure: bool = False
    lr_scales_update: bool = True
    matrix_only: bool = False
    has_foreach: bool = True

    @property
    def id(self) -> str:
        return f"{self.name}[{self.desc}]"

    def kwargs_for(self, problem: str) -> dict[str, Any]:
        return {**self.kwargs, **self.problem_kwargs.get(problem, {})}


_LR_BAD = [{"lr": -1.0}]

TORCH = [
    OptimizerUnderTest("sgd", {"lr": 0.05}, bad_kwargs=_LR_BAD + [{"momentum": -0.5}],
                       problem_kwargs={"rosenbrock": {"lr": 1e-3}}),
    OptimizerUnderTest("sgd", {"lr": 0.02, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-4}, "nesterov",
                       problem_kwargs={"rosenbrock": {"lr": 5e-4}}),
    OptimizerUnderTest("adam", {"lr": 0.05}, bad_kwargs=_LR_BAD + [{"betas": (1.5, 0.9)}, {"eps": -1.0}]),
    OptimizerUnderTest("adam", {"lr": 0.05, "amsgrad": True, "weight_decay": 1e-4}, "amsgrad"),
    OptimizerUnderTest("adamw", {"lr": 0.05}, bad_kwargs=_LR_BAD),
    OptimizerUnderTest("adamax", {"lr": 0.05}, bad_kwargs=_LR_BAD, problem_kwargs={"rosenbrock": {"lr": 0.3}}),
    OptimizerUnderTest("nadam", {"lr": 0.05}, bad_kwargs=_LR_BAD, skips={
        "test_state_dict_round_trip_continues_in_lockstep": "torch NAdam: load_state_dict casts its float32 "
        "'mu_product' to the float64 parameter dtype, so the resumed run differs in the last bits"}),
    OptimizerUnderTest("radam", {"lr": 0.05}, bad_kwargs=_LR_BAD, problem_kwargs={"rosenbrock": {"lr": 0.005}}),
    OptimizerUnderTest("adagrad", {"lr": 0.3}, bad_kwargs=_LR_BAD, skips={
        "test_parameters_without_gradients_untouched": "torch Adagrad creates its state for every parameter "
        "in __init__"}),
    OptimizerUnderTest("adadelta", {"lr": 10.0}, bad_kwargs=_LR_BAD + [{"rho": 1.5}],
                       problem_kwargs={"rosenbrock": {"lr": 1.0}}),
    OptimizerUnderTest("adafactor", {"lr": 0.05}, bad_kwargs=_LR_BAD,
                       skips={"test_dtypes_kept": "Adafactor keeps float32 row/column factors by design"}),
    OptimizerUnderTest("rmsprop", {"lr": 0.01}, bad_kwargs=_LR_BAD + [{"alpha": -0.1}]),
    OptimizerUnderTest("rmsprop", {"lr": 0.01, "centered": True, "momentum": 0.5}, "centered momentum"),
    OptimizerUnderTest("rprop", {"lr": 0.01}, bad_kwargs=_LR_BAD + [{"etas": (1.5, 1.2)}], lr_scales_update=False),
    OptimizerUnderTest("asgd", {"lr": 0.05, "t0": 1e9}, bad_kwargs=_LR_BAD,
                       problem_kwargs={"rosenbrock": {"lr": 1e-3}}, skips={
        "test_state_dict_round_trip_continues_in_lockstep": "torch ASGD: load_state_dict casts its float32 "
        "'eta' and 'mu' to the float64 parameter dtype",
        "test_foreach_matches_forloop_float64": "torch ASGD's foreach and for-loop kernels differ by ~1e-8 "
        "in float64 (its float32 'eta')"}),
    OptimizerUnderTest("lbfgs", {"lr": 1.0, "max_iter": 5}, bad_kwargs=_LR_BAD, needs_closure=True,
                       has_foreach=False),
    # Matrices go to Muon, Rosenbrock's vector to the AdamW fallback (optimlab's "muon": MuonWithAdamW).
    OptimizerUnderTest("muon", {"lr": 0.05, "weight_decay": 0.0}, has_foreach=False,
                       bad_kwargs=_LR_BAD + [{"adamw_lr": -1.0}, {"adamw_betas": (0.9, 1.0)}, {"ns_steps": 0},
                                             {"momentum": -0.5}, {"adjust_lr_fn": "rms"}]),
]

# Critical-gradient optimizers: several configurations each, covering every option family.
_C_BAD = _LR_BAD + [
    {"topC": 0},
    {"topC": 2.5},
    {"decay": 1.5},
    {"decay": -0.1},
    {"decay": 0.0},
    {"kappa": -1.0},
    {"aggr": "average"},
    {"sampling": "pure_random"},
    {"synced": "sometimes"},
    {"priority": "age"},
    {"update": "nothing"},
    {"offer": "never"},
    {"weight_decay_mode": "inside"},
    {"refresh_every": 0},
]

CRITICAL = [
    OptimizerUnderTest("sgd_c", {"lr": 0.02}, bad_kwargs=_C_BAD + [{"momentum": -0.5}, {"nesterov": True}],
                       problem_kwargs={"rosenbrock": {"lr": 1e-3}}),
    OptimizerUnderTest("sgd_c", {"lr": 1e-3, "momentum": 0.9, "weight_decay": 1e-4, "topC": 5, "decay": 0.9},
                       "momentum wd", problem_kwargs={"rosenbrock": {"lr": 3e-5}}),
    OptimizerUnderTest("sgd_c", {"lr": 0.01, "momentum": 0.9, "nesterov": True, "synced": False, "aggr": "mid"},
                       "nesterov per-tensor mid", problem_kwargs={"rosenbrock": {"lr": 2e-4}}),
    OptimizerUnderTest("sgd_c", {"lr": 0.02, "aggr": "median-mean", "synced": "global_l2", "topC": 4},
                       "median-mean global_l2", problem_kwargs={"rosenbrock": {"lr": 1e-3}}),
    OptimizerUnderTest("sgd_c", {"lr": 0.02, "aggr": "max", "sampling": "random", "critical_test": False},
                       "max random", problem_kwargs={"rosenbrock": {"lr": 1e-3}}),
    OptimizerUnderTest("sgd_c", {"lr": 0.02, "priority": "recency", "update": "buffer_only", "diagnostics": True},
                       "fifo buffer_only", problem_kwargs={"rosenbrock": {"lr": 5e-4}}),
    OptimizerUnderTest("sgd_c", {"lr": 1e-3, "momentum": 0.9, "weight_decay": 1e-4, "fused": True}, "fused",
                       problem_kwargs={"rosenbrock": {"lr": 3e-5}},
                       skips={"test_foreach_matches_forloop_float64": "fused=True excludes foreach; "
                              "test_critical.py compares the fused step with the eager one"}),
    OptimizerUnderTest("sgd_c", {"lr": 0.02, "kappa": 0.0, "momentum": 0.5}, "kappa0",
                       problem_kwargs={"rosenbrock": {"lr": 5e-4}}),
    OptimizerUnderTest("adam_c", {"lr": 0.01}, bad_kwargs=_C_BAD + [{"betas": (0.9, 1.0)}, {"eps": -1.0}],
                       problem_kwargs={"rosenbrock": {"lr": 0.1}}),
    OptimizerUnderTest("adam_c", {"lr": 0.01, "weight_decay": 1e-4, "fused": True}, "fused",
                       problem_kwargs={"rosenbrock": {"lr": 0.1}},
                       skips={"test_foreach_matches_forloop_float64": "fused=True excludes foreach; "
                              "test_critical.py compares the fused step with the eager one"}),
    OptimizerUnderTest("adam_c", {"lr": 0.01, "amsgrad": True, "weight_decay": 1e-4, "synced": False}, "amsgrad",
                       problem_kwargs={"rosenbrock": {"lr": 0.05}}),
    OptimizerUnderTest("adam_c", {"lr": 0.05, "aggr": "min", "sampling": "proportional", "kappa": 0.5},
                       "min proportional"),
    OptimizerUnderTest("adam_c", {"lr": 0.01, "sampling": "cos_diversity", "offer": "before_aggregate",
                                  "refresh_every": 3, "topC": 4}, "cos_diversity double",
                       problem_kwargs={"rosenbrock": {"lr": 0.05}}),
    OptimizerUnderTest("adam_c", {"lr": 0.01, "priority": "inverse_norm", "aggr": "sum", "foreach": False},
                       "bottom-C loop", problem_kwargs={"rosenbrock": {"lr": 0.05}}),
    OptimizerUnderTest("adamw_c", {"lr": 0.01}, bad_kwargs=_C_BAD, problem_kwargs={"rosenbrock": {"lr": 0.05}}),
    OptimizerUnderTest("adamw_c", {"lr": 0.05, "sampling": "mean_diversity", "aggr": "max-mean"},
                       "mean_diversity max-mean"),
    OptimizerUnderTest("rmsprop_c", {"lr": 0.01}, bad_kwargs=_C_BAD + [{"alpha": 1.5}, {"momentum": -1.0}],
                       problem_kwargs={"rosenbrock": {"lr": 0.03}}),
    OptimizerUnderTest("rmsprop_c", {"lr": 0.003, "centered": True, "momentum": 0.5, "weight_decay": 1e-4},
                       "centered momentum", problem_kwargs={"rosenbrock": {"lr": 0.01}}),
    OptimizerUnderTest("rmsprop_c", {"lr": 0.01, "sampling": "cos_similarity", "aggr": "min-mean",
                                     "weight_decay": 1e-3, "weight_decay_mode": "decoupled"},
                       "cos_similarity decoupled"),
]

OPTIMIZERS_UNDER_TEST: list[OptimizerUnderTest] = TORCH + CRITICAL

# Hypergradient-descent optimizers (optimlab.optim.hypergradient_descent).
_HD_SKIPS = {"test_lr_scheduler_controls_the_step": "HD moves the lr itself; a scheduler only sets its starting point"}
_HD_BAD = _LR_BAD + [{"hypergrad_lr": -1.0}, {"lr_min": -1.0}, {"lr_max": -0.5}]
HYPERGRADIENT = [
    OptimizerUnderTest("sgd_hd", {"lr": 0.05, "hypergrad_lr": 1e-4}, bad_kwargs=_HD_BAD + [{"momentum": -0.5}],
                       skips={**_HD_SKIPS, "test_converges_rosenbrock": "plain SGD needs more than 400 steps "
                              "on Rosenbrock (the momentum entries below cover it)"}, has_foreach=False),
    OptimizerUnderTest("sgd_hd", {"lr": 0.02, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-4,
                                  "hypergrad_lr": 1e-4}, "nesterov wd",
                       problem_kwargs={"rosenbrock": {"lr": 5e-4, "hypergrad_lr": 1e-8}}, skips=_HD_SKIPS,
                       has_foreach=False),
    OptimizerUnderTest("sgd_hd", {"lr": 0.02, "momentum": 0.9, "dampening": 0.1, "hypergrad_lr": 1e-4},
                       "momentum dampening", problem_kwargs={"rosenbrock": {"lr": 5e-4, "hypergrad_lr": 1e-8}},
                       skips=_HD_SKIPS, has_foreach=False),
    OptimizerUnderTest("adam_hd", {"lr": 0.05, "hypergrad_lr": 1e-4},
                       bad_kwargs=_HD_BAD + [{"betas": (1.5, 0.9)}, {"eps": -1.0}], skips=_HD_SKIPS,
                       has_foreach=False),
    OptimizerUnderTest("adam_hd", {"lr": 0.05, "weight_decay": 1e-4, "hypergrad_lr": 1e-3, "lr_max": 0.2},
                       "wd bounded", skips=_HD_SKIPS, has_foreach=False),
]
OPTIMIZERS_UNDER_TEST += HYPERGRADIENT

# The learned optimizer (optimlab.learned), with the RNNProp shipped in optimlab/learned/pretrained/.
LEARNED = [
    # lr multiplies the policy's step, whose size RNNProp caps at 0.1 per coordinate: Rosenbrock's valley
    # needs longer steps within the suite's 600-step budget.
    OptimizerUnderTest("learned", {"warmup_steps": 0}, "shipped rnnprop-mnist1d",
                       bad_kwargs=_LR_BAD + [{"warmup_steps": -1}, {"path": "no-such-optimizer"}], has_foreach=False,
                       problem_kwargs={"rosenbrock": {"lr": 4.0}}),
]
OPTIMIZERS_UNDER_TEST += LEARNED
