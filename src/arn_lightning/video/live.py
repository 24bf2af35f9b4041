"""Live frame sources for streaming inference: any SOURCE of ``arn-lightning infer --stream --input SOURCE`` as one
lazy pass of :class:`~arn_lightning.video.files.VideoFrame`.

Kinds of SOURCE (:func:`open_source` decides in this order):

- ``-``: standard input. With ``raw_size=(width, height)`` it holds consecutive raw ``rgb24`` frames of
  ``width * height * 3`` bytes (``"stdin-raw"``); without, a streamable container (mpegts, matroska, nut,
  yuv4mpegpipe, ...) that PyAV decodes from the byte stream (``"stdin-container"``).
- a network URL ``rtsp://``, ``rtsps://``, ``rtmp://``, ``http://``, ``https://``, ``udp://``, ``tcp://`` or ``srt://``
  (``"url"``), read by PyAV's FFmpeg (RTSP over TCP). A protocol that FFmpeg build lacks is an error that says so
  (the PyAV wheel of this project has every scheme above except ``srt``).
- ``/dev/video<N>``: a V4L2 camera (``"camera"``, Linux), read with FFmpeg's ``v4l2`` input.
- an existing folder (``"folder"``) or file (``"file"``): the same frames as
  :func:`~arn_lightning.video.files.open_frames`.

Numbering, keys and time:

- A frame's number (``VideoFrame.source_index``) is its 1-based position in decode order, as in
  :mod:`arn_lightning.video.decode` (a folder: the number of the image's file name, see
  :class:`~arn_lightning.video.files.FolderFrames`). Its key is ``"<name>/<NNNNNN>.png"`` (a folder:
  ``"<folder>/<file name>"``), where the name is the file or folder name, ``video0`` for ``/dev/video0``, the URL's
  last path part (else its host) and ``stdin`` for standard input.
- Its timestamp is seconds of source time from the first frame: presentation time for a container (frames without
  one: ``i / rate`` of the stream's rate), ``i / frame_rate`` for images and raw frames.
- A file gives exactly the keys, numbers, timestamps and pixels of ``open_frames(path, fps)``; frames are turned
  upright by the display rotation in every kind.
- On a live source (camera, URL, standard input), numbers and timestamps never go back: after a reopen (or a
  stream whose timestamps jump back) the numbering goes on and the time restarts one frame period after the last
  frame.

Sampling and limits: with ``fps`` the first frame of each ``1 / fps`` slot of time (``floor(t * fps)``) is kept, as
:class:`~arn_lightning.video.files.VideoFileFrames` does; ``fps=None`` keeps every frame. ``max_frames`` ends
the pass after that many kept frames, ``duration`` at the first decoded frame whose timestamp exceeds it (that frame
is not given); both stop without reading further and close the input.

Events (:class:`SourceEvent`, recorded in ``LiveSource.events`` and passed to ``on_event`` as they happen):

- ``"bad_frame"``: an image of a folder that cannot be read, a raw frame cut short (``frame N has X of Y bytes``),
  a packet the demuxer marks corrupt (damaged data, e.g. an mpegts continuity error) or the decoder rejects. With
  ``on_bad_frame="skip"`` the event is reported and reading goes on after it (a skipped packet gives no frame and
  takes no number; the decoder resumes where it can); with ``"error"`` a :class:`SourceError` is raised instead
  (no event).
- ``"resolution_change"``: a frame of another size than the one before; frames go on at the new size.
- ``"stall"``: a live source gave no data for ``timeout`` seconds (a container: no packet within ``timeout``
  seconds). A URL or camera with reconnect attempts left is reopened; otherwise the pass ends with a
  :class:`SourceError` (the frames already given stay given).
- ``"disconnect"``: a URL's input ended with a read error (connection reset, a body shorter than its declared
  ``Content-Length``, an HTTP stream without a declared length that the server closes), or a camera's input ended
  in any way (a camera has no end). It is reopened if attempts are left, else the pass ends normally: a finished
  stream is not an error. An orderly end of a URL (all the data it announced was read, an RTSP/RTMP end of stream)
  is the end of the stream: no event and no reopen. Standard input is never reopened: its end is the end.
- ``"reconnect"``: a reopen attempt (``reconnect`` of them at most over the whole pass). A reopen that fails
  uses up an attempt; when none is left the pass ends with a :class:`SourceError`.

Classes: each kind is its own :class:`LiveSource` subclass (:data:`SOURCE_CLASSES`); they share the decode loop
(:func:`~arn_lightning.video.decode.decode_packets`), the folder loop and the sampler with
:mod:`arn_lightning.video.files`.

Secrets: a URL's password and secret-looking query values (``token=``, ``sig=``, ...) are masked
(:mod:`arn_lightning.redact`) in every label, event, error and frame key a source makes, PyAV's own messages
included (docs/streaming.md).

Opening: :func:`open_source` checks the input and opens it: a file is probed, a folder listed, a camera, URL or
container on standard input connected and probed (so a missing device, a refused connection or an unknown
protocol fails there, within about ``timeout`` seconds). A live source buffers data from then on, so open it when
you are ready to read. Raw standard input is read only when iterated.
"""

from __future__ import annotations

import dataclasses
import math
import os
import queue
import re
import sys
import threading
import time
from abc import abstractmethod
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import BinaryIO, ClassVar
from urllib.parse import unquote, urlsplit

import av
import av.error
from PIL import Image

from arn_lightning.defaults import DEFAULT_FPS
from arn_lightning.redact import mask_url, redact
from arn_lightning.video.decode import (
    DecodedFrame,
    FrameClock,
    VideoError,
    decode_packets,
    flush_decoder,
    frame_file_name,
    open_container,
    probe_video,
    stream_rate,
)
from arn_lightning.video.files import FolderFrames, FrameSource, SlotSampler, VideoFrame, check_fps

#: URL schemes read as network streams.
URL_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp", "srt")
#: The ``kind`` of every event.
EVENT_KINDS = ("bad_frame", "resolution_change", "stall", "disconnect", "reconnect")
#: The ``on_bad_frame`` policies.
BAD_FRAME_POLICIES = ("skip", "error")
#: Rate of images and raw frames (frames per second) when neither ``frame_rate`` nor ``fps`` gives one.
DEFAULT_FRAME_RATE = 25.0
#: Default seconds without data before a live source is stalled.
DEFAULT_TIMEOUT = 10.0
#: A camera device path (Linux V4L2).
CAMERA_PATTERN = re.compile(r"^/dev/video(\d+)$")
#: What SOURCE may be, for error messages.
SOURCE_HELP = (
    "a video file, a folder of images, a camera device (/dev/video<N>), a network URL "
    f"({', '.join(scheme + '://' for scheme in URL_SCHEMES)}) or '-' (standard input: raw rgb24 frames with "
    "raw_size, else a streamable container)"
)
#: Bytes asked of standard input per read.
_READ_CHUNK = 1 << 16
#: Chunks read ahead from standard input at most (bounds the memory of a fast producer).
_QUEUE_CHUNKS = 64
#: Seconds between two checks of the stop flag by the standard input reader thread.
_POLL_S = 0.1
#: Longest wait (seconds) before retrying a reopen that failed.
_RETRY_WAIT_S = 1.0
_URL_PATTERN = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


class SourceError(VideoError):
    """A frame source that cannot be opened or read; the message names the source (its URL masked), the frame
    number where relevant, and what was expected."""


@dataclass(frozen=True)
class SourceEvent:
    """Something that happened while reading a source (see the module docstring for the kinds).

    Attributes:
        kind: ``"bad_frame"``, ``"resolution_change"``, ``"stall"``, ``"disconnect"`` or ``"reconnect"``.
        frame_number: 1-based decode-order number of the frame concerned, or of the next expected frame (a stall,
            disconnect, reconnect, or a skipped packet, which takes no number); None when unknown.
        message: one readable line naming the source and the frame number.
    """

    kind: str
    frame_number: int | None
    message: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "message", redact(self.message))  # masked where it is made (docs/streaming.md)


class _Stalled(Exception):
    """No data from standard input for ``timeout`` seconds (internal)."""


class _TimedReader:
    """A binary stream read by a background thread, so that a read waits at most ``timeout`` seconds for data.

    ``read`` is also the file-like interface PyAV decodes a container from (no ``seek``: a non-seekable stream).
    The stream itself is never closed (standard input belongs to the caller).
    """

    def __init__(self, stream: BinaryIO, timeout: float) -> None:
        self._stream = stream
        self.timeout = timeout
        self._queue: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=_QUEUE_CHUNKS)
        self._stop = threading.Event()
        self._pending = b""
        self._eof = False
        self._thread: threading.Thread | None = None

    def _pump(self) -> None:
        read = self._unlocked_read()
        item: bytes | BaseException | None
        while not self._stop.is_set():
            try:
                chunk = read(_READ_CHUNK)
            except BaseException as error:  # noqa: BLE001 (handed to the reading thread)
                item = error
            else:
                item = bytes(chunk) if chunk else None
            while not self._stop.is_set():
                try:
                    self._queue.put(item, timeout=_POLL_S)
                    break
                except queue.Full:
                    continue
            if not isinstance(item, bytes):
                return

    def _unlocked_read(self) -> Callable[[int], bytes]:
        """The reader thread's read: ``os.read`` on the stream's file descriptor where it has one. A thread blocked
        in a buffered file's ``read`` holds that file's lock, and the interpreter's shutdown, which flushes
        ``sys.stdin``, then aborts ("could not acquire lock ... at interpreter shutdown"); ``os.read`` holds none.
        Nothing else reads the stream, so no buffered byte is skipped."""
        try:
            descriptor = self._stream.fileno()
        except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError and a ValueError
            return getattr(self._stream, "read1", None) or self._stream.read
        return lambda size: os.read(descriptor, size)

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes (at least one), or ``b""`` at the end of the stream.

        Raises:
            _Stalled: no data came for ``timeout`` seconds.
            OSError: reading the stream failed.
        """
        if not self._pending and not self._eof:
            if self._thread is None:
                self._thread = threading.Thread(target=self._pump, name="arn-stdin-reader", daemon=True)
                self._thread.start()
            try:
                item = self._queue.get(timeout=self.timeout)
            except queue.Empty:
                raise _Stalled from None
            if item is None:
                self._eof = True
            elif isinstance(item, BaseException):
                self._eof = True
                raise OSError(f"reading failed: {item}") from item
            else:
                self._pending = item
        if size is None or size < 0:
            size = len(self._pending)
        out, self._pending = self._pending[:size], self._pending[size:]
        return out

    def read_exactly(self, size: int) -> bytes:
        """``size`` bytes, or fewer when the stream ends first (raises like :meth:`read`)."""
        parts: list[bytes] = []
        missing = size
        while missing > 0:
            chunk = self.read(missing)
            if not chunk:
                break
            parts.append(chunk)
            missing -= len(chunk)
        return b"".join(parts)

    def close(self) -> None:
        """Stop the reader thread (at its next chunk; a read blocked on an idle stream stays blocked, daemon)."""
        self._stop.set()


def _url_name(url: str) -> str:
    """The name of a URL in frame keys: its last path part, else its host; no secret of the URL in it."""
    parts = urlsplit(url)
    name = unquote(PurePosixPath(parts.path).name) if parts.path else ""
    return redact(name or parts.hostname or "stream", url)


def _check_positive(name: str, value: float) -> float:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ValueError(f"Expected a positive number of seconds for {name} but got {value!r}")
    return float(value)


@dataclass(frozen=True)
class SourceOptions:
    """How a source is read (checked by :func:`open_source`; see its arguments).

    Attributes:
        fps: sampling rate (frames per second), None to keep every frame.
        frame_rate: frames per second of images and raw frames.
        raw_size: ``(width, height)`` of raw rgb24 frames on standard input, else None.
        timeout: seconds without data before a live source is stalled.
        reconnect: reopen attempts of a URL or camera over the whole pass.
        on_bad_frame: ``"skip"`` or ``"error"``.
        max_frames: kept frames after which the pass ends, or None.
        duration: seconds after which the pass ends, or None.
    """

    fps: float | None = DEFAULT_FPS
    frame_rate: float = DEFAULT_FRAME_RATE
    raw_size: tuple[int, int] | None = None
    timeout: float = DEFAULT_TIMEOUT
    reconnect: int = 0
    on_bad_frame: str = "skip"
    max_frames: int | None = None
    duration: float | None = None


class LiveSource(FrameSource):
    """One lazy pass over the frames of a source; build with :func:`open_source` (see the module docstring).

    Each kind of source is its own subclass (:class:`FileSource`, :class:`FolderSource`, :class:`CameraSource`,
    :class:`UrlSource`, :class:`StdinRawSource`, :class:`StdinContainerSource`): it opens its input (``_open``)
    and decodes it (``_decoded``, numbered frames with their keys); this class samples them
    (:class:`~arn_lightning.video.files.SlotSampler`), applies the limits and reports events.

    Attributes:
        kind: ``"file"``, ``"folder"``, ``"camera"``, ``"url"``, ``"stdin-raw"`` or ``"stdin-container"``.
        name: the name used in frame keys.
        live: True for a camera, a URL and standard input.
        fps: the sampling rate (frames per second), None to keep every frame.
        events: every event so far.
        frames_read: frames decoded so far, bad ones included (a rejected or corrupt packet, an unreadable image, a
            cut raw frame count as one each).
    """

    kind: ClassVar[str]
    live: ClassVar[bool] = True
    #: Whether a stall or disconnect may be followed by a reopen (``reconnect`` attempts).
    reopens: ClassVar[bool] = False

    def __init__(
        self,
        spec: str,
        name: str,
        options: SourceOptions,
        on_event: Callable[[SourceEvent], None] | None = None,
        stdin: BinaryIO | None = None,
    ) -> None:
        self.spec, self.name, self.options = spec, name, options
        self.fps, self.frame_rate, self.raw_size = options.fps, options.frame_rate, options.raw_size
        self.timeout, self.reconnect, self.on_bad_frame = options.timeout, options.reconnect, options.on_bad_frame
        self.max_frames, self.duration = options.max_frames, options.duration
        self.on_event = on_event
        self.events: list[SourceEvent] = []
        self.frames_read = 0
        self.closed = False
        self._label = "standard input" if spec == "-" else mask_url(spec)
        self._stdin = stdin
        self._reader: _TimedReader | None = None
        self._generator: Generator[VideoFrame, None, None] | None = None
        self._next_number = 1
        self._attempts = 0

    @abstractmethod
    def _open(self) -> None:
        """Check the input and open it (see the module docstring); raises SourceError."""

    @abstractmethod
    def _decoded(self) -> Iterator[tuple[DecodedFrame, str]]:
        """Every decoded frame with its key, in order, before sampling and limits."""

    def _error(self, message: str) -> SourceError:
        """A :class:`SourceError` with ``message``, every secret of the source masked."""
        return SourceError(message, self.spec)

    def _cause(self, error: BaseException) -> BaseException | None:
        """``error`` as the cause of a SourceError, or None when its text holds a secret of the source (PyAV's
        messages repeat the URL): a printed traceback then shows the masked SourceError alone."""
        return error if redact(str(error), self.spec) == str(error) else None

    def _stdin_stream(self) -> BinaryIO:
        return self._stdin if self._stdin is not None else sys.stdin.buffer

    def _key(self, number: int) -> str:
        return f"{self.name}/{frame_file_name(number)}"

    # ----------------------------------------------------------------------------------------------------------------
    # events

    def _event(self, kind: str, number: int | None, message: str) -> None:
        event = SourceEvent(kind, number, redact(message, self.spec))
        self.events.append(event)
        if self.on_event is not None:
            self.on_event(event)

    def _bad_frame(self, number: int, message: str) -> None:
        """Report a bad frame per ``on_bad_frame`` (``message`` says what was wrong, without the source)."""
        if self.on_bad_frame == "error":
            raise self._error(f"Expected a decodable frame {number} from {self._label} but {message}")
        self._event("bad_frame", number, f"{self._label}: frame {number}: {message}; skipped")

    def _stall(self, number: int) -> bool:
        """Report a stall before frame ``number``; True if a reopen follows, else raise SourceError."""
        self._event("stall", number, f"{self._label}: no data for {self.timeout:g} s while waiting for frame {number}")
        if self._reopen_allowed():
            return True
        tried = f" and {self.reconnect} reconnect attempt(s)" if self.reconnect else ""
        raise self._error(
            f"Expected data from {self._label} at least every {self.timeout:g} s but got none for {self.timeout:g} s "
            f"while waiting for frame {number}{tried}"
        )

    def _reopen_allowed(self) -> bool:
        return self.reopens and self._attempts < self.reconnect

    def _size_changed(self, size: tuple[int, int] | None, decoded: DecodedFrame) -> tuple[int, int]:
        """Report a ``resolution_change`` when ``decoded`` is not of ``size``; returns its size."""
        if size is not None and decoded.image.size != size:
            (old_w, old_h), (new_w, new_h) = size, decoded.image.size
            self._event(
                "resolution_change",
                decoded.number,
                f"{self._label}: frame {decoded.number}: resolution changed from {old_w}x{old_h} to {new_w}x{new_h}",
            )
        return decoded.image.size

    # ----------------------------------------------------------------------------------------------------------------
    # iteration

    def __iter__(self) -> Iterator[VideoFrame]:
        """The sampled frames, lazily (one pass; see the module docstring for the rules).

        Raises:
            RuntimeError: the source was already iterated or closed.
            SourceError: (during iteration) a bad frame with ``on_bad_frame="error"``, a stall with no reconnect
                attempt left, a failed reopen, an input that cannot be decoded, or one that gave no frame at all.
        """
        if self._generator is not None or self.closed:
            raise RuntimeError(f"{self._label} is read once: it was already iterated or closed")
        self._generator = self._frames()
        return self._generator

    def _frames(self) -> Generator[VideoFrame, None, None]:
        sampler = SlotSampler(self.fps)
        index = good = 0
        size: tuple[int, int] | None = None
        try:
            for decoded, key in self._decoded():
                good += 1
                if self.duration is not None and decoded.timestamp > self.duration:
                    return
                size = self._size_changed(size, decoded)
                if not sampler.keep(decoded.timestamp):
                    continue
                yield VideoFrame(index, decoded.number, decoded.timestamp, key, decoded.image)
                index += 1
                if self.max_frames is not None and index >= self.max_frames:
                    return
            if good == 0:
                raise self._error(
                    f"Expected at least one decodable frame from {self._label} but it gave none "
                    f"({self.frames_read} bad)"
                )
        finally:
            self._release()

    # ----------------------------------------------------------------------------------------------------------------
    # closing

    def _release(self) -> None:
        self.closed = True
        if self._reader is not None:
            self._reader.close()

    def close(self) -> None:
        """Stop reading and close the input (idempotent). Standard input itself stays open (it is the caller's)."""
        generator = self._generator
        if generator is not None:
            try:
                generator.close()
            except ValueError:  # running in another thread: it closes the input when it returns
                pass
        self._release()

    def __enter__(self) -> LiveSource:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(kind={self.kind!r}, name={self.name!r}, source={self._label!r})"


class FolderSource(LiveSource):
    """An image folder: the images of :class:`~arn_lightning.video.files.FolderFrames` at ``frame_rate``; an
    unreadable image is a bad frame."""

    kind = "folder"
    live = False
    _folder: FolderFrames

    def _open(self) -> None:
        try:
            self._folder = FolderFrames(Path(self.spec), self.frame_rate)
        except VideoError as error:
            raise self._error(str(error)) from error

    def _bad_image(self, number: int, message: str) -> None:
        self.frames_read += 1
        self._bad_frame(number, message)

    def _decoded(self) -> Iterator[tuple[DecodedFrame, str]]:
        for decoded, key in self._folder.decoded(self.frame_rate, self._bad_image):
            self.frames_read += 1
            yield decoded, key


class StdinRawSource(LiveSource):
    """Raw rgb24 frames of ``raw_size`` on standard input, ``1 / frame_rate`` seconds apart (read when iterated)."""

    kind = "stdin-raw"

    def _open(self) -> None:
        self._reader = _TimedReader(self._stdin_stream(), self.timeout)

    def _read_frame(self, number: int, frame_bytes: int) -> bytes | None:
        """The bytes of frame ``number`` (fewer at the end of the stream), or None after a stall (raises)."""
        assert self._reader is not None
        try:
            return self._reader.read_exactly(frame_bytes)
        except _Stalled:
            self._stall(number)  # standard input is never reopened: raises
            return None
        except OSError as error:
            raise self._error(
                f"Expected raw frames on {self._label} but reading frame {number} failed: {error}"
            ) from self._cause(error)

    def _decoded(self) -> Iterator[tuple[DecodedFrame, str]]:
        assert self.raw_size is not None
        width, height = self.raw_size
        frame_bytes = width * height * 3
        number = 1
        while True:
            data = self._read_frame(number, frame_bytes)
            if not data:
                return
            self.frames_read += 1
            if len(data) < frame_bytes:
                self._bad_frame(
                    number,
                    f"frame {number} has {len(data)} of {frame_bytes} bytes (raw rgb24 {width}x{height}: the stream "
                    f"ended inside it)",
                )
                return
            image = Image.frombytes("RGB", (width, height), data)
            yield DecodedFrame(number, (number - 1) / self.frame_rate, image), self._key(number)
            number += 1


class _ContainerSource(LiveSource):
    """A source PyAV demuxes and decodes (:func:`~arn_lightning.video.decode.decode_packets`), one segment per
    opening of the input; a subclass opens it (``_av_open``) and says what an ending means (``_goes_on``)."""

    #: What the input should be, for the message of a failed open.
    expected: ClassVar[str] = "a readable video stream"
    #: Decode with frame / slice threads (they change the speed, never the frames).
    threaded: ClassVar[bool] = False
    #: The open input (None before the first opening and between two).
    _container: av.container.InputContainer | None = None

    def _open(self) -> None:
        self._container = self._open_container()

    @abstractmethod
    def _av_open(self) -> av.container.InputContainer:
        """Open the input with PyAV (may raise PyAV's errors or ``_Stalled``)."""

    @abstractmethod
    def _goes_on(self, ending: BaseException | None, number: int) -> bool:
        """After a segment ended (``ending``: None for an orderly end, else what ended it) before frame
        ``number``: True to reopen, False to end the pass; raises SourceError when the pass fails."""

    def _open_container(self) -> av.container.InputContainer:
        """Open the input and check that it holds a video stream.

        Raises:
            SourceError: the device is missing, the protocol is not in PyAV's FFmpeg build, the connection fails or
                times out, no data comes within ``timeout`` seconds, or the input holds no video stream.
        """
        label = self._label
        try:
            container = self._av_open()
        except _Stalled:
            message = f"Expected a video container on {label} but no data came for {self.timeout:g} s"
            raise self._error(message) from None
        except av.error.ProtocolNotFoundError as error:
            scheme = self.spec.split("://", 1)[0]
            raise self._error(
                f"Expected a protocol PyAV's FFmpeg build can read but it has no '{scheme}' protocol compiled in: "
                f"cannot open {label}"
            ) from self._cause(error)
        except (av.error.ExitError, av.error.TimeoutError) as error:
            raise self._error(
                f"Expected {label} to answer within {self.timeout:g} s but it did not (timed out): {error}"
            ) from self._cause(error)
        except (av.error.FFmpegError, OSError, ValueError) as error:
            raise self._error(f"Expected {self.expected} at {label} but could not open it: {error}") from self._cause(
                error
            )
        if not container.streams.video:
            kinds = sorted({stream.type for stream in container.streams})
            container.close()
            found = f"only {', '.join(kinds)} streams" if kinds else "no stream at all"
            raise self._error(f"Expected a video stream in {label} but found {found}")
        return container

    def _decoded(self) -> Iterator[tuple[DecodedFrame, str]]:
        self._attempts = 0
        clock = FrameClock(self.frame_rate, monotonic=self.live)
        while True:
            if self._container is None:
                self._container = self._open_container()
            ending = yield from self._segment(self._container, clock)
            self._close_container()
            if not self._goes_on(ending, self._next_number):
                return
            self._reopen(self._next_number)

    def _reopen(self, number: int) -> None:
        """Reopen the input, using up attempts until one succeeds (raises SourceError when none is left)."""
        while True:
            self._attempts += 1
            self._event(
                "reconnect",
                number,
                f"{self._label}: reopening (attempt {self._attempts} of {self.reconnect}) before frame {number}",
            )
            try:
                self._container = self._open_container()
                return
            except SourceError as error:
                if self._attempts >= self.reconnect:
                    raise self._error(
                        f"Expected to reopen {self._label} before frame {number} but {self.reconnect} attempt(s) "
                        f"failed; last: {error}"
                    ) from error
                time.sleep(min(_RETRY_WAIT_S, self.timeout))

    def _segment(
        self, container: av.container.InputContainer, clock: FrameClock
    ) -> Generator[tuple[DecodedFrame, str], None, BaseException | None]:
        """Decode one opening of a container; return None at its orderly end, else the exception that ended it
        (a :class:`_Stalled` for a stall)."""
        stream = container.streams.video[0]
        if self.threaded:
            stream.thread_type = "AUTO"
        clock.new_segment(stream_rate(stream))
        ending: BaseException | None = None
        try:
            for timestamp, image in decode_packets(container, stream, clock, self._bad_packet):
                yield self._numbered(timestamp, image)
        except (_Stalled, av.error.ExitError, av.error.TimeoutError) as error:
            ending = error if isinstance(error, _Stalled) else _Stalled(str(error))
        except (av.error.FFmpegError, OSError) as error:
            ending = error
        if ending is not None:  # frames the decoder still holds were decoded before the end: keep them
            for timestamp, image in flush_decoder(stream, clock):
                yield self._numbered(timestamp, image)
        return ending

    def _bad_packet(self, message: str) -> None:
        self.frames_read += 1
        self._bad_frame(self._next_number, message)

    def _numbered(self, timestamp: float, image: Image.Image) -> tuple[DecodedFrame, str]:
        number = self._next_number
        self._next_number += 1
        self.frames_read += 1
        return DecodedFrame(number, timestamp, image), self._key(number)

    def _close_container(self) -> None:
        container, self._container = self._container, None
        if container is not None:
            container.close()

    def _release(self) -> None:
        self.closed = True
        self._close_container()
        super()._release()


class FileSource(_ContainerSource):
    """A video file: exactly the keys, numbers, timestamps and pixels of
    :func:`~arn_lightning.video.files.open_frames` (probed at open, opened when iterated)."""

    kind = "file"
    live = False
    threaded = True

    def _open(self) -> None:
        try:
            probe_video(self.spec)
        except VideoError as error:
            raise self._error(str(error)) from error

    def _av_open(self) -> av.container.InputContainer:
        return open_container(self.spec)

    def _goes_on(self, ending: BaseException | None, number: int) -> bool:
        if ending is not None:
            raise self._error(
                f"Expected a decodable video but decoding {self._label} failed after {number - 1} frame(s): {ending}"
            ) from self._cause(ending)
        return False


class UrlSource(_ContainerSource):
    """A network stream (``rtsp://`` over TCP, ``http://``, ...): a read error is a disconnect, an orderly end
    the end of the stream; stalls and disconnects are reopened while attempts are left."""

    kind = "url"
    reopens = True

    def _av_open(self) -> av.container.InputContainer:
        options = {"rtsp_transport": "tcp"} if self.spec.lower().startswith(("rtsp:", "rtsps:")) else {}
        return av.open(self.spec, mode="r", options=options, timeout=(self.timeout, self.timeout))

    def _disconnected(self, ending: BaseException | None) -> bool:
        return ending is not None

    def _goes_on(self, ending: BaseException | None, number: int) -> bool:
        if isinstance(ending, _Stalled):
            return self._stall(number)  # raises when no reopen follows
        if not self._disconnected(ending):
            return False
        reason = f" ({ending})" if ending is not None else " (end of input)"
        self._event("disconnect", number, f"{self._label}: disconnected before frame {number}{reason}")
        return self._reopen_allowed()


class CameraSource(UrlSource):
    """A V4L2 camera (``/dev/video<N>``): any end of its input is a disconnect (a camera has no end)."""

    kind = "camera"
    expected = "a camera device"

    def _av_open(self) -> av.container.InputContainer:
        return av.open(self.spec, mode="r", format="v4l2", timeout=(self.timeout, self.timeout))

    def _disconnected(self, ending: BaseException | None) -> bool:
        return True


class StdinContainerSource(_ContainerSource):
    """A streamable container on standard input (mpegts, matroska, nut, ...), never reopened: its end is the end,
    a read error ends the pass with a SourceError."""

    kind = "stdin-container"

    def _open(self) -> None:
        self._reader = _TimedReader(self._stdin_stream(), self.timeout)
        super()._open()

    def _av_open(self) -> av.container.InputContainer:
        assert self._reader is not None
        return av.open(self._reader, mode="r")

    def _goes_on(self, ending: BaseException | None, number: int) -> bool:
        if isinstance(ending, _Stalled):
            return self._stall(number)  # standard input is never reopened: raises
        if ending is not None:
            raise self._error(
                f"Expected a readable container on {self._label} but reading failed before frame {number}: {ending}"
            ) from self._cause(ending)
        return False


#: The class of each ``kind``.
SOURCE_CLASSES: dict[str, type[LiveSource]] = {
    cls.kind: cls for cls in (FileSource, FolderSource, CameraSource, UrlSource, StdinRawSource, StdinContainerSource)
}
#: The ``kind`` of every source.
SOURCE_KINDS = tuple(SOURCE_CLASSES)


def _classify(spec: str, raw: bool) -> tuple[type[LiveSource], str]:
    """The class and the name of a SOURCE string (``raw``: standard input holds raw frames)."""
    if spec == "-":
        return (StdinRawSource if raw else StdinContainerSource), "stdin"
    match = _URL_PATTERN.match(spec)
    if match is not None:
        if match.group(1).lower() not in URL_SCHEMES:
            raise SourceError(
                f"Expected SOURCE to be {SOURCE_HELP} but {mask_url(spec)!r} has the unsupported scheme "
                f"'{match.group(1)}://'",
                spec,
            )
        return UrlSource, _url_name(spec)
    if CAMERA_PATTERN.match(spec):
        if not os.path.exists(spec):
            raise SourceError(f"Expected a camera device at {spec} but it does not exist (no such device)")
        return CameraSource, Path(spec).name
    path = Path(spec)
    if path.is_dir():
        return FolderSource, path.name
    if path.is_file():
        return FileSource, path.name
    raise SourceError(
        f"Expected SOURCE to be {SOURCE_HELP} but {spec!r} is none of these (no such file or folder)", spec
    )


def _checked_raw_size(raw_size: tuple[int, int], spec: str, cls: type[LiveSource]) -> tuple[int, int]:
    if not issubclass(cls, StdinRawSource):
        raise ValueError(f"Expected raw_size only with SOURCE '-' (standard input) but SOURCE is {mask_url(spec)!r}")
    integers = len(raw_size) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in raw_size)
    if not integers or min(raw_size) < 1:
        raise ValueError(f"Expected raw_size to be (width, height) in positive pixels but got {raw_size!r}")
    return (int(raw_size[0]), int(raw_size[1]))


def _checked_options(
    fps: float | None,
    frame_rate: float | None,
    timeout: float,
    reconnect: int,
    on_bad_frame: str,
    max_frames: int | None,
    duration: float | None,
) -> SourceOptions:
    """The options of :func:`open_source`, checked (raises ValueError; see there); raw_size is set later."""
    if fps is not None:
        fps = check_fps(fps)
    rate = check_fps(frame_rate) if frame_rate is not None else (fps if fps is not None else DEFAULT_FRAME_RATE)
    timeout = _check_positive("timeout", timeout)
    if duration is not None and not (isinstance(duration, (int, float)) and duration >= 0 and math.isfinite(duration)):
        raise ValueError(f"Expected a duration of zero or more seconds but got {duration!r}")
    if not isinstance(reconnect, int) or reconnect < 0:
        raise ValueError(f"Expected reconnect to be a count of 0 or more attempts but got {reconnect!r}")
    if max_frames is not None and (not isinstance(max_frames, int) or max_frames < 1):
        raise ValueError(f"Expected max_frames to be a count of 1 or more frames but got {max_frames!r}")
    if on_bad_frame not in BAD_FRAME_POLICIES:
        raise ValueError(f"Expected on_bad_frame to be one of {BAD_FRAME_POLICIES} but got {on_bad_frame!r}")
    return SourceOptions(
        fps=fps,
        frame_rate=rate,
        timeout=timeout,
        reconnect=reconnect,
        on_bad_frame=on_bad_frame,
        max_frames=max_frames,
        duration=float(duration) if duration is not None else None,
    )


def open_source(
    spec: str | os.PathLike[str],
    fps: float | None = DEFAULT_FPS,
    raw_size: tuple[int, int] | None = None,
    frame_rate: float | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    reconnect: int = 0,
    on_bad_frame: str = "skip",
    max_frames: int | None = None,
    duration: float | None = None,
    on_event: Callable[[SourceEvent], None] | None = None,
    stdin: BinaryIO | None = None,
) -> LiveSource:
    """Check and open any SOURCE (see the module docstring for the kinds and rules) as a :class:`LiveSource`.

    Args:
        spec: a video file, an image folder, ``/dev/video<N>``, a network URL, or ``-`` for standard input.
        fps: sampling rate (frames per second): keep the first frame of each ``1 / fps`` seconds; None keeps every
            frame.
        raw_size: ``(width, height)`` in pixels of raw rgb24 frames on standard input (``-`` only).
        frame_rate: frames per second of a folder's images and raw frames (timestamps ``i / frame_rate``); default
            ``fps``, or 25 when ``fps`` is None.
        timeout: seconds without data before a live source (camera, URL, standard input) is stalled; also the
            limit of opening a camera or URL.
        reconnect: how many times a URL or camera is reopened after stalls and disconnects, over the whole pass.
        on_bad_frame: ``"skip"`` (report an event and go on) or ``"error"`` (raise :class:`SourceError`).
        max_frames: stop after this many kept frames.
        duration: stop at the first frame whose timestamp (seconds from the first frame) exceeds this.
        on_event: called with every :class:`SourceEvent` as it happens.
        stdin: the binary stream ``-`` reads (default ``sys.stdin.buffer``); never closed here.

    Returns:
        The opened :class:`LiveSource` of the SOURCE's kind (iterate it once; close it, or use it as a context
        manager).

    Raises:
        SourceError: SOURCE is none of the kinds, a file is not a readable video, a folder holds no images, a camera
            device is missing, a URL's protocol is not compiled into PyAV's FFmpeg, a connection fails or times out,
            or an input holds no video stream. Its message never holds a URL's password or token.
        ValueError: an argument is out of range (``fps``, ``frame_rate``, ``timeout`` or ``duration`` not positive,
            ``reconnect`` negative, ``max_frames`` below 1, an unknown ``on_bad_frame``, a ``raw_size`` that is not
            two positive integers or is given for another SOURCE than ``-``).
    """
    text = os.fspath(spec)
    options = _checked_options(fps, frame_rate, timeout, reconnect, on_bad_frame, max_frames, duration)
    cls, name = _classify(text, raw_size is not None)
    if raw_size is not None:
        options = dataclasses.replace(options, raw_size=_checked_raw_size(raw_size, text, cls))
    source = cls(text, name, options, on_event, stdin)
    source._open()
    return source


__all__ = [
    "BAD_FRAME_POLICIES",
    "DEFAULT_FRAME_RATE",
    "DEFAULT_TIMEOUT",
    "EVENT_KINDS",
    "SOURCE_CLASSES",
    "SOURCE_KINDS",
    "URL_SCHEMES",
    "CameraSource",
    "FileSource",
    "FolderSource",
    "LiveSource",
    "SourceError",
    "SourceEvent",
    "SourceOptions",
    "StdinContainerSource",
    "StdinRawSource",
    "UrlSource",
    "open_source",
]
