"""train.sampler=stratified: the loop's weighted gradient of the sampler's batch is GC's direction (float64),
GC-SGD then costs no extra gradient per step, resumes bit-exactly, and needs direction=gc."""

import pytest
import torch
from resume_helpers import logged, stop_resume_matches

from optimlab.config import load_config
from optimlab.directions import Objective
from optimlab.directions.clustering import _STREAM_SEED, GradientClustering
from optimlab.directions.gc_sampler import StratifiedSampler
from optimlab.errors import ConfigError
from optimlab.tasks import build_task
from optimlab.train import train
from optimlab.train.importance import weighted_task, with_weights


def test_the_loops_weighted_gradient_of_the_sampled_batch_is_the_gc_direction():
    torch.manual_seed(0)
    task = build_task("toy", {"dropout": 0.0, "dtype": "float64"})
    model, objective = task.model, Objective.of(task)
    gc = GradientClustering(model, clusters=3, citers=2, snapshot_every=5).bind(task.train, device="cpu", batch_size=24)
    updates = []
    sampler = StratifiedSampler(gc, len(task.train), 24, seed=0, before_draw=lambda step: (
        updates.append(step), gc.infrequent(step, model, objective) if gc.due(step)[1] else None))  # fmt: skip
    sampler.next()  # step 0: the clustering runs before the draw
    assert updates == [0] and gc.ready
    for _ in range(3):
        expected = gc.sample(torch.Generator().manual_seed(gc.seed * _STREAM_SEED + gc.stream), 24)
        indices = sampler.next()
        assert torch.equal(indices, expected)  # GC's own stream
        batch = task.train.batch(indices)
        weighted = weighted_task(task, sampler)
        loss_sum, count = weighted.loss(weighted.forward(model, with_weights(batch, sampler, indices)),
                                        with_weights(batch, sampler, indices))  # fmt: skip
        params = [p for p in model.parameters()]
        loop = torch.autograd.grad(loss_sum / count, params)
        direction = gc.direction(model, objective, batch, indices)
        for (name, _), g in zip(model.named_parameters(), loop):
            torch.testing.assert_close(g, direction[name], rtol=1e-12, atol=1e-14)
    assert gc.stream == 4


def test_gc_sgd_with_the_stratified_sampler_has_no_extra_gradient_and_resumes_bit_exactly(
    monkeypatch, tmp_path, toy_overrides
):
    overrides = [o for o in toy_overrides if not o.startswith("run_dir")]
    gc = ["direction=gc", "direction.clusters=3", "direction.snapshot_every=12", "train.steps=20"]
    summaries = {}
    for sampler in ("auto", "stratified"):
        run_dir = tmp_path / sampler
        summaries[sampler] = train(load_config([*overrides, *gc, f"train.sampler={sampler}", f"run_dir={run_dir}"]))
        assert summaries[sampler]["status"] == "completed"
    extra = {s: logged(tmp_path / s, "direction/extra_grad_evals")[-1] for s in summaries}
    passes = {s: logged(tmp_path / s, "direction/extra_full_passes")[-1] for s in summaries}
    assert extra["auto"] - extra["stratified"] == 20  # one stratified gradient per step, gone
    assert passes["auto"] == passes["stratified"] == 4  # the same clusterings (steps 0 and 12, citers=2)
    reference, resumed = stop_resume_matches(monkeypatch, tmp_path, [*overrides, *gc, "train.sampler=stratified"])
    assert resumed["params_sha256"] == reference["params_sha256"]


@pytest.mark.parametrize("direction", [["direction=svrg"], ["direction=gc", "direction.apply=false"], []])
def test_the_stratified_sampler_needs_an_applied_gc_direction(toy_overrides, direction):
    with pytest.raises(ConfigError, match="train.sampler"):
        train(load_config([*toy_overrides, "train.sampler=stratified", *direction]))
