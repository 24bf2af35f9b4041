"""The one video decoding path of the project: frame numbers, display rotation and timestamps (PyAV).

Both ``arn-lightning dump-frames`` (:mod:`arn_lightning.data.frames`) and ``arn-lightning infer``
(:mod:`arn_lightning.video.files`) decode videos with :func:`decode_video`, so a frame number means the same
image everywhere. The rules are those of the Action Genome toolkit, which dumps frames with
``ffmpeg -i <video> <dir>/%06d.png`` (see ``docs/frames.md``):

- **Numbering**: 1-based decode order. Frame 1 (``000001.png``) is the first frame the decoder outputs and frame
  ``N`` the last one of an ``N``-frame video, as ffmpeg's image2 muxer numbers its files. Every decoded frame counts,
  whatever its timestamp; PyAV's ``container.decode`` neither drops nor duplicates frames (it has no ``-vsync``
  stage), so the numbers are decode positions (``-vsync passthrough``). ffmpeg's default for image2 output is a
  constant-rate output at the stream's frame rate, which equals decode order for a constant-rate video that starts
  with its file; :func:`off_grid` and :meth:`VideoInfo.leading_gap` find the videos where the two may differ.
- **Rotation**: the frame is turned upright by the container's display matrix, as ffmpeg's ``-autorotate`` (on by
  default) does: exact transposes for 90 / 180 / 270 degrees, ffmpeg's ``rotate`` filter semantics (same size,
  black corners) for other angles.
- **Timestamps**: seconds of presentation time from the first decoded frame.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import av.error
from PIL import Image

from arn_lightning._types import PathLike

#: Number of the first frame of a video (ffmpeg's image2 muxer starts its ``%06d`` at 1).
FIRST_FRAME_NUMBER = 1
#: Digits of the frame number in a frame file name (``000089.png``), as in Action Genome.
FRAME_NUMBER_DIGITS = 6
#: Tolerance in degrees under which ffmpeg treats a display rotation as 0 / 90 / 180 / 270 degrees.
_RIGHT_ANGLE_TOLERANCE = 1.0
#: A frame this many frame periods or more away from its slot on the constant-rate grid is "off the grid":
#: ffmpeg's constant-rate output duplicates the previous frame (or drops one) around it, so its numbers may differ.
OFF_GRID_PERIODS = 0.5


class VideoError(ValueError):
    """A video file (or, for :mod:`arn_lightning.video.files`, an image folder) that cannot be read or
    decoded; the message names the file and says what was expected."""


def frame_file_name(number: int) -> str:
    """``"<NNNNNN>.png"``, the file name of frame ``number`` (1-based, see the module docstring).

    Raises:
        ValueError: ``number`` is below :data:`FIRST_FRAME_NUMBER`.
    """
    if number < FIRST_FRAME_NUMBER:
        raise ValueError(
            f"Expected a frame number >= {FIRST_FRAME_NUMBER} (frame numbers are 1-based: "
            f"{FIRST_FRAME_NUMBER:0{FRAME_NUMBER_DIGITS}d}.png is the first frame) but got {number}"
        )
    return f"{number:0{FRAME_NUMBER_DIGITS}d}.png"


@dataclass(frozen=True)
class DecodedFrame:
    """One decoded frame.

    Attributes:
        number: 1-based position in decode order (the ``NNNNNN`` of its frame file name).
        timestamp: seconds of presentation time from the first decoded frame (``(number - 1) / rate`` when the
            container gives no timestamp).
        image: the frame, RGB, upright (display rotation applied), so ``(width, height)`` is the displayed size.
    """

    number: int
    timestamp: float
    image: Image.Image


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about a video before decoding.

    Attributes:
        frame_rate: ffmpeg's guessed frame rate of the stream (frames per second; the rate of its constant-rate
            output), or None.
        average_rate: frames per second averaged over the stream, or None.
        duration: seconds, or None.
        declared_frames: the number of frames the container declares (mp4 sample table), or None when it does not.
        streams: streams of every kind in the file (an audio track makes it 2).
        start_offset: seconds from the file's start (its earliest stream) to the video stream's first timestamp.
    """

    frame_rate: float | None
    average_rate: float | None
    duration: float | None
    declared_frames: int | None
    streams: int = 1
    start_offset: float = 0.0

    def leading_gap(self) -> float:
        """Frame periods between the file's start and the first video frame when the file has other streams
        (0 otherwise): ffmpeg's default constant-rate image2 output, which the AG toolkit used, fills a gap of
        :data:`OFF_GRID_PERIODS` or more by repeating the first frame, which shifts every later number."""
        if self.streams < 2 or not self.frame_rate:
            return 0.0
        return max(0.0, self.start_offset * self.frame_rate)


@contextlib.contextmanager
def open_video(path: PathLike) -> Iterator[av.container.InputContainer]:
    """Open ``path`` with PyAV and check that it holds a video stream; closes the container on exit.

    Raises:
        VideoError: the file does not exist, is empty (0 bytes), cannot be opened, or has no video stream.
    """
    path = Path(path)
    if not path.is_file():
        raise VideoError(f"Expected a video file but {path} does not exist")
    if path.stat().st_size == 0:
        raise VideoError(f"Expected a video file but {path} is empty (0 bytes)")
    try:
        container = av.open(str(path), mode="r")
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as error:
        raise VideoError(f"Expected a readable video file but could not open {path}: {error}") from error
    try:
        if not container.streams.video:
            kinds = sorted({stream.type for stream in container.streams})
            found = f"only {', '.join(kinds)} streams (unsupported)" if kinds else "no stream at all (empty video)"
            raise VideoError(f"Expected a video stream in {path} but found {found}")
        yield container
    finally:
        container.close()


def probe_video(path: PathLike) -> VideoInfo:
    """The container's :class:`VideoInfo` of ``path`` (no frame is decoded).

    Raises:
        VideoError: see :func:`open_video`.
    """
    with open_video(path) as container:
        stream = container.streams.video[0]
        duration: float | None = None
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        guessed = getattr(stream, "guessed_rate", None) or stream.average_rate
        start_offset = 0.0
        if stream.start_time is not None and stream.time_base is not None and container.start_time is not None:
            start_offset = float(stream.start_time * stream.time_base) - container.start_time / av.time_base
        return VideoInfo(
            frame_rate=float(guessed) if guessed else None,
            average_rate=float(stream.average_rate) if stream.average_rate else None,
            duration=duration,
            declared_frames=int(stream.frames) if stream.frames else None,
            streams=len(container.streams),
            start_offset=start_offset,
        )


def display_rotation(frame: av.VideoFrame, stream: av.video.stream.VideoStream | None = None) -> float:
    """Counterclockwise degrees the display matrix turns ``frame`` by (0 when there is none).

    PyAV >= 13 reads the frame's display matrix (``frame.rotation``); older versions fall back to the stream's
    ``rotate`` metadata tag (clockwise degrees) that older FFmpeg builds export.
    """
    rotation = getattr(frame, "rotation", None)
    if rotation is not None:
        return float(rotation)
    tag = stream.metadata.get("rotate") if stream is not None else None
    try:
        return -float(tag) if tag is not None else 0.0
    except ValueError:
        return 0.0


def rotate_upright(image: Image.Image, rotation: float) -> Image.Image:
    """``image`` turned the way players show it, given the display rotation (counterclockwise degrees).

    Like ffmpeg's autorotate: 90 / 180 / 270 degrees (within 1 degree) are exact transposes (a ``W x H`` frame
    becomes ``H x W`` for 90 and 270); any other angle is ffmpeg's ``rotate`` filter (bilinear, same size, black
    corners); below 1 degree nothing changes.
    """
    clockwise = (-rotation) % 360.0
    for angle, transpose in (
        (90.0, Image.Transpose.ROTATE_270),
        (180.0, Image.Transpose.ROTATE_180),
        (270.0, Image.Transpose.ROTATE_90),
    ):
        if abs(clockwise - angle) < _RIGHT_ANGLE_TOLERANCE:
            return image.transpose(transpose)
    if min(clockwise, 360.0 - clockwise) < _RIGHT_ANGLE_TOLERANCE:
        return image
    return image.rotate(rotation, resample=Image.Resampling.BILINEAR, expand=False)


def upright_image(frame: av.VideoFrame, stream: av.video.stream.VideoStream | None = None) -> Image.Image:
    """The frame as an RGB image the way players show it (:func:`rotate_upright` of :func:`display_rotation`):
    phones record portrait video as landscape frames plus a rotation, and ffmpeg's ``-autorotate`` turns them."""
    return rotate_upright(frame.to_image(), display_rotation(frame, stream))


def decode_video(path: PathLike, last: int | None = None) -> Iterator[DecodedFrame]:
    """Decode ``path`` in decode order, yielding every frame numbered from 1, upright, with its timestamp.

    Args:
        path: a video file PyAV can decode (mp4, avi, mkv, webm, ...).
        last: stop after frame ``last`` (1-based) instead of decoding to the end; None decodes everything.

    Yields:
        :class:`DecodedFrame` ``(number, timestamp, image)``, numbers 1, 2, 3, ... without gaps.

    Raises:
        VideoError: the file is missing or unreadable, has no video stream, fails to decode (the message gives
            the number of frames decoded before), or decodes to no frame at all (an empty video).
    """
    path = Path(path)
    number = 0
    with open_video(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # frame / slice threads change the speed, never the frames output
        rate = float(getattr(stream, "guessed_rate", None) or stream.average_rate or 0) or None
        declared = int(stream.frames or 0)
        start: float | None = None
        try:
            for frame in container.decode(stream):
                number += 1
                time = frame.time
                if time is None or not math.isfinite(time):
                    time = (number - 1) / rate if rate else 0.0
                start = time if start is None else start
                yield DecodedFrame(number, time - start, upright_image(frame, stream))
                if last is not None and number >= last:
                    return
        except (av.error.FFmpegError, OSError, ValueError) as error:
            if isinstance(error, VideoError):
                raise
            raise VideoError(
                f"Expected a decodable video but decoding {path} failed after {number} frame(s): {error}"
            ) from error
    if number == 0 and declared > 0:
        raise VideoError(
            f"Expected the {declared} frames its container declares in {path} but none decodes (a "
            f"truncated or corrupt file)"
        )
    if number == 0:
        raise VideoError(f"Expected at least one decodable video frame in {path} but found none (empty video)")


def off_grid(frame: DecodedFrame, frame_rate: float | None) -> bool:
    """Whether ``frame`` is :data:`OFF_GRID_PERIODS` or more frame periods away from slot ``number - 1`` of the
    constant-rate grid at ``frame_rate`` (False when the rate is unknown). A constant-rate video has no such frame;
    in a variable-rate one, ffmpeg's default constant-rate image2 output (the AG toolkit's) may number the frames
    from there on differently from decode order."""
    if not frame_rate or not math.isfinite(frame.timestamp):
        return False
    return abs(frame.timestamp * frame_rate - (frame.number - 1)) >= OFF_GRID_PERIODS


__all__ = [
    "FIRST_FRAME_NUMBER",
    "FRAME_NUMBER_DIGITS",
    "OFF_GRID_PERIODS",
    "DecodedFrame",
    "VideoError",
    "VideoInfo",
    "decode_video",
    "display_rotation",
    "frame_file_name",
    "off_grid",
    "open_video",
    "probe_video",
    "rotate_upright",
    "upright_image",
]
