"""Batch sampling: deterministic, resumable from (epoch, position), length-bucketed, split across ranks."""

import torch

from optimlab.train.sampler import BatchSampler, epoch_order, rank_slice


def test_every_epoch_is_a_permutation_without_the_ragged_remainder():
    batches = epoch_order(103, 10, seed=0, epoch=0, lengths=None)
    assert batches.shape == (10, 10)
    assert len(set(batches.flatten().tolist())) == 100


def test_order_depends_on_seed_and_epoch_only():
    a = epoch_order(50, 5, seed=1, epoch=2, lengths=None)
    assert torch.equal(a, epoch_order(50, 5, seed=1, epoch=2, lengths=None))
    assert not torch.equal(a, epoch_order(50, 5, seed=1, epoch=3, lengths=None))
    assert not torch.equal(a, epoch_order(50, 5, seed=2, epoch=2, lengths=None))


def test_state_dict_resumes_the_same_stream_across_epochs():
    sampler = BatchSampler(30, 4, seed=0)
    for _ in range(11):
        sampler.next()
    state = sampler.state_dict()
    expected = [sampler.next() for _ in range(20)]
    resumed = BatchSampler(30, 4, seed=0)
    resumed.load_state_dict(state)
    assert all(torch.equal(a, b) for a, b in zip(expected, [resumed.next() for _ in range(20)]))


def test_length_bucketing_groups_similar_lengths():
    lengths = torch.randint(1, 100, (1000,), generator=torch.Generator().manual_seed(0))
    bucketed = epoch_order(1000, 50, seed=0, epoch=0, lengths=lengths)
    plain = epoch_order(1000, 50, seed=0, epoch=0, lengths=None)

    def mean_spread(batches):
        spans = [lengths[b].max() - lengths[b].min() for b in batches]
        return float(torch.stack(spans).float().mean())

    assert mean_spread(bucketed) < 10 < mean_spread(plain)
    assert len(set(bucketed.flatten().tolist())) == 1000


def test_rank_slices_partition_the_global_batch_unevenly():
    batch = torch.arange(15)
    parts = [rank_slice(batch, r, 2) for r in range(2)]
    assert [len(p) for p in parts] == [8, 7]
    assert torch.equal(torch.cat(parts), batch)


def test_a_batch_holds_the_same_rows_as_advanced_indexing_for_every_kind_of_index():
    from optimlab.tasks.base import Split, take_rows

    x, y = torch.randn(40, 3, 5, dtype=torch.float64), torch.arange(40)
    lengths = torch.randint(1, 6, (40,))
    split = Split((x, y), lengths=lengths, padded=(0,))
    for index in (torch.randperm(40)[:7], torch.randperm(40)[:7].int(), torch.tensor([-1, 0, -40, 3]),
                  torch.zeros(0, dtype=torch.long), torch.arange(40) % 3 == 0, torch.tensor(5)):
        for t in (x, y):
            assert torch.equal(take_rows(t, index), t[index])
        longest = int(lengths[index].max()) if lengths[index].numel() else 0
        if lengths[index].numel():
            expected = (x[index][:, :longest], y[index])
            assert all(torch.equal(a, b) for a, b in zip(split.batch(index), expected))
    before = x.clone()
    take_rows(x, torch.tensor([2, 0])).add_(1)  # a copy: the split is untouched
    assert torch.equal(x, before)
