"""Helpers of the live source tests: small containers written by plain PyAV into bytes, a pipe fed by a thread, and
an HTTP server that streams bytes, stalls or disconnects on cue.

The server listens on 127.0.0.1 only and its threads end at :meth:`StreamServer.stop` (or after ``lifetime_s``
seconds), so nothing leaves the machine and nothing outlives a test for long.
"""

from __future__ import annotations

import http.server
import io
import os
import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np

#: Size of the generated frames (width, height).
SIZE = (64, 48)
#: Frame rate of the generated streams (frames per second).
RATE = 10


def grey(count: int, size: Sequence[int] = SIZE, step: int = 10, first: int = 0) -> list[np.ndarray]:
    """``count`` RGB frames ``uint8 [H, W, 3]`` whose grey level is ``first + step * i``, with a white square that
    moves right (so neighbouring frames differ in more than their level)."""
    width, height = size
    frames = []
    for i in range(count):
        pixels = np.full((height, width, 3), first + step * i, dtype=np.uint8)
        x = (4 * i) % max(1, width - 8)
        pixels[4:12, x : x + 8] = 255
        frames.append(pixels)
    return frames


def encode(
    frames: Sequence[np.ndarray],
    container_format: str = "mpegts",
    codec: str = "mpeg4",
    rate: int = RATE,
    garbage_packet: int | None = None,
) -> bytes:
    """The frames encoded by plain PyAV into an in-memory container (independent of the code under test).

    Args:
        frames: RGB frames, all of one even size.
        container_format: an FFmpeg muxer that writes a stream without seeking (mpegts, nut, matroska, ...).
        codec: the encoder (mpeg4 writes one packet per frame, no B-frames, no delay).
        rate: frames per second.
        garbage_packet: 0-based index of a packet whose payload is replaced by random bytes of the same length
            (its timestamps kept), a packet the decoder rejects.
    """
    height, width = frames[0].shape[:2]
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=container_format) as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        packets: list[av.Packet] = []
        for pixels in frames:
            packets += stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24"))
        packets += stream.encode(None)
        for i, packet in enumerate(packets):
            if i == garbage_packet:
                noise = np.random.default_rng(1).integers(0, 256, packet.size, dtype=np.uint8).tobytes()
                bad = av.Packet(noise)
                bad.pts, bad.dts, bad.time_base, bad.stream = packet.pts, packet.dts, packet.time_base, stream
                packet = bad
            container.mux(packet)
    return buffer.getvalue()


def decode_bytes(data: bytes) -> list[np.ndarray]:
    """Every frame of an in-memory container decoded by plain PyAV, as RGB arrays."""
    with av.open(io.BytesIO(data)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


class PipeFeeder:
    """An OS pipe whose write end a thread fills with ``chunks`` (optionally pausing before some), then closes.

    ``reader`` is the read end as a binary file object (what a process sees as ``sys.stdin.buffer``). A write into
    a read end closed early ends the thread quietly.
    """

    def __init__(self, chunks: Sequence[bytes], hold_open: threading.Event | None = None) -> None:
        read_fd, self._write_fd = os.pipe()
        self.reader = os.fdopen(read_fd, "rb")
        self._chunks = list(chunks)
        self._hold_open = hold_open
        self._thread = threading.Thread(target=self._feed, daemon=True)
        self._thread.start()

    def _feed(self) -> None:
        try:
            with os.fdopen(self._write_fd, "wb") as writer:
                for chunk in self._chunks:
                    writer.write(chunk)
                    writer.flush()
                if self._hold_open is not None:  # keep the pipe open and silent: a stalled producer
                    self._hold_open.wait(30.0)
        except (BrokenPipeError, OSError):
            pass

    def close(self) -> None:
        if self._hold_open is not None:
            self._hold_open.set()
        self._thread.join(5.0)
        self.reader.close()


@dataclass
class Reply:
    """What :class:`StreamServer` does with one request.

    Attributes:
        data: the body bytes it sends.
        then: ``"close"`` (close the connection after the bytes) or ``"stall"`` (hold it open, silent).
        content_length: the ``Content-Length`` header it announces (None: no header).
        status: the HTTP status code (404: the stream is gone).
    """

    data: bytes
    then: str = "close"
    content_length: int | None = None
    status: int = 200


class StreamServer:
    """An HTTP server on a free 127.0.0.1 port; request ``i`` gets ``replies[min(i, len(replies) - 1)]``.

    Attributes:
        url: the address of ``/<name>``.
        requests: how many requests came so far.
    """

    def __init__(self, replies: Sequence[Reply], name: str = "live.ts", lifetime_s: float = 30.0) -> None:
        self.replies = list(replies)
        self.requests = 0
        self.stopped = threading.Event()
        self._lifetime_s = lifetime_s
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 (name set by http.server)
                reply = server.replies[min(server.requests, len(server.replies) - 1)]
                server.requests += 1
                self.send_response(reply.status)
                self.send_header("Content-Type", "video/mp2t")
                if reply.content_length is not None:
                    self.send_header("Content-Length", str(reply.content_length))
                self.send_header("Connection", "close")
                self.end_headers()
                try:
                    self.wfile.write(reply.data)
                    self.wfile.flush()
                    if reply.then == "stall":
                        server.stopped.wait(server._lifetime_s)
                except OSError:  # the client went away
                    pass
                self.close_connection = True

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (base class signature)
                pass

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/{name}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.stopped.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5.0)

    def __enter__(self) -> StreamServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def refused_url() -> str:
    """An http URL on 127.0.0.1 whose port nothing listens on (connections are refused at once)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/live.ts"


def resolution_change_stream(before: int = 4, after: int = 4) -> bytes:
    """An mpegts H.264 stream whose pictures change size after ``before`` frames: ``before`` frames of 64x48 (grey
    levels 0, 10, ...), then ``after`` frames of 80x48 (grey levels 100, 110, ...), timestamps ``i / RATE``."""
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mpegts") as container:
        stream = container.add_stream("libx264", rate=RATE)
        stream.width, stream.height, stream.pix_fmt = SIZE[0], SIZE[1], "yuv420p"
        for pixels in grey(before):
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
        wide = av.CodecContext.create("libx264", "w")
        wide.width, wide.height, wide.pix_fmt = 80, SIZE[1], "yuv420p"
        wide.time_base, wide.framerate = Fraction(1, RATE), RATE
        packets: list[av.Packet] = []
        for i, pixels in enumerate(grey(after, size=(80, SIZE[1]), first=100)):
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, RATE)
            packets += wide.encode(frame)
        packets += wide.encode(None)
        for packet in packets:  # the second encoder's packets continue the same stream
            packet.pts += before
            packet.dts += before
            packet.time_base, packet.stream = Fraction(1, RATE), stream
            container.mux(packet)
    return buffer.getvalue()
