"""Live frame sources of streaming inference (arn_lightning.video.live): every kind that can be made locally
(file, folder, raw and container standard input, HTTP), stalls, disconnects, reconnects, bad frames, limits."""

from __future__ import annotations

import io
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from arn_lightning.video.files import VideoError, open_frames
from arn_lightning.video.live import LiveSource, SourceError, SourceEvent, open_source
from infer_fixtures import moving_box_frames, write_video
from source_fixtures import (
    RATE,
    SIZE,
    PipeFeeder,
    Reply,
    StreamServer,
    decode_bytes,
    encode,
    grey,
    refused_url,
    resolution_change_stream,
)

COUNT = 20


def pixels(frame: object) -> np.ndarray:
    return np.asarray(frame.image)  # type: ignore[attr-defined]


def same_frames(ours: list, theirs: list) -> None:
    """Equal keys, numbers, indices, timestamps and pixels."""
    assert [f.key for f in ours] == [f.key for f in theirs]
    assert [f.source_index for f in ours] == [f.source_index for f in theirs]
    assert [f.index for f in ours] == [f.index for f in theirs]
    assert [f.timestamp for f in ours] == pytest.approx([f.timestamp for f in theirs], abs=1e-9)
    for a, b in zip(ours, theirs):
        assert np.array_equal(pixels(a), pixels(b))


@pytest.fixture(scope="module")
def stream_bytes() -> bytes:
    return encode(grey(COUNT))


@pytest.fixture(scope="module")
def reference(stream_bytes: bytes) -> list[np.ndarray]:
    return decode_bytes(stream_bytes)


# ----------------------------------------------------------------------------------------------------------------------
# file and folder: the frames of open_frames


def test_file_gives_the_frames_of_open_frames(tmp_path: Path) -> None:
    video = write_video(tmp_path / "clip.mp4", moving_box_frames(25), fps=10)
    with open_source(video, fps=4) as source:
        assert (source.kind, source.name, source.live) == ("file", "clip.mp4", False)
        frames = list(source)
    same_frames(frames, list(open_frames(video, fps=4)))
    assert [f.source_index for f in frames] == [1, 4, 6, 9, 11, 14, 16, 19, 21, 24]
    every = list(open_source(video, fps=None))
    same_frames(every, list(open_frames(video, fps=100)))
    assert len(every) == 25 and every[-1].key == "clip.mp4/000025.png"


def test_folder_gives_the_frames_of_open_frames(tmp_path: Path) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    for number, array in zip((3, 7, 12), grey(3)):
        Image.fromarray(array).save(folder / f"{number:06d}.png")
    source = open_source(folder, fps=2)
    assert (source.kind, source.name, source.live) == ("folder", "frames", False)
    frames = list(source)
    same_frames(frames, list(open_frames(folder, fps=2)))
    assert [f.key for f in frames] == ["frames/000003.png", "frames/000007.png", "frames/000012.png"]
    assert [f.timestamp for f in frames] == [0.0, 0.5, 1.0]
    # a faster image rate than the sampling keeps the first image of each 1 / fps slot
    sampled = list(open_source(folder, fps=1, frame_rate=2))
    assert [f.source_index for f in sampled] == [3, 12] and [f.index for f in sampled] == [0, 1]


def test_folder_unreadable_image_is_skipped_or_refused(tmp_path: Path) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    for number, array in enumerate(grey(4), start=1):
        Image.fromarray(array).save(folder / f"{number:06d}.png")
    (folder / "000003.png").write_bytes(b"not a png at all")
    events: list[SourceEvent] = []
    source = open_source(folder, fps=None, on_event=events.append)
    frames = list(source)
    assert [f.source_index for f in frames] == [1, 2, 4]
    assert [f.index for f in frames] == [0, 1, 2]
    assert np.array_equal(pixels(frames[2]), grey(4)[3])
    assert [(e.kind, e.frame_number) for e in events] == [("bad_frame", 3)]
    assert "000003.png" in events[0].message and "frame 3" in events[0].message
    assert source.events == events and source.frames_read == 4
    with pytest.raises(SourceError, match=r"frame 3 .*000003\.png"):
        list(open_source(folder, fps=None, on_bad_frame="error"))


def test_folder_of_mixed_sizes_reports_each_change(tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    sizes = [(64, 48), (64, 48), (32, 24), (64, 48)]
    for number, size in enumerate(sizes, start=1):
        Image.new("RGB", size, (number, 0, 0)).save(folder / f"{number}.png")
    events: list[SourceEvent] = []
    frames = list(open_source(folder, fps=None, on_event=events.append))
    assert [f.image.size for f in frames] == sizes
    assert [(e.kind, e.frame_number) for e in events] == [("resolution_change", 3), ("resolution_change", 4)]
    assert "64x48 to 32x24" in events[0].message and "32x24 to 64x48" in events[1].message


def test_corrupted_video_file_is_skipped_or_refused(tmp_path: Path, stream_bytes: bytes, reference: list) -> None:
    data = bytearray(stream_bytes)
    middle = len(data) // 2
    data[middle : middle + 600] = bytes(600)
    video = tmp_path / "damaged.ts"
    video.write_bytes(bytes(data))
    events: list[SourceEvent] = []
    source = open_source(video, fps=None, on_event=events.append)
    frames = list(source)
    bad = [e for e in events if e.kind == "bad_frame"]
    assert len(bad) >= 1 and all("damaged.ts" in e.message for e in bad)
    first_bad = bad[0].frame_number
    assert first_bad is not None and 1 < first_bad < COUNT
    # numbers stay contiguous (a skipped packet takes none), the stream goes on after the damage
    assert [f.source_index for f in frames] == list(range(1, len(frames) + 1))
    assert first_bad <= len(frames) < COUNT
    assert source.frames_read == len(frames) + len(bad)
    for frame in frames[: first_bad - 1]:  # before the damage: the clean pixels
        assert np.array_equal(pixels(frame), reference[frame.source_index - 1])
    with pytest.raises(SourceError, match=rf"frame {first_bad} from .*damaged\.ts"):
        list(open_source(video, fps=None, on_bad_frame="error"))


# ----------------------------------------------------------------------------------------------------------------------
# standard input


def raw_bytes(frames: list[np.ndarray]) -> bytes:
    return b"".join(frame.tobytes() for frame in frames)


def test_raw_frames_from_an_os_pipe() -> None:
    frames_in = grey(6)
    data = raw_bytes(frames_in)
    feeder = PipeFeeder([data[i : i + 5000] for i in range(0, len(data), 5000)])  # chunks cut across frames
    try:
        source = open_source("-", fps=None, raw_size=SIZE, frame_rate=RATE, stdin=feeder.reader)
        assert (source.kind, source.name, source.live) == ("stdin-raw", "stdin", True)
        frames = list(source)
    finally:
        feeder.close()
    assert [f.key for f in frames] == [f"stdin/{n:06d}.png" for n in range(1, 7)]
    assert [f.timestamp for f in frames] == pytest.approx([i / RATE for i in range(6)])
    assert all(np.array_equal(pixels(a), b) for a, b in zip(frames, frames_in))
    assert source.frames_read == 6 and source.events == []


def test_raw_frames_from_a_subprocess_are_sampled() -> None:
    width, height = SIZE
    code = (
        "import sys\n"
        f"for i in range(10): sys.stdout.buffer.write(bytes([i * 20]) * {width * height * 3})\n"
        "sys.stdout.buffer.flush()\n"
    )
    with subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE) as process:
        assert process.stdout is not None
        frames = list(open_source("-", fps=2, raw_size=SIZE, frame_rate=5, stdin=process.stdout))
    # 5 frames per second sampled at 2: the first frame of each 0.5 s slot (times 0, 0.2, 0.4, 0.6, ...)
    assert [f.source_index for f in frames] == [1, 4, 6, 9]
    assert [int(pixels(f)[0, 0, 0]) for f in frames] == [0, 60, 100, 160]
    assert all(f.image.size == SIZE for f in frames)


def test_truncated_raw_frame_is_a_bad_frame() -> None:
    frames_in = grey(3)
    frame_bytes = SIZE[0] * SIZE[1] * 3
    data = raw_bytes(frames_in)[: 2 * frame_bytes + 1000]
    events: list[SourceEvent] = []
    source = open_source("-", fps=None, raw_size=SIZE, stdin=io.BytesIO(data), on_event=events.append)
    frames = list(source)
    assert [f.source_index for f in frames] == [1, 2]
    assert [(e.kind, e.frame_number) for e in events] == [("bad_frame", 3)]
    assert f"frame 3 has 1000 of {frame_bytes} bytes" in events[0].message
    assert source.frames_read == 3
    with pytest.raises(SourceError, match=f"frame 3 has 1000 of {frame_bytes} bytes"):
        list(open_source("-", fps=None, raw_size=SIZE, stdin=io.BytesIO(data), on_bad_frame="error"))


def test_silent_standard_input_stalls() -> None:
    hold = threading.Event()
    feeder = PipeFeeder([raw_bytes(grey(2))], hold_open=hold)
    events: list[SourceEvent] = []
    frames = []
    start = time.monotonic()
    try:
        source = open_source("-", fps=None, raw_size=SIZE, timeout=0.5, stdin=feeder.reader, on_event=events.append)
        with pytest.raises(SourceError, match="standard input .* 0.5 s .*frame 3"):
            for frame in source:
                frames.append(frame)
    finally:
        feeder.close()
    assert time.monotonic() - start < 4.0
    assert [f.source_index for f in frames] == [1, 2]
    assert [(e.kind, e.frame_number) for e in events] == [("stall", 3)]


def test_container_on_standard_input(stream_bytes: bytes, reference: list) -> None:
    feeder = PipeFeeder([stream_bytes[i : i + 4096] for i in range(0, len(stream_bytes), 4096)])
    try:
        source = open_source("-", fps=None, stdin=feeder.reader)
        assert (source.kind, source.name) == ("stdin-container", "stdin")
        frames = list(source)
    finally:
        feeder.close()
    assert [f.key for f in frames] == [f"stdin/{n:06d}.png" for n in range(1, COUNT + 1)]
    assert [f.timestamp for f in frames] == pytest.approx([i / RATE for i in range(COUNT)])
    assert all(np.array_equal(pixels(a), b) for a, b in zip(frames, reference))


def test_packet_the_decoder_rejects_is_skipped_or_refused() -> None:
    data = encode(grey(10), container_format="nut", garbage_packet=5)
    events: list[SourceEvent] = []
    source = open_source("-", fps=None, stdin=io.BytesIO(data), on_event=events.append)
    frames = list(source)
    assert [(e.kind, e.frame_number) for e in events] == [("bad_frame", 6)]
    assert "decoder rejected" in events[0].message and "standard input" in events[0].message
    assert [f.source_index for f in frames] == list(range(1, 10))  # 9 decodable frames, numbered on
    assert source.frames_read == 10
    clean = grey(10)
    assert abs(int(pixels(frames[6])[30, 40, 0]) - int(clean[7][30, 40, 0])) <= 3  # the stream went on
    with pytest.raises(SourceError, match="frame 6 from standard input"):
        list(open_source("-", fps=None, stdin=io.BytesIO(data), on_bad_frame="error"))


def test_resolution_change_in_a_stream() -> None:
    events: list[SourceEvent] = []
    frames = list(open_source("-", fps=None, stdin=io.BytesIO(resolution_change_stream()), on_event=events.append))
    assert [f.image.size for f in frames] == [SIZE] * 4 + [(80, SIZE[1])] * 4
    assert [f.source_index for f in frames] == list(range(1, 9))
    assert [(e.kind, e.frame_number) for e in events] == [("resolution_change", 5)]
    assert "64x48 to 80x48" in events[0].message
    assert [f.timestamp for f in frames] == pytest.approx([i / RATE for i in range(8)])


# ----------------------------------------------------------------------------------------------------------------------
# network


def test_http_stream(stream_bytes: bytes, reference: list) -> None:
    with StreamServer([Reply(stream_bytes, content_length=len(stream_bytes))], name="cam%201.ts") as server:
        source = open_source(server.url, fps=None)
        assert (source.kind, source.name, source.live) == ("url", "cam 1.ts", True)
        frames = list(source)
    assert [f.key for f in frames] == [f"cam 1.ts/{n:06d}.png" for n in range(1, COUNT + 1)]
    assert [f.timestamp for f in frames] == pytest.approx([i / RATE for i in range(COUNT)])
    assert all(np.array_equal(pixels(a), b) for a, b in zip(frames, reference))
    assert source.events == [] and server.requests == 1


def test_http_stall_ends_with_an_error(stream_bytes: bytes) -> None:
    with StreamServer([Reply(stream_bytes[:6000], "stall", len(stream_bytes))]) as server:
        events: list[SourceEvent] = []
        frames = []
        start = time.monotonic()
        source = open_source(server.url, fps=None, timeout=0.5, on_event=events.append)
        with pytest.raises(SourceError, match=r"127\.0\.0\.1.* 0\.5 s .*frame \d+"):
            for frame in source:
                frames.append(frame)
        assert time.monotonic() - start < 4.0
    assert len(frames) >= 3 and [f.source_index for f in frames] == list(range(1, len(frames) + 1))
    assert [(e.kind, e.frame_number) for e in events] == [("stall", len(frames) + 1)]
    assert server.url in events[0].message


def test_http_stall_then_reconnect(stream_bytes: bytes) -> None:
    replies = [Reply(stream_bytes[:6000], "stall", len(stream_bytes)), Reply(stream_bytes, content_length=None)]
    with StreamServer(replies) as server:
        events: list[SourceEvent] = []
        frames = list(open_source(server.url, fps=None, timeout=0.5, reconnect=1, on_event=events.append))
        assert server.requests == 2
    kinds = [e.kind for e in events]
    assert kinds == ["stall", "reconnect", "disconnect"]  # the second reply has no length: its end is a disconnect
    first = events[0].frame_number
    assert first is not None and events[1].frame_number == first
    assert len(frames) == first - 1 + COUNT
    assert [f.source_index for f in frames] == list(range(1, len(frames) + 1))
    times = [f.timestamp for f in frames]
    assert all(b > a for a, b in zip(times, times[1:]))


def test_http_disconnect_keeps_the_frames_and_ends(stream_bytes: bytes, reference: list) -> None:
    with StreamServer([Reply(stream_bytes[:6000], "close", len(stream_bytes))]) as server:
        events: list[SourceEvent] = []
        frames = list(open_source(server.url, fps=None, on_event=events.append))
    assert [e.kind for e in events] == ["disconnect"]
    assert events[0].frame_number == len(frames) + 1 and len(frames) >= 3
    assert "disconnected before frame" in events[0].message
    assert all(np.array_equal(pixels(a), b) for a, b in zip(frames, reference))


def test_http_disconnect_reconnects_and_numbers_go_on(stream_bytes: bytes, reference: list) -> None:
    cut = Reply(stream_bytes[:6000], "close", len(stream_bytes))
    replies = [cut, Reply(stream_bytes, content_length=len(stream_bytes))]
    with StreamServer(replies) as server:
        events: list[SourceEvent] = []
        frames = list(open_source(server.url, fps=None, reconnect=1, on_event=events.append))
        assert server.requests == 2
    before = events[0].frame_number
    assert before is not None
    assert [(e.kind, e.frame_number) for e in events] == [("disconnect", before), ("reconnect", before)]
    assert "attempt 1 of 1" in events[1].message
    assert [f.source_index for f in frames] == list(range(1, before + COUNT))
    times = [f.timestamp for f in frames]
    assert all(b > a for a, b in zip(times, times[1:]))
    assert times[before - 1] == pytest.approx(times[before - 2] + 1 / RATE)  # time goes on one period later
    assert np.array_equal(pixels(frames[before - 1]), reference[0])  # the reopened stream starts over


def test_reconnect_attempts_run_out() -> None:
    data = encode(grey(COUNT))
    with StreamServer([Reply(data[:6000], "close", len(data))]) as server:
        events: list[SourceEvent] = []
        frames = list(open_source(server.url, fps=None, reconnect=2, on_event=events.append))
        assert server.requests == 3
    assert [e.kind for e in events] == ["disconnect", "reconnect", "disconnect", "reconnect", "disconnect"]
    per_connection = events[0].frame_number - 1  # type: ignore[operator]
    assert len(frames) == 3 * per_connection
    assert [f.source_index for f in frames] == list(range(1, len(frames) + 1))


def test_failed_reopen_ends_with_an_error(stream_bytes: bytes) -> None:
    cut = Reply(stream_bytes[:6000], "close", len(stream_bytes))
    with StreamServer([cut, Reply(b"gone", content_length=4, status=404)]) as server:
        events: list[SourceEvent] = []
        frames = []
        source = open_source(server.url, fps=None, reconnect=1, on_event=events.append)
        with pytest.raises(SourceError, match=r"reopen .*live\.ts before frame \d+ but 1 attempt\(s\) failed.*404"):
            for frame in source:
                frames.append(frame)
        assert server.requests == 2
    assert [e.kind for e in events] == ["disconnect", "reconnect"]
    assert len(frames) == events[0].frame_number - 1  # type: ignore[operator]


def test_refused_connection_fails_fast() -> None:
    url = refused_url()
    start = time.monotonic()
    with pytest.raises(SourceError, match=f"{url}.*refused"):
        open_source(url, timeout=2.0)
    assert time.monotonic() - start < 2.5


def test_silent_server_times_out_at_open(silent: object) -> None:
    url = f"{silent.url}/live.ts"  # type: ignore[attr-defined]
    start = time.monotonic()
    with pytest.raises(SourceError, match=rf"{url} to answer within 0\.5 s"):
        open_source(url, timeout=0.5)
    assert time.monotonic() - start < 2.5


def test_max_frames_stops_a_live_source_without_waiting(stream_bytes: bytes) -> None:
    with StreamServer([Reply(stream_bytes, "stall")]) as server:  # all data, then an open, silent connection
        start = time.monotonic()
        source = open_source(server.url, fps=None, timeout=5.0, max_frames=3)
        frames = list(source)
        assert time.monotonic() - start < 2.0
    assert [f.source_index for f in frames] == [1, 2, 3]
    assert source.closed and source.events == []


def test_duration_stops_a_live_source(stream_bytes: bytes) -> None:
    with StreamServer([Reply(stream_bytes, "stall")]) as server:
        start = time.monotonic()
        frames = list(open_source(server.url, fps=None, timeout=5.0, duration=0.45))
        assert time.monotonic() - start < 2.0
    assert [f.timestamp for f in frames] == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])


# ----------------------------------------------------------------------------------------------------------------------
# what SOURCE cannot be


@pytest.mark.skipif(Path("/dev/video9").exists(), reason="this machine has a /dev/video9")
def test_missing_camera_is_named() -> None:
    with pytest.raises(SourceError, match="/dev/video9"):
        open_source("/dev/video9")


def test_unknown_sources_say_what_source_may_be(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"no_such\.mp4.*none of these") as error:
        open_source(tmp_path / "no_such.mp4")
    for expected in ("video file", "folder of images", "/dev/video<N>", "rtsp://", "srt://", "'-'"):
        assert expected in str(error.value)
    assert isinstance(error.value, VideoError)
    with pytest.raises(SourceError, match="unsupported scheme 'ftp://'"):
        open_source("ftp://example.invalid/clip.mp4")
    with pytest.raises(SourceError, match=r"srt://127\.0\.0\.1"):  # not compiled into PyAV's FFmpeg here
        open_source("srt://127.0.0.1:9", timeout=1.0)
    with pytest.raises(SourceError, match="user:\\*\\*\\*@"):  # a password is never printed
        open_source("ftp://user:secret@example.invalid/x")


def test_arguments_are_checked(tmp_path: Path) -> None:
    folder = tmp_path / "f"
    folder.mkdir()
    Image.new("RGB", SIZE).save(folder / "1.png")
    for kwargs, message in (
        ({"fps": 0}, "positive frame rate"),
        ({"timeout": -1}, "timeout"),
        ({"reconnect": -1}, "reconnect"),
        ({"max_frames": 0}, "max_frames"),
        ({"on_bad_frame": "ignore"}, "on_bad_frame"),
        ({"raw_size": (64, 48)}, "raw_size only with SOURCE '-'"),
        ({"duration": -1.0}, "duration"),
    ):
        with pytest.raises(ValueError, match=message):
            open_source(folder, **kwargs)
    with pytest.raises(ValueError, match="raw_size"):
        open_source("-", raw_size=(0, 48), stdin=io.BytesIO())


def test_one_pass_and_idempotent_close(tmp_path: Path) -> None:
    folder = tmp_path / "f"
    folder.mkdir()
    for i in range(3):
        Image.new("RGB", SIZE).save(folder / f"{i}.png")
    with open_source(folder, fps=None) as source:
        assert isinstance(source, LiveSource)
        iterator = iter(source)
        assert next(iterator).key == "f/0.png"
        with pytest.raises(RuntimeError, match="read once"):
            iter(source)
    assert source.closed
    source.close()
    assert list(iterator) == []
    with pytest.raises(SourceError, match="none"):
        list(open_source("-", fps=None, raw_size=SIZE, stdin=io.BytesIO(b"")))
