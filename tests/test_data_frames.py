"""Frames from videos (PyAV) and frame files: dump-frames numbering, rotation, size checks, failures, resuming."""

import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from ag_fixtures import person_entry, write_frame, write_root
from arn_lightning.cli import main as cli_main
from arn_lightning.data import ag
from arn_lightning.data.frames import (
    FrameError,
    dump_frames,
    dump_video,
    find_missing_frames,
    load_annotated_frames,
    load_frame_keys,
    read_frame,
)
from arn_lightning.video.decode import VideoError, decode_video, frame_file_name, off_grid, probe_video
from infer_fixtures import (
    audio_only,
    corner_frames,
    corrupt_frame,
    cut_video,
    faststart_video,
    grey_frames,
    headers_only_mkv,
    mp4_without_streams,
    noisy_frames,
    set_display_rotation,
    write_lossless_video,
    write_video_with_audio,
)

NUM_FRAMES = 10
GREY_STEP = 20


@pytest.fixture()
def videos(tmp_path):
    """``videos/V0001.mp4``: 10 lossless frames at 10 fps, frame i (0-based decode position) flat grey 20 * i."""
    folder = tmp_path / "videos"
    folder.mkdir()
    write_lossless_video(folder / "V0001.mp4", grey_frames(NUM_FRAMES, step=GREY_STEP))
    return folder


def _grey(path):
    return float(read_frame(path).float().mean())


def _files(folder):
    """Every entry of a folder, hidden temporary files included."""
    return sorted(os.listdir(folder))


def _write_keys(path, *keys):
    path.write_text("".join(f"{key}\n" for key in keys))
    return path


# ----------------------------------------------------------------------------------------------- numbering
def test_dump_frames_numbers_from_one_like_the_toolkit(videos, tmp_path, capsys):
    """ffmpeg's ``%06d.png`` names the first decoded frame 000001.png and the last of 10 frames 000010.png."""
    keys = _write_keys(tmp_path / "keys.txt", "V0001.mp4/000001.png", "V0001.mp4/000005.png", "V0001.mp4/000010.png")
    root = tmp_path / "ag"
    assert (
        cli_main(["dump-frames", "--videos", str(videos), "--root", str(root), "--keys", str(keys), "--no-progress"])
        == 0
    )
    assert "3 frame(s) written, 0 already present, 0 video(s) failed" in capsys.readouterr().out
    folder = root / "frames" / "V0001.mp4"
    assert _files(folder) == ["000001.png", "000005.png", "000010.png"]  # no temporary file left
    assert _grey(folder / "000001.png") == pytest.approx(0, abs=2)
    assert _grey(folder / "000005.png") == pytest.approx(80, abs=2)
    assert _grey(folder / "000010.png") == pytest.approx(180, abs=2)


def test_key_beyond_the_last_frame_reports_the_frame_count(videos, tmp_path):
    keys = ["V0001.mp4/000004.png", "V0001.mp4/000011.png", "V0001.mp4/000020.png"]
    report = dump_frames(videos, tmp_path / "ag", keys, progress=False)
    assert report.written == 1
    reason = report.failures["V0001.mp4"]
    assert f"{videos / 'V0001.mp4'} has 10 frames (numbered 1 to 10) but 000011.png, 000020.png are annotated" in reason
    assert "truncated" not in reason  # the container declares 10 frames too
    assert _grey(tmp_path / "ag" / "frames" / keys[0]) == pytest.approx(60, abs=2)


def test_key_000000_is_rejected_naming_it(videos, tmp_path, capsys):
    keys = _write_keys(tmp_path / "keys.txt", "V0001.mp4/000000.png", "V0001.mp4/000002.png")
    root = tmp_path / "ag"
    assert (
        cli_main(["dump-frames", "--videos", str(videos), "--root", str(root), "--keys", str(keys), "--no-progress"])
        == 1
    )
    captured = capsys.readouterr()
    assert "1 frame(s) written" in captured.out
    assert (
        "FAILED V0001.mp4: V0001.mp4/000000.png: Expected a frame number from 000001 (numbering is 1-based: "
        "000001.png is the first frame of the video) but got 000000"
    ) in captured.err
    assert _files(root / "frames" / "V0001.mp4") == ["000002.png"]
    with pytest.raises(ValueError, match="1-based"):
        frame_file_name(0)


def test_decode_video_numbers_every_frame_from_one(videos):
    frames = list(decode_video(videos / "V0001.mp4"))
    assert [f.number for f in frames] == list(range(1, NUM_FRAMES + 1))
    assert [f.timestamp for f in frames] == pytest.approx([i / 10 for i in range(NUM_FRAMES)])
    assert [round(float(np.asarray(f.image).mean())) for f in frames] == [GREY_STEP * i for i in range(NUM_FRAMES)]
    assert not any(off_grid(f, 10.0) for f in frames)
    assert [f.number for f in decode_video(videos / "V0001.mp4", last=3)] == [1, 2, 3]
    info = probe_video(videos / "V0001.mp4")
    assert (info.frame_rate, info.declared_frames) == (10.0, NUM_FRAMES)


def test_variable_frame_rate_counts_every_decoded_frame_and_warns(tmp_path, capsys):
    """Decode order, whatever the timestamps: the 4th frame (at 0.5 s, two periods late) is still 000004.png."""
    videos = tmp_path / "videos"
    videos.mkdir()
    write_lossless_video(videos / "VFR01.mp4", grey_frames(5, step=GREY_STEP), fps=10, times_ms=[0, 100, 200, 500, 600])
    frames = list(decode_video(videos / "VFR01.mp4"))
    assert [f.number for f in frames] == [1, 2, 3, 4, 5]
    assert [f.timestamp for f in frames] == pytest.approx([0.0, 0.1, 0.2, 0.5, 0.6])
    assert [off_grid(f, 10.0) for f in frames] == [False, False, False, True, True]
    keys = _write_keys(tmp_path / "keys.txt", *(f"VFR01.mp4/{frame_file_name(n)}" for n in range(1, 6)))
    root = tmp_path / "ag"
    assert (
        cli_main(["dump-frames", "--videos", str(videos), "--root", str(root), "--keys", str(keys), "--no-progress"])
        == 0
    )
    captured = capsys.readouterr()
    assert "5 frame(s) written" in captured.out and "1 warning(s)" in captured.out
    assert "WARNING VFR01.mp4:" in captured.err and "variable frame rate: frame 4 is at 0.500 s" in captured.err
    assert _grey(root / "frames" / "VFR01.mp4" / "000004.png") == pytest.approx(60, abs=2)


@pytest.mark.parametrize("video_start_ms, warned", [(0, False), (100, True)])
def test_video_starting_after_its_audio_is_numbered_in_decode_order_and_warned(tmp_path, video_start_ms, warned):
    videos = tmp_path / "videos"
    videos.mkdir()
    write_video_with_audio(videos / "AV001.mp4", grey_frames(4, step=GREY_STEP), fps=10, video_start_ms=video_start_ms)
    info = probe_video(videos / "AV001.mp4")
    assert info.streams == 2 and info.start_offset == pytest.approx(video_start_ms / 1000, abs=1e-3)
    report = dump_frames(videos, tmp_path / "ag", ["AV001.mp4/000001.png", "AV001.mp4/000004.png"], progress=False)
    assert (report.written, report.failures) == (2, {})
    assert _grey(tmp_path / "ag" / "frames" / "AV001.mp4" / "000001.png") == pytest.approx(0, abs=2)
    assert _grey(tmp_path / "ag" / "frames" / "AV001.mp4" / "000004.png") == pytest.approx(60, abs=2)
    if warned:
        assert "starts its video 0.100 s (1.00 frame periods) after its other streams" in report.warnings["AV001.mp4"]
    else:
        assert report.warnings == {}


# ----------------------------------------------------------------------------------------------- rotation and size
@pytest.mark.parametrize(
    "clockwise, bbox_size, corner",
    [
        (90, (48, 64), "top right"),
        (180, (64, 48), "bottom right"),
        (270, (48, 64), "bottom left"),
    ],
)
def test_dump_turns_rotated_videos_upright(tmp_path, capsys, clockwise, bbox_size, corner):
    """A 64x48 video whose display matrix turns it: the dump writes the upright frames ffmpeg would."""
    videos = tmp_path / "videos"
    videos.mkdir()
    set_display_rotation(write_lossless_video(videos / "R0001.mp4", corner_frames(3)), clockwise)
    keys = ["R0001.mp4/000001.png", "R0001.mp4/000003.png"]
    root = write_root(
        tmp_path / "ag", {k: person_entry(size=bbox_size) for k in keys}, {k: [] for k in keys}, frames=False
    )
    assert cli_main(["dump-frames", "--videos", str(videos), "--root", str(root), "--no-progress"]) == 0
    assert "2 frame(s) written" in capsys.readouterr().out
    image = read_frame(root / "frames" / keys[1], expected_size=bbox_size)  # what the loader checks
    white = {"top right": image[:, :6, -6:], "bottom right": image[:, -6:, -6:], "bottom left": image[:, -6:, :6]}
    assert int(white[corner].min()) > 250
    assert int(image[:, :6, :6].max()) < 30  # the stored top-left corner moved away; grey 20 is left
    assert int(image[:, 20, 20].float().mean()) == pytest.approx(20, abs=2)


def test_frame_of_another_size_than_bbox_size_is_reported_at_dump_time(videos, tmp_path, capsys):
    keys = ["V0001.mp4/000002.png", "V0001.mp4/000003.png"]
    person = {keys[0]: person_entry(size=(64, 48)), keys[1]: person_entry(size=(480, 270))}
    root = write_root(tmp_path / "ag", person, {k: [] for k in keys}, frames=False)
    assert cli_main(["dump-frames", "--videos", str(videos), "--root", str(root), "--no-progress"]) == 1
    captured = capsys.readouterr()
    assert "1 frame(s) written" in captured.out
    assert (
        "FAILED V0001.mp4: 1 frame(s) of " in captured.err
        and "000003.png: Expected 480x270 (bbox_size of person_bbox.pkl) but got 64x48" in captured.err
    )
    assert _files(root / "frames" / "V0001.mp4") == ["000002.png"]


def test_load_annotated_frames_reads_bbox_sizes(standard_root, tmp_path):
    keys, sizes = load_annotated_frames(standard_root)
    assert keys == load_frame_keys(standard_root) and len(keys) == 15
    assert set(sizes) == set(keys) and set(sizes.values()) == {(64, 48)}
    keys_file = _write_keys(tmp_path / "keys.txt", "X.mp4/000003.png")
    assert load_annotated_frames(standard_root, keys_file) == (["X.mp4/000003.png"], sizes)
    person = {"A.mp4/000001.png": {"bbox": np.zeros((0, 4)), "bbox_size": (0, 48)}}
    with open(standard_root / "annotations" / "person_bbox.pkl", "wb") as handle:
        pickle.dump(person, handle)
    with pytest.raises(
        ag.AnnotationError,
        match=r"person_bbox.pkl\['A.mp4/000001.png'\]\['bbox_size'\]: Expected "
        r"a positive \(width, height\) pair but got \(0, 48\)",
    ):
        load_annotated_frames(standard_root)


# ----------------------------------------------------------------------------------------------- unusable videos
#: Frames of the damaged videos; the damage is far enough in that frame threads (at most 16) output frame 1 first.
DAMAGED_FRAMES = 40


def _cut(frames):
    def make(path):
        return cut_video(faststart_video(path, noisy_frames(DAMAGED_FRAMES)), frames)

    return make


def _corrupt(path):
    return corrupt_frame(faststart_video(path, noisy_frames(DAMAGED_FRAMES)), 30)


def _headers_only(path):
    headers_only_mkv(path.with_name("headers.mkv")).rename(path)
    return path


UNUSABLE = {
    "no_stream": (mp4_without_streams, "Expected a video stream in {path} but found no stream at all (empty video)"),
    "audio_only": (audio_only, "Expected a video stream in {path} but found only audio streams (unsupported)"),
    "zero_frames": (_headers_only, "decodable video frame in {path} but found none (empty video)"),
    "truncated_before_the_frames": (
        _cut(0),
        "Expected the 40 frames its container declares in {path} but none decodes (a truncated or corrupt file)",
    ),
    "truncated_between_frames": (
        _cut(5),
        "{path} has 5 frames (numbered 1 to 5) but 000035.png is annotated; the "
        "container declares 40 frames, so the file looks truncated",
    ),
    "corrupt_frame": (_corrupt, "Expected a decodable video but decoding {path} failed after"),
    "random_bytes": (
        lambda p: p.write_bytes(np.random.default_rng(0).bytes(4096)),
        "Expected a readable video file but could not open {path}",
    ),
    "empty_file": (lambda p: p.write_bytes(b""), "Expected a video file but {path} is empty (0 bytes)"),
    "missing": (lambda p: None, "Expected a video file but {path} does not exist"),
}


@pytest.mark.parametrize("kind", sorted(UNUSABLE))
def test_unusable_video_is_a_named_failure_leaving_no_folder(tmp_path, kind):
    videos = tmp_path / "videos"
    videos.mkdir()
    make, message = UNUSABLE[kind]
    path = videos / "BAD01.mp4"
    make(path)
    keys = ["BAD01.mp4/000001.png", "BAD01.mp4/000035.png"]
    report = dump_frames(videos, tmp_path / "ag", keys, progress=False)
    assert set(report.failures) == {"BAD01.mp4"}
    assert message.format(path=path) in report.failures["BAD01.mp4"]
    if kind in ("truncated_between_frames", "corrupt_frame"):
        # frames decoded before the damage are written (they are right); the video still fails
        assert report.written == 1 and _files(tmp_path / "ag" / "frames" / "BAD01.mp4") == ["000001.png"]
    else:
        assert report.written == 0
        assert not (tmp_path / "ag").exists()  # no empty frames/BAD01.mp4 folder, nor frames/, nor the root


def test_failed_video_keeps_a_folder_the_user_made(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    mine = tmp_path / "ag" / "frames" / "GONE1.mp4"
    mine.mkdir(parents=True)
    report = dump_frames(videos, tmp_path / "ag", ["GONE1.mp4/000001.png"], progress=False)
    assert "GONE1.mp4 does not exist" in report.failures["GONE1.mp4"]
    assert mine.is_dir()


def test_failed_write_leaves_no_partial_file_nor_new_folder(videos, tmp_path, monkeypatch):
    def full_disk(image, path, *args, **kwargs):
        with open(path, "wb") as handle:
            handle.write(b"\x89PNG half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", full_disk)
    result = dump_video(videos / "V0001.mp4", tmp_path / "out" / "V0001.mp4", [2, 3])
    assert result.written == 0 and "writing failed: [Errno 28] No space left on device" in result.failure
    assert _files(tmp_path / "out") == []  # neither the frame, its temporary file, nor the video's folder


# ----------------------------------------------------------------------------------------------- resume, command
def test_dump_frames_resumes(videos, tmp_path):
    keys = ["V0001.mp4/000001.png", "V0001.mp4/000003.png"]
    dump_frames(videos, tmp_path / "ag", keys, progress=False)
    again = dump_frames(videos, tmp_path / "ag", keys, progress=False)
    assert (again.written, again.skipped) == (0, 2)
    (tmp_path / "ag" / "frames" / keys[0]).unlink()
    (tmp_path / "ag" / "frames" / keys[1]).write_bytes(b"")  # an empty file counts as missing
    third = dump_frames(videos, tmp_path / "ag", keys, progress=False)
    assert (third.written, third.skipped) == (2, 0)
    assert _grey(tmp_path / "ag" / "frames" / keys[1]) == pytest.approx(40, abs=2)


def test_dump_frames_command(videos, standard_root, tmp_path, capsys):
    # keys from the pickles: videos A/B/C/D are absent
    assert cli_main(["dump-frames", "--videos", str(videos), "--root", str(standard_root), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "FAILED A0001.mp4" in err and "FAILED D0004.mp4" in err and "A0001.mp4 does not exist" in err
    assert not (standard_root / "frames").exists()
    keys = _write_keys(tmp_path / "keys.txt", "V0001.mp4/000007.png", "", "V0001.mp4/000001.png")
    assert (
        cli_main(
            [
                "dump-frames",
                "--videos",
                str(videos),
                "--root",
                str(standard_root),
                "--keys",
                str(keys),
                "--no-progress",
                "--workers",
                "2",
            ]
        )
        == 0
    )
    assert "2 frame(s) written" in capsys.readouterr().out
    keys.write_text("V0001.mp4/7.png\n")
    assert cli_main(["dump-frames", "--videos", str(videos), "--root", str(standard_root), "--keys", str(keys)]) == 1
    assert "keys.txt line 1: Expected a frame key" in capsys.readouterr().err


def test_dump_frames_help_states_the_numbering(capsys):
    with pytest.raises(SystemExit):
        cli_main(["dump-frames", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "1-based position in decode order (000001.png is the first frame" in text and "0-based" not in text


def test_load_frame_keys_sources(standard_root):
    assert len(load_frame_keys(standard_root)) == 15 and load_frame_keys(standard_root)[0] == "A0001.mp4/000002.png"
    (standard_root / "annotations" / "person_bbox.pkl").unlink()
    with pytest.raises(FileNotFoundError, match="frame_list.txt"):
        load_frame_keys(standard_root)
    (standard_root / "annotations" / "frame_list.txt").write_text("X.mp4/000003.png\nX.mp4/000001.png\n")
    assert load_frame_keys(standard_root) == ["X.mp4/000001.png", "X.mp4/000003.png"]
    assert load_annotated_frames(standard_root)[1] == {}


def test_read_frame_and_missing_frames(tmp_path):
    path = write_frame(tmp_path, "A.mp4/000007.png", (20, 10))
    image = read_frame(path, expected_size=(20, 10))
    assert image.shape == (3, 10, 20) and image.dtype == torch.uint8 and int(image[0, 0, 0]) == 7
    with pytest.raises(FrameError, match=r"000009.png: Expected a readable frame image"):
        read_frame(tmp_path / "frames" / "A.mp4" / "000009.png")
    (tmp_path / "frames" / "A.mp4" / "000008.png").write_bytes(b"")
    keys = ["A.mp4/000007.png", "A.mp4/000008.png", "A.mp4/000009.png", "B.mp4/000001.png"]
    assert find_missing_frames(tmp_path / "frames", keys) == keys[1:]


def test_decode_errors_are_video_errors(tmp_path):
    with pytest.raises(VideoError, match="nothing.mp4 does not exist"):
        next(decode_video(tmp_path / "nothing.mp4"))


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "P"])
@pytest.mark.parametrize("level", [1, 9])
def test_frame_decoders_agree_exactly(tmp_path, mode, level):
    """PNG is lossless: torchvision's libpng path and Pillow give the same pixels, in the same layout."""
    pixels = np.random.default_rng(0).integers(0, 256, (27, 48, 4), dtype=np.uint8)
    image = Image.fromarray(pixels, "RGBA")
    image = image.convert(mode) if mode != "P" else image.convert("RGB").quantize(colors=64)
    path = tmp_path / "000001.png"
    image.save(path, compress_level=level)
    ours, pil = read_frame(path, (48, 27)), read_frame(path, (48, 27), decoder="pil")
    assert ours.dtype == pil.dtype == torch.uint8 and ours.shape == pil.shape == (3, 27, 48)
    assert torch.equal(ours, pil)
    assert ours.stride() == pil.stride()  # both channels-last views, the layout the uint8 resize is fastest on
    if mode == "RGB":
        assert torch.equal(ours, torch.from_numpy(pixels[..., :3]).permute(2, 0, 1))


def test_pil_decoder_errors_are_frame_errors(tmp_path):
    path = write_frame(tmp_path, "A.mp4/000003.png", (20, 10))
    assert torch.equal(read_frame(path, decoder="pil"), read_frame(path))
    with pytest.raises(FrameError, match=r"000003.png: Expected a 21x10 frame"):
        read_frame(path, expected_size=(21, 10), decoder="pil")
    path.write_bytes(path.read_bytes()[:45])  # truncated inside the image data
    for decoder in ("torchvision", "pil"):
        with pytest.raises(FrameError, match=r"000003.png: Expected a readable frame image"):
            read_frame(path, decoder=decoder)
    with pytest.raises(ValueError, match="Expected decoder in"):
        read_frame(path, decoder="cv2")
