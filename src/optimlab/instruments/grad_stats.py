"""grad_stats: the study's statistics of the training batch's gradient from per-example moments (one pass).

With per-example gradients g_i of the batch of n examples, the mini-batch gradient's per-coordinate
moments are estimated without repeated draws (Faghri et al. 2020, section on per-example estimators):
m = mean_i g_i, v = Var_i(g_i) / n (the unbiased per-example variance over the batch size), and
s = m^2 (whose expectation is mu^2 + sigma^2/n = E[g_batch^2]). The study's var, nvar, snr and gnorm
follow (statistics.py), per layer and overall, plus `example_var`: the mean per-example variance.

Cost: one forward+backward pass on the training batch with layer hooks (per_example.py). Batch norm in
training mode couples the examples, so this instrument computes per-example gradients with those layers in
eval mode (running statistics, not updated): the documented policy, reported as `bn_eval` = 1.
"""

from __future__ import annotations

from optimlab.instruments.base import Instrument
from optimlab.instruments.isolation import isolated
from optimlab.instruments.per_example import per_example_moments, train_mode_batch_norms
from optimlab.instruments.statistics import Estimate, layer_statistics
from optimlab.train.hooks import StepInfo


class GradStats(Instrument):
    name = "grad_stats"
    description = "var, nvar, snr, gnorm of the training batch's gradient from per-example moments (1 extra pass)"
    needs = ("training_batch",)

    def after_backward(self, step: StepInfo) -> None:
        if not self.schedule.due(step.step):
            return
        n = len(step.batch[0])
        if n < 2:
            return
        with self.timed(), isolated(self.model):
            bn_eval = bool(train_mode_batch_norms(self.model))
            moments = per_example_moments(
                self.model,
                self.loss_fn,
                step.batch,
                microbatch_size=self.cfg.microbatch_size,
                batch_norm="eval" if bn_eval else "error",
            )
            self.cost["grad_evals"] += 1
            estimates = {
                name: Estimate(m.mean, m.mean.square(), m.variance / n) for name, m in moments.items()
            }
            values = layer_statistics(estimates)
            sizes = sum(m.variance.numel() for m in moments.values())
            values["example_var"] = float(sum(m.variance.double().sum() for m in moments.values())) / sizes
            values["bn_eval"] = float(bn_eval)
        self.publish(step.step, values)
