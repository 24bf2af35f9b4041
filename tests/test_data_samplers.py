"""Training draws, resumable loader state and unpadded evaluation splits."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from torch.utils.data import Dataset

from arn_lightning.data.samplers import EpochSampler, ResumableLoader, UnpaddedSampler
from arn_lightning.data.transforms import ClipTransform


def test_epoch_sampler_is_a_permutation_fixed_by_seed_and_epoch() -> None:
    sampler = EpochSampler(10, seed=5)
    first = list(sampler)
    assert sorted(i for i, _ in first) == list(range(10))
    assert list(EpochSampler(10, seed=5)) == first  # same seed, same epoch: same draws (and augmentation seeds)
    sampler.set_epoch(1)
    second = list(sampler)
    assert sorted(i for i, _ in second) == list(range(10)) and second != first
    assert list(EpochSampler(10, seed=6)) != first


def test_epoch_sampler_resume_continues_the_epoch_and_a_finished_epoch_moves_on() -> None:
    sampler = EpochSampler(9, seed=1)
    sampler.set_epoch(2)
    full = list(sampler)
    sampler.resume(2, 4)
    sampler.set_epoch(2)  # Lightning sets the same epoch again after loading: the position is kept
    assert list(sampler) == full[4:]
    assert list(sampler) == full  # only the first pass after a resume skips
    sampler.resume(2, 9)  # the saved epoch was finished: the next one starts from its beginning
    assert sampler.epoch == 3
    reference = EpochSampler(9, seed=1)
    reference.set_epoch(3)
    assert list(sampler) == list(reference)
    sampler.resume(3, 5)
    sampler.set_epoch(4)  # another epoch: the stale position is dropped
    reference.set_epoch(4)
    assert list(sampler) == list(reference)


def test_epoch_sampler_splits_draws_across_replicas_with_equal_lengths() -> None:
    parts = [list(EpochSampler(7, num_replicas=3, rank=r, seed=0)) for r in range(3)]
    assert [len(p) for p in parts] == [3, 3, 3] == [len(EpochSampler(7, num_replicas=3, rank=r)) for r in range(3)]
    counts = Counter(i for part in parts for i, _ in part)
    assert set(counts) == set(range(7)) and sum(counts.values()) == 9  # two padded draws repeat a clip


@pytest.mark.parametrize("size,world", [(10, 3), (2, 4), (9, 3), (1, 1)])
def test_unpadded_sampler_scores_every_item_exactly_once(size: int, world: int) -> None:
    parts = [list(UnpaddedSampler(size, num_replicas=world, rank=r)) for r in range(world)]
    assert sorted(i for part in parts for i in part if i < size) == list(range(size))
    assert [len(UnpaddedSampler(size, num_replicas=world, rank=r)) for r in range(world)] == [len(p) for p in parts]
    # A process without an item of its own takes one padding index (served unscored), never zero batches.
    assert [p for p in parts if p[0] >= size] == [[size + r] for r in range(size, world)]


class _Items(Dataset):
    def __len__(self) -> int:
        return 6

    def __getitem__(self, item):
        return torch.tensor(item[0])


def test_resumable_loader_state_is_the_training_loop_position() -> None:
    done = {"batches": 0}
    loader = ResumableLoader(
        _Items(), batch_size=2, sampler=EpochSampler(6, seed=0), batches_done=lambda: done["batches"]
    )
    order = [int(x) for batch in loader for x in batch]
    done["batches"] = 2
    state = loader.state_dict()
    assert state == {"epoch": 0, "batches_done": 2, "batch_size": 2, "world_size": 1}
    fresh = ResumableLoader(_Items(), batch_size=2, sampler=EpochSampler(6, seed=0))
    fresh.load_state_dict(state)
    assert [int(x) for batch in fresh for x in batch] == order[4:]
    other = ResumableLoader(_Items(), batch_size=3, sampler=EpochSampler(6, seed=0))
    with pytest.raises(ValueError, match="batch size 2"):
        other.load_state_dict(state)
    with pytest.raises(KeyError, match="epoch"):
        fresh.load_state_dict({"batches_done": 1, "batch_size": 2})
    with pytest.raises(TypeError, match="EpochSampler"):
        ResumableLoader(_Items(), batch_size=2)


def test_flip_drawn_from_a_seed_is_reproducible_and_follows_the_probability() -> None:
    transform = ClipTransform(32, 32, flip_prob=0.5)
    flips = [transform.draw_flip(seed) for seed in range(400)]
    assert flips == [transform.draw_flip(seed) for seed in range(400)]
    assert 150 < sum(flips) < 250
    assert not any(ClipTransform(32, 32, flip_prob=0.0).draw_flip(seed) for seed in range(20))


def test_resuming_mid_epoch_on_another_world_size_is_refused_naming_both_sizes() -> None:
    """The example: a 1-process checkpoint after 3 batches of 2 (clips 0-5 of the epoch's order done) resumed on 2
    processes took batches_done=3 per process, 12 draws, and never trained the order's clips 6-11."""
    state = {"epoch": 0, "batches_done": 3, "batch_size": 2, "world_size": 1}
    single = ResumableLoader(_Items12(), batch_size=2, sampler=EpochSampler(12, seed=0))
    order = [int(x) for batch in single for x in batch]
    single.load_state_dict(state)
    assert [int(x) for batch in single for x in batch] == order[6:]  # the same world size: the epoch's rest
    for rank in (0, 1):
        two = ResumableLoader(_Items12(), batch_size=2, sampler=EpochSampler(12, num_replicas=2, rank=rank, seed=0))
        with pytest.raises(ValueError, match=r"epoch 0 on the checkpoint's 1 process\(es\) but this run has 2"):
            two.load_state_dict(state)
    # 2 processes saved after 2 of their 3 batches, resumed on 1: refused too.
    one = ResumableLoader(_Items12(), batch_size=2, sampler=EpochSampler(12, seed=0))
    with pytest.raises(ValueError, match=r"checkpoint's 2 process\(es\) but this run has 1"):
        one.load_state_dict({**state, "batches_done": 2, "world_size": 2})
    # Even at an epoch's end: Lightning's loop position counts the batches of one process.
    with pytest.raises(ValueError, match=r"checkpoint's 1 process\(es\) but this run has 2"):
        two.load_state_dict({**state, "batches_done": 6})


class _Items12(_Items):
    def __len__(self) -> int:
        return 12
