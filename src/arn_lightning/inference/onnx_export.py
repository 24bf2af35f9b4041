"""The streaming step of an ARN checkpoint as an ONNX model (``arn-lightning export --format onnx``).

:func:`export_onnx` writes ``model.onnx`` and its sidecar ``model.json``. The ONNX graph is one frame of
:meth:`~arn_lightning.models.arn.ARN.stream_step` (what :class:`~arn_lightning.inference.streaming.StreamingPredictor`
runs per pushed frame) with plain tensors in and out:

=====================  ========================  ==============================================================
name                   shape / dtype             meaning
=====================  ========================  ==============================================================
``pixel_values``       ``[1, 3, H, W]`` float32  the new frame, resized and normalised (``ClipTransform`` +
                                                 ``ClipCollator`` with the JSON's ``transform``), unpadded
``past_maps``          ``[W-1, h', w', D]`` f32  encoder features ``F_vi`` of the previous frames, oldest first,
                                                 each at the top-left of a common grid ``h' x w'`` (any size)
``past_cells``         ``[W-1, h', w']`` bool    True inside each previous frame's own map
``reset``              ``[]`` bool               True for a stream's first frame (the cache is then ignored and
                                                 the new frame stands for the frames before it)
``obj_logits``         ``[1, Q, 37]``            object-class logits (36 AG classes + "no object")
``sub_boxes``          ``[1, Q, 4]``             subject boxes, normalised cxcywh
``obj_boxes``          ``[1, Q, 4]``             object boxes, normalised cxcywh
``attention_logits``   ``[1, Q, K_A]``           triplet logits of the attention branch
``spatial_logits``     ``[1, Q, K_S]``           likewise, spatial
``contacting_logits``  ``[1, Q, K_C]``           likewise, contacting
``next_maps``          ``[W-1, h, w, D]``        the cache for the next frame on this frame's grid; its last row is
                                                 this frame's own map (all cells inside)
``next_cells``         ``[W-1, h, w]`` bool      the cells of ``next_maps``
=====================  ========================  ==============================================================

``H`` and ``W`` are dynamic; ``(h, w)`` is the frame's feature grid (``H`` and ``W`` divided by the backbone
stride, rounded up). Without a cache (``window`` 1, or a model with ``temporal_layers: 0``, whose outputs never
depend on earlier frames) the graph has only ``pixel_values`` in and the six head outputs out: no ``past_*``,
``reset`` or ``next_*``.

**Dynamic image size and the cache grid.** ``stream_step`` takes the cache on the new frame's grid, and that grid
is ``ceil(H / stride)``: a relation ``torch.export`` cannot state between input dims (derived ``Dim``\\ s are
linear, ``a * dim + b``). The exported graph therefore takes the cache on a grid of its own, with independent
dynamic dims ``past_height`` / ``past_width``, and crops or zero-pads it to the new frame's grid inside the graph
(a concatenation with zeros followed by a slice, which needs no ``min`` / ``max`` of symbolic sizes). The grid is
written as the trunk's own arithmetic, ``(n - 1) // 2 + 1`` once per stride-2 stage, so that the tracer sees the
same expression as the backbone's output shape (``Backbone.feature_size``'s ``-(-n // 2)``, equal on integers, is
not proven equal by the symbolic solver, and the export then fails or guards on the example size). Cropping and
padding a frame's map placed top-left is exactly what :func:`~arn_lightning.models.arn.place_on_grid` does, so the
runner places the cached maps with ``place_on_grid`` on the largest of their grids and the values equal
``StreamingPredictor``'s. No constraint ties the inputs to each other; the runner passes any frame size.

**What the model code does for the exporter** (same values in eager PyTorch):

- the temporal encoder skips its attention mask when no token is padding (``bool(padding.any())``), a
  data-dependent branch that ``torch.export`` refuses (``GuardOnDataDependentSymNode``); under
  ``torch.compiler.is_exporting()`` it always builds the mask (an all-False mask gives the same attention as none);
- ``ARN.stream_step`` resets the cached cells with boolean logic rather than ``torch.where``: a bool ONNX ``Where``
  has no onnxruntime CPU kernel (``NOT_IMPLEMENTED: Could not find an implementation for Where(16)``).

**Not exported:** the Hungarian matcher and the criterion (training only), the CLIP text and image towers (training
only; their embeddings are already in the classifier weights), the postprocess and the ranking of triplets: the
runner (:class:`~arn_lightning.inference.onnx_predictor.OnnxStreamingPredictor`) does them in Python with the
project's :class:`~arn_lightning.postprocess.PostProcess` and
:func:`~arn_lightning.scene_graph.rank_triplets`, built from the JSON (``post``, ``triplet_categories``,
``clip_triplets``, ``task``), as it does the preprocessing (``transform``). The JSON is the only settings file the
runner reads; the checkpoint is not needed.

The model is exported in float32 from the CPU. Both files are written atomically (a temporary file renamed into
place); an existing file is replaced only with ``overwrite``. Before the model is renamed into place it is loaded in
onnxruntime and a frame is run through it (:func:`check_in_onnxruntime`): a graph that passes ``onnx.checker`` but
that onnxruntime cannot run (the opset-23 ``Attention`` node) is never reported as written. Opsets outside
:data:`OPSET_RANGE` are refused before anything is exported.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from arn_lightning._types import PathLike
from arn_lightning.atomic import atomic_write_json, commit, temporary_path
from arn_lightning.build import load_inference_module, source_identity, transform_settings
from arn_lightning.checkpoint_file import CheckpointError
from arn_lightning.inference.api import resolve_window
from arn_lightning.models.arn import ARN
from arn_lightning.models.outputs import BRANCHES

#: ``format`` of the sidecar JSON.
FORMAT = "arn-lightning-onnx-streaming"
#: ``format_version`` of the sidecar JSON; a runner refuses any other.
FORMAT_VERSION = 1
#: Names of the graph's inputs with a cache (without one: the first only).
CACHE_INPUTS = ("past_maps", "past_cells", "reset")
#: Names of the head outputs (every graph has them).
HEAD_OUTPUTS = ("obj_logits", "sub_boxes", "obj_boxes", *(f"{kind}_logits" for kind in BRANCHES))
#: Names of the cache outputs (graphs with a cache only).
CACHE_OUTPUTS = ("next_maps", "next_cells")
#: Range of the dynamic image dims (pixels) and of the dynamic cache grid dims (cells) given to ``torch.export``.
IMAGE_DIM_RANGE = (2, 16384)
GRID_DIM_RANGE = (1, 4096)
#: Opsets of the default domain (lowest, highest) that an export may use: torch's dynamo exporter needs 18 or more,
#: and from 23 on it writes the opset-23 ``Attention`` node, which passes ``onnx.checker`` but fails on every frame in
#: onnxruntime's CPU provider. Measured with torch 2.14 and onnxruntime 1.32 by exporting the streaming step at each
#: opset and running frames through it; every export is checked in onnxruntime anyway.
OPSET_RANGE = (18, 22)
#: Largest difference allowed between onnxruntime's and PyTorch's head outputs on the check frame (float32).
CHECK_TOLERANCE = 1e-3
#: Hint printed when the ONNX packages are missing.
INSTALL_HINT = "pip install 'arn-lightning[onnx]'"


class ExportArgumentError(ValueError):
    """An export setting the checkpoint cannot take (a window outside ``1..T``, an unsupported opset, an output
    path that would collide with its own sidecar)."""


@dataclass(frozen=True)
class ExportReport:
    """What :func:`export_onnx` wrote.

    Attributes:
        model_path: the ONNX file.
        settings_path: the sidecar JSON.
        model_bytes: size of the ONNX file in bytes.
        settings_bytes: size of the JSON in bytes.
        input_names: the graph's inputs, in order.
        output_names: the graph's outputs, in order.
        window: frames of temporal context (the cache holds ``window - 1``).
        cache: whether the graph has the cache inputs and outputs.
        opset: the ONNX opset of the default domain.
        seconds: wall-clock time of the export, seconds.
    """

    model_path: Path
    settings_path: Path
    model_bytes: int
    settings_bytes: int
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    window: int
    cache: bool
    opset: int
    seconds: float


def import_onnxruntime() -> Any:
    """The ``onnxruntime`` package.

    Raises:
        ModuleNotFoundError: it is not installed (the message names the extra that installs it).
    """
    try:
        import onnxruntime
    except ModuleNotFoundError as error:
        raise ModuleNotFoundError(f"Running an exported ONNX model needs onnxruntime: {INSTALL_HINT}") from error
    return onnxruntime


def settings_path_for(model_path: PathLike) -> Path:
    """The sidecar JSON of an ONNX file: ``model.onnx`` -> ``model.json`` (same folder)."""
    return Path(model_path).with_suffix(".json")


def import_onnx() -> Any:
    """The ``onnx`` package.

    Raises:
        ModuleNotFoundError: it is not installed (the message names the extra that installs it).
    """
    try:
        import onnx
    except ModuleNotFoundError as error:
        raise ModuleNotFoundError(f"Exporting to ONNX needs the onnx package: {INSTALL_HINT}") from error
    try:
        import onnxscript  # noqa: F401 - torch's dynamo exporter needs it
    except ModuleNotFoundError as error:
        raise ModuleNotFoundError(f"Exporting to ONNX needs the onnxscript package: {INSTALL_HINT}") from error
    return onnx


def trunk_grid(size: Any, stride: int) -> Any:
    """Cells along one side of the feature map of ``size`` pixels, as the trunk computes it: ``(n - 1) // 2 + 1``
    per stride-2 stage (``ceil(size / stride)``; works on ``torch.SymInt`` as on ``int``)."""
    for _ in range(stride.bit_length() - 1):
        size = (size - 1) // 2 + 1
    return size


def fit_to_grid(past: Tensor, height: Any, width: Any) -> Tensor:
    """Crop or zero-pad ``past`` ``[N, h', w', ...]`` (maps placed top-left) to ``[N, height, width, ...]``.

    Concatenating ``height`` zero rows and keeping the first ``height`` rows crops a larger map and pads a smaller
    one alike (and likewise for the columns): no comparison of symbolic sizes, which the exporter cannot branch on.
    """
    n, tail = past.shape[0], past.shape[3:]
    past = torch.cat((past, past.new_zeros(n, height, past.shape[2], *tail)), dim=1)[:, :height]
    return torch.cat((past, past.new_zeros(n, height, width, *tail)), dim=2)[:, :, :width]


class StreamStepGraph(nn.Module):
    """:meth:`~arn_lightning.models.arn.ARN.stream_step` with plain tensors in and out (the exported graph).

    Args:
        model: an SGDet :class:`~arn_lightning.models.arn.ARN` in eval mode.
        window: frames of temporal context including the new one (``1..T``).

    With a cache (``window > 1`` and a temporal encoder) :meth:`forward` takes ``(pixel_values, past_maps,
    past_cells, reset)`` and returns the six head outputs then ``(next_maps, next_cells)``; without one it takes
    ``pixel_values`` alone and returns the six head outputs (module docstring for the shapes).
    """

    def __init__(self, model: ARN, window: int) -> None:
        super().__init__()
        self.model = model
        self.window = window
        self.cache = window > 1 and model.temporal is not None

    @property
    def input_names(self) -> tuple[str, ...]:
        """The graph's inputs, in order."""
        return ("pixel_values", *CACHE_INPUTS) if self.cache else ("pixel_values",)

    @property
    def output_names(self) -> tuple[str, ...]:
        """The graph's outputs, in order."""
        return (*HEAD_OUTPUTS, *CACHE_OUTPUTS) if self.cache else HEAD_OUTPUTS

    def forward(
        self,
        pixel_values: Tensor,
        past_maps: Tensor | None = None,
        past_cells: Tensor | None = None,
        reset: Tensor | None = None,
    ) -> tuple[Tensor, ...]:
        stride = self.model.backbone.stride
        height, width = trunk_grid(pixel_values.shape[-2], stride), trunk_grid(pixel_values.shape[-1], stride)
        if self.cache:
            assert past_maps is not None and past_cells is not None and reset is not None
            past_maps, past_cells = fit_to_grid(past_maps, height, width), fit_to_grid(past_cells, height, width)
        else:  # no cache: stream_step's window of one frame (its outputs never read the cache)
            past_maps = pixel_values.new_zeros(0, height, width, self.model.config.hidden_dim)
            past_cells = torch.zeros(0, height, width, dtype=torch.bool, device=pixel_values.device)
            reset = torch.ones((), dtype=torch.bool, device=pixel_values.device)
        outputs, maps, cells = self.model.stream_step(pixel_values, past_maps, past_cells, reset)
        heads = tuple(getattr(outputs, name) for name in HEAD_OUTPUTS)
        return (*heads, maps, cells) if self.cache else heads


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporter's progress lines (stdout), its warnings and the optimiser's log messages."""
    loggers = [logging.getLogger(name) for name in ("onnxscript", "torch.onnx", "onnx_ir")]
    levels = [logger.level for logger in loggers]
    try:
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _example_inputs(graph: StreamStepGraph) -> tuple[tuple[Tensor, ...], dict[str, Any]]:
    """Example inputs and their dynamic shapes. The example image sides are not multiples of the stride and the
    cache grid differs from the image's, so that the tracer specialises on neither."""
    from torch.export import Dim

    config = graph.model.config
    stride = graph.model.backbone.stride
    size = (3 * stride + 5, 4 * stride + 3)
    image = torch.randn(1, 3, *size)
    height = Dim("height", min=IMAGE_DIM_RANGE[0], max=IMAGE_DIM_RANGE[1])
    width = Dim("width", min=IMAGE_DIM_RANGE[0], max=IMAGE_DIM_RANGE[1])
    if not graph.cache:
        return (image,), {"pixel_values": {2: height, 3: width}}
    past = graph.window - 1
    grid = (trunk_grid(size[0], stride) + 2, trunk_grid(size[1], stride) + 1)
    past_height = Dim("past_height", min=GRID_DIM_RANGE[0], max=GRID_DIM_RANGE[1])
    past_width = Dim("past_width", min=GRID_DIM_RANGE[0], max=GRID_DIM_RANGE[1])
    inputs = (
        image,
        torch.randn(past, *grid, config.hidden_dim),
        torch.ones(past, *grid, dtype=torch.bool),
        torch.tensor(False),
    )
    shapes = {
        "pixel_values": {2: height, 3: width},
        "past_maps": {1: past_height, 2: past_width},
        "past_cells": {1: past_height, 2: past_width},
        "reset": None,
    }
    return inputs, shapes


def _jsonable_categories(categories: Any) -> dict[str, list[list[int]]] | None:
    if categories is None:
        return None
    return {str(kind): [[int(v) for v in pair] for pair in pairs] for kind, pairs in dict(categories).items()}


def _settings(module: Any, graph: StreamStepGraph, opset: int, source: dict[str, str]) -> dict[str, Any]:
    """The sidecar JSON's contents."""
    config = module.model.config
    transform = transform_settings(module.hparams.get("data_settings"))
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "window": graph.window,
        "cache": graph.cache,
        "task": config.task,
        "hidden_dim": int(config.hidden_dim),
        "num_queries": int(config.num_queries),
        "backbone_stride": int(module.model.backbone.stride),
        "transform": {
            "resize_shorter": int(transform["resize_shorter"]),
            "resize_longer": int(transform["resize_longer"]),
            "mean": [float(v) for v in transform["mean"]],
            "std": [float(v) for v in transform["std"]],
        },
        "triplet_categories": _jsonable_categories(module.hparams.get("triplet_categories")),
        "clip_triplets": bool(config.clip_triplets),
        "post": asdict(module.post_config),
        "inputs": list(graph.input_names),
        "outputs": list(graph.output_names),
        "checkpoint": source,
        "opset": opset,
        "torch_version": torch.__version__,
    }


def export_onnx(
    checkpoint: PathLike,
    out: PathLike,
    window: int | None = None,
    opset: int | None = None,
    overwrite: bool = False,
) -> ExportReport:
    """Export the streaming step of an SGDet checkpoint to ONNX, with its settings beside it.

    Args:
        checkpoint: an ARN Lightning checkpoint (only trusted files: see :mod:`arn_lightning.inference.api`), a
            model folder of ``arn-lightning export --format safetensors`` or ``hf://owner/name``.
        out: the ONNX file to write (e.g. ``model.onnx``); the settings go to the same name with ``.json``.
        window: frames of temporal context including the new one, ``1..T``; default the model's ``T``.
        opset: ONNX opset of the default domain; default torch's.
        overwrite: replace existing files (otherwise they are refused).

    Returns:
        The :class:`ExportReport` of the two files.

    Raises:
        CheckpointError: an unreadable checkpoint or one of another model, or a model not trained for SGDet.
        ExportArgumentError: a window outside ``1..T``, an opset outside :data:`OPSET_RANGE`, or an ``out`` ending
            in ``.json``.
        FileExistsError: ``out`` or its JSON exists and ``overwrite`` is False.
        ModuleNotFoundError: ``onnx``, ``onnxscript`` or ``onnxruntime`` is not installed.
        RuntimeError: the exporter failed, ``onnx.checker`` rejects the result, or the model does not run in
            onnxruntime as in PyTorch (:func:`check_in_onnxruntime`); nothing is written then.
    """
    onnx = import_onnx()
    started = time.perf_counter()
    checkpoint, out = Path(checkpoint), Path(out)
    settings_path = settings_path_for(out)
    if settings_path == out:
        raise ExportArgumentError(f"Expected an ONNX file name such as model.onnx but got {out} (its settings file)")
    if opset is not None and not OPSET_RANGE[0] <= opset <= OPSET_RANGE[1]:
        raise ExportArgumentError(
            f"Expected an opset in {OPSET_RANGE[0]}..{OPSET_RANGE[1]} (18: torch's dynamo exporter; above "
            f"{OPSET_RANGE[1]}: onnxruntime fails on the opset-23 Attention node) but got {opset}"
        )
    if not overwrite:
        for path in (out, settings_path):
            if path.exists():
                raise FileExistsError(f"Expected no file at {path} but one exists (pass --overwrite to replace it)")
    module = load_inference_module(checkpoint)
    model = module.model
    config = model.config
    if config.task != "sgdet":
        raise CheckpointError(
            f"Expected a model trained for SGDet in {checkpoint} (streaming finds the boxes itself) but got one "
            f"for task {config.task!r}"
        )
    try:
        window = resolve_window(window, int(config.num_frames), f"the num_frames of {checkpoint}")
    except ValueError as error:
        raise ExportArgumentError(str(error)) from None
    graph = StreamStepGraph(model.float().eval(), window).eval()
    inputs, shapes = _example_inputs(graph)
    kwargs: dict[str, Any] = {} if opset is None else {"opset_version": opset}
    try:
        with torch.no_grad(), _quiet():
            program = torch.onnx.export(
                graph,
                inputs,
                dynamic_shapes=shapes,
                dynamo=True,
                input_names=list(graph.input_names),
                output_names=list(graph.output_names),
                verbose=False,
                **kwargs,
            )
    except Exception as error:  # the exporter raises its own error classes
        raise RuntimeError(f"torch.onnx.export failed on {checkpoint}: {error}") from error
    proto = program.model_proto
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as error:
        raise RuntimeError(
            f"Expected a valid ONNX model from {checkpoint} but onnx.checker refuses it: {error}"
        ) from error
    used_opset = next(int(o.version) for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    settings = _settings(module, graph, used_opset, source_identity(checkpoint))
    tmp = temporary_path(out)  # checked in onnxruntime under its temporary name, renamed only once it runs
    try:
        onnx.save_model(proto, str(tmp))
        check_in_onnxruntime(tmp, graph, inputs, f"{out} (opset {used_opset})")
        commit(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    atomic_write_json(settings_path, settings)
    return ExportReport(
        model_path=out,
        settings_path=settings_path,
        model_bytes=out.stat().st_size,
        settings_bytes=settings_path.stat().st_size,
        input_names=graph.input_names,
        output_names=graph.output_names,
        window=window,
        cache=graph.cache,
        opset=used_opset,
        seconds=time.perf_counter() - started,
    )


def check_in_onnxruntime(path: PathLike, graph: StreamStepGraph, inputs: tuple[Tensor, ...], name: str) -> None:
    """Run the example frame ``inputs`` (an image of the export's example size, with a cache when the graph has
    one) through an onnxruntime CPU session of ``path`` and compare its head outputs with PyTorch's.

    Raises:
        ModuleNotFoundError: onnxruntime is not installed.
        RuntimeError: onnxruntime cannot load or run the model, or its outputs differ from PyTorch's by more than
            :data:`CHECK_TOLERANCE` or in shape (the message names ``name`` and onnxruntime's version).
    """

    ort = import_onnxruntime()
    where = f"Expected {name} to run in onnxruntime {ort.__version__}"
    feeds = {key: value.numpy() for key, value in zip(graph.input_names, inputs, strict=True)}
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        results = session.run(list(HEAD_OUTPUTS), feeds)
    except Exception as error:  # onnxruntime's errors derive from Exception only
        raise RuntimeError(
            f"{where} but it fails on a frame ({type(error).__name__}: {error}); nothing was written. Export with "
            f"an opset in {OPSET_RANGE[0]}..{OPSET_RANGE[1]}"
        ) from error
    with torch.no_grad():
        expected = graph(*inputs)[: len(HEAD_OUTPUTS)]
    for output, got, want in zip(HEAD_OUTPUTS, results, expected, strict=True):
        want = want.numpy()
        gap = float(abs(got - want).max()) if got.shape == want.shape and got.size else 0.0
        if got.shape != want.shape or not gap <= CHECK_TOLERANCE:
            raise RuntimeError(
                f"{where} as in PyTorch but its {output} differs on the check frame (shape {got.shape} vs "
                f"{want.shape}, largest difference {gap:.3g} > {CHECK_TOLERANCE:g}); nothing was written"
            )


def read_settings(model_path: PathLike) -> dict[str, Any]:
    """The sidecar JSON of an exported model, checked.

    Raises:
        FileNotFoundError: the ONNX file or its JSON is missing (the message names it).
        ValueError: the JSON is unreadable, of another format or format version, or lacks a setting.
    """
    model_path = Path(model_path)
    path = settings_path_for(model_path)
    if not model_path.is_file():
        raise FileNotFoundError(f"Expected an ONNX model at {model_path} but there is no such file")
    if not path.is_file():
        raise FileNotFoundError(
            f"Expected the settings of {model_path} in {path} (written by arn-lightning export) but there is no such "
            "file"
        )
    try:
        settings = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(
            f"Expected the JSON settings of {model_path} in {path} but it cannot be read: {error}"
        ) from error
    if not isinstance(settings, Mapping) or settings.get("format") != FORMAT:
        got = settings.get("format") if isinstance(settings, Mapping) else type(settings).__name__
        raise ValueError(f"Expected {path} to be settings of format {FORMAT!r} but got {got!r}")
    if settings.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"Expected {path} of format version {FORMAT_VERSION} but got {settings.get('format_version')!r} "
            "(export the model again with this version of arn-lightning)"
        )
    required = ("window", "cache", "task", "hidden_dim", "transform", "triplet_categories", "clip_triplets", "post")
    missing = [key for key in required if key not in settings]
    if missing:
        raise ValueError(f"Expected {path} to hold {list(required)} but {missing} are missing")
    return dict(settings)


__all__ = [
    "CACHE_INPUTS",
    "CACHE_OUTPUTS",
    "FORMAT",
    "FORMAT_VERSION",
    "HEAD_OUTPUTS",
    "OPSET_RANGE",
    "ExportArgumentError",
    "ExportReport",
    "StreamStepGraph",
    "check_in_onnxruntime",
    "export_onnx",
    "read_settings",
    "settings_path_for",
]
