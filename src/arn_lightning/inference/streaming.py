"""Streaming inference: scene graphs of a live video frame by frame, at the cost of one frame each.

Example::

    from arn_lightning.inference.streaming import StreamingPredictor

    predictor = StreamingPredictor("last.ckpt", device="cpu", window=3)
    for image in camera_frames():            # HxWx3 uint8 RGB arrays or PIL images, any size
        graph = predictor.push(image)
        print(graph.timestamp, [t.text() for t in graph.triplets[:3]])

The schedule is the causal one of ``arn-lightning infer --causal`` (:mod:`arn_lightning.inference.clips`): every
frame is the last frame of a clip of ``window`` frames whose others are the ``window - 1`` previous frames of its
stream (the first frame repeated while the stream is shorter), so a frame's graph never depends on a later frame.
``--causal`` runs each such clip through the whole model, ``window`` times the work of one frame. Here only the
new frame goes through the backbone, the encoder and the decoders; the temporal encoder, the only module that looks
across frames, reads the encoder features ``F_vi`` of the previous frames from a cache (bounded: ``window - 1``
feature maps per stream, about ``(window - 1) * h * w * D * 4`` bytes: 1.8 MB at ``window`` 4 for a 562x1000 frame
at stride 32 and ``D`` 256). The outputs equal ``--causal``'s within float rounding (``tests/test_streaming.py``:
1e-5 in float32, windows 1 to 4, frames of changing size, across :meth:`StreamingPredictor.reset`);
``docs/streaming.md`` gives the reasoning and the figures.

Several independent streams share one predictor (one model in memory): each has a name and its own cache and frame
count. Calls are serialised by a lock, so threads may push to the same predictor.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Hashable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from arn_lightning._types import PathLike
from arn_lightning.defaults import DEFAULT_THRESHOLD, DEFAULT_TOP_K
from arn_lightning.inference.api import SceneGraphPredictor, frame_pixels, load_model, resolve_window
from arn_lightning.models.arn import place_on_grid
from arn_lightning.models.cache import FeatureCache
from arn_lightning.scene_graph import FrameGraph, rank_triplets
from arn_lightning.video.decode import frame_file_name
from arn_lightning.video.files import VideoFrame

#: Name of the stream that :meth:`StreamingPredictor.push` feeds when none is given.
DEFAULT_STREAM = "stream"


@dataclass
class StreamState(FeatureCache):
    """The cache and counters of one stream (:class:`~arn_lightning.models.cache.FeatureCache` and its numbering).

    Attributes:
        window: frames of temporal context including the new one.
        cache: ``F_vi`` maps ``[h, w, D]`` of the previous ``window - 1`` frames, oldest first, each on its own
            frame's feature grid.
        frames: frames pushed so far (the next frame's index).
        started: monotonic clock of the first frame (the timestamps of frames pushed without one).
    """

    frames: int = 0
    started: float | None = None


def as_video_frame(
    frame: VideoFrame | np.ndarray | Image.Image, index: int, timestamp: float, stream: Hashable
) -> VideoFrame:
    """A pushed frame as a :class:`~arn_lightning.video.files.VideoFrame`: one already (from a source) is kept,
    an image gets the key ``"<stream>/<NNNNNN>.png"`` with its 1-based position in the stream.

    Raises:
        ValueError: an array that is not ``uint8 [H, W, 3]`` (RGB), an image with no pixel, or another type.
    """
    if isinstance(frame, VideoFrame):
        return frame
    if isinstance(frame, np.ndarray):
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(
                f"Expected an RGB frame as a uint8 array [H, W, 3] but got {frame.dtype} of shape {frame.shape}"
            )
        image = Image.fromarray(np.ascontiguousarray(frame), mode="RGB")
    elif isinstance(frame, Image.Image):
        image = frame.convert("RGB")
    else:
        raise ValueError(f"Expected a frame as a uint8 [H, W, 3] array or a PIL image but got {type(frame).__name__}")
    if image.width < 1 or image.height < 1:
        raise ValueError(f"Expected a frame with pixels but got one of size {image.width}x{image.height}")
    return VideoFrame(index, index + 1, timestamp, f"{stream}/{frame_file_name(index + 1)}", image)


class StreamPredictorBase(ABC):
    """Named streams, one frame at a time: what every streaming predictor shares (PyTorch here, ONNX in
    :mod:`arn_lightning.inference.onnx_predictor`); a subclass gives the model step, :meth:`predict_step`.

    Args:
        window: frames of temporal context including the new one (``>= 1``).
        top_k: triplets kept per frame.
        threshold: lowest triplet score kept.

    Raises:
        ValueError: a negative ``top_k`` or a window below 1.
    """

    def __init__(self, window: int, top_k: int = DEFAULT_TOP_K, threshold: float = DEFAULT_THRESHOLD) -> None:
        if window < 1:
            raise ValueError(f"Expected a window of at least 1 frame but got {window}")
        if top_k < 0:
            raise ValueError(f"Expected top_k >= 0 but got {top_k}")
        self.window = int(window)
        self.top_k = top_k
        self.threshold = threshold
        self._streams: dict[Hashable, StreamState] = {}
        self._lock = threading.Lock()

    @abstractmethod
    def predict_step(self, state: StreamState, frame: VideoFrame) -> dict[str, Any]:
        """Predict ``frame`` from it and ``state.cache`` (:attr:`StreamState.starts`: nothing cached), and
        :meth:`StreamState.remember` its ``F_vi``.

        Returns:
            The frame's per-frame prediction (``ARCHITECTURE.md`` section 4), tensors on the CPU.
        """

    @property
    def streams(self) -> list[Hashable]:
        """Names of the open streams (those pushed to and not closed)."""
        return list(self._streams)

    def frames_seen(self, stream: Hashable = DEFAULT_STREAM) -> int:
        """Frames pushed to ``stream`` so far (0 for a stream never pushed to)."""
        state = self._streams.get(stream)
        return 0 if state is None else state.frames

    def reset(self, stream: Hashable | None = None) -> None:
        """Forget the temporal context of ``stream`` (every stream when None): the next frame is predicted as the
        first frame of a video (a scene cut, a camera switched). Frame numbering goes on."""
        with self._lock:
            targets = list(self._streams.values()) if stream is None else [self._streams.get(stream)]
            for state in targets:
                if state is not None:
                    state.cache.clear()

    def close(self, stream: Hashable = DEFAULT_STREAM) -> None:
        """Forget ``stream`` entirely (cache and numbering); a later push starts it again from frame 1."""
        with self._lock:
            self._streams.pop(stream, None)

    def push(
        self,
        frame: VideoFrame | np.ndarray | Image.Image,
        timestamp: float | None = None,
        stream: Hashable = DEFAULT_STREAM,
    ) -> FrameGraph:
        """Predict the next frame of ``stream``.

        Args:
            frame: an ``uint8 [H, W, 3]`` RGB array, a PIL image (any mode, converted to RGB) or a
                :class:`~arn_lightning.video.files.VideoFrame` (a source's frame: its key, numbers and time
                are kept). Any size; consecutive frames may differ in size.
            timestamp: seconds of the frame in its stream; default the wall-clock seconds since the stream's first
                frame (ignored for a ``VideoFrame``, which has its own).
            stream: the stream's name (any hashable); frames of different streams never see each other.

        Returns:
            The frame's :class:`~arn_lightning.scene_graph.FrameGraph` (prediction tensors on the CPU). A pushed
            image's key is ``"<stream>/<NNNNNN>.png"``, ``NNNNNN`` its 1-based position in the stream.

        Raises:
            ValueError: a frame of the wrong type, dtype or shape.
        """
        with self._lock:
            state = self._streams.get(stream)
            if state is None:
                state = self._streams[stream] = StreamState(self.window)
            now = time.monotonic()
            if state.started is None:
                state.started = now
            seconds = float(timestamp) if timestamp is not None else now - state.started
            video_frame = as_video_frame(frame, state.frames, seconds, stream)
            with torch.no_grad():
                prediction = self.predict_step(state, video_frame)
            state.frames += 1
        triplets = rank_triplets(prediction, top_k=self.top_k, threshold=self.threshold)
        return FrameGraph(video_frame.index, video_frame.source_index, video_frame.timestamp, prediction, triplets)

    def follow(self, frames: Iterable[VideoFrame], stream: Hashable = DEFAULT_STREAM) -> Iterator[FrameGraph]:
        """:meth:`push` every frame of an iterable (e.g. a live source) lazily, yielding each graph as it is
        computed."""
        for frame in frames:
            yield self.push(frame, stream=stream)


class StreamingPredictor(StreamPredictorBase):
    """Scene graphs of live video streams, one frame at a time, with the PyTorch model (see the module docstring).

    Args:
        model: an ARN Lightning checkpoint (loaded with :func:`~arn_lightning.inference.api.load_model`) or a
            :class:`~arn_lightning.inference.api.SceneGraphPredictor` (its device and precision are kept).
        device: where the model runs (``"cpu"``, ``"cuda"``, ``"cuda:1"``); checkpoint only.
        precision: ``"auto"``, ``"fp32"`` or ``"bf16"`` (see ``SceneGraphPredictor``); checkpoint only.
        window: frames of temporal context including the new one, ``1..T``; default the model's ``T``.
        top_k: triplets kept per frame.
        threshold: lowest triplet score kept.

    Raises:
        CheckpointError: an unreadable checkpoint, or a model not trained for SGDet.
        ValueError: an unavailable device, an unknown precision, or a window outside ``1..T``.
    """

    def __init__(
        self,
        model: SceneGraphPredictor | PathLike,
        device: str | torch.device = "cpu",
        precision: str = "auto",
        window: int | None = None,
        top_k: int = DEFAULT_TOP_K,
        threshold: float = DEFAULT_THRESHOLD,
    ) -> None:
        if isinstance(model, SceneGraphPredictor):
            predictor = model
            window = model.clip_length if window is None else resolve_window(window, model.model.config.num_frames)
        else:
            predictor = load_model(model, device=device, precision=precision, window=window)
            window = predictor.clip_length
        super().__init__(window, top_k, threshold)
        self.predictor = predictor
        self.model = predictor.model

    @property
    def device(self) -> torch.device:
        """Where the model runs."""
        return self.predictor.device

    def predict_step(self, state: StreamState, frame: VideoFrame) -> dict[str, Any]:
        """Run :meth:`~arn_lightning.models.arn.ARN.stream_step` on one frame and update the stream's cache."""
        prepared, pixels = frame_pixels(self.predictor.transform, self.predictor.collate, frame)
        image = pixels.to(self.device)  # [1, 3, H, W], normalised, no padding (one frame)
        grid = self.model.backbone.feature_size(*image.shape[-2:])
        past, reset = self.window - 1, state.starts
        if reset:  # ignored by stream_step, which puts the new frame in their place
            past_maps = torch.zeros(past, *grid, self.model.config.hidden_dim, device=self.device)
            past_cells = torch.zeros(past, *grid, dtype=torch.bool, device=self.device)
        else:
            past_maps, past_cells = place_on_grid(list(state.cache), grid)
        with self.predictor._autocast():
            outputs, maps, _ = self.model.stream_step(
                image, past_maps, past_cells, torch.tensor(reset, device=self.device)
            )
        if past:
            state.remember(maps[-1], reset)  # the new frame's F_vi on its own grid (every cell inside it)
        [prediction] = self.predictor.postprocess.detect(outputs, [frame.key], prepared.orig_size[None])
        return {k: v.cpu() if isinstance(v, Tensor) else v for k, v in prediction.items()}


__all__ = ["DEFAULT_STREAM", "StreamPredictorBase", "StreamState", "StreamingPredictor", "as_video_frame"]
