"""Reading frames from a video file or an image folder, and writing an mp4, with PyAV.

Decoding: a video goes through :func:`arn_lightning.video.decode.decode_video`, the decoding path of
``arn-lightning dump-frames`` too, so both give a frame the same number and image: frames are numbered from 1 in
decode order (``000001.png`` is the first frame, as the Action Genome toolkit's ``ffmpeg -i <video> %06d.png``
names it) and turned upright by the container's display rotation (portrait phone videos); see ``docs/frames.md``.

Sampling: a video is decoded in full and one frame is kept per ``1 / fps`` seconds of presentation time (the first
frame whose timestamp falls into each slot ``floor((t - t0) * fps)``), so ``fps`` at or above the video's own rate
keeps every frame. An image folder is taken as already sampled: every image (natural sort order: ``2.png`` before
``10.png``) is a frame, and ``fps`` only gives their timestamps ``i / fps``.

Each sampled frame gets an Action Genome style key: ``"<video name>/<NNNNNN>.png"`` with its 1-based frame number for
a video (so the predictions of an AG video carry AG keys), ``"<folder name>/<file name>"`` for a folder (so the
predictions of a frame folder dumped from AG keep the AG keys).

The family: :class:`FrameSource` is every source of sampled frames; :class:`FolderFrames` and
:class:`VideoFileFrames` here, the live sources (one class per kind) in :mod:`arn_lightning.video.live`. All share
the decode loop (:func:`~arn_lightning.video.decode.decode_packets`), the folder loop
(:meth:`FolderFrames.decoded`) and the sampling (:class:`SlotSampler`).
"""

from __future__ import annotations

import math
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import av.error
from PIL import Image, UnidentifiedImageError

from arn_lightning._types import PathLike
from arn_lightning.atomic import atomic_path
from arn_lightning.defaults import DEFAULT_FPS
from arn_lightning.video.decode import (
    FIRST_FRAME_NUMBER,
    FRAME_NUMBER_DIGITS,
    DecodedFrame,
    VideoError,
    decode_video,
    frame_file_name,
    probe_video,
    upright_image,
)

#: File suffixes read from an image folder (lower case).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
#: Slack of the sampling slot computation, so that a timestamp of exactly ``k / fps`` lands in slot ``k``.
SLOT_EPSILON = 1e-6
#: Encoders tried in order for the annotated video (the first one PyAV's FFmpeg build offers is used).
PREFERRED_CODECS = ("libx264", "h264", "mpeg4")
#: Largest denominator of the output frame rate as a fraction (NTSC rates are n/1001).
_MAX_RATE_DENOMINATOR = 1001
#: mp4 / mov muxer flags of a live video: an empty header first, then self-contained fragments at every key frame.
LIVE_MOVFLAGS = "frag_keyframe+empty_moov+default_base_moof"
#: Seconds of video per fragment of a live video (its key-frame interval): at most this much is lost if the
#: process dies.
LIVE_FRAGMENT_SECONDS = 2.0
#: FFmpeg muxer of an output file suffix (the temporary file of an atomic write has another suffix).
_CONTAINER_FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm", ".avi": "avi"}


@dataclass
class VideoFrame:
    """One sampled frame.

    Attributes:
        index: position among the sampled frames (0, 1, 2, ...).
        source_index: 1-based frame number: in a video, the position in decode order (the ``NNNNNN`` of its key,
            1 for the first frame); in a folder, the number in the image's file name when every image is named by
            a plain number (an AG or ffmpeg dump: ``000089.png`` is 89), else the image's 1-based position.
        timestamp: seconds from the first frame of the video.
        key: Action Genome style frame key ``"<video name>/<NNNNNN>.png"`` (folder: ``"<folder>/<file>"``).
        image: the frame, RGB, upright, original size.
    """

    index: int
    source_index: int
    timestamp: float
    key: str
    image: Image.Image


def check_fps(fps: float) -> float:
    """``fps`` as a float; raises ValueError unless it is a positive finite number (frames per second)."""
    if not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
        raise ValueError(f"Expected a positive frame rate (frames per second) but got fps={fps!r}")
    return float(fps)


def _natural_key(name: str) -> list[int | str]:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


class SlotSampler:
    """The frame sampling of every source: keep the first frame of each ``1 / fps`` slot of time
    (``floor(t * fps)``); ``fps=None`` keeps every frame.

    Attributes:
        fps: sampling rate (frames per second), or None.
    """

    def __init__(self, fps: float | None) -> None:
        self.fps = fps
        self._last_slot = -1

    def keep(self, timestamp: float) -> bool:
        """Whether the frame at ``timestamp`` (seconds, non-decreasing over calls) opens a new slot."""
        if self.fps is None:
            return True
        slot = math.floor(timestamp * self.fps + SLOT_EPSILON)  # first frame of each slot
        if slot <= self._last_slot:
            return False
        self._last_slot = slot
        return True


class FrameSource(ABC):
    """Sampled frames (:class:`VideoFrame`) of a video file, an image folder or a live source; iterate to decode.

    Construct with :func:`open_frames` (files and folders: each iteration starts over) or
    :func:`arn_lightning.video.live.open_source` (any source, one pass), which check the input first.

    Attributes:
        name: the name used in frame keys (file or folder name, ...).
        fps: the sampling rate (frames per second; a folder's image rate), None for a live source keeping every
            frame.
    """

    name: str
    fps: float | None

    @property
    def estimated_count(self) -> int | None:
        """Number of frames the iteration will give, if known in advance (a progress bar's total)."""
        return None

    @abstractmethod
    def __iter__(self) -> Iterator[VideoFrame]:
        """Decode the sampled frames in time order."""


class FolderFrames(FrameSource):
    """Every image of a folder, in natural sort order, as frames ``1 / fps`` seconds apart.

    Frame numbers (``VideoFrame.source_index``) are the numbers in the file names when every image is named by a
    plain number (``000089.png``), else the 1-based positions.

    Attributes:
        path: the folder.
        files: its images, in natural sort order.
        numbers: the frame number of each image.
    """

    def __init__(self, path: Path, fps: float) -> None:
        self.path, self.fps, self.name = path, check_fps(fps), path.name
        self.files = sorted(
            (p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
            key=lambda p: _natural_key(p.name),
        )
        if not self.files:
            raise VideoError(
                f"Expected image files ({', '.join(IMAGE_SUFFIXES)}) in the frame folder {path} but found none"
            )
        named = all(p.stem.isdecimal() for p in self.files)
        self.numbers = [int(p.stem) if named else FIRST_FRAME_NUMBER + i for i, p in enumerate(self.files)]

    @property
    def estimated_count(self) -> int | None:
        """The number of images."""
        return len(self.files)

    def decoded(
        self, rate: float, on_bad_image: Callable[[int, str], None] | None = None
    ) -> Iterator[tuple[DecodedFrame, str]]:
        """The folder loop: ``(DecodedFrame(number, i / rate, image), key)`` of each image, in order.

        Args:
            rate: images per second (image ``i`` is at ``i / rate`` seconds).
            on_bad_image: None raises on an unreadable image; a function skips it and is called with its frame
                number and what was wrong.

        Raises:
            VideoError: an image cannot be decoded (without ``on_bad_image``).
        """
        for i, (file, number) in enumerate(zip(self.files, self.numbers)):
            try:
                with Image.open(file) as image:
                    rgb = image.convert("RGB")
            except (OSError, UnidentifiedImageError, ValueError) as error:
                if on_bad_image is None:
                    raise VideoError(f"Expected a readable image but could not decode {file}: {error}") from error
                on_bad_image(number, f"{file.name} is not a readable image ({error})")
                continue
            yield DecodedFrame(number, i / rate, rgb), f"{self.name}/{file.name}"

    def __iter__(self) -> Iterator[VideoFrame]:
        for i, (decoded, key) in enumerate(self.decoded(self.fps)):
            yield VideoFrame(i, decoded.number, decoded.timestamp, key, decoded.image)


class VideoFileFrames(FrameSource):
    """The frames of a video file sampled at ``fps`` (see the module docstring), decoded with
    :func:`~arn_lightning.video.decode.decode_video`.

    Attributes:
        path: the video file.

    Raises:
        VideoError: (construction) the file cannot be opened or has no video stream.
    """

    def __init__(self, path: Path, fps: float) -> None:
        self.path, self.fps, self.name = path, check_fps(fps), path.name
        info = probe_video(path)
        self.native_fps = info.average_rate
        self.duration = info.duration

    @property
    def estimated_count(self) -> int | None:
        """Sampled frames expected from the container's duration (``None`` if it does not say)."""
        if self.duration is None:
            return None
        rate = min(self.fps, self.native_fps) if self.native_fps else self.fps
        return max(1, math.ceil(self.duration * rate - SLOT_EPSILON))

    def __iter__(self) -> Iterator[VideoFrame]:
        """Decode and sample.

        Raises:
            VideoError: decoding fails, or the video holds no decodable frame.
        """
        sampler = SlotSampler(self.fps)
        index = 0
        for decoded in decode_video(self.path):
            if not sampler.keep(decoded.timestamp):
                continue
            key = f"{self.name}/{frame_file_name(decoded.number)}"
            yield VideoFrame(index, decoded.number, decoded.timestamp, key, decoded.image)
            index += 1


def open_frames(path: PathLike, fps: float = DEFAULT_FPS) -> FrameSource:
    """Check a video file or an image folder and return its sampled frames (decoded lazily, on iteration).

    Args:
        path: a video file PyAV can decode (mp4, avi, mkv, webm, ...) or a folder of images.
        fps: sampling rate for a video; the frame rate of a folder's images (their timestamps are ``i / fps``).

    Returns:
        A :class:`FrameSource`; iterating it raises :class:`VideoError` if the video turns out empty or corrupt.

    Raises:
        VideoError: the path does not exist, a folder holds no images, or a file is not a readable video.
        ValueError: ``fps`` is not a positive number.
    """
    text, path = os.fspath(path), Path(path)
    check_fps(fps)
    if path.is_dir():
        return FolderFrames(path, fps)
    if path.is_file():
        return VideoFileFrames(path, fps)
    raise VideoError(f"Expected a video file or a folder of images but {path} does not exist", text)


def _pick_codec() -> str:
    for codec in PREFERRED_CODECS:
        if codec in av.codecs_available:
            try:
                av.codec.Codec(codec, "w")
            except (av.error.FFmpegError, ValueError):
                continue
            return codec
    raise VideoError(f"Expected one of the encoders {PREFERRED_CODECS} in PyAV's FFmpeg build but found none")


class VideoWriter:
    """Encode RGB images into an mp4 (H.264 where available, yuv420p) with PyAV.

    The frame size is fixed by the first image, rounded up to even numbers (yuv420p needs even sizes) by padding
    black; a later image of another size is resized to the first one's size. Use as a context manager. The file is
    written atomically (:func:`arn_lightning.atomic.atomic_path`): it appears complete on :meth:`close`, and a
    block left by an exception leaves no file (nor the previous one damaged).

    With ``live`` the file is written in place as frames arrive, for a stream that may run for hours or be stopped
    at any time: an mp4 / mov is fragmented (``movflags=frag_keyframe+empty_moov+default_base_moof``: a header
    first, then self-contained fragments), so the file plays while it grows and everything up to the last complete
    fragment stays playable if the process dies; Matroska and WebM are streamable as they are. :meth:`abort` then
    keeps what was written.

    Args:
        path: the video to write (the container format follows the suffix: mp4, mov, mkv, webm or avi; mp4 for
            any other).
        fps: frames per second of the output.
        live: write in place, playable while it grows (see above), instead of atomically.
    """

    def __init__(self, path: PathLike, fps: float, live: bool = False) -> None:
        self.path = Path(path)
        self.live = live
        self.rate = Fraction(check_fps(fps)).limit_denominator(_MAX_RATE_DENOMINATOR)
        self.frame_size: tuple[int, int] | None = None
        self.size: tuple[int, int] | None = None
        self.frames_written = 0
        self._container: av.container.OutputContainer | None = None
        self._stream: av.video.stream.VideoStream | None = None
        self._atomic: AbstractContextManager[Path] | None = None

    def _start(self, size: tuple[int, int]) -> None:
        width, height = (value + value % 2 for value in size)
        self.frame_size, self.size = size, (width, height)
        container_format = _CONTAINER_FORMATS.get(self.path.suffix.lower(), "mp4")  # tmp's suffix is not the format
        if self.live:
            options = {"flush_packets": "1"}  # each packet reaches the file at once, not when a buffer fills
            if container_format in ("mp4", "mov"):
                options["movflags"] = LIVE_MOVFLAGS
            self._container = av.open(str(self.path), mode="w", format=container_format, options=options)
        else:
            self._atomic = atomic_path(self.path)
            tmp = self._atomic.__enter__()
            try:
                self._container = av.open(str(tmp), mode="w", format=container_format)
            except BaseException as error:
                self._atomic.__exit__(type(error), error, error.__traceback__)
                self._atomic = None
                raise
        codec = _pick_codec()
        self._stream = self._container.add_stream(codec, rate=self.rate)
        self._stream.width, self._stream.height = width, height
        self._stream.pix_fmt = "yuv420p"
        if self.live:  # a key frame (so a fragment) every LIVE_FRAGMENT_SECONDS, no encoder look-ahead
            self._stream.codec_context.gop_size = max(1, round(float(self.rate) * LIVE_FRAGMENT_SECONDS))
            if codec == "libx264":
                self._stream.codec_context.options = {"tune": "zerolatency"}

    def _fit(self, image: Image.Image) -> Image.Image:
        assert self.size is not None and self.frame_size is not None
        if image.size != self.frame_size:
            image = image.resize(self.frame_size, Image.Resampling.BILINEAR)
        if image.size != self.size:
            canvas = Image.new("RGB", self.size)
            canvas.paste(image, (0, 0))
            image = canvas
        return image

    def write(self, image: Image.Image) -> None:
        """Append one frame (any PIL mode; converted to RGB)."""
        if self._container is None:
            self._start(image.size)
        frame = av.VideoFrame.from_image(self._fit(image.convert("RGB")))
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames_written += 1

    def close(self) -> None:
        """Flush the encoder, close the file and move it to ``path`` (a video with no frame is never created)."""
        if self._container is None:
            return
        container, atomic = self._container, self._atomic
        self._container = self._atomic = None
        try:
            for packet in self._stream.encode(None):
                container.mux(packet)
            container.close()
        except BaseException as error:
            container.close()
            if atomic is not None:
                atomic.__exit__(type(error), error, error.__traceback__)  # removes the temporary file
            raise
        if atomic is not None:
            atomic.__exit__(None, None, None)

    def abort(self) -> None:
        """Stop without creating ``path`` (the temporary file is removed); a ``live`` video is closed with what it
        holds (the frames written so far stay playable)."""
        if self.live:
            self.close()
            return
        if self._container is None:
            return
        container, atomic = self._container, self._atomic
        self._container = self._atomic = None
        container.close()
        error = RuntimeError(f"writing {self.path} aborted")
        atomic.__exit__(RuntimeError, error, None)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type: type | None, *exc_info: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


__all__ = [
    "DEFAULT_FPS",
    "FRAME_NUMBER_DIGITS",
    "IMAGE_SUFFIXES",
    "FolderFrames",
    "FrameSource",
    "SlotSampler",
    "VideoError",
    "VideoFileFrames",
    "VideoFrame",
    "VideoWriter",
    "open_frames",
    "upright_image",
]
