"""The one video decoding path of the project: frame numbers, display rotation and timestamps (PyAV).

Both ``arn-lightning dump-frames`` (:mod:`arn_lightning.data.frames`) and ``arn-lightning infer``
(:mod:`arn_lightning.video.files`) decode videos with :func:`decode_video`, so a frame number means the same
image everywhere. The rules are those of the Action Genome toolkit, which dumps frames with
``ffmpeg -i <video> <dir>/%06d.png`` (see ``docs/frames.md``):

- **Numbering**: 1-based decode order. Frame 1 (``000001.png``) is the first frame the decoder outputs and frame
  ``N`` the last one of an ``N``-frame video, as ffmpeg's image2 muxer numbers its files. Every decoded frame counts,
  whatever its timestamp; PyAV's demux-and-decode (:func:`decode_packets`, as ``container.decode``) neither drops
  nor duplicates frames (it has no ``-vsync`` stage), so the numbers are decode positions (``-vsync passthrough``).
  ffmpeg's default for image2 output is a constant-rate output at the stream's frame rate, which equals decode order
  for a constant-rate video that starts with its file; :func:`off_grid` and :meth:`VideoInfo.leading_gap` find the
  videos where the two may differ.
- **Rotation**: the frame is turned upright by the container's display matrix, as ffmpeg's ``-autorotate`` (on by
  default) does: exact transposes for 90 / 180 / 270 degrees, ffmpeg's ``rotate`` filter semantics (same size,
  black corners) for other angles.
- **Timestamps**: seconds of presentation time from the first decoded frame (:class:`FrameClock`).

:func:`decode_packets` is the one decode loop (demux, decode, stamp, turn upright) of every source: video files
here, and the file, camera, URL and standard-input sources of :mod:`arn_lightning.video.live`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import av.error
from PIL import Image

from arn_lightning._types import PathLike
from arn_lightning.redact import redact

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
    decoded; the message names the file and says what was expected.

    The message is masked when the error is made (:func:`arn_lightning.redact.redact`): no password or token of a
    URL in it, nor any secret of the ``urls`` it is about, is ever stored, printed or logged.
    """

    def __init__(self, message: str = "", *urls: str) -> None:
        super().__init__(redact(message, *urls))


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


def open_container(path: PathLike) -> av.container.InputContainer:
    """Open ``path`` with PyAV and check that it holds a video stream (the caller closes the container).

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
    if not container.streams.video:
        kinds = sorted({stream.type for stream in container.streams})
        container.close()
        found = f"only {', '.join(kinds)} streams (unsupported)" if kinds else "no stream at all (empty video)"
        raise VideoError(f"Expected a video stream in {path} but found {found}")
    return container


@contextlib.contextmanager
def open_video(path: PathLike) -> Iterator[av.container.InputContainer]:
    """:func:`open_container` as a context manager: the container is closed on exit (raises like it)."""
    container = open_container(path)
    try:
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


class FrameClock:
    """Seconds of source time of decoded frames, segment by segment (one segment per opening of an input).

    A segment's first frame is at 0 (the first segment) and each later frame at its presentation time minus the
    first one's; a frame without a presentation time is at ``i / rate`` of the segment (0 with no rate). With
    ``monotonic`` (live sources), a new segment, or a frame whose time goes back, restarts the time one frame
    period after the last frame, so the time never goes back.
    """

    def __init__(self, rate: float | None, monotonic: bool = False) -> None:
        self.rate = rate
        self.monotonic = monotonic
        self.last: float | None = None
        self._start: float | None = None
        self._offset = 0.0
        self._count = 0

    def new_segment(self, rate: float | None) -> None:
        """Start a segment (a new opening); ``rate`` is its stream's frame rate when known."""
        self._start = None
        self._count = 0
        if rate:
            self.rate = rate

    def _period(self) -> float:
        return 1.0 / self.rate if self.rate else 0.0

    def stamp(self, time_s: float | None) -> float:
        """The timestamp of the next frame of the segment, given its presentation time (None: unknown)."""
        if time_s is None or not math.isfinite(time_s):
            time_s = self._count / self.rate if self.rate else 0.0
        self._count += 1
        if self._start is None:
            self._start = time_s
            self._offset = 0.0 if self.last is None else self.last + self._period()
        stamp = self._offset + (time_s - self._start)
        if self.monotonic and self.last is not None and stamp < self.last:
            self._start, self._offset = time_s, self.last + self._period()
            stamp = self._offset
        self.last = stamp
        return stamp


def stream_rate(stream: av.video.stream.VideoStream) -> float | None:
    """Frames per second of ``stream``: ffmpeg's guessed rate, else the average rate, else None."""
    rate = getattr(stream, "guessed_rate", None) or stream.average_rate
    return float(rate) if rate else None


def decode_packets(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    clock: FrameClock,
    on_bad_packet: Callable[[str], None] | None = None,
) -> Iterator[tuple[float, Image.Image]]:
    """The one decode loop: demux ``stream``, decode each packet, yield ``(timestamp, upright RGB image)``.

    Args:
        container: an open PyAV input.
        stream: its video stream to decode.
        clock: stamps each frame (:class:`FrameClock`; the caller starts the segment).
        on_bad_packet: None decodes every packet and lets a decoder error propagate (as ``container.decode``
            does); a function skips a packet the demuxer marks corrupt or the decoder rejects, and is called with
            what was wrong (the decoder resumes where it can).

    Raises:
        av.error.FFmpegError, OSError: demuxing fails, or (without ``on_bad_packet``) decoding does.
    """
    for packet in container.demux(stream):
        if on_bad_packet is None:
            frames = packet.decode()
        elif packet.size and packet.is_corrupt:
            on_bad_packet("a packet is marked corrupt by the demuxer (damaged data)")
            continue
        else:
            try:
                frames = packet.decode()
            except av.error.FFmpegError as error:
                on_bad_packet(f"the decoder rejected a packet ({error})")
                continue
        for frame in frames:
            yield clock.stamp(frame.time), upright_image(frame, stream)


def flush_decoder(stream: av.video.stream.VideoStream, clock: FrameClock) -> Iterator[tuple[float, Image.Image]]:
    """The frames the decoder of ``stream`` still holds after its input ended early (none if flushing fails),
    stamped and upright like :func:`decode_packets`."""
    try:
        flushed = stream.codec_context.decode(None)
    except av.error.FFmpegError:
        flushed = []
    for frame in flushed:
        yield clock.stamp(frame.time), upright_image(frame, stream)


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
        declared = int(stream.frames or 0)
        try:
            for timestamp, image in decode_packets(container, stream, FrameClock(stream_rate(stream))):
                number += 1
                yield DecodedFrame(number, timestamp, image)
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
    "FrameClock",
    "VideoError",
    "VideoInfo",
    "decode_packets",
    "decode_video",
    "display_rotation",
    "flush_decoder",
    "frame_file_name",
    "off_grid",
    "open_container",
    "open_video",
    "probe_video",
    "rotate_upright",
    "stream_rate",
    "upright_image",
]
