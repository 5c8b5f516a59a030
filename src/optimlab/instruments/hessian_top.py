"""hessian_top: the top Hessian eigenvalue (sharpness) of the training batch's mean loss, by power iteration."""

from __future__ import annotations

from optimlab.instruments.base import Instrument, step_generator
from optimlab.instruments.hessian import top_eigenvalue
from optimlab.isolation import isolated
from optimlab.train.hooks import StepInfo


class HessianTop(Instrument):
    name = "hessian_top"
    description = "top Hessian eigenvalue of the batch loss by power iteration on Hessian-vector products"
    needs = ("training_batch", "hvp")

    def after_backward(self, step: StepInfo) -> None:
        if not self.schedule.due(step.step):
            return
        params = [p for _, p in self.named_trainable()]

        def loss():
            loss_sum, count = self.loss_fn(self.model, step.batch)
            return loss_sum / count

        with self.timed(), isolated(self.model):
            result = top_eigenvalue(
                loss,
                params,
                iterations=self.cfg.hessian_iterations,
                tol=self.cfg.hessian_tol,
                generator=step_generator(self.ctx.seed, step.step, 17),
            )
            self.cost["grad_evals"] += 1
            self.cost["hvps"] += result.hvps
        self.publish(
            step.step,
            {"eigenvalue": result.eigenvalue, "iterations": float(result.hvps), "converged": float(result.converged)},
        )
