"""Scene graphs for any video from Python: load a checkpoint (or a model folder), predict frame by frame.

Example::

    from arn_lightning.inference.api import load_model, predict_video

    predictor = load_model("last.ckpt", device="cpu")
    graphs = predict_video("my_video.mp4", predictor, fps=2.0, top_k=10, threshold=0.1)
    for graph in graphs:
        print(f"{graph.timestamp:6.2f} s", [t.text() for t in graph.triplets[:3]])

Frames go through exactly the evaluation path of the data layer: the checkpoint's transform settings (resize to the
shorter / longer side, no flip) with :class:`~arn_lightning.data.transforms.ClipTransform`, then
:class:`~arn_lightning.data.collate.ClipCollator` (normalisation, padding, pixel mask), the model in clips of its
``T`` frames (see :mod:`arn_lightning.inference.clips` for the windowed and causal schedules), and the checkpoint's
:class:`~arn_lightning.postprocess.PostProcess`. The model runs under ``torch.no_grad`` and, on a GPU, bf16 autocast.

Only load checkpoints you trust: besides tensors, a Lightning checkpoint holds the module's hyperparameters, which are
unpickled (restricted to tensors and plain containers); a model folder's ``model.safetensors`` runs nothing on load.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from tqdm import tqdm

from arn_lightning._types import PathLike
from arn_lightning.build import load_inference_module, transform_settings
from arn_lightning.checkpoint_file import CheckpointError
from arn_lightning.data.collate import ClipCollator
from arn_lightning.data.transforms import ClipTransform
from arn_lightning.defaults import DEFAULT_FPS, DEFAULT_THRESHOLD, DEFAULT_TOP_K, PRECISIONS
from arn_lightning.inference.clips import ClipJob, batched, schedule_clips
from arn_lightning.scene_graph import FrameGraph, rank_triplets
from arn_lightning.video.files import VideoFrame, open_frames


@dataclass
class PreparedFrame:
    """A sampled frame ready for the model (built once, shared by every clip that uses it).

    Attributes:
        frame: the sampled frame (``frame.key`` names its prediction).
        image: ``uint8 [3, h, w]`` after the evaluation transform (resized, not normalised).
        orig_size: ``int64 [2]``, the frame's original ``(h, w)``: what the postprocess scales boxes by
            (:meth:`~arn_lightning.postprocess.PostProcess.detect`).
    """

    frame: VideoFrame
    image: Tensor
    orig_size: Tensor


def resolve_device(device: str | torch.device) -> torch.device:
    """``device`` as a ``torch.device``; raises ``ValueError`` for a CUDA device on a machine without one."""
    try:
        resolved = torch.device(device)
    except RuntimeError as error:
        raise ValueError(f"Expected a device such as 'cpu', 'cuda' or 'cuda:1' but got {device!r}") from error
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"Expected a CUDA device for device={device!r} but torch finds no GPU on this machine")
    return resolved


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``precision`` on ``device`` (``None``: float32, no autocast)."""
    if precision not in PRECISIONS:
        raise ValueError(f"Expected precision in {PRECISIONS} but got {precision!r}")
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


def pil_to_uint8(image: Image.Image) -> Tensor:
    """An RGB PIL image as ``uint8 [3, H, W]`` (the layout the data layer decodes frames to)."""
    return torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()


def resolve_window(window: int | None, num_frames: int, owner: str = "the model's num_frames") -> int:
    """The frames per clip of a predictor: ``window``, or the model's ``num_frames`` when None.

    Raises:
        ValueError: a window outside ``1..num_frames`` (the message names ``owner``, where ``num_frames`` comes from).
    """
    if window is None:
        return num_frames
    if not 1 <= window <= num_frames:
        raise ValueError(f"Expected a window of 1 to {num_frames} frames ({owner}) but got window={window}")
    return int(window)


def frame_pixels(transform: ClipTransform, collate: ClipCollator, frame: VideoFrame) -> tuple[PreparedFrame, Tensor]:
    """One frame ready for a streaming step: :func:`prepare_frame`, and its normalised pixels ``[1, 3, h, w]``
    (one frame: no padding; :meth:`~arn_lightning.data.collate.ClipCollator.pixels`)."""
    prepared = prepare_frame(transform, frame)
    pixel_values, _ = collate.pixels([[prepared.image]])  # [1, 1, 3, h, w]
    return prepared, pixel_values[0]


def prepare_frame(transform: ClipTransform, frame: VideoFrame) -> PreparedFrame:
    """One frame through the evaluation transform (resize, no flip), with its original size; the preprocessing of
    every predictor (PyTorch and ONNX)."""
    [image], _, _ = transform([pil_to_uint8(frame.image)], [torch.zeros(0, 4)], flip=False)
    return PreparedFrame(frame, image, torch.tensor([frame.image.height, frame.image.width]))


# ----------------------------------------------------------------------------------------------- prediction
class SceneGraphPredictor:
    """An ARN model ready for inference on frames: preprocessing, clip scheduling, model, postprocess, ranking.

    Build it with :func:`load_model` (from a checkpoint or a model folder) or directly from an ``ARNLitModule``.

    Args:
        module: the Lightning module, or the :class:`~arn_lightning.build.InferenceModule` of a checkpoint (its
            ``model``, ``postprocess`` and ``hparams.data_settings`` are used).
        device: where the model runs (``"cpu"``, ``"cuda"``, ``"cuda:1"``).
        precision: ``"auto"`` (bf16 autocast on GPU, float32 on CPU), ``"fp32"`` or ``"bf16"``.
        window: frames per clip (``1..T``); default the model's ``T`` (``num_frames``).

    Frames of one clip (or batch of clips) that differ in size are encoded each at its own size
    (:meth:`~arn_lightning.models.arn.ARN.encode_frames`), so that a frame's graph never depends on the size of the
    frames around it; frames of one size take the batched path of training, with the same values.

    Raises:
        CheckpointError: the module is not trained for SGDet (the other tasks need ground-truth boxes).
        ValueError: an unavailable device, an unknown precision, or a window outside ``1..T``.
    """

    def __init__(
        self, module: Any, device: str | torch.device = "cpu", precision: str = "auto", window: int | None = None
    ) -> None:
        task = module.model.config.task
        if task != "sgdet":
            raise CheckpointError(
                f"Expected a model trained for SGDet (it must find the boxes itself) but got one for task {task!r}"
            )
        self.window = resolve_window(window, int(module.model.config.num_frames))
        self.device = resolve_device(device)
        self.autocast_dtype = resolve_precision(precision, self.device)
        self._module = module.eval().to(self.device)
        self.model = self._module.model
        self.postprocess = self._module.postprocess
        self.settings = transform_settings(module.hparams.get("data_settings"))
        self.transform = ClipTransform(self.settings["resize_shorter"], self.settings["resize_longer"], 0.0)
        self.collate = ClipCollator(self.settings["mean"], self.settings["std"])

    @property
    def module(self) -> Any:
        """The module given: an ``ARNLitModule``, or for a predictor of :func:`load_model` the
        :class:`~arn_lightning.build.InferenceModule` (:func:`~arn_lightning.training.evaluation.evaluate_module`
        takes either)."""
        return self._module

    @property
    def clip_length(self) -> int:
        """Frames per clip: the ``window`` given, else the model's ``T``."""
        return self.window

    def prepare(self, frame: VideoFrame) -> PreparedFrame:
        """Transform one frame as evaluation does (resize, no flip), keeping its original size."""
        return prepare_frame(self.transform, frame)

    def _autocast(self) -> AbstractContextManager[Any]:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    @torch.no_grad()
    def predict_clips(self, jobs: Sequence[ClipJob[PreparedFrame]]) -> list[tuple[PreparedFrame, dict[str, Any]]]:
        """Run a batch of clips; returns the emitted frames with their predictions (CPU tensors), in order."""
        pixel_values, pixel_mask = self.collate.pixels([[p.image for p in job.frames] for job in jobs])
        pixel_values = pixel_values.to(self.device)
        sizes = [tuple(p.image.shape[-2:]) for job in jobs for p in job.frames]
        with self._autocast():
            if len(set(sizes)) == 1:
                outputs = self.model(pixel_values, pixel_mask.to(self.device))
            else:  # each frame at its own size (class docstring)
                frames = [image[:, :h, :w] for image, (h, w) in zip(pixel_values.flatten(0, 1), sizes)]
                outputs = self.model.decode(self.model.encode_frames(frames), len(jobs))
        length = len(jobs[0].frames)
        emitted = [job.frames[i] for job in jobs for i in job.emit]
        rows = [j * length + i for j, job in enumerate(jobs) for i in job.emit]  # the emitted frames, frame-major
        every = [p for job in jobs for p in job.frames]
        keys, sizes = [p.frame.key for p in every], torch.stack([p.orig_size for p in every])  # [BT], [BT, 2]
        predictions = self.postprocess.detect(outputs, keys, sizes, rows)
        cpu = [{k: v.cpu() if isinstance(v, Tensor) else v for k, v in p.items()} for p in predictions]
        return list(zip(emitted, cpu))

    def stream(
        self,
        frames: Iterable[VideoFrame],
        causal: bool = False,
        batch_size: int = 1,
        top_k: int = DEFAULT_TOP_K,
        threshold: float = DEFAULT_THRESHOLD,
    ) -> Iterator[tuple[VideoFrame, FrameGraph]]:
        """Predict a stream of sampled frames lazily, yielding ``(frame, graph)`` in frame order.

        Args:
            frames: sampled frames in time order (e.g. :func:`~arn_lightning.video.files.open_frames`).
            causal: each frame is the last of its clip (see :mod:`arn_lightning.inference.clips`).
            batch_size: clips per forward pass.
            top_k: triplets kept per frame.
            threshold: lowest triplet score kept.
        """
        jobs = schedule_clips((self.prepare(frame) for frame in frames), self.clip_length, causal)
        for group in batched(jobs, batch_size):
            for prepared, prediction in self.predict_clips(group):
                frame = prepared.frame
                triplets = rank_triplets(prediction, top_k=top_k, threshold=threshold)
                yield frame, FrameGraph(frame.index, frame.source_index, frame.timestamp, prediction, triplets)


def load_model(
    checkpoint: PathLike, device: str | torch.device = "cpu", precision: str = "auto", window: int | None = None
) -> SceneGraphPredictor:
    """A :class:`SceneGraphPredictor` from an ARN Lightning checkpoint, a model folder of ``arn-lightning export
    --format safetensors`` or a Hub model ``hf://owner/name`` (:func:`~arn_lightning.build.load_inference_module`).

    Raises:
        CheckpointError: the checkpoint or folder is missing, unreadable, of another model or an older format, or
            not SGDet.
        ValueError: an unavailable device, an unknown precision or a window outside ``1..T``.
    """
    device = resolve_device(device)
    resolve_precision(precision, device)
    try:
        return SceneGraphPredictor(load_inference_module(checkpoint), device=device, precision=precision, window=window)
    except CheckpointError as error:
        if str(checkpoint) in str(error):
            raise
        raise CheckpointError(f"{checkpoint}: {error}") from error


def predict_video(
    path: PathLike,
    model: SceneGraphPredictor | PathLike,
    fps: float = DEFAULT_FPS,
    causal: bool = False,
    batch_size: int = 1,
    top_k: int = DEFAULT_TOP_K,
    threshold: float = DEFAULT_THRESHOLD,
    progress: bool = False,
) -> list[FrameGraph]:
    """Scene graphs of every sampled frame of a video file or image folder.

    Args:
        path: video file or folder of images (see :func:`~arn_lightning.video.files.open_frames`).
        model: a predictor, or a checkpoint path (loaded on the CPU).
        fps: sampling rate of a video; the frame rate of a folder's images.
        causal: each frame is predicted from itself and the previous frames only.
        batch_size: clips per forward pass.
        top_k: triplets kept per frame.
        threshold: lowest triplet score kept.
        progress: show a progress bar.

    Returns:
        One graph per sampled frame; ``graph.frame`` is ``"<video>/<NNNNNN>.png"`` with the 1-based frame number in
        decode order (the Action Genome numbering, ``docs/frames.md``) and ``graph.source_index`` that number, or
        ``"<folder>/<file name>"`` for a folder.

    Raises:
        VideoError: the input cannot be read, or holds no frame.
        CheckpointError: see :func:`load_model`.
    """
    source = open_frames(path, fps)
    predictor = model if isinstance(model, SceneGraphPredictor) else load_model(model)
    stream = predictor.stream(source, causal=causal, batch_size=batch_size, top_k=top_k, threshold=threshold)
    return [graph for _, graph in tqdm(stream, total=source.estimated_count, unit="frame", disable=not progress)]
