"""Clip schedules for inference (arn_lightning.inference.clips)."""

from __future__ import annotations

import pytest

from arn_lightning.inference.clips import ClipJob, ClipScheduler, batched, schedule_clips


def _jobs(n: int, t: int, causal: bool) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    return [(job.frames, job.emit) for job in schedule_clips(range(n), t, causal)]


def _emitted(n: int, t: int, causal: bool) -> list[int]:
    return [job.frames[i] for job in schedule_clips(range(n), t, causal) for i in job.emit]


def test_windows_shift_the_last_window_to_the_end() -> None:
    assert _jobs(7, 3, causal=False) == [
        ((0, 1, 2), (0, 1, 2)),
        ((3, 4, 5), (0, 1, 2)),
        ((4, 5, 6), (2,)),
    ]


def test_windows_shorter_stream_than_a_clip_repeat_the_first_frame() -> None:
    assert _jobs(2, 4, causal=False) == [((0, 0, 0, 1), (2, 3))]


def test_windows_exact_multiple_has_no_extra_clip() -> None:
    assert _jobs(6, 3, causal=False) == [((0, 1, 2), (0, 1, 2)), ((3, 4, 5), (0, 1, 2))]


def test_causal_each_frame_is_last_with_previous_context() -> None:
    assert _jobs(4, 3, causal=True) == [
        ((0, 0, 0), (2,)),
        ((0, 0, 1), (2,)),
        ((0, 1, 2), (2,)),
        ((1, 2, 3), (2,)),
    ]


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("n, t", [(1, 1), (1, 4), (5, 1), (9, 4), (13, 5)])
def test_every_frame_emitted_once_in_order(n: int, t: int, causal: bool) -> None:
    assert _emitted(n, t, causal) == list(range(n))
    assert all(len(job.frames) == t for job in schedule_clips(range(n), t, causal))


def test_empty_stream_gives_no_clip() -> None:
    assert _jobs(0, 3, causal=False) == [] and _jobs(0, 3, causal=True) == []


def test_scheduler_push_returns_windows_as_they_complete() -> None:
    scheduler: ClipScheduler[str] = ClipScheduler(2)
    assert scheduler.push("a") == []
    assert scheduler.push("b") == [ClipJob(("a", "b"), (0, 1))]
    assert scheduler.push("c") == []
    assert scheduler.finish() == [ClipJob(("b", "c"), (1,))]
    assert scheduler.finish() == []


def test_batched_groups_and_rejects_bad_sizes() -> None:
    jobs = list(schedule_clips(range(10), 2))
    assert [len(group) for group in batched(jobs, 2)] == [2, 2, 1]
    assert [job for group in batched(jobs, 2) for job in group] == jobs
    with pytest.raises(ValueError, match="batch size of at least 1 clip but got 0"):
        list(batched(jobs, 0))
    with pytest.raises(ValueError, match="clip length of at least 1 frame but got 0"):
        ClipScheduler(0)
