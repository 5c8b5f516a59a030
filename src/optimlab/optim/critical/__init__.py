"""Critical-gradient ("_C") optimizers: a memory of the top-C past gradients feeding a base optimizer.

Re-implemented from chandar-lab/CriticalGradientOptimization (McRae et al., ICLR 2022); see
docs/critical_gradients.md for usage, every option and the differences from the original.

Files: `buffer.py` (the per-parameter memory), `priority.py` (what gradients are ranked by),
`sampling.py` (admission policies), `aggregate.py` (memory + gradient -> direction), `memory.py`
(one memory step for a param group, loop and vectorized), `fused.py` (the compiled one-pass steps of
``fused=True``), `base.py` (shared class), and one file per base optimizer.
"""

from optimlab.optim.critical.adam_c import Adam_C, AdamW_C
from optimlab.optim.critical.base import CriticalOptimizer
from optimlab.optim.critical.rmsprop_c import RMSprop_C
from optimlab.optim.critical.sgd_c import SGD_C

__all__ = ["Adam_C", "AdamW_C", "CriticalOptimizer", "RMSprop_C", "SGD_C"]
