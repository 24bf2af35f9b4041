"""Clip windows (arn_lightning.data.clips): causal / centred windows, video edges, tiled evaluation."""

from collections import Counter

import pytest

from arn_lightning.data.clips import (
    Clip,
    evaluation_clips,
    keyframe_window,
    last_occurrence,
    subsample_clips,
    subsample_videos,
    tiled_windows,
    training_clips,
)


@pytest.mark.parametrize("key, positions", [(0, [0, 0, 0]), (1, [0, 0, 1]), (2, [0, 1, 2]), (4, [2, 3, 4])])
def test_causal_window_ends_at_key_frame(key, positions):
    assert keyframe_window(5, key, 3, "causal") == (positions, 2)


@pytest.mark.parametrize(
    "num, key, clip_len, positions, slot",
    [
        (5, 0, 3, [0, 1, 2], 0),  # video start: shifted right, key frame first
        (5, 2, 3, [1, 2, 3], 1),  # middle
        (5, 4, 3, [2, 3, 4], 2),  # video end: shifted left
        (6, 2, 4, [1, 2, 3, 4], 1),  # even T: one frame before, two after
        (2, 1, 3, [0, 0, 1], 2),  # shorter than T: first frame repeated in front
        (2, 0, 3, [0, 0, 1], 1),  # the key frame's last occurrence holds it
        (1, 0, 3, [0, 0, 0], 2),
    ],
)
def test_centred_window(num, key, clip_len, positions, slot):
    assert keyframe_window(num, key, clip_len, "centred") == (positions, slot)


def test_last_occurrence():
    assert last_occurrence([0, 0, 1]) == (False, True, True)
    assert last_occurrence([2, 3, 4]) == (True, True, True)


@pytest.mark.parametrize(
    "num, expected",
    [
        (7, [([0, 1, 2], (True,) * 3), ([3, 4, 5], (True,) * 3), ([4, 5, 6], (False, False, True))]),
        (6, [([0, 1, 2], (True,) * 3), ([3, 4, 5], (True,) * 3)]),
        (4, [([0, 1, 2], (True,) * 3), ([1, 2, 3], (False, False, True))]),
        (3, [([0, 1, 2], (True,) * 3)]),
        (2, [([0, 0, 1], (False, True, True))]),
    ],
)
def test_tiled_windows(num, expected):
    assert tiled_windows(num, 3) == expected


@pytest.mark.parametrize("scheme", ["tiled", "keyframe"])
@pytest.mark.parametrize("window", ["causal", "centred"])
def test_every_frame_evaluated_exactly_once(scheme, window):
    videos, start = [], 0
    for length in (1, 2, 3, 4, 5, 7, 9):
        videos.append(list(range(start, start + length)))
        start += length
    clips = evaluation_clips(videos, 3, window, scheme)
    counts = Counter(f for c in clips for f, e in zip(c.frames, c.evaluate, strict=True) if e)
    assert counts == Counter(range(start))
    assert all(len(c.frames) == 3 and len(c.evaluate) == 3 for c in clips)
    assert len(clips) == (1 + 1 + 1 + 2 + 2 + 3 + 3 if scheme == "tiled" else start)


def test_keyframe_evaluation_scores_only_the_key_frame():
    clips = evaluation_clips([[10, 11, 12]], 3, "causal", "keyframe")
    assert clips[0] == Clip((10, 10, 10), (False, False, True))
    assert clips[2] == Clip((10, 11, 12), (False, False, True))


def test_training_clips_one_per_frame_with_global_indices():
    clips = training_clips([[0, 1], [2, 3, 4, 5]], 3, "causal")
    assert len(clips) == 6
    assert clips[0] == Clip((0, 0, 0), (False, False, True), key=2)
    assert clips[1] == Clip((0, 0, 1), (False, True, True), key=2)
    assert clips[5] == Clip((3, 4, 5), (True, True, True), key=2)
    centred = training_clips([[2, 3, 4, 5]], 3, "centred")
    assert [c.frames for c in centred] == [(2, 3, 4), (2, 3, 4), (3, 4, 5), (3, 4, 5)]
    assert [c.frames[c.key] for c in centred] == [2, 3, 4, 5]  # the key slot holds the clip's own frame
    assert [c.key for c in centred] == [0, 1, 1, 2]


def test_subsample_videos_whole_videos_then_cut():
    videos = {"a": [0, 1, 2], "b": [3, 4, 5], "c": [6, 7, 8]}
    picked = subsample_videos(videos, 5, seed=0)
    assert sum(len(f) for f in picked.values()) == 5
    assert sorted(len(f) for f in picked.values()) == [2, 3]
    assert list(picked) == [v for v in videos if v in picked]  # original order
    assert subsample_videos(videos, 5, seed=0) == picked
    assert subsample_videos(videos, None) == videos
    with pytest.raises(ValueError, match="max_frames >= 1"):
        subsample_videos(videos, 0)


def test_subsample_clips():
    clips = [Clip((i,), (True,)) for i in range(10)]
    picked = subsample_clips(clips, 4, seed=1)
    assert len(picked) == 4 and picked == sorted(picked, key=lambda c: c.frames)
    assert subsample_clips(clips, 4, seed=1) == picked
    assert subsample_clips(clips, None) == clips


def test_bad_arguments():
    with pytest.raises(ValueError, match="Expected window in"):
        keyframe_window(3, 0, 3, "future")
    with pytest.raises(ValueError, match="Expected a key frame in"):
        keyframe_window(3, 3, 3, "causal")
    with pytest.raises(ValueError, match="clip_len >= 1"):
        tiled_windows(3, 0)
    with pytest.raises(ValueError, match="Expected scheme in"):
        evaluation_clips([[0]], 3, scheme="all")
