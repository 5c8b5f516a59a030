"""Learned optimizers: policies, meta-training (TBPTT, ES, PES; curriculum and repeat strategies), and
deployment as a `torch.optim.Optimizer` for any model (docs/learned.md).

    import optimlab.learned as lo
    policy = lo.RNNProp()                         # 5,141 meta-parameters
    lo.save(policy, "my_opt")                     # config.json + weights.safetensors
    opt = lo.load("my_opt").optimizer(model.parameters())
"""

from optimlab.learned.optimizer import LearnedOptimizer, learned
from optimlab.learned.package import (
    LearnedOptimizerSpec,
    available_pretrained,
    load,
    resolve_path,
    save,
    weights_sha256,
)
from optimlab.learned.policies import (
    POLICIES,
    Choice,
    DMOptimizer,
    Policy,
    RNNProp,
    ScaleHierarchical,
    SmallFCLOpt,
    build_policy,
)

__all__ = [
    "POLICIES", "Choice", "DMOptimizer", "LearnedOptimizer", "LearnedOptimizerSpec", "Policy", "RNNProp", "ScaleHierarchical",
    "SmallFCLOpt", "available_pretrained", "build_policy", "learned", "load", "resolve_path", "save", "weights_sha256",
]  # fmt: skip
