"""Streaming inference (``StreamingPredictor``): the same scene graphs as ``infer --causal`` at the cost of one frame.

The reference is :class:`~arn_lightning.inference.api.SceneGraphPredictor` with the causal schedule, which runs every
frame's whole clip through the model; streaming runs the new frame alone and reads the previous frames' encoder
features from its cache. Equal within 1e-5 in float32 (boxes, labels, every predicate score) for windows 1 to 4,
frames of changing size, two temporal layers, across ``reset()`` and with interleaved streams.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from arn_lightning.data.ag import load_annotations
from arn_lightning.inference.api import SceneGraphPredictor, load_model
from arn_lightning.inference.streaming import StreamingPredictor
from arn_lightning.scene_graph import FrameGraph
from arn_lightning.training.checkpoints import save_untrained_checkpoint
from arn_lightning.video.files import VideoFrame, open_frames
from infer_fixtures import InferAssets, noisy_frames, tiny_module, torch_threads

pytestmark = pytest.mark.usefixtures("one_thread")

#: Largest difference allowed between streaming and ``--causal`` (float32).
TOLERANCE = 1e-5
#: Frame sizes (width, height) of the changing-size stream: two aspect ratios, each frame's feature grid differs
#: from its neighbour's in height, width or both.
SIZES = [(128, 96), (128, 96), (96, 128), (200, 90), (128, 96), (64, 64), (128, 96)]
FIELDS = ("boxes", "labels", "scores", "pairs", "attention", "spatial", "contacting")


@pytest.fixture(scope="module")
def two_layer_checkpoint(assets: InferAssets, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny SGDet checkpoint with T = 4 and two non-causal temporal layers (every cached frame's intermediate
    features then depend on the clip, which the cache must get right)."""
    path = tmp_path_factory.mktemp("streaming") / "t4.ckpt"
    categories = load_annotations(assets.data_root, "sgdet").triplet_categories("train")
    with torch_threads(1):
        torch.manual_seed(3)
        save_untrained_checkpoint(tiny_module(categories, num_frames=4, temporal_layers=2), path)
    return path


@pytest.fixture(scope="module")
def reference(two_layer_checkpoint: Path) -> SceneGraphPredictor:
    return load_model(two_layer_checkpoint, precision="fp32")


def changing_frames(count: int = len(SIZES), seed: int = 0) -> list[VideoFrame]:
    images = noisy_frames(count, (256, 256), seed=seed)
    frames = []
    for i, (array, (w, h)) in enumerate(zip(images, SIZES * (count // len(SIZES) + 1))):
        image = Image.fromarray(array).resize((w, h))
        frames.append(VideoFrame(i, i + 1, i / 2.0, f"clip/{i + 1:06d}.png", image))
    return frames


def causal_graphs(predictor: SceneGraphPredictor, frames: list[VideoFrame]) -> list[FrameGraph]:
    return [graph for _, graph in predictor.stream(frames, causal=True, top_k=1000, threshold=0.0)]


def assert_same(streamed: list[FrameGraph], expected: list[FrameGraph]) -> None:
    assert len(streamed) == len(expected) > 0
    for got, want in zip(streamed, expected, strict=True):
        assert got.frame == want.frame
        for key in FIELDS:
            a, b = got.prediction[key], want.prediction[key]
            assert a.shape == b.shape, (got.frame, key)
            if key == "boxes":  # pixels, compared normalised by the largest coordinate (1 float32 ulp at 100 is 7.6e-6)
                a, b = a / max(want.prediction["boxes"].abs().max().item(), 1.0), b / max(b.abs().max().item(), 1.0)
            if a.is_floating_point():
                assert (a - b).abs().max().item() <= TOLERANCE, (got.frame, key, (a - b).abs().max().item())
            else:
                assert torch.equal(a, b), (got.frame, key)


@pytest.mark.parametrize("window", [1, 2, 3, 4])
def test_streaming_equals_causal_with_frames_of_changing_size(two_layer_checkpoint: Path, window: int) -> None:
    frames = changing_frames()
    reference = load_model(two_layer_checkpoint, precision="fp32", window=window)
    expected = causal_graphs(reference, frames)
    streaming = StreamingPredictor(two_layer_checkpoint, precision="fp32", window=window, top_k=1000, threshold=0.0)
    streamed = [streaming.push(frame) for frame in frames]
    assert_same(streamed, expected)
    assert [len(g.triplets) for g in streamed] == [len(g.triplets) for g in expected]


def test_a_frame_does_not_depend_on_the_size_of_its_neighbours(reference: SceneGraphPredictor) -> None:
    """The reference itself encodes each frame at its own size: a frame alone and the same frame next to a larger
    one give the same graph (a batch padded to the larger frame would not)."""
    small, large = changing_frames()[5], changing_frames()[3]
    predictor = SceneGraphPredictor(reference._module, precision="fp32", window=1)
    alone = causal_graphs(predictor, [small])
    together = [g for g in causal_graphs(predictor, [large, small]) if g.frame == small.key]
    assert_same(together, alone)


def test_streaming_across_a_reset_starts_a_new_video(two_layer_checkpoint: Path, reference) -> None:
    frames = changing_frames()
    first, second = frames[:3], frames[3:]
    streaming = StreamingPredictor(reference, top_k=1000, threshold=0.0)
    before = [streaming.push(f) for f in first]
    streaming.reset()
    after = [streaming.push(f) for f in second]
    assert_same(before, causal_graphs(reference, first))
    assert_same(after, causal_graphs(reference, second))
    # without the reset, the first frame after it would have seen the frames before
    continuing = StreamingPredictor(reference, top_k=1000, threshold=0.0)
    graphs = [continuing.push(f) for f in frames]
    gap = (graphs[3].prediction["attention"] - after[0].prediction["attention"]).abs().max().item()
    assert gap > 1e-4


def test_interleaved_streams_do_not_see_each_other(reference: SceneGraphPredictor) -> None:
    a, b = changing_frames(seed=1), changing_frames(seed=2)[:4]
    streaming = StreamingPredictor(reference, top_k=1000, threshold=0.0)
    got: dict[str, list[FrameGraph]] = {"a": [], "b": []}
    for i in range(len(a)):
        got["a"].append(streaming.push(a[i], stream="a"))
        if i < len(b):
            got["b"].append(streaming.push(b[i], stream="b"))
    assert sorted(streaming.streams) == ["a", "b"]
    assert streaming.frames_seen("a") == len(a) and streaming.frames_seen("b") == len(b)
    assert_same(got["a"], causal_graphs(reference, a))
    assert_same(got["b"], causal_graphs(reference, b))
    streaming.close("a")
    assert streaming.streams == ["b"] and streaming.frames_seen("a") == 0


def test_each_push_runs_the_backbone_once(reference: SceneGraphPredictor) -> None:
    """The cost of one frame: one backbone and encoder pass per pushed frame, where --causal runs the window."""
    calls: list[int] = []
    handle = reference.model.backbone.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    try:
        frames = changing_frames()[:4]
        frames = [VideoFrame(f.index, f.source_index, f.timestamp, f.key, f.image.resize((128, 96))) for f in frames]
        streaming = StreamingPredictor(reference)
        for frame in frames:
            streaming.push(frame)
        assert calls == [1, 1, 1, 1]
        calls.clear()
        causal_graphs(reference, frames)
        assert sum(calls) == 4 * reference.clip_length
    finally:
        handle.remove()


def test_push_accepts_arrays_and_images_and_names_their_frames(reference: SceneGraphPredictor) -> None:
    streaming = StreamingPredictor(reference)
    array = noisy_frames(1, (80, 60))[0]
    first = streaming.push(array, timestamp=1.5, stream="cam")
    second = streaming.push(Image.fromarray(array).convert("L"), timestamp=2.0, stream="cam")
    third = streaming.push(array, stream="cam")
    assert (first.frame, first.index, first.source_index, first.timestamp) == ("cam/000001.png", 0, 1, 1.5)
    assert (second.frame, second.timestamp) == ("cam/000002.png", 2.0)
    assert third.frame == "cam/000003.png" and third.timestamp >= 0.0
    # original pixels: the boxes are in the pushed frame's coordinates
    assert first.prediction["boxes"][:, 2].max().item() <= 80 + 1e-3
    assert first.prediction["boxes"][:, 3].max().item() <= 60 + 1e-3
    first.to_json()


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (np.zeros((10, 10, 3), dtype=np.float32), "uint8 array"),
        (np.zeros((10, 10), dtype=np.uint8), r"\[H, W, 3\]"),
        ("frame.png", "PIL image"),
    ],
)
def test_push_refuses_what_is_not_a_frame(reference: SceneGraphPredictor, frame, message: str) -> None:
    streaming = StreamingPredictor(reference)
    with pytest.raises(ValueError, match=message):
        streaming.push(frame)
    assert streaming.frames_seen() == 0


def test_a_window_longer_than_the_model_is_refused(two_layer_checkpoint: Path, reference) -> None:
    with pytest.raises(ValueError, match="window of 1 to 4 frames"):
        StreamingPredictor(two_layer_checkpoint, window=5)
    with pytest.raises(ValueError, match="window of 1 to 4 frames"):
        StreamingPredictor(reference, window=0)


def test_the_cache_is_bounded_by_the_window(reference: SceneGraphPredictor) -> None:
    streaming = StreamingPredictor(reference, window=3)
    for frame in changing_frames():
        streaming.push(frame)
    state = streaming._streams["stream"]
    assert len(state.cache) == 2


def test_streaming_a_video_file_gives_the_causal_graphs(assets: InferAssets) -> None:
    predictor = load_model(assets.checkpoint, precision="fp32")
    frames = list(open_frames(assets.video, fps=8))
    streaming = StreamingPredictor(predictor, top_k=1000, threshold=0.0)
    assert_same(list(streaming.follow(frames)), causal_graphs(predictor, frames))
