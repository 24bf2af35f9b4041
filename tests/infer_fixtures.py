"""Helpers for the inference tests: hand-made predictions, videos written with PyAV, image folders, and the shared
inference assets (built by the ``assets`` fixture of ``conftest.py``)."""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import av
import numpy as np
import torch
from PIL import Image
from torch import Tensor

if TYPE_CHECKING:
    import lightning as L

#: Size of the generated frames (width, height); odd on purpose, the encoders need even sizes.
FRAME_SIZE = (97, 61)


def moving_box_frames(count: int, size: Sequence[int] = FRAME_SIZE) -> list[Image.Image]:
    """``count`` RGB frames of a white square moving right over a grey background (frame i differs from i+1)."""
    width, height = size
    frames = []
    for i in range(count):
        pixels = np.full((height, width, 3), 80, dtype=np.uint8)
        x = (i * 3) % max(1, width - 10)
        pixels[10:20, x : x + 10] = 255
        frames.append(Image.fromarray(pixels))
    return frames


def write_video(path: Path, frames: Sequence[Image.Image], fps: int, codec: str = "mpeg4") -> Path:
    """Encode ``frames`` into ``path`` with plain PyAV (independent of the code under test)."""
    width, height = frames[0].size
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = width - width % 2, height - height % 2
        stream.pix_fmt = "yuv420p"
        for image in frames:
            frame = av.VideoFrame.from_image(image.crop((0, 0, stream.width, stream.height)))
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def grey_frames(count: int, size: Sequence[int] = (64, 48), step: int = 20) -> list[np.ndarray]:
    """``count`` flat RGB frames ``uint8 [H, W, 3]``; frame i has grey level ``step * i``."""
    width, height = size
    return [np.full((height, width, 3), step * i, dtype=np.uint8) for i in range(count)]


def corner_frames(count: int, size: Sequence[int] = (64, 48)) -> list[np.ndarray]:
    """``count`` grey RGB frames ``uint8 [H, W, 3]`` with a white 8x8 square in the stored top-left corner (so a
    rotation shows), and frame i's grey level ``10 * i`` elsewhere (so frames differ)."""
    frames = grey_frames(count, size, step=10)
    for pixels in frames:
        pixels[:8, :8] = 255
    return frames


def write_lossless_video(
    path: Path, frames: Sequence[np.ndarray], fps: int = 10, times_ms: Sequence[int] | None = None
) -> Path:
    """Encode RGB frames ``uint8 [H, W, 3]`` losslessly (libx264rgb, qp 0: decoded pixels equal the input) with
    plain PyAV, independent of the code under test.

    Args:
        path: the file (its suffix picks the container, mp4 for ``.mp4``).
        frames: the frames, all of one size.
        fps: the stream's nominal frame rate.
        times_ms: presentation time of each frame in milliseconds (a variable frame rate), default ``i / fps``.
    """
    height, width = frames[0].shape[:2]
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264rgb", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "rgb24"
        stream.options = {"qp": "0"}
        if times_ms is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        for i, pixels in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            if times_ms is not None:
                frame.pts, frame.time_base = int(times_ms[i]), Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def write_video_with_audio(
    path: Path, frames: Sequence[np.ndarray], fps: int = 10, video_start_ms: int = 0, audio_seconds: float = 1.0
) -> Path:
    """A lossless video (see :func:`write_lossless_video`) plus a silent AAC track from time 0; the first video frame
    is at ``video_start_ms`` (a recording whose picture starts after its sound)."""
    height, width = frames[0].shape[:2]
    rate = 8000
    with av.open(str(path), mode="w") as container:
        video = container.add_stream("libx264rgb", rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "rgb24"
        video.options = {"qp": "0"}
        video.codec_context.time_base = Fraction(1, 1000)
        audio = container.add_stream("aac", rate=rate)
        audio.layout = "mono"
        for start in range(0, int(audio_seconds * rate), 1024):
            chunk = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            chunk.sample_rate, chunk.pts, chunk.time_base = rate, start, Fraction(1, rate)
            for packet in audio.encode(chunk):
                container.mux(packet)
        for packet in audio.encode(None):
            container.mux(packet)
        for i, pixels in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts, frame.time_base = video_start_ms + round(1000 * i / fps), Fraction(1, 1000)
            for packet in video.encode(frame):
                container.mux(packet)
        for packet in video.encode(None):
            container.mux(packet)
    return path


#: Track-header display matrices (16.16 fixed point a, b, c, d) that show the stored frame turned clockwise.
_CLOCKWISE = {0: (1, 0, 0, 1), 90: (0, 1, -1, 0), 180: (-1, 0, 0, -1), 270: (0, -1, 1, 0)}


def set_display_rotation(path: Path, clockwise: int) -> Path:
    """Patch the mp4 track header's display matrix of ``path`` in place so that players turn the frames
    ``clockwise`` degrees (90: a portrait phone recording). Independent of PyAV's writer options."""

    def matrix(a: int, b: int, c: int, d: int) -> bytes:
        fixed = [(v * 0x10000) & 0xFFFFFFFF for v in (a, b, c, d)]
        return struct.pack(">9I", fixed[0], fixed[1], 0, fixed[2], fixed[3], 0, 0, 0, 0x40000000)

    data = path.read_bytes()
    identity = matrix(*_CLOCKWISE[0])
    start = data.index(identity, data.index(b"tkhd"))
    path.write_bytes(data[:start] + matrix(*_CLOCKWISE[clockwise]) + data[start + len(identity) :])
    return path


def faststart_video(path: Path, frames: Sequence[np.ndarray], fps: int = 10) -> Path:
    """A lossless mp4 with its index (moov) before the frame data, so that a truncated copy still opens."""
    height, width = frames[0].shape[:2]
    with av.open(str(path), mode="w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264rgb", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "rgb24"
        stream.options = {"qp": "0"}
        for pixels in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def _packets(path: Path) -> list[tuple]:
    """``(position, size)`` in the file of each video packet with data, in file order."""
    with av.open(str(path)) as container:
        return sorted((packet.pos, packet.size) for packet in container.demux(video=0) if packet.size)


def cut_video(path: Path, frames: int) -> Path:
    """Cut a :func:`faststart_video` in place right after the data of its first ``frames`` frames (0 keeps only
    the headers): a download that stopped between two frames."""
    packets = _packets(path)
    end = packets[frames - 1][0] + packets[frames - 1][1] if frames else packets[0][0]
    path.write_bytes(path.read_bytes()[:end])
    return path


def corrupt_frame(path: Path, frame: int) -> Path:
    """Zero the data of frame ``frame`` (0-based, file order) of a :func:`faststart_video` in place: the decoder
    fails there."""
    position, size = _packets(path)[frame]
    data = bytearray(path.read_bytes())
    data[position : position + size] = bytes(size)
    path.write_bytes(bytes(data))
    return path


def noisy_frames(count: int, size: Sequence[int] = (64, 48), seed: int = 0) -> list[np.ndarray]:
    """``count`` random RGB frames (incompressible: a truncated file loses whole frames)."""
    width, height = size
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(count)]


def mp4_without_streams(path: Path) -> Path:
    """An mp4 whose header declares no stream at all (a recording stopped before its first frame)."""
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height = 32, 32
        container.start_encoding()
    return path


def audio_only(path: Path) -> Path:
    """A WAV file (one audio stream, no video) at ``path``, whatever its suffix."""
    import wave

    with wave.open(str(path), "wb") as audio:
        audio.setnchannels(1)
        audio.setsampwidth(2)
        audio.setframerate(8000)
        audio.writeframes(b"\0\0" * 800)
    return path


def headers_only_mkv(path: Path) -> Path:
    """A Matroska file with a video stream whose frames are all cut off: it opens, and decodes to nothing."""
    full = write_video(path.with_name(f"full_{path.name}"), moving_box_frames(5), fps=10)
    data = full.read_bytes()
    # The headers and the first cluster's ID and size, none of its frame blocks.
    path.write_bytes(data[: data.index(b"\x1f\x43\xb6\x75") + 12])
    full.unlink()
    return path


def decode_all(path: Path) -> list[Image.Image]:
    """Every frame of a video, decoded with plain PyAV."""
    with av.open(str(path)) as container:
        return [frame.to_image() for frame in container.decode(video=0)]


def prediction(
    frame: str,
    boxes: Sequence[Sequence[float]],
    labels: Sequence[int],
    scores: Sequence[float],
    pairs: Sequence[Sequence[int]],
    predicate_scores: dict[int, float] | None = None,
) -> dict[str, Tensor]:
    """A per-frame prediction (ARCHITECTURE.md section 4) whose predicate scores are 0 except ``predicate_scores``.

    ``predicate_scores`` maps ``pair * 26 + global predicate index`` to a score.
    """
    table = torch.zeros(len(pairs), 26)
    for cell, value in (predicate_scores or {}).items():
        table.view(-1)[cell] = value
    return {
        "frame": frame,
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(labels, dtype=torch.long),
        "scores": torch.tensor(scores, dtype=torch.float32),
        "pairs": torch.tensor(pairs, dtype=torch.long).reshape(-1, 2),
        "attention": table[:, :3].clone(),
        "spatial": table[:, 3:9].clone(),
        "contacting": table[:, 9:].clone(),
    }


def random_prediction(frame: str, rows: int, pairs: int, generator: torch.Generator) -> dict[str, Tensor]:
    """A random, well-formed prediction: ``rows`` boxes inside :data:`FRAME_SIZE`, person rows first."""
    width, height = FRAME_SIZE
    corners = torch.rand(rows, 2, 2, generator=generator) * torch.tensor([width, height])
    boxes = torch.cat([corners.min(dim=1).values, corners.max(dim=1).values], dim=1)
    labels = torch.randint(2, 37, (rows,), generator=generator)
    labels[0] = 1
    return {
        "frame": frame,
        "boxes": boxes,
        "labels": labels,
        "scores": torch.rand(rows, generator=generator),
        "pairs": torch.stack([torch.zeros(pairs, dtype=torch.long), torch.arange(pairs) % (rows - 1) + 1], dim=1),
        "attention": torch.rand(pairs, 3, generator=generator),
        "spatial": torch.rand(pairs, 6, generator=generator),
        "contacting": torch.rand(pairs, 17, generator=generator),
    }


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run torch on ``count`` CPU threads inside the block (tiny models are fastest on one: no thread hand-offs,
    which matter on a shared 2-core machine)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


# ----------------------------------------------------------------------------------------------- shared assets
#: Frame size of the synthetic Action Genome written for the inference tests (width, height).
SYNTH_SIZE = (160, 120)
#: Resize settings stored in the test checkpoint (the model sees 128x96 frames).
TEST_DATA_SETTINGS = {"resize_shorter": 96, "resize_longer": 128}
#: Rate of the mp4 written from the synthetic frames.
VIDEO_FPS = 8


@dataclass(frozen=True)
class InferAssets:
    """Files shared by the inference and notebook tests (built once per session by ``conftest.assets``)."""

    data_root: Path  #: synthetic Action Genome root
    checkpoint: Path  #: Lightning checkpoint of a tiny ARNLitModule (random weights)
    video: Path  #: mp4 of every synthetic frame, in key order, at VIDEO_FPS
    num_video_frames: int


def tiny_module(
    triplet_categories: dict[str, list], num_frames: int = 2, task: str = "sgdet", **arch_settings: Any
) -> L.LightningModule:
    """A tiny ``ARNLitModule`` (random weights) with the test's resize settings (``arch_settings`` override
    ``ARNConfig`` fields)."""
    from arn_lightning.models.arn import ARNConfig
    from arn_lightning.training.lit_module import ARNLitModule

    arch = ARNConfig(
        backbone="resnet18",
        hidden_dim=16,
        nheads=2,
        ffn_dim=32,
        enc_layers=1,
        entity_layers=1,
        predicate_layers=1,
        num_queries=4,
        num_frames=num_frames,
        clip_embed_dim=16,
        task=task,
        **arch_settings,
    )
    return ARNLitModule(
        arch=arch,
        triplet_categories=triplet_categories,
        data_settings=dict(TEST_DATA_SETTINGS),
        init_text_classifiers=False,
    )


def build_assets(folder: Path) -> InferAssets:
    """Create (or reuse, if ``folder`` already holds them) the shared inference test assets."""
    data_root, checkpoint, video = folder / "synth_ag", folder / "tiny.ckpt", folder / "synthetic.mp4"
    with torch_threads(1):
        _build(data_root, checkpoint, video)
    return InferAssets(data_root, checkpoint, video, len(list((data_root / "frames").glob("*/*.png"))))


def _build(data_root: Path, checkpoint: Path, video: Path) -> None:
    from arn_lightning.data.ag import load_annotations
    from arn_lightning.data.synth import generate
    from arn_lightning.training.checkpoints import save_untrained_checkpoint

    if not data_root.exists():
        generate(data_root, videos=4, frames=4, size=SYNTH_SIZE, seed=0)
    frames = sorted((data_root / "frames").glob("*/*.png"))
    if not checkpoint.exists():
        categories = load_annotations(data_root, "sgdet").triplet_categories("train")
        torch.manual_seed(0)
        save_untrained_checkpoint(tiny_module(categories), checkpoint)
    if not video.exists():
        write_video(video, [Image.open(f).convert("RGB") for f in frames], VIDEO_FPS, codec="libx264")
