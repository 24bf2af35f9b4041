"""Cutting a stream of sampled frames into the model's clips of ``T`` frames, without knowing the stream's length.

Two schedules:

- **windows** (default): non-overlapping windows of ``T`` consecutive frames, each frame predicted once with the
  whole window as context (past and future). The last, short window is shifted back to end on the last frame: it
  repeats earlier frames as context but keeps only the new frames' predictions.
- **causal**: every frame is the last frame of its own clip, the ``T - 1`` previous sampled frames its context, so a
  prediction never depends on a later frame (as in streaming). Costs ``T`` times the forward passes of windows.

In both, a clip that would reach before the first frame repeats the first frame at its start, so a video shorter
than ``T`` frames still gives full clips.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

F = TypeVar("F")


@dataclass(frozen=True)
class ClipJob(Generic[F]):
    """One clip to run through the model.

    Attributes:
        frames: the clip's ``T`` frames in time order (the first may be repeated as padding).
        emit: positions in ``frames`` whose predictions are kept, ascending; over a stream every frame is emitted
            exactly once, in order.
    """

    frames: tuple[F, ...]
    emit: tuple[int, ...]


class ClipScheduler(Generic[F]):
    """Turns frames pushed one at a time into :class:`ClipJob` s (see the module docstring for the schedules).

    Args:
        clip_length: ``T``, frames per clip of the model.
        causal: causal schedule (each frame last in its clip) instead of non-overlapping windows.
    """

    def __init__(self, clip_length: int, causal: bool = False) -> None:
        if clip_length < 1:
            raise ValueError(f"Expected a clip length of at least 1 frame but got {clip_length}")
        self.clip_length = clip_length
        self.causal = causal
        self._recent: deque[F] = deque(maxlen=clip_length)
        self._pending = 0  # frames pushed since the last emitted window

    def _clip(self) -> tuple[F, ...]:
        padding = self.clip_length - len(self._recent)
        return (self._recent[0],) * padding + tuple(self._recent)

    def push(self, frame: F) -> list[ClipJob[F]]:
        """Add the next frame; returns the clips that became complete (none, or one)."""
        self._recent.append(frame)
        if self.causal:
            return [ClipJob(self._clip(), (self.clip_length - 1,))]
        self._pending += 1
        if self._pending < self.clip_length:
            return []
        self._pending = 0
        return [ClipJob(tuple(self._recent), tuple(range(self.clip_length)))]

    def finish(self) -> list[ClipJob[F]]:
        """End of the stream: the shifted last window for the frames not emitted yet (none in causal mode)."""
        pending, self._pending = self._pending, 0
        if pending == 0:
            return []
        return [ClipJob(self._clip(), tuple(range(self.clip_length - pending, self.clip_length)))]


def schedule_clips(frames: Iterable[F], clip_length: int, causal: bool = False) -> Iterator[ClipJob[F]]:
    """All clip jobs of a frame stream, lazily (see :class:`ClipScheduler`)."""
    scheduler: ClipScheduler[F] = ClipScheduler(clip_length, causal)
    for frame in frames:
        yield from scheduler.push(frame)
    yield from scheduler.finish()


def batched(jobs: Iterable[ClipJob[F]], batch_size: int) -> Iterator[Sequence[ClipJob[F]]]:
    """Groups of up to ``batch_size`` consecutive jobs (the last group may be smaller)."""
    if batch_size < 1:
        raise ValueError(f"Expected a batch size of at least 1 clip but got {batch_size}")
    batch: list[ClipJob[F]] = []
    for job in jobs:
        batch.append(job)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch
