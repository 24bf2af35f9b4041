"""Clips of ``T`` annotated frames of one video, for training and for evaluation.

Positions are indices into a video's annotated frames sorted by frame number.

* Training: one clip per annotated frame (its key frame). ``causal`` windows end at the key frame (the key frame and
  the ``T-1`` previous annotated frames; near the video start the first frame is repeated in front); ``centred``
  windows put the key frame in the middle (slot ``(T-1)//2``), shifted to stay inside the video at its edges.
* Evaluation, ``tiled`` (default): non-overlapping windows, the last one shifted to end at the video end, so every
  frame is scored exactly once with few forward passes; ``causal``: every frame is the last frame of its own causal
  window, as a causal key frame is trained and as streaming inference sees it, at the cost of one frame per frame
  (one clip per frame, run through the model's streaming step with a cache of the previous frames' features,
  many videos side by side: :func:`stream_steps`); ``keyframe``: the training windows (causal or centred), one
  clip per frame, only the key frame scored, each window recomputed (``T`` times the compute).

A video shorter than ``T`` repeats its first frame in front. ``evaluate`` is True on exactly one occurrence of each
frame of a clip (the last one, which has the most context) and, in tiled evaluation, only in the window that
scores it; repeats are False.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

WINDOWS = ("causal", "centred")
EVAL_SCHEMES = ("tiled", "causal", "keyframe")


@dataclass(frozen=True)
class Clip:
    """One clip: ``frames`` are indices into the dataset's frame list, ``evaluate`` flags the slots to score,
    ``key`` is the slot of a training clip's key frame (the frame the clip was made for; None in evaluation), and
    ``stream`` is ``(video, window)`` for a frame of causal evaluation (its video's number among the split's videos
    and the temporal window ``T``; None otherwise)."""

    frames: tuple[int, ...]
    evaluate: tuple[bool, ...]
    key: int | None = None
    stream: tuple[int, int] | None = None


def _check(clip_len: int, window: str = "causal") -> None:
    if clip_len < 1:
        raise ValueError(f"Expected clip_len >= 1 but got {clip_len}")
    if window not in WINDOWS:
        raise ValueError(f"Expected window in {list(WINDOWS)} but got {window!r}")


def _pad_front(positions: list[int], clip_len: int) -> list[int]:
    """Repeat the first position in front until the window has ``clip_len`` slots."""
    return [positions[0]] * (clip_len - len(positions)) + positions


def last_occurrence(positions: Sequence[int]) -> tuple[bool, ...]:
    """True on the last occurrence of every position, False on earlier repeats: ``[0, 0, 1] -> (F, T, T)``."""
    return tuple(p not in positions[i + 1 :] for i, p in enumerate(positions))


def keyframe_window(num_frames: int, key: int, clip_len: int, window: str) -> tuple[list[int], int]:
    """Window of the key frame ``key`` in a video of ``num_frames`` frames.

    Returns:
        ``(positions, key_slot)``: ``clip_len`` positions in the video, and the slot holding the key frame.
    """
    _check(clip_len, window)
    if not 0 <= key < num_frames:
        raise ValueError(f"Expected a key frame in [0, {num_frames}) but got {key}")
    if window == "causal":
        positions = _pad_front(list(range(max(0, key - clip_len + 1), key + 1)), clip_len)
        return positions, clip_len - 1
    if num_frames < clip_len:
        positions = _pad_front(list(range(num_frames)), clip_len)
    else:
        start = min(max(key - (clip_len - 1) // 2, 0), num_frames - clip_len)
        positions = list(range(start, start + clip_len))
    return positions, len(positions) - 1 - positions[::-1].index(key)


def tiled_windows(num_frames: int, clip_len: int) -> list[tuple[list[int], tuple[bool, ...]]]:
    """Non-overlapping windows covering a video, each frame scored exactly once.

    Example: 7 frames, ``clip_len`` 3 -> ``[0, 1, 2]`` (T, T, T), ``[3, 4, 5]`` (T, T, T), ``[4, 5, 6]`` (F, F, T).
    """
    _check(clip_len)
    if num_frames < 1:
        raise ValueError(f"Expected a video with at least 1 frame but got {num_frames}")
    if num_frames < clip_len:
        positions = _pad_front(list(range(num_frames)), clip_len)
        return [(positions, last_occurrence(positions))]
    windows = [
        (list(range(s, s + clip_len)), (True,) * clip_len) for s in range(0, num_frames - clip_len + 1, clip_len)
    ]
    covered = windows[-1][0][-1] + 1
    if covered < num_frames:
        positions = list(range(num_frames - clip_len, num_frames))
        windows.append((positions, tuple(p >= covered for p in positions)))
    return windows


def training_clips(videos: Sequence[Sequence[int]], clip_len: int, window: str) -> list[Clip]:
    """One clip per frame of every video (its key frame, slot ``key``); ``evaluate`` marks distinct frames (last
    occurrence).

    Args:
        videos: per video, the dataset indices of its frames sorted by frame number.
        clip_len: frames per clip ``T``.
        window: ``"causal"`` or ``"centred"``.
    """
    clips = []
    for frames in videos:
        for key in range(len(frames)):
            positions, slot = keyframe_window(len(frames), key, clip_len, window)
            clips.append(Clip(tuple(frames[p] for p in positions), last_occurrence(positions), slot))
    return clips


def evaluation_clips(
    videos: Sequence[Sequence[int]], clip_len: int, window: str = "causal", scheme: str = "tiled"
) -> list[Clip]:
    """Clips that score every frame of ``videos`` exactly once (see the module docstring).

    Args:
        videos: per video, the dataset indices of its frames sorted by frame number.
        clip_len: frames per clip ``T``.
        window: window of the ``keyframe`` scheme.
        scheme: ``"tiled"``, ``"causal"`` (one single-frame clip per frame, in video order, ``stream`` set; batch
            them with :func:`stream_steps`) or ``"keyframe"``.
    """
    if scheme not in EVAL_SCHEMES:
        raise ValueError(f"Expected scheme in {list(EVAL_SCHEMES)} but got {scheme!r}")
    clips = []
    for number, frames in enumerate(videos):
        if scheme == "causal":
            clips += [Clip((index,), (True,), stream=(number, clip_len)) for index in frames]
            continue
        if scheme == "tiled":
            clips += [Clip(tuple(frames[p] for p in pos), flags) for pos, flags in tiled_windows(len(frames), clip_len)]
            continue
        for key in range(len(frames)):
            positions, slot = keyframe_window(len(frames), key, clip_len, window)
            clips.append(Clip(tuple(frames[p] for p in positions), tuple(i == slot for i in range(clip_len))))
    return clips


def stream_steps(videos: Sequence[Sequence[int]], lanes: int) -> list[list[int]]:
    """The batches of causal evaluation: ``lanes`` videos side by side, one frame of each per step, in time order.

    Each lane plays its videos one after the other; a video goes to the lane with the fewest frames so far, longest
    videos first (LPT scheduling, Graham 1969), so the lanes end close together and the batches stay full. A video's
    frames are in consecutive steps, in order, so a step's model call can read the previous frames' cached features.

    Args:
        videos: per video, its items (e.g. the indices of its causal clips) in time order.
        lanes: videos side by side (the evaluation batch size, ``>= 1``).

    Returns:
        Per step, the items of that step (at most ``lanes``, at most one per video); every item exactly once.

    Example: videos of 3, 1 and 2 items, 2 lanes -> lane 0 plays video 0, lane 1 videos 2 then 1:
    ``[[a0, c0], [a1, c1], [a2, b0]]``.
    """
    if lanes < 1:
        raise ValueError(f"Expected at least 1 lane (data.eval_batch_size) but got {lanes}")
    order = sorted(range(len(videos)), key=lambda v: (-len(videos[v]), v))
    plays: list[list[int]] = [[] for _ in range(min(lanes, len(videos)))]
    for video in order:
        min(plays, key=len).extend(videos[video])  # the first of the least-loaded lanes
    return [[lane[step] for lane in plays if step < len(lane)] for step in range(max(map(len, plays), default=0))]


def geometry_mismatch(loss_frames: str, window: str, scheme: str) -> str | None:
    """Why evaluation would score frames where training never supervised them, or None when the two agree.

    A loss on every slot (``loss.frames: all``) supervises every position of a window, so any evaluation scheme
    scores a trained geometry. A key-frame loss supervises one slot: the last one of a causal window (scored by the
    ``causal`` and ``keyframe`` schemes) or the middle of a centred one (scored by ``keyframe`` only); ``tiled``
    windows score most frames at other slots, with future frames as context.

    Args:
        loss_frames: ``loss.frames`` (``all`` or ``key``).
        window: ``data.window`` (``causal`` or ``centred``).
        scheme: ``data.eval_scheme``.

    Returns:
        One sentence naming the settings and the fix, or None.
    """
    if loss_frames != "key" or scheme == "keyframe" or (scheme == "causal" and window == "causal"):
        return None
    slot = "the last slot of a causal window" if window == "causal" else "the middle slot of a centred window"
    fix = "causal" if window == "causal" else "keyframe"
    return (
        f"loss.frames=key trains each clip's key frame at {slot} (data.window={window}), but "
        f"data.eval_scheme={scheme} scores frames at other slots, with other context: the recalls are not those of "
        f"the trained geometry (set data.eval_scheme: {fix} to evaluate what was trained; docs/streaming.md)"
    )


def subsample_videos(videos: dict[str, list[int]], max_frames: int | None, seed: int = 0) -> dict[str, list[int]]:
    """Whole videos in a seeded random order until ``max_frames`` frames, the last one cut; None keeps all.

    Keeping whole videos (rather than scattered frames) keeps the temporal context of the evaluated frames.
    Returns the kept videos in their original order.
    """
    if max_frames is None:
        return dict(videos)
    if max_frames < 1:
        raise ValueError(f"Expected max_frames >= 1 or None but got {max_frames}")
    names = list(videos)
    kept: dict[str, list[int]] = {}
    left = max_frames
    for index in np.random.default_rng(seed).permutation(len(names)):
        if left <= 0:
            break
        frames = videos[names[index]][:left]
        kept[names[index]] = frames
        left -= len(frames)
    return {name: kept[name] for name in names if name in kept}


def subsample_clips(clips: list[Clip], max_clips: int | None, seed: int = 0) -> list[Clip]:
    """A seeded random subset of at most ``max_clips`` clips, in their original order; None keeps all."""
    if max_clips is None or max_clips >= len(clips):
        return list(clips)
    if max_clips < 1:
        raise ValueError(f"Expected max_clips >= 1 or None but got {max_clips}")
    chosen = np.sort(np.random.default_rng(seed).choice(len(clips), size=max_clips, replace=False))
    return [clips[i] for i in chosen]
