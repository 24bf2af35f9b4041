"""Where the entity queries look: cross-attention maps of the entity decoder's last layer.

The model computes its attention without weights (``need_weights=False``: ``scaled_dot_product_attention``).
:class:`EntityAttention` hooks three places for the duration of a ``with`` block, without touching the model's code:
a forward pre-hook on the last entity-decoder layer's cross-attention (an ``nn.MultiheadAttention``,
:class:`~arn_lightning.models.transformer.Attention`) asks for its weights averaged over the heads (which runs that
one attention with torch's explicit math, equal to SDPA within ``SDPA_TOLERANCE``), a forward hook records them
(``[BT, 2Q, hw]``: the Q subject queries, then the Q object queries, over the ``hw`` feature cells), a hook on
the backbone records the feature-cell mask (``[BT, h, w]``, True on real cells), and a hook on the model records
its raw outputs (to know which query became which predicted pair).

A prediction's pairs are sorted by score, so pair n is not query n: :func:`pair_queries` finds each pair's query
as the one whose subject and object boxes, scaled the way the postprocess scales them, are closest to the pair's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image
from torch import Tensor, nn

from arn_lightning.drawing.annotate import draw_boxes
from arn_lightning.inference.api import SceneGraphPredictor
from arn_lightning.inference.clips import schedule_clips
from arn_lightning.models.outputs import ARNOutput
from arn_lightning.postprocess import scale_boxes
from arn_lightning.scene_graph import FrameGraph, rank_triplets
from arn_lightning.video.files import VideoFrame

#: Colour map and opacity of the attention overlay.
OVERLAY_CMAP = "inferno"
OVERLAY_ALPHA = 0.6
#: Size of one panel of :func:`attention_figure`, inches.
PANEL_IN = 4.0


class EntityAttention:
    """Records the entity decoder's last cross-attention while active (see the module docstring).

    Args:
        model: the ARN model (``predictor.model``).

    Attributes:
        weights: ``[BT, 2Q, hw]`` head-averaged attention of the last forward pass.
        mask: ``[BT, h, w]`` True on feature cells of real pixels.
        outputs: the model's raw outputs of the last forward pass.
    """

    def __init__(self, model: nn.Module) -> None:
        decoder = getattr(getattr(model, "entity", None), "decoder", None)
        if decoder is None or not len(decoder.layers):
            raise ValueError("Expected an ARN model with an entity decoder (SGDet) but found none to hook")
        self.model = model
        self.attention: nn.MultiheadAttention = decoder.layers[-1].multihead_attn
        self.weights: Tensor | None = None
        self.mask: Tensor | None = None
        self.outputs: ARNOutput | None = None
        self._handles: list[Any] = []

    def _ask_weights(self, module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> tuple[tuple, dict[str, Any]]:
        return args, {**kwargs, "need_weights": True, "average_attn_weights": True}

    def _keep_weights(self, module: nn.Module, args: tuple, output: tuple[Tensor, Tensor]) -> None:
        self.weights = output[1].detach().float()  # [BT, 2Q, hw]

    def _keep_mask(self, module: nn.Module, args: tuple, output: tuple[Tensor, Tensor]) -> None:
        self.mask = output[1].detach()  # [BT, h, w]

    def _keep_outputs(self, module: nn.Module, args: tuple, output: ARNOutput) -> None:
        self.outputs = output

    def __enter__(self) -> EntityAttention:
        self._handles = [
            self.attention.register_forward_pre_hook(self._ask_weights, with_kwargs=True),
            self.attention.register_forward_hook(self._keep_weights),
            self.model.backbone.register_forward_hook(self._keep_mask),
            self.model.register_forward_hook(self._keep_outputs),
        ]
        return self

    def __exit__(self, *exc_info: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


def pair_queries(
    outputs: ARNOutput, frame_index: int, prediction: dict[str, Any], orig_size: Tensor, clip_boxes: bool = True
) -> Tensor:
    """The query index ``[P]`` of each pair of a frame's (SGDet) prediction (see the module docstring).

    Args:
        outputs: raw outputs of the batch the prediction came from.
        frame_index: the frame's index ``b*T + t`` in the batch.
        prediction: its prediction (pairs index the box rows).
        orig_size: ``(h, w)`` of the original frame.
        clip_boxes: whether the postprocess clipped boxes to the frame.
    """
    sub = scale_boxes(outputs.sub_boxes[frame_index].float(), orig_size, clip_boxes).cpu()  # [Q, 4] xyxy px
    obj = scale_boxes(outputs.obj_boxes[frame_index].float(), orig_size, clip_boxes).cpu()  # [Q, 4]
    boxes, pairs = prediction["boxes"].float(), prediction["pairs"]
    distance = torch.cdist(boxes[pairs[:, 0]], sub, p=1) + torch.cdist(boxes[pairs[:, 1]], obj, p=1)  # [P, Q]
    return distance.argmin(dim=1)


@dataclass
class FrameAttention:
    """The entity attention of one frame.

    Attributes:
        frame: the sampled frame.
        graph: its scene graph.
        maps: ``[2Q, h, w]`` attention of each query over the real feature cells (subject queries first).
        queries: ``[P]`` the query of each prediction pair.
    """

    frame: VideoFrame
    graph: FrameGraph
    maps: Tensor
    queries: Tensor

    def pair_maps(self, pair: int) -> tuple[Tensor, Tensor]:
        """``(subject map, object map)`` ``[h, w]`` of prediction pair ``pair``."""
        query, num_queries = int(self.queries[pair]), self.maps.shape[0] // 2
        return self.maps[query], self.maps[num_queries + query]

    def top_pair(self) -> int:
        """The pair of the frame's best triplet (pair 0 if the frame has no triplet)."""
        if not self.graph.triplets:
            return 0
        best = self.graph.triplets[0]
        rows = {best.subject_row, best.object_row}
        pairs = self.graph.prediction["pairs"].tolist()
        return next(i for i, pair in enumerate(pairs) if set(pair) == rows)


def _crop(weights: Tensor, mask: Tensor) -> Tensor:
    """``[2Q, hw]`` weights of one frame as ``[2Q, h', w']`` maps over the real cells ``mask [h, w]``."""
    h, w = mask.shape
    maps = weights.reshape(-1, h, w)  # [2Q, h, w]
    rows, cols = int(mask.any(dim=1).sum()), int(mask.any(dim=0).sum())
    return maps[:, :rows, :cols].cpu()


def entity_attention(
    predictor: SceneGraphPredictor, frames: Sequence[VideoFrame], top_k: int = 10, threshold: float = 0.0
) -> list[FrameAttention]:
    """Entity attention maps and scene graphs of ``frames`` (windowed clips, one clip per forward pass).

    Args:
        predictor: the model.
        frames: consecutive sampled frames.
        top_k: triplets kept per frame.
        threshold: lowest triplet score kept.
    """
    results = []
    clip_boxes = predictor.postprocess.config.clip_boxes
    for job in schedule_clips([predictor.prepare(f) for f in frames], predictor.clip_length):
        with EntityAttention(predictor.model) as recorder:
            predicted = predictor.predict_clips([job])
        for i, (prepared, prediction) in zip(job.emit, predicted):
            assert recorder.weights is not None and recorder.mask is not None and recorder.outputs is not None
            queries = pair_queries(recorder.outputs, i, prediction, prepared.orig_size, clip_boxes)
            graph = FrameGraph(
                prepared.frame.index,
                prepared.frame.source_index,
                prepared.frame.timestamp,
                prediction,
                rank_triplets(prediction, top_k, threshold),
            )
            results.append(FrameAttention(prepared.frame, graph, _crop(recorder.weights[i], recorder.mask[i]), queries))
    return results


def overlay_attention(image: Image.Image, attention: Tensor, alpha: float = OVERLAY_ALPHA) -> Image.Image:
    """``image`` with an attention map ``[h, w]`` (any scale) blended on top as a heat map."""
    heat = attention.float()
    heat = (heat - heat.min()) / (heat.max() - heat.min()).clamp(min=1e-12)
    colored = colormaps[OVERLAY_CMAP](heat.numpy())[..., :3]  # [h, w, 3] in [0, 1]
    layer = Image.fromarray((colored * 255).astype(np.uint8)).resize(image.size, Image.Resampling.BILINEAR)
    return Image.blend(image.convert("RGB"), layer, alpha)


def attention_figure(item: FrameAttention, pair: int | None = None) -> Figure:
    """Three panels: the frame with the pair's boxes, and where its subject and its object query look."""
    pair = item.top_pair() if pair is None else pair
    subject_map, object_map = item.pair_maps(pair)
    sub_row, obj_row = item.graph.prediction["pairs"][pair].tolist()
    shown = [t for t in item.graph.triplets if {t.subject_row, t.object_row} == {sub_row, obj_row}]
    boxes = draw_boxes(item.frame.image, dataclasses.replace(item.graph, triplets=shown))
    panels = [
        (boxes, f"pair {pair}: " + (shown[0].text() if shown else "no triplet above the threshold")),
        (overlay_attention(item.frame.image, subject_map), "subject query attention"),
        (overlay_attention(item.frame.image, object_map), "object query attention"),
    ]
    figure = Figure(figsize=(PANEL_IN * len(panels), PANEL_IN * item.frame.image.height / item.frame.image.width))
    FigureCanvasAgg(figure)
    for i, (image, title) in enumerate(panels):
        axes = figure.add_subplot(1, len(panels), i + 1)
        axes.imshow(image)
        axes.set_title(title, fontsize=9)
        axes.axis("off")
    figure.tight_layout()
    return figure
