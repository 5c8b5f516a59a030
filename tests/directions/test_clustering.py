"""Gradient clustering: rank-1 distances against brute-force per-example gradients (float64), the centre
update, the stratified estimator's unbiasedness and variance, training from the config and resume."""

import pytest
import torch
from resume_helpers import logged, stop_resume_matches
from torch import nn
from torch.nn import functional as F

from optimlab.config import load_config
from optimlab.directions import Objective
from optimlab.directions.clustering import GradientClustering
from optimlab.directions.layers import capture
from optimlab.directions.rank1 import layer_terms, rank1_fit
from optimlab.directions.stratified import stratified_batch
from optimlab.tasks import Split
from optimlab.train import train


def mixed_net():
    return nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1), nn.Tanh(), nn.Flatten(1, 2), nn.Conv1d(8, 3, 2, stride=2), nn.Tanh(),
        nn.Flatten(), nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3, bias=False),
    ).double()  # fmt: skip


def brute_per_example(model, batch):
    """{layer name: (B, d_out, d_in [+1]) per-example gradients of [weight.flatten(1) | bias]}, one at a time."""
    x, y = batch
    out = {}
    for i in range(len(y)):
        loss = F.cross_entropy(model(x[i : i + 1]), y[i : i + 1], reduction="sum")
        for name, m in model.named_children():
            if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)):
                params = [m.weight] + ([m.bias] if m.bias is not None else [])
                grads = torch.autograd.grad(loss, params, retain_graph=True)
                matrix = torch.cat([grads[0].flatten(1)] + ([grads[1][:, None]] if len(grads) > 1 else []), 1)
                out.setdefault(name, []).append(matrix)
    return {name: torch.stack(v) for name, v in out.items()}


def image_batch(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 4, 4, generator=g, dtype=torch.float64), torch.randint(0, 3, (n,), generator=g)


def random_centres(gc, k, seed=1):
    g = torch.Generator().manual_seed(seed)
    for name, m in gc.layers.items():
        d_in, d_out = m.weight[0].numel() + (m.bias is not None), m.weight.shape[0]
        gc.centres[name] = (torch.randn(k, d_in, generator=g, dtype=torch.float64),
                            torch.randn(k, d_out, generator=g, dtype=torch.float64))  # fmt: skip


def test_distances_match_brute_force_per_example_gradients():
    torch.manual_seed(0)
    model, batch = mixed_net(), image_batch()
    gc = GradientClustering(model, clusters=4)
    random_centres(gc, 4)
    distances, _ = gc.distances(model, Objective(), batch)
    brute = brute_per_example(model, batch)
    expected = sum(
        ((brute[name][:, None] - torch.einsum("ko,ki->koi", c_out, c_in)[None]) ** 2).sum((2, 3))
        for name, (c_in, c_out) in gc.centres.items()
    )
    torch.testing.assert_close(distances, expected, rtol=1e-10, atol=1e-10)
    # both evaluation orders (Gram and materialised) give the same distances
    with capture(model, gc.layers) as recorder:
        recorder.backward(F.cross_entropy(model(batch[0]), batch[1], reduction="sum"))
    for name, a, d in recorder.pairs():
        c_in, c_out = gc.centres[name]
        torch.testing.assert_close(layer_terms(a, d, c_in, c_out, True), layer_terms(a, d, c_in, c_out, False))


def test_a_batch_pass_assigns_by_size_weighted_distance_and_fits_rank1_centres():
    torch.manual_seed(0)
    model = mixed_net()
    x, y = image_batch(n=20, seed=3)
    gc = GradientClustering(model, clusters=3, citers=1, min_size=0).bind(Split((x, y)), device="cpu", batch_size=7)
    random_centres(gc, 3)
    gc.sizes = torch.tensor([5.0, 0.0, 2.0], dtype=torch.float64)
    before = {name: tuple(t.clone() for t in c) for name, c in gc.centres.items()}
    gc._batch_pass(model, Objective(), update=True)
    brute = brute_per_example(model, (x, y))
    distances = sum(((brute[n][:, None] - torch.einsum("ko,ki->koi", co, ci)[None]) ** 2).sum((2, 3))
                    for n, (ci, co) in before.items())  # fmt: skip
    expected = (distances * torch.tensor([6.0, 1.0, 3.0], dtype=torch.float64)).argmin(1)
    assert torch.equal(gc.labels, expected)
    for name, (c_in, c_out) in gc.centres.items():
        for k in range(3):
            members = brute[name][gc.labels == k]
            if len(members):
                u, s, vh = torch.linalg.svd(members.mean(0))
                best = s[0] * torch.outer(u[:, 0], vh[0])
                torch.testing.assert_close(torch.outer(c_out[k], c_in[k]), best, rtol=1e-9, atol=1e-12)


def test_empty_clusters_are_repaired_from_the_most_distorted_one():
    torch.manual_seed(0)
    model = mixed_net()
    x, y = image_batch(n=20, seed=4)
    gc = GradientClustering(model, clusters=4, citers=1).bind(Split((x, y)), device="cpu", batch_size=8)
    random_centres(gc, 4)
    for c_in, c_out in gc.centres.values():  # one centre far away from every gradient
        c_in[3], c_out[3] = c_in[3] * 1e3, c_out[3] * 1e3
    gc._batch_pass(model, Objective(), update=True)
    assert int(gc.counts().min()) >= 1 and gc.counts().sum() == 20


def test_stratified_batches_have_the_planned_allocation():
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    g = torch.Generator().manual_seed(0)
    index, weights = stratified_batch(labels, 4, 9, g, "equal")
    assert sorted(torch.bincount(labels[index], minlength=3).tolist()) == [3, 3, 3]
    assert torch.allclose(weights, 3 * torch.tensor([50.0, 30, 20], dtype=torch.float64)[labels[index]] / 100)
    index, weights = stratified_batch(labels, 3, 10, g, "proportional")
    assert torch.bincount(labels[index], minlength=3).tolist() == [5, 3, 2] and torch.all(weights == 1)
    assert len(set(index.tolist())) == 10  # without replacement within a cluster


def clustered_problem(seed=0):
    """Four tight blobs of inputs (three classes): per-example gradients cluster by blob."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(4, 6, generator=g, dtype=torch.float64) * 3
    sizes = [60, 25, 10, 5]
    x = torch.cat([centres[k] + 0.05 * torch.randn(n, 6, generator=g, dtype=torch.float64) for k, n in enumerate(sizes)])
    y = torch.cat([torch.full((n,), k % 3) for k, n in enumerate(sizes)])
    model = nn.Linear(6, 3).double()
    return Split((x, y)), model


def per_example_vectors(model, split):
    x, y = split.tensors
    rows = []
    for i in range(len(y)):
        grads = torch.autograd.grad(F.cross_entropy(model(x[i : i + 1]), y[i : i + 1]), list(model.parameters()))
        rows.append(torch.cat([g.flatten() for g in grads]))
    return torch.stack(rows)


@pytest.mark.parametrize("allocation", ["equal", "proportional"])
def test_the_stratified_estimator_is_unbiased_and_beats_uniform_sampling_on_clustered_data(allocation):
    split, model = clustered_problem()
    gc = GradientClustering(model, clusters=4, citers=3, allocation=allocation, size_weighting=allocation == "equal")
    gc.bind(split, device="cpu", batch_size=20, seed=0)
    gc.infrequent(0, model, Objective())
    per_example = per_example_vectors(model, split)
    full = per_example.mean(0)
    # the estimator itself: weighted_gradient on a drawn batch is (1/B) sum w_i g_i
    g = torch.Generator().manual_seed(1)
    index = gc.sample(g, 8)
    direction = gc.direction(model, Objective(), split.batch(index), index)
    flat = torch.cat([direction[n].flatten() for n, _ in model.named_parameters()])
    torch.testing.assert_close(flat, (gc.weights(index)[:, None] * per_example[index]).mean(0))
    # unbiased: the mean of many stratified estimates is the full gradient within its standard error
    draws = 4000
    estimates = torch.stack([(gc.weights(i)[:, None] * per_example[i]).mean(0)
                             for i in (gc.sample(g, 8) for _ in range(draws))])  # fmt: skip
    standard_error = estimates.std(0) / draws**0.5
    assert torch.all((estimates.mean(0) - full).abs() <= 4 * standard_error + 1e-12)
    # and its variance is far below uniform sampling's on these clustered gradients
    uniform = torch.stack([per_example[torch.randperm(100, generator=g)[:8]].mean(0) for _ in range(draws)])
    stratified_variance, uniform_variance = estimates.var(0).sum(), uniform.var(0).sum()
    assert stratified_variance < 0.2 * uniform_variance


def test_gc_trains_from_the_config_in_batch_and_online_mode(tmp_path, toy_overrides):
    for mode in ("batch", "online"):
        run_dir = tmp_path / mode
        overrides = [o for o in toy_overrides if not o.startswith("run_dir")]
        summary = train(load_config([*overrides, "direction=gc", f"direction.gc_mode={mode}", "direction.clusters=4",
                                     "direction.snapshot_every=12", "direction.online_every=3", "train.steps=20",
                                     f"run_dir={run_dir}"]))  # fmt: skip
        assert summary["status"] == "completed"
        assert logged(run_dir, "direction/nonempty_clusters")[-1] >= 2
        passes = logged(run_dir, "direction/extra_full_passes")[-1]
        assert passes == (4.0 if mode == "batch" else 2.0)  # 2 clusterings x citers=2, or 2 assignment passes


def test_gc_resumes_bit_exactly(monkeypatch, tmp_path, toy_overrides):
    overrides = [o for o in toy_overrides if not o.startswith("run_dir")]
    for mode in ("batch", "online"):
        extra = ["direction=gc", f"direction.gc_mode={mode}", "direction.clusters=4", "direction.snapshot_every=9",
                 "direction.online_every=2"]  # fmt: skip
        reference, resumed = stop_resume_matches(monkeypatch, tmp_path / mode, [*overrides, *extra])
        assert resumed["params_sha256"] == reference["params_sha256"]


def test_rank1_fit_is_the_top_singular_pair():
    g = torch.Generator().manual_seed(0)
    m = torch.randn(3, 4, 5, generator=g, dtype=torch.float64)
    c_in, c_out = rank1_fit(m)
    for k in range(3):
        u, s, vh = torch.linalg.svd(m[k])
        torch.testing.assert_close(torch.outer(c_out[k], c_in[k]), s[0] * torch.outer(u[:, 0], vh[0]))
