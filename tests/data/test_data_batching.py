from __future__ import annotations

import numpy as np
import pytest

from robustdistiller.data.batching import BucketBatchSampler

LENGTHS = np.random.default_rng(0).integers(8000, 300_000, 203).tolist()


def flat(batches: list[list[int]]) -> list[int]:
    return [i for b in batches for i in b]


def test_buckets_follow_s3prl() -> None:
    sampler = BucketBatchSampler(LENGTHS, batch_size=24, shuffle=False)
    batches = list(sampler)
    # 203 = 8 x 24 + 11: the partial bucket has > 1 row, so it is kept.
    assert [len(b) for b in batches] == [24] * 8 + [11]
    assert sorted(flat(batches)) == list(range(203))
    # Length-sorted, longest first, consecutive rows per bucket.
    assert [LENGTHS[i] for i in flat(batches)] == sorted(LENGTHS, reverse=True)
    assert len(sampler) == 9


def test_single_leftover_dropped_and_drop_last() -> None:
    lengths = LENGTHS[:49]  # 2 x 24 + 1
    kept = flat(list(BucketBatchSampler(lengths, batch_size=24)))
    assert len(kept) == 48 and set(range(49)) - set(kept) == {int(np.argmin(lengths))}
    assert [len(b) for b in BucketBatchSampler(LENGTHS, batch_size=24, drop_last=True)] == [24] * 8


def test_max_seconds_budget() -> None:
    budget_s, max_length = 20.0, 250_000
    sampler = BucketBatchSampler(LENGTHS, batch_size=None, max_seconds=budget_s, max_length=max_length)
    batches = list(sampler)
    for b in batches:
        assert len(b) * max(min(LENGTHS[i], max_length) for i in b) <= budget_s * 16000
    assert sorted(flat(batches)) == list(range(len(LENGTHS)))
    # Batches are full: one more row (the next longest) would have broken the budget.
    for b in sampler.batches[:-1]:
        assert (len(b) + 1) * min(LENGTHS[b[0]], max_length) > budget_s * 16000
    capped = BucketBatchSampler(LENGTHS, batch_size=3, max_seconds=1000.0)
    assert max(len(b) for b in capped.batches) == 3
    with pytest.raises(ValueError, match="max_seconds"):
        BucketBatchSampler(LENGTHS, batch_size=None, max_seconds=5.0)


def test_every_index_once_and_new_order_each_epoch() -> None:
    sampler = BucketBatchSampler(LENGTHS, batch_size=10, seed=3)
    epochs = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert sorted(flat(batches)) == list(range(len(LENGTHS)))
        epochs.append(batches)
    assert epochs[0] != epochs[1] != epochs[2]
    again = BucketBatchSampler(LENGTHS, batch_size=10, seed=3)
    again.set_epoch(1)
    assert list(again) == epochs[1]  # reproducible from (seed, epoch)
    assert list(again) == epochs[1]  # a finished epoch iterated again starts over


@pytest.mark.parametrize("drop_last", [False, True])
def test_ranks_get_equal_disjoint_shards(drop_last: bool) -> None:
    lengths = LENGTHS[:200]  # 20 buckets of 10: divisible by 2 ranks
    ranks = [
        BucketBatchSampler(lengths, batch_size=10, rank=r, world_size=2, drop_last=drop_last, seed=1) for r in range(2)
    ]
    shards = [list(s) for s in ranks]
    assert len(shards[0]) == len(shards[1]) == len(ranks[0]) == 10
    assert not set(flat(shards[0])) & set(flat(shards[1]))
    assert sorted(flat(shards[0]) + flat(shards[1])) == list(range(200))


def test_uneven_buckets_across_ranks() -> None:
    lengths = LENGTHS[:70]  # 7 buckets of 10 over 3 ranks
    padded = [list(BucketBatchSampler(lengths, batch_size=10, rank=r, world_size=3)) for r in range(3)]
    assert [len(s) for s in padded] == [3, 3, 3]
    assert set(flat([b for s in padded for b in s])) == set(range(70))  # repeats, loses nothing
    dropped = [list(BucketBatchSampler(lengths, batch_size=10, rank=r, world_size=3, drop_last=True)) for r in range(3)]
    assert [len(s) for s in dropped] == [2, 2, 2]
    assert len(set(flat([b for s in dropped for b in s]))) == 60


def test_resume_mid_epoch_continues_exactly() -> None:
    full = BucketBatchSampler(LENGTHS, batch_size=8, seed=5)
    full.set_epoch(2)
    reference = list(full)
    run = BucketBatchSampler(LENGTHS, batch_size=8, seed=5)
    run.set_epoch(2)
    it = iter(run)
    seen = [next(it) for _ in range(7)]
    state = run.state_dict()
    assert (state["epoch"], state["position"]) == (2, 7)

    resumed = BucketBatchSampler(LENGTHS, batch_size=8, seed=5)
    resumed.load_state_dict(state)
    resumed.set_epoch(2)  # the training loop's usual call must not rewind the loaded position
    assert seen + list(resumed) == reference
    resumed.set_epoch(3)
    assert len(list(resumed)) == len(reference)
    # With prefetching loaders the loop says how many batches it used.
    assert run.state_dict(consumed=5)["position"] == 5


def test_resume_refuses_other_data() -> None:
    state = BucketBatchSampler(LENGTHS, batch_size=8).state_dict()
    with pytest.raises(ValueError, match="num_items"):
        BucketBatchSampler(LENGTHS[:-1], batch_size=8).load_state_dict(state)


def test_argument_errors() -> None:
    with pytest.raises(ValueError, match="set batch_size or max_seconds"):
        BucketBatchSampler(LENGTHS, batch_size=None)
    with pytest.raises(ValueError, match="rank 2 is outside world_size 2"):
        BucketBatchSampler(LENGTHS, rank=2, world_size=2)
    with pytest.raises(ValueError, match="no utterances to batch"):
        BucketBatchSampler([], batch_size=4)
