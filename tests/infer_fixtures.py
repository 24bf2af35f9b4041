"""Helpers for the inference tests: hand-made predictions, videos written with PyAV, image folders."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Dict, Iterator, List, Sequence

import av
import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor

if TYPE_CHECKING:
    import lightning as L

#: Size of the generated frames (width, height); odd on purpose, the encoders need even sizes.
FRAME_SIZE = (97, 61)


def moving_box_frames(count: int, size: Sequence[int] = FRAME_SIZE) -> List[Image.Image]:
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


def headers_only_mkv(path: Path) -> Path:
    """A Matroska file with a video stream whose frames are all cut off: it opens, and decodes to nothing."""
    full = write_video(path.with_name(f"full_{path.name}"), moving_box_frames(5), fps=10)
    data = full.read_bytes()
    # The headers and the first cluster's ID and size, none of its frame blocks.
    path.write_bytes(data[: data.index(b"\x1f\x43\xb6\x75") + 12])
    full.unlink()
    return path


def decode_all(path: Path) -> List[Image.Image]:
    """Every frame of a video, decoded with plain PyAV."""
    with av.open(str(path)) as container:
        return [frame.to_image() for frame in container.decode(video=0)]


def prediction(
    frame: str,
    boxes: Sequence[Sequence[float]],
    labels: Sequence[int],
    scores: Sequence[float],
    pairs: Sequence[Sequence[int]],
    predicate_scores: Dict[int, float] | None = None,
) -> Dict[str, Tensor]:
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


def random_prediction(frame: str, rows: int, pairs: int, generator: torch.Generator) -> Dict[str, Tensor]:
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
    """Files shared by the inference and notebook tests (built once per session)."""

    data_root: Path  #: synthetic Action Genome root
    checkpoint: Path  #: Lightning checkpoint of a tiny ARNLitModule (random weights)
    video: Path  #: mp4 of every synthetic frame, in key order, at VIDEO_FPS
    num_video_frames: int


def tiny_module(triplet_categories: Dict[str, list], num_frames: int = 2, task: str = "sgdet") -> "L.LightningModule":
    """A tiny ``ARNLitModule`` (random weights) with the test's resize settings."""
    from arn_lightning.lit_module import ARNLitModule
    from arn_lightning.models.arn import ARNConfig

    arch = ARNConfig(backbone="resnet18", hidden_dim=16, nheads=2, ffn_dim=32, enc_layers=1, entity_layers=1,
                     predicate_layers=1, num_queries=4, num_frames=num_frames, clip_embed_dim=16, task=task)
    return ARNLitModule(arch=arch, triplet_categories=triplet_categories, data_settings=dict(TEST_DATA_SETTINGS),
                        init_text_classifiers=False)


def save_checkpoint(module: "L.LightningModule", path: Path) -> Path:
    """Write ``module`` as a Lightning checkpoint without training it."""
    import lightning as L

    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.strategy.connect(module)
    trainer.save_checkpoint(path)
    return path


def build_assets(folder: Path) -> InferAssets:
    """Create (or reuse, if ``folder`` already holds them) the shared inference test assets."""
    data_root, checkpoint, video = folder / "synth_ag", folder / "tiny.ckpt", folder / "synthetic.mp4"
    with torch_threads(1):
        _build(data_root, checkpoint, video)
    return InferAssets(data_root, checkpoint, video, len(list((data_root / "frames").glob("*/*.png"))))


def _build(data_root: Path, checkpoint: Path, video: Path) -> None:
    from arn_lightning.data.ag import load_annotations
    from arn_lightning.data.synth import generate

    if not data_root.exists():
        generate(data_root, videos=4, frames=4, size=SYNTH_SIZE, seed=0)
    frames = sorted((data_root / "frames").glob("*/*.png"))
    if not checkpoint.exists():
        categories = load_annotations(data_root, "sgdet").triplet_categories("train")
        torch.manual_seed(0)
        save_checkpoint(tiny_module(categories), checkpoint)
    if not video.exists():
        write_video(video, [Image.open(f).convert("RGB") for f in frames], VIDEO_FPS, codec="libx264")


# ----------------------------------------------------------------------------------------------- fixtures
# Imported by the test modules that use them; ``assets`` builds once per session (on disk, see build_assets).
@pytest.fixture(scope="session")
def assets(tmp_path_factory: pytest.TempPathFactory) -> InferAssets:
    """The shared synthetic AG root, tiny checkpoint and mp4."""
    return build_assets(tmp_path_factory.getbasetemp() / "infer_assets")


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Torch on one CPU thread for the test (see :func:`torch_threads`)."""
    with torch_threads(1):
        yield
