"""Streaming scene graphs from an exported ONNX model (``arn-lightning export``), run with onnxruntime.

Example::

    from arn_lightning.inference.onnx_predictor import OnnxStreamingPredictor

    predictor = OnnxStreamingPredictor("model.onnx")      # reads model.json beside it; no checkpoint
    for image in camera_frames():                          # HxWx3 uint8 RGB arrays or PIL images, any size
        graph = predictor.push(image)
        print(graph.timestamp, [t.text() for t in graph.triplets[:3]])

The public API and the behaviour are those of :class:`~arn_lightning.inference.streaming.StreamingPredictor`
(named streams, ``reset``, ``close``, ``follow``, the cache of ``window - 1`` feature maps per stream and its reset
rule); only the model step differs: the frame is prepared with the project's
:class:`~arn_lightning.data.transforms.ClipTransform` and :class:`~arn_lightning.data.collate.ClipCollator` from the
JSON's ``transform``, the ONNX graph runs in onnxruntime, and its outputs go through the project's
:class:`~arn_lightning.postprocess.PostProcess` (the JSON's ``post``, ``triplet_categories``, ``clip_triplets``) and
:func:`~arn_lightning.scene_graph.rank_triplets`. The cached maps, each on its own frame's grid, are placed
top-left on their largest grid with :func:`~arn_lightning.models.arn.place_on_grid`; the graph crops or pads them to
the new frame's grid (:mod:`arn_lightning.inference.onnx_export`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from arn_lightning._types import PathLike
from arn_lightning.build import build_postprocess, build_vocabulary
from arn_lightning.data.collate import ClipCollator
from arn_lightning.data.transforms import ClipTransform
from arn_lightning.defaults import DEFAULT_THRESHOLD, DEFAULT_TOP_K
from arn_lightning.inference.api import frame_pixels
from arn_lightning.inference.onnx_export import (
    CACHE_INPUTS,
    HEAD_OUTPUTS,
    OPSET_RANGE,
    import_onnxruntime,
    read_settings,
)
from arn_lightning.inference.streaming import StreamPredictorBase, StreamState
from arn_lightning.models.arn import place_on_grid
from arn_lightning.models.outputs import ARNOutput
from arn_lightning.video.files import VideoFrame


class OnnxRunError(ValueError):
    """onnxruntime cannot load or run an exported model; the message names the file, its opset and onnxruntime's
    version (a ``ValueError``, so that ``arn-lightning infer`` reports it without a traceback)."""


class OnnxStreamingPredictor(StreamPredictorBase):
    """Scene graphs of live video streams from an exported ONNX model, one frame at a time (module docstring).

    Args:
        model_path: the ONNX file of ``arn-lightning export``; its settings are read from the JSON of the same
            name (``model.onnx`` -> ``model.json``).
        providers: onnxruntime execution providers, best first; default ``["CPUExecutionProvider"]``.
        top_k: triplets kept per frame.
        threshold: lowest triplet score kept.

    Raises:
        FileNotFoundError: the ONNX file or its JSON is missing.
        ValueError: a JSON of another format or format version, a negative ``top_k``, or a graph whose inputs and
            outputs are not those the JSON names (each names the file).
        ModuleNotFoundError: onnxruntime is not installed.
        OnnxRunError: onnxruntime cannot load the model (and, from :meth:`push`, cannot run it on a frame).
    """

    def __init__(
        self,
        model_path: PathLike,
        providers: Sequence[str] | None = None,
        top_k: int = DEFAULT_TOP_K,
        threshold: float = DEFAULT_THRESHOLD,
    ) -> None:
        ort = import_onnxruntime()
        self.model_path = Path(model_path)
        self.settings = read_settings(self.model_path)
        super().__init__(int(self.settings["window"]), top_k, threshold)
        self.cache = bool(self.settings["cache"])
        self.hidden_dim = int(self.settings["hidden_dim"])
        try:
            self.session = ort.InferenceSession(
                str(self.model_path), providers=list(providers) if providers else ["CPUExecutionProvider"]
            )
        except Exception as error:  # onnxruntime's errors derive from Exception only
            raise OnnxRunError(self._failure("cannot be loaded", error)) from error
        inputs = [i.name for i in self.session.get_inputs()]
        outputs = [o.name for o in self.session.get_outputs()]
        expected = (["pixel_values", *CACHE_INPUTS] if self.cache else ["pixel_values"], list(self.settings["outputs"]))
        if (inputs, outputs) != expected or not set(HEAD_OUTPUTS) <= set(outputs):
            raise ValueError(
                f"Expected {self.model_path} to take {expected[0]} and give {expected[1]} (its JSON) but it takes "
                f"{inputs} and gives {outputs}"
            )
        transform = self.settings["transform"]
        self.transform = ClipTransform(transform["resize_shorter"], transform["resize_longer"], 0.0)
        self.collate = ClipCollator(transform["mean"], transform["std"])
        vocabulary = build_vocabulary(self.settings["triplet_categories"], self.settings["clip_triplets"])
        self.postprocess = build_postprocess(self.settings["post"], vocabulary, self.settings["task"]).eval()

    def _failure(self, what: str, error: Exception) -> str:
        """The message of an onnxruntime failure: the file, its opset and exporter, onnxruntime's version and what
        would work."""
        import onnxruntime

        opset = self.settings.get("opset", "unknown")
        low, high = OPSET_RANGE
        return (
            f"Expected {self.model_path} (opset {opset}, exported with torch {self.settings.get('torch_version')}) to "
            f"run in onnxruntime {onnxruntime.__version__} but it {what}: {type(error).__name__}: {error}. Export it "
            f"again with arn-lightning export --opset {high} (opsets {low}..{high} run in onnxruntime)"
        )

    @property
    def device(self) -> torch.device:
        """Where the postprocess runs (the CPU; the session's providers decide where the graph runs)."""
        return torch.device("cpu")

    @property
    def providers(self) -> list[str]:
        """The onnxruntime execution providers of the session."""
        return list(self.session.get_providers())

    def predict_step(self, state: StreamState, frame: VideoFrame) -> dict[str, Any]:
        """Run the ONNX streaming step on one frame and update the stream's cache."""
        prepared, image = frame_pixels(self.transform, self.collate, frame)  # [1, 3, H, W], normalised, no padding
        feeds: dict[str, np.ndarray] = {"pixel_values": image.float().numpy()}
        past = self.window - 1
        reset = state.starts
        if self.cache:
            if reset:  # ignored by the graph, which puts the new frame in their place: any grid will do
                past_maps = torch.zeros(past, 1, 1, self.hidden_dim)
                past_cells = torch.zeros(past, 1, 1, dtype=torch.bool)
            else:  # each map top-left on the largest grid; the graph crops / pads to the new frame's grid
                past_maps, past_cells = place_on_grid(list(state.cache))
            feeds.update(
                past_maps=past_maps.float().numpy(), past_cells=past_cells.numpy(), reset=np.array(reset, dtype=bool)
            )
        names = [o.name for o in self.session.get_outputs()]
        try:
            results = dict(zip(names, self.session.run(None, feeds), strict=True))
        except Exception as error:  # onnxruntime's errors derive from Exception only
            raise OnnxRunError(self._failure(f"fails on frame {frame.index} ({frame.key})", error)) from error
        if self.cache:
            state.remember(torch.from_numpy(results["next_maps"][-1].copy()), reset)  # the new frame's F_vi
        outputs = ARNOutput(**{name: torch.from_numpy(results[name]) for name in HEAD_OUTPUTS})
        [prediction] = self.postprocess.detect(outputs, [frame.key], prepared.orig_size[None])
        return prediction


__all__ = ["OnnxRunError", "OnnxStreamingPredictor"]
