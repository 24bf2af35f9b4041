"""Reading sampled frames from videos and image folders, writing mp4s (arn_lightning.video.files)."""

from __future__ import annotations

import os
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from arn_lightning.data.frames import dump_frames
from arn_lightning.video.decode import rotate_upright
from arn_lightning.video.files import DEFAULT_FPS, VideoError, VideoWriter, open_frames
from infer_fixtures import (
    FRAME_SIZE,
    audio_only,
    corner_frames,
    decode_all,
    headers_only_mkv,
    moving_box_frames,
    mp4_without_streams,
    set_display_rotation,
    write_lossless_video,
    write_video,
)

NATIVE_FPS = 10
NUM_FRAMES = 25


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    return write_video(path, moving_box_frames(NUM_FRAMES), NATIVE_FPS)


def test_sampling_keeps_one_frame_per_slot(video: Path) -> None:
    source = open_frames(video, fps=4)
    frames = list(source)
    # 2.5 s at 4 fps: slots of 0.25 s; frame n (1-based) is at (n - 1) / 10 s, the first frame of each slot is kept.
    assert [f.index for f in frames] == list(range(10))
    kept = [1, 4, 6, 9, 11, 14, 16, 19, 21, 24]
    assert [f.source_index for f in frames] == kept
    assert [f.timestamp for f in frames] == pytest.approx([(n - 1) / NATIVE_FPS for n in kept])
    assert frames[1].key == "clip.mp4/000004.png"
    assert source.estimated_count == len(frames)
    assert frames[0].image.mode == "RGB"
    assert frames[0].image.size == (FRAME_SIZE[0] - 1, FRAME_SIZE[1] - 1)


def test_rate_above_the_native_rate_keeps_every_frame(video: Path) -> None:
    frames = list(open_frames(video, fps=100))
    assert [f.source_index for f in frames] == list(range(1, NUM_FRAMES + 1))
    assert frames[0].key == "clip.mp4/000001.png" and frames[-1].key == f"clip.mp4/{NUM_FRAMES:06d}.png"
    reference = decode_all(video)
    assert np.array_equal(np.asarray(frames[7].image), np.asarray(reference[7]))  # frame 8 is decode position 7


def test_iterating_twice_gives_the_same_frames(video: Path) -> None:
    source = open_frames(video, fps=DEFAULT_FPS)
    assert (
        [f.key for f in source]
        == [f.key for f in source]
        == [
            "clip.mp4/000001.png",
            "clip.mp4/000006.png",
            "clip.mp4/000011.png",
            "clip.mp4/000016.png",
            "clip.mp4/000021.png",
        ]
    )


def test_folder_frames_in_natural_order(tmp_path: Path) -> None:
    folder = tmp_path / "001YG.mp4"
    folder.mkdir()
    for number, image in zip([10, 2, 1], moving_box_frames(3), strict=True):
        image.save(folder / f"{number}.png")
    (folder / "notes.txt").write_text("not an image")
    frames = list(open_frames(folder, fps=4))
    assert [f.key for f in frames] == ["001YG.mp4/1.png", "001YG.mp4/2.png", "001YG.mp4/10.png"]
    assert [f.timestamp for f in frames] == [0.0, 0.25, 0.5]
    assert [f.source_index for f in frames] == [1, 2, 10]  # every name is a number: the frame numbers


def test_folder_frames_without_numbered_names_count_from_one(tmp_path: Path) -> None:
    for name, image in zip(["b.png", "a.jpg", "7.png"], moving_box_frames(3), strict=True):
        image.save(tmp_path / name)
    frames = list(open_frames(tmp_path, fps=1))
    assert [f.key.split("/")[1] for f in frames] == ["7.png", "a.jpg", "b.png"]
    assert [f.source_index for f in frames] == [1, 2, 3]


def test_folder_without_images_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(VideoError, match=f"image files .* in the frame folder {tmp_path}"):
        open_frames(tmp_path)


def test_corrupt_image_in_folder_names_the_file(tmp_path: Path) -> None:
    moving_box_frames(1)[0].save(tmp_path / "000001.png")
    (tmp_path / "000002.png").write_bytes(b"not a png")
    frames = iter(open_frames(tmp_path))
    assert next(frames).key.endswith("000001.png")
    with pytest.raises(VideoError, match="000002.png"):
        next(frames)


@pytest.mark.parametrize("content", [b"", np.random.default_rng(0).bytes(4096)], ids=["zero-bytes", "random-bytes"])
def test_unreadable_file_is_an_error_naming_it(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "broken.mp4"
    path.write_bytes(content)
    with pytest.raises(VideoError, match="broken.mp4"):
        open_frames(path)


def test_missing_path_and_bad_rate(tmp_path: Path, video: Path) -> None:
    with pytest.raises(VideoError, match="missing.mp4 does not exist"):
        open_frames(tmp_path / "missing.mp4")
    with pytest.raises(ValueError, match="positive frame rate"):
        open_frames(video, fps=0)


def test_audio_only_file_is_unsupported(tmp_path: Path) -> None:
    path = audio_only(tmp_path / "sound.wav")
    with pytest.raises(VideoError, match="sound.wav but found only audio streams"):
        open_frames(path)


def test_mp4_without_frames_is_an_empty_video(tmp_path: Path) -> None:
    path = mp4_without_streams(tmp_path / "empty.mp4")
    with pytest.raises(VideoError, match="empty.mp4 but found no stream at all"):
        open_frames(path)


def test_video_stream_without_decodable_frames_is_an_empty_video(tmp_path: Path) -> None:
    source = open_frames(headers_only_mkv(tmp_path / "headers_only.mkv"))
    with pytest.raises(VideoError, match="headers_only.mkv but found none"):
        list(source)


def test_writer_pads_odd_sizes_and_resizes_later_frames(tmp_path: Path) -> None:
    path = tmp_path / "out.mp4"
    frames = moving_box_frames(6)
    with VideoWriter(path, fps=2.5) as writer:
        for image in frames[:5]:
            writer.write(image)
        writer.write(frames[5].resize((40, 30)))
    assert writer.frames_written == 6
    decoded = decode_all(path)
    assert len(decoded) == 6
    assert decoded[0].size == (FRAME_SIZE[0] + 1, FRAME_SIZE[1] + 1)
    padding = np.asarray(decoded[0])[:, -1].astype(int)  # the added column is black
    assert padding.mean() < 20
    with av.open(str(path)) as container:
        assert float(container.streams.video[0].average_rate) == pytest.approx(2.5)


def test_writer_with_no_frame_creates_no_file(tmp_path: Path) -> None:
    with VideoWriter(tmp_path / "none.mp4", fps=2):
        pass
    assert not (tmp_path / "none.mp4").exists()


def test_written_video_reads_back_through_open_frames(tmp_path: Path) -> None:
    path = tmp_path / "round.mp4"
    with VideoWriter(path, fps=5) as writer:
        for image in moving_box_frames(4, size=(64, 48)):
            writer.write(image)
    frames = list(open_frames(path, fps=5))
    assert [f.timestamp for f in frames] == pytest.approx([0.0, 0.2, 0.4, 0.6])
    assert frames[0].image.size == (64, 48)
    white = np.asarray(frames[0].image)[12:18, 2:8]
    assert white.min() > 200 and isinstance(frames[0].image, Image.Image)


@pytest.mark.parametrize(
    "clockwise, corner, size",
    [
        (90, "top right", (48, 64)),
        (180, "bottom right", (64, 48)),
        (270, "bottom left", (48, 64)),
    ],
)
def test_rotated_phone_video_is_turned_upright(tmp_path: Path, clockwise: int, corner: str, size: tuple) -> None:
    path = set_display_rotation(write_lossless_video(tmp_path / "phone.mp4", corner_frames(2)), clockwise)
    with av.open(str(path)) as container:  # the helper's matrix reads back as that rotation (counterclockwise)
        assert next(container.decode(video=0)).rotation % 360 == (-clockwise) % 360
    image = next(iter(open_frames(path))).image
    assert image.size == size
    pixels = np.asarray(image)
    white = {"top right": pixels[:6, -6:], "bottom right": pixels[-6:, -6:], "bottom left": pixels[-6:, :6]}
    assert white[corner].min() > 250 and pixels[:6, :6].max() < 5  # the white corner moved from the top left


def test_odd_angles_rotate_like_ffmpeg_within_the_frame() -> None:
    image = Image.fromarray(np.full((48, 64, 3), 200, dtype=np.uint8))
    assert rotate_upright(image, 0.4) is image  # below one degree: untouched
    assert rotate_upright(image, -89.5).size == (48, 64)  # within one degree of 90: a transpose
    turned = rotate_upright(image, -30)
    assert turned.size == (64, 48)  # ffmpeg's rotate filter keeps the size and fills the corners black
    assert np.asarray(turned)[0, 0].max() == 0 and np.asarray(turned)[24, 32].min() == 200


def test_infer_and_dump_frames_give_a_frame_the_same_key_and_pixels(tmp_path: Path) -> None:
    """One decoding path: every frame of a rotated video, sampled by infer and dumped by dump-frames."""
    videos = tmp_path / "videos"
    videos.mkdir()
    path = set_display_rotation(write_lossless_video(videos / "SAME1.mp4", corner_frames(6)), 90)
    frames = list(open_frames(path, fps=100))
    report = dump_frames(videos, tmp_path / "ag", [f.key for f in frames], progress=False)
    assert (report.written, report.failures) == (6, {})
    assert [f.key for f in frames] == [f"SAME1.mp4/{n:06d}.png" for n in range(1, 7)]
    for frame in frames:
        with Image.open(tmp_path / "ag" / "frames" / frame.key) as dumped:
            assert np.array_equal(np.asarray(dumped.convert("RGB")), np.asarray(frame.image)), frame.key


def test_writer_is_atomic(tmp_path: Path) -> None:
    path = tmp_path / "out.mp4"
    path.write_bytes(b"previous")
    with pytest.raises(RuntimeError, match="drawing failed"):
        with VideoWriter(path, fps=2) as writer:
            writer.write(moving_box_frames(1)[0])
            assert os.listdir(tmp_path) != ["out.mp4"]  # the frames go to a temporary file beside it
            raise RuntimeError("drawing failed")
    assert os.listdir(tmp_path) == ["out.mp4"] and path.read_bytes() == b"previous"
    with VideoWriter(path, fps=2) as writer:
        writer.write(moving_box_frames(1)[0])
    assert os.listdir(tmp_path) == ["out.mp4"] and len(decode_all(path)) == 1


# ----------------------------------------------------------------------------------------------------------------------
# one home: the decode loop, the sampler, one class per live-source kind

VIDEO_PACKAGE = Path(__file__).resolve().parents[1] / "src" / "arn_lightning"


def test_one_decode_loop_one_sampler_and_no_kind_branching() -> None:
    sources = {p.relative_to(VIDEO_PACKAGE).as_posix(): p.read_text() for p in VIDEO_PACKAGE.rglob("*.py")}
    demuxing = sorted(name for name, text in sources.items() if ".demux(" in text or ".decode(stream" in text)
    assert demuxing == ["video/decode.py"]  # decode_packets: every video source decodes through it
    sampling = sorted(name for name, text in sources.items() if "* self.fps + SLOT_EPSILON" in text)
    assert sampling == ["video/files.py"]  # SlotSampler.keep
    assert sum(text.count("math.floor(") for text in sources.values() if "SLOT_EPSILON" in text) == 1
    opening = sorted(name for name, text in sources.items() if name.startswith("video/") and "Image.open(" in text)
    assert opening == ["video/files.py"]  # FolderFrames.decoded: the one folder loop
    live = sources["video/live.py"]
    assert "self.kind ==" not in live and "self.kind in" not in live

    from arn_lightning.video.live import SOURCE_CLASSES, SOURCE_KINDS, LiveSource

    assert SOURCE_KINDS == ("file", "folder", "camera", "url", "stdin-raw", "stdin-container")
    assert all(issubclass(cls, LiveSource) and cls.kind == kind for kind, cls in SOURCE_CLASSES.items())
