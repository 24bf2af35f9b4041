"""Reading frames from a video file or an image folder, and writing an mp4, with PyAV.

Sampling: a video is decoded in full and one frame is kept per ``1 / fps`` seconds of presentation time (the first
frame whose timestamp falls into each slot ``floor((t - t0) * fps)``), so ``fps`` at or above the video's own rate
keeps every frame; frames are turned upright by the container's display rotation (portrait phone videos). An image
folder is taken as already sampled: every image (natural sort order: ``2.png`` before
``10.png``) is a frame, and ``fps`` only gives their timestamps ``i / fps``.

Each sampled frame gets an Action Genome style key ``"<video name>/<NNNNNN>.png"`` (the source frame number, or the
image's file name in a folder), so that the predictions of a frame folder dumped from AG keep the AG keys.
"""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator, List, Optional, Tuple, Union

import av
import av.error
from PIL import Image, UnidentifiedImageError

#: Default sampling rate (frames per second): Action Genome annotates videos at about 1-2 frames per second, so the
#: model sees frames as far apart as in training, and a minute of video costs 120 frames.
DEFAULT_FPS = 2.0
#: File suffixes read from an image folder (lower case).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
#: Digits of the frame number in a frame key (``000089.png``), as in Action Genome.
FRAME_NUMBER_DIGITS = 6
#: Slack of the sampling slot computation, so that a timestamp of exactly ``k / fps`` lands in slot ``k``.
_SLOT_EPSILON = 1e-6
#: Encoders tried in order for the annotated video (the first one PyAV's FFmpeg build offers is used).
PREFERRED_CODECS = ("libx264", "h264", "mpeg4")
#: Largest denominator of the output frame rate as a fraction (NTSC rates are n/1001).
_MAX_RATE_DENOMINATOR = 1001

PathLike = Union[str, Path]


class VideoError(ValueError):
    """An input video or image folder that cannot be read (the message names the file)."""


@dataclass
class VideoFrame:
    """One sampled frame.

    Attributes:
        index: position among the sampled frames (0, 1, 2, ...).
        source_index: frame number in the source video (decode order), or position of the image in its folder.
        timestamp: seconds from the first frame of the video.
        key: Action Genome style frame key ``"<video name>/<NNNNNN>.png"`` (folder: ``"<folder>/<file>"``).
        image: the frame, RGB, original size.
    """

    index: int
    source_index: int
    timestamp: float
    key: str
    image: Image.Image


def _check_fps(fps: float) -> float:
    if not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
        raise ValueError(f"Expected a positive frame rate (frames per second) but got fps={fps!r}")
    return float(fps)


def _natural_key(name: str) -> List[Union[int, str]]:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


class FrameSource(ABC):
    """The sampled frames of a video file or an image folder; iterate to decode (each iteration starts over).

    Construct with :func:`open_frames`, which checks the input before anything is decoded.

    Attributes:
        path: the video file or image folder.
        fps: sampling rate of a video, frame rate of a folder's images (frames per second).
        name: the video's name used in frame keys (file or folder name).
    """

    def __init__(self, path: Path, fps: float) -> None:
        self.path = path
        self.fps = _check_fps(fps)
        self.name = path.name

    @property
    @abstractmethod
    def estimated_count(self) -> Optional[int]:
        """Number of frames the iteration will give, if known in advance (a progress bar's total)."""

    @abstractmethod
    def __iter__(self) -> Iterator[VideoFrame]:
        """Decode the sampled frames in time order."""


class FolderFrames(FrameSource):
    """Every image of a folder, in natural sort order, as frames ``1 / fps`` seconds apart."""

    def __init__(self, path: Path, fps: float) -> None:
        super().__init__(path, fps)
        self.files = sorted(
            (p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
            key=lambda p: _natural_key(p.name),
        )
        if not self.files:
            raise VideoError(
                f"Expected image files ({', '.join(IMAGE_SUFFIXES)}) in the frame folder {path} but found none"
            )

    @property
    def estimated_count(self) -> Optional[int]:
        """The number of images."""
        return len(self.files)

    def __iter__(self) -> Iterator[VideoFrame]:
        for i, file in enumerate(self.files):
            try:
                with Image.open(file) as image:
                    rgb = image.convert("RGB")
            except (OSError, UnidentifiedImageError) as error:
                raise VideoError(f"Expected a readable image but could not decode {file}: {error}") from error
            yield VideoFrame(i, i, i / self.fps, f"{self.name}/{file.name}", rgb)


class VideoFileFrames(FrameSource):
    """The frames of a video file sampled at ``fps`` (see the module docstring), decoded with PyAV."""

    def __init__(self, path: Path, fps: float) -> None:
        super().__init__(path, fps)
        with self._open() as container:
            stream = container.streams.video[0]
            self.native_fps = float(stream.average_rate) if stream.average_rate else None
            self.duration = self._duration(container, stream)

    def _open(self) -> "av.container.InputContainer":
        try:
            container = av.open(str(self.path), mode="r")
        except (av.error.FFmpegError, OSError, UnicodeDecodeError) as error:
            raise VideoError(f"Expected a readable video file but could not open {self.path}: {error}") from error
        if not container.streams.video:
            kinds = sorted({stream.type for stream in container.streams})
            container.close()
            found = f"only {', '.join(kinds)} streams (unsupported)" if kinds else "no stream at all (empty video)"
            raise VideoError(f"Expected a video stream in {self.path} but found {found}")
        return container

    @staticmethod
    def _duration(container: "av.container.InputContainer", stream: "av.video.stream.VideoStream") -> Optional[float]:
        if stream.duration is not None and stream.time_base is not None:
            return float(stream.duration * stream.time_base)
        if container.duration is not None:
            return container.duration / av.time_base
        return None

    @property
    def estimated_count(self) -> Optional[int]:
        """Sampled frames expected from the container's duration (``None`` if it does not say)."""
        if self.duration is None:
            return None
        rate = min(self.fps, self.native_fps) if self.native_fps else self.fps
        return max(1, math.ceil(self.duration * rate - _SLOT_EPSILON))

    def __iter__(self) -> Iterator[VideoFrame]:
        count = 0
        with self._open() as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            try:
                for frame in self._sample(container.decode(stream)):
                    yield frame
                    count += 1
            except av.error.FFmpegError as error:
                raise VideoError(f"Expected a decodable video but decoding {self.path} failed: {error}") from error
        if count == 0:
            raise VideoError(f"Expected at least one decodable video frame in {self.path} but found none (empty video)")

    def _sample(self, frames: Iterator["av.VideoFrame"]) -> Iterator[VideoFrame]:
        """Keep the first decoded frame of each ``1 / fps`` slot of presentation time."""
        fallback_rate = self.native_fps or self.fps
        start: Optional[float] = None
        last_slot = -1
        index = 0
        for number, frame in enumerate(frames):
            time = frame.time if frame.time is not None else number / fallback_rate
            start = time if start is None else start
            slot = math.floor((time - start) * self.fps + _SLOT_EPSILON)
            if slot <= last_slot:
                continue
            last_slot = slot
            key = f"{self.name}/{number:0{FRAME_NUMBER_DIGITS}d}.png"
            yield VideoFrame(index, number, time - start, key, upright_image(frame))
            index += 1


def upright_image(frame: "av.VideoFrame") -> Image.Image:
    """The frame as an RGB image the way players show it: turned by the container's display matrix (phones
    record portrait video as landscape frames plus a rotation), as FFmpeg's ``-autorotate`` does."""
    image = frame.to_image()
    rotation = (getattr(frame, "rotation", 0) or 0) % 360  # counterclockwise degrees; PyAV < 13 has no rotation
    return image.rotate(rotation, expand=True) if rotation else image  # PIL transposes exactly for 90, 180, 270


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
    path = Path(path)
    _check_fps(fps)
    if path.is_dir():
        return FolderFrames(path, fps)
    if path.is_file():
        if path.stat().st_size == 0:
            raise VideoError(f"Expected a video file but {path} is empty (0 bytes)")
        return VideoFileFrames(path, fps)
    raise VideoError(f"Expected a video file or a folder of images but {path} does not exist")


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
    black; a later image of another size is resized to the first one's size. Use as a context manager.

    Args:
        path: the mp4 to write.
        fps: frames per second of the output.
    """

    def __init__(self, path: PathLike, fps: float) -> None:
        self.path = Path(path)
        self.rate = Fraction(_check_fps(fps)).limit_denominator(_MAX_RATE_DENOMINATOR)
        self.frame_size: Optional[Tuple[int, int]] = None
        self.size: Optional[Tuple[int, int]] = None
        self.frames_written = 0
        self._container: Optional["av.container.OutputContainer"] = None
        self._stream: Optional["av.video.stream.VideoStream"] = None

    def _start(self, size: Tuple[int, int]) -> None:
        width, height = (value + value % 2 for value in size)
        self.frame_size, self.size = size, (width, height)
        self._container = av.open(str(self.path), mode="w")
        self._stream = self._container.add_stream(_pick_codec(), rate=self.rate)
        self._stream.width, self._stream.height = width, height
        self._stream.pix_fmt = "yuv420p"

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
        """Flush the encoder and close the file (an mp4 with no frame is never created)."""
        if self._container is None:
            return
        for packet in self._stream.encode(None):
            self._container.mux(packet)
        self._container.close()
        self._container = None

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
