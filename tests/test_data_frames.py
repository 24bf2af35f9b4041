"""Frames from videos (PyAV) and frame files: dump-frames, resuming, failures, reading errors."""

import av
import numpy as np
import pytest
import torch

from arn_lightning.cli import main as cli_main
from arn_lightning.data.frames import FrameError, dump_frames, find_missing_frames, load_frame_keys, read_frame
from fixtures_ag import write_frame, write_standard_root

NUM_FRAMES = 12
RED_STEP = 20


def _write_video(path, num_frames=NUM_FRAMES, size=(64, 48)):
    """An mp4 whose frame i is a solid colour with red = i * RED_STEP."""
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=24)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        stream.options = {"qscale": "1"}
        for i in range(num_frames):
            array = np.zeros((size[1], size[0], 3), dtype=np.uint8)
            array[..., 0], array[..., 1], array[..., 2] = i * RED_STEP, 60, 60
            container.mux(stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")))
        container.mux(stream.encode())
    return path


@pytest.fixture()
def videos(tmp_path):
    folder = tmp_path / "videos"
    folder.mkdir()
    _write_video(folder / "V0001.mp4")
    return folder


def _red(path):
    return float(read_frame(path)[0].float().mean())


def test_dump_frames_uses_zero_based_decode_order(videos, tmp_path):
    keys = ["V0001.mp4/000002.png", "V0001.mp4/000005.png", "V0001.mp4/000011.png"]
    report = dump_frames(videos, tmp_path / "ag", keys, progress=False)
    assert (report.written, report.skipped, report.failures) == (3, 0, {})
    for key in keys:
        number = int(key[-10:-4])
        assert abs(_red(tmp_path / "ag" / "frames" / key) - number * RED_STEP) < 8
    assert not list((tmp_path / "ag" / "frames" / "V0001.mp4").glob("*.tmp"))


def test_dump_frames_resumes(videos, tmp_path):
    keys = ["V0001.mp4/000001.png", "V0001.mp4/000003.png"]
    dump_frames(videos, tmp_path / "ag", keys, progress=False)
    again = dump_frames(videos, tmp_path / "ag", keys, progress=False)
    assert (again.written, again.skipped) == (0, 2)
    (tmp_path / "ag" / "frames" / keys[0]).unlink()
    third = dump_frames(videos, tmp_path / "ag", keys, progress=False)
    assert (third.written, third.skipped) == (1, 1)


def test_dump_frames_reports_failures(videos, tmp_path):
    (videos / "BAD01.mp4").write_bytes(b"this is not a video")
    keys = ["V0001.mp4/000020.png", "BAD01.mp4/000001.png", "GONE1.mp4/000001.png", "V0001.mp4/000004.png"]
    report = dump_frames(videos, tmp_path / "ag", keys, progress=False)
    assert report.written == 1
    assert set(report.failures) == {"V0001.mp4", "BAD01.mp4", "GONE1.mp4"}
    assert "has 12 decodable frames but frame 20 is annotated" in report.failures["V0001.mp4"]
    assert "decoding" in report.failures["BAD01.mp4"] and "does not exist" in report.failures["GONE1.mp4"]


def test_dump_frames_command(videos, tmp_path, capsys):
    root = write_standard_root(tmp_path / "ag", frames=False)  # keys from the pickles: videos A/B/C/D are absent
    assert cli_main(["dump-frames", "--videos", str(videos), "--root", str(root), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "FAILED A0001.mp4" in err and "FAILED D0004.mp4" in err
    keys = tmp_path / "keys.txt"
    keys.write_text("V0001.mp4/000007.png\n\nV0001.mp4/000000.png\n")
    assert cli_main(["dump-frames", "--videos", str(videos), "--root", str(root), "--keys", str(keys),
                     "--no-progress", "--workers", "2"]) == 0
    assert "2 frame(s) written" in capsys.readouterr().out
    keys.write_text("V0001.mp4/7.png\n")
    assert cli_main(["dump-frames", "--videos", str(videos), "--root", str(root), "--keys", str(keys)]) == 1
    assert "keys.txt line 1: Expected a frame key" in capsys.readouterr().err


def test_load_frame_keys_sources(tmp_path):
    root = write_standard_root(tmp_path / "ag", frames=False)
    assert len(load_frame_keys(root)) == 15 and load_frame_keys(root)[0] == "A0001.mp4/000002.png"
    (root / "annotations" / "person_bbox.pkl").unlink()
    with pytest.raises(FileNotFoundError, match="frame_list.txt"):
        load_frame_keys(root)
    (root / "annotations" / "frame_list.txt").write_text("X.mp4/000003.png\nX.mp4/000001.png\n")
    assert load_frame_keys(root) == ["X.mp4/000001.png", "X.mp4/000003.png"]


def test_read_frame_and_missing_frames(tmp_path):
    path = write_frame(tmp_path, "A.mp4/000007.png", (20, 10))
    image = read_frame(path, expected_size=(20, 10))
    assert image.shape == (3, 10, 20) and image.dtype == torch.uint8 and int(image[0, 0, 0]) == 7
    with pytest.raises(FrameError, match=r"000009.png: Expected a readable frame image"):
        read_frame(tmp_path / "frames" / "A.mp4" / "000009.png")
    (tmp_path / "frames" / "A.mp4" / "000008.png").write_bytes(b"")
    keys = ["A.mp4/000007.png", "A.mp4/000008.png", "A.mp4/000009.png", "B.mp4/000001.png"]
    assert find_missing_frames(tmp_path / "frames", keys) == keys[1:]
