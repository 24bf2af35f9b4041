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
    assert sorted(i for part in parts for i in part) == list(range(size))
    assert [len(UnpaddedSampler(size, num_replicas=world, rank=r)) for r in range(world)] == [len(p) for p in parts]


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
    assert state == {"epoch": 0, "batches_done": 2, "batch_size": 2}
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
