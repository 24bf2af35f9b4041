"""``arn-lightning infer --stream`` as a user runs it: every source kind that can be made here, lines written and
flushed as frames are computed, Ctrl-C, stalls, bad frames, the live output folder and argument checks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from arn_lightning.commands import infer
from arn_lightning.inference.api import load_model
from arn_lightning.inference.streaming import StreamingPredictor
from arn_lightning.video.files import open_frames
from infer_fixtures import InferAssets
from source_fixtures import Reply, StreamServer, encode, grey, refused_url

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

SRC = Path(__file__).resolve().parents[1] / "src"
#: Raw frame size of the standard-input tests (width, height).
RAW = (64, 48)


def lines_of(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def expected_lines(assets: InferAssets, frames: list) -> list[dict]:
    """What the stream must print: StreamingPredictor's graphs of the same frames, as JSON."""
    streaming = StreamingPredictor(load_model(assets.checkpoint))
    return [json.loads(json.dumps(streaming.push(frame).to_json())) for frame in frames]


def assert_same_lines(got: list[dict], want: list[dict]) -> None:
    assert len(got) == len(want) > 0
    for a, b in zip(got, want, strict=True):
        assert (a["frame"], a["frame_index"], a["timestamp"]) == (b["frame"], b["frame_index"], b["timestamp"])
        assert [t[:3] for t in a["triplets"]] == [t[:3] for t in b["triplets"]]
        assert np.allclose(np.array(a["boxes"]), np.array(b["boxes"]), atol=1e-3)


def spawn(assets: InferAssets, *args: str, **popen) -> subprocess.Popen:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")])),
        "OMP_NUM_THREADS": "1",
    }
    command = [sys.executable, "-m", "arn_lightning", "infer", "--stream", "--checkpoint", str(assets.checkpoint)]
    return subprocess.Popen(
        [*command, "--quiet", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen
    )


def wait_for_lines(path: Path, count: int, process: subprocess.Popen, limit_s: float = 60.0) -> list[str]:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        lines = path.read_text().splitlines() if path.exists() else []
        if len(lines) >= count:
            return lines
        assert process.poll() is None, process.stderr.read().decode()
        time.sleep(0.05)
    raise AssertionError(f"{path} did not reach {count} lines in {limit_s} s")


# ----------------------------------------------------------------------------------------------- in the process
def test_a_video_file_streams_its_lines_to_standard_output(assets: InferAssets, capsys) -> None:
    code = infer.main(["--stream", "--checkpoint", str(assets.checkpoint), "--input", str(assets.video), "--quiet"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    frames = list(open_frames(assets.video, fps=2.0))
    assert_same_lines(lines_of(captured.out), expected_lines(assets, frames))
    assert f"{len(frames)} frames -> standard output" in captured.err


def test_a_folder_streams_into_a_live_output_folder(assets: InferAssets, tmp_path: Path, capsys) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, pixels in enumerate(grey(5, size=(80, 60))):
        Image.fromarray(pixels).save(folder / f"{i + 1:06d}.png")
    out = tmp_path / "out"
    args = ["--stream", "--checkpoint", str(assets.checkpoint), "--input", str(folder), "--out", str(out)]
    code = infer.main([*args, "--quiet", "--save-frames", "--timeline-every", "2"])
    assert code == 0, capsys.readouterr().err
    assert capsys.readouterr().out == ""  # the lines went to the folder
    written = lines_of((out / "scene_graphs.jsonl").read_text())
    assert_same_lines(written, expected_lines(assets, list(open_frames(folder, fps=2.0))))
    with av.open(str(out / "annotated.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) == 5
    assert (out / "timeline.png").stat().st_size > 0
    assert sorted(p.name for p in (out / "frames").iterdir()) == [f"{i:06d}.png" for i in range(1, 6)]
    assert (out / ".arn-lightning-output").is_file()


def test_an_http_stream_is_followed(assets: InferAssets, capsys) -> None:
    data = encode(grey(6))
    with StreamServer([Reply(data, content_length=len(data))], name="cam.ts") as server:
        code = infer.main(["--stream", "--checkpoint", str(assets.checkpoint), "--input", server.url, "--fps", "100"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    got = lines_of(captured.out)
    assert [line["frame"] for line in got] == [f"cam.ts/{i:06d}.png" for i in range(1, 7)]


def test_a_bad_frame_is_skipped_or_stops_the_stream(assets: InferAssets, tmp_path: Path, capsys) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, pixels in enumerate(grey(4)):
        Image.fromarray(pixels).save(folder / f"{i + 1:06d}.png")
    (folder / "000003.png").write_bytes(b"not a png")
    base = ["--stream", "--checkpoint", str(assets.checkpoint), "--input", str(folder), "--quiet"]
    assert infer.main(base) == 0
    captured = capsys.readouterr()
    assert [line["frame_index"] for line in lines_of(captured.out)] == [1, 2, 4]
    assert "bad_frame" in captured.err and "000003.png" in captured.err
    assert infer.main([*base, "--on-bad-frame", "error"]) == infer.EXIT_ERROR
    captured = capsys.readouterr()
    assert [line["frame_index"] for line in lines_of(captured.out)] == [1, 2]  # the lines before it are kept
    assert "000003.png" in captured.err


def test_an_existing_folder_is_refused_before_the_model_loads(assets: InferAssets, tmp_path: Path, capsys) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    args = ["--stream", "--checkpoint", str(tmp_path / "missing.ckpt"), "--input", str(assets.video)]
    assert infer.main([*args, "--out", str(mine), "--overwrite"]) == infer.EXIT_ERROR
    assert "holds other files" in capsys.readouterr().err
    assert (mine / "notes.txt").read_text() == "keep me"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--stream", "--causal"], "--stream is always causal"),
        (["--stream", "--batch-size", "2"], "one frame at a time"),
        (["--raw-size", "64x48"], "only with --stream"),
        (["--max-frames", "3"], "only with --stream"),
        (["--stream", "--raw-size", "64by48"], "WIDTHxHEIGHT"),
    ],
)
def test_meaningless_options_are_refused(assets: InferAssets, extra: list[str], message: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        infer.main(["--checkpoint", str(assets.checkpoint), "--input", str(assets.video), *extra])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("source", ["-", "http://127.0.0.1:9/live.ts", "/dev/video0"])
def test_live_sources_need_stream(assets: InferAssets, source: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        infer.main(["--checkpoint", str(assets.checkpoint), "--input", source])
    assert exit_info.value.code == 2
    assert "needs --stream" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------- secrets
SECRET = "PASSWORD"
TOKEN = "t0k3nVALUE"


def test_an_rtsp_password_never_reaches_standard_error(assets: InferAssets, capsys) -> None:
    port = refused_url().rsplit(":", 1)[1].split("/")[0]
    url = f"rtsp://admin:{SECRET}@127.0.0.1:{port}/live"
    code = infer.main(["--stream", "--checkpoint", str(assets.checkpoint), "--input", url, "--timeout", "2"])
    captured = capsys.readouterr()
    assert code == infer.EXIT_ERROR and captured.out == ""
    assert "rtsp://admin:***@127.0.0.1" in captured.err and SECRET not in captured.err
    with pytest.raises(SystemExit):  # without --stream: refused by the parser, URL masked
        infer.main(["--checkpoint", str(assets.checkpoint), "--input", url])
    refused = capsys.readouterr().err
    assert "admin:***@" in refused and SECRET not in refused


def test_a_disconnecting_url_keeps_its_secrets_out_of_lines_events_and_files(
    assets: InferAssets, tmp_path: Path, capsys
) -> None:
    data = encode(grey(20))
    cut = Reply(data[:6000], "close", len(data))
    with StreamServer([cut]) as server:  # a disconnect, no reconnect: the lines so far, exit 0
        url = server.url.replace("://", f"://admin:{SECRET}@") + f"?token={TOKEN}"
        code = infer.main(["--stream", "--checkpoint", str(assets.checkpoint), "--input", url, "--fps", "100"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert lines_of(captured.out) and "disconnect: " in captured.err and "token=***" in captured.err
    assert all(line["frame"].startswith("live.ts/") for line in lines_of(captured.out))
    out = tmp_path / "live"
    with StreamServer([cut, Reply(b"gone", content_length=4, status=404)]) as server:  # then a failed reopen
        url = server.url.replace("://", f"://admin:{SECRET}@") + f"?token={TOKEN}"
        args = ["--input", url, "--fps", "100", "--reconnect", "1", "--out", str(out)]  # with the progress line
        code = infer.main(["--stream", "--checkpoint", str(assets.checkpoint), *args])
    failed = capsys.readouterr()
    assert code == infer.EXIT_ERROR and "reconnect: " in failed.err and "404" in failed.err
    written = sorted(out.rglob("*"))
    assert (out / "scene_graphs.jsonl").read_text().strip()
    texts = [captured.out, captured.err, failed.out, failed.err, *(str(path) for path in written)]
    texts += [path.read_bytes().decode("latin-1") for path in written if path.is_file()]
    assert not [text for text in texts if SECRET in text or TOKEN in text]


# ----------------------------------------------------------------------------------------------- real processes
def test_raw_frames_on_standard_input_are_answered_one_by_one(assets: InferAssets) -> None:
    frames = grey(4, size=RAW)
    process = spawn(assets, "--input", "-", "--raw-size", "64x48", "--fps", "100", stdin=subprocess.PIPE)
    try:
        process.stdin.write(frames[0].tobytes())
        process.stdin.flush()
        first = json.loads(process.stdout.readline())  # answered while the input is still open
        assert first["frame"] == "stdin/000001.png"
        for pixels in frames[1:]:
            process.stdin.write(pixels.tobytes())
        process.stdin.close()
        rest = lines_of(process.stdout.read().decode())
        assert process.wait(60) == 0, process.stderr.read().decode()
    finally:
        process.kill()
    assert [line["frame"] for line in rest] == [f"stdin/{i:06d}.png" for i in range(2, 5)]


def test_a_container_on_standard_input(assets: InferAssets) -> None:
    data = encode(grey(5), container_format="mpegts")
    process = spawn(assets, "--input", "-", "--fps", "100", stdin=subprocess.PIPE)
    out, err = process.communicate(data, timeout=120)
    assert process.returncode == 0, err.decode()
    assert [line["frame_index"] for line in lines_of(out.decode())] == [1, 2, 3, 4, 5]


def test_ctrl_c_stops_cleanly_with_every_output_intact(assets: InferAssets, tmp_path: Path) -> None:
    out = tmp_path / "live"
    process = spawn(
        assets, "--input", "-", "--raw-size", "64x48", "--out", str(out), "--fps", "100", stdin=subprocess.PIPE
    )
    try:
        for pixels in grey(3, size=RAW):
            process.stdin.write(pixels.tobytes())
        process.stdin.flush()
        lines = wait_for_lines(out / "scene_graphs.jsonl", 3, process)  # written while the stream goes on
        assert (out / "annotated.mp4").exists()
        process.send_signal(signal.SIGINT)
        code = process.wait(60)
        err = process.stderr.read().decode()
    finally:
        process.kill()
    assert code == infer.EXIT_INTERRUPTED, err
    assert "stopped after 3 frames" in err
    assert [json.loads(line)["frame_index"] for line in lines] == [1, 2, 3]
    assert lines_of((out / "scene_graphs.jsonl").read_text()) == [json.loads(line) for line in lines]
    with av.open(str(out / "annotated.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) == 3
    assert (out / "timeline.png").stat().st_size > 0


def test_a_stalled_source_ends_with_a_message_and_keeps_its_lines(assets: InferAssets) -> None:
    process = spawn(
        assets, "--input", "-", "--raw-size", "64x48", "--timeout", "1", "--fps", "100", stdin=subprocess.PIPE
    )
    try:
        for pixels in grey(2, size=RAW):
            process.stdin.write(pixels.tobytes())
        process.stdin.flush()  # and then nothing, the pipe held open
        code = process.wait(60)
        out, err = process.stdout.read().decode(), process.stderr.read().decode()
    finally:
        process.kill()
    assert code == infer.EXIT_ERROR, err
    assert [line["frame_index"] for line in lines_of(out)] == [1, 2]
    assert "stall" in err and "3" in err


def test_a_process_reading_a_url_that_disconnects_prints_no_secret(assets: InferAssets) -> None:
    """The file descriptors themselves (FFmpeg's own log would write there, past Python's ``sys.stderr``)."""
    data = encode(grey(20))
    with StreamServer([Reply(data[:6000], "close", len(data)), Reply(b"gone", content_length=4, status=404)]) as server:
        url = server.url.replace("://", f"://admin:{SECRET}@") + f"?token={TOKEN}"
        process = spawn(assets, "--input", url, "--fps", "100", "--reconnect", "1")
        out, err = (stream.decode() for stream in process.communicate(timeout=120))
    assert process.returncode == infer.EXIT_ERROR, err
    assert lines_of(out) and "disconnect: " in err and "admin:***@" in err
    assert SECRET not in out + err and TOKEN not in out + err
