"""Boxes: the one validity rule every box of the project obeys, and IoU / GIoU that are never NaN.

The rule (``docs/boxes.md``). A box ``[x1, y1, x2, y2]`` (xyxy, any unit) is *valid* iff

1. its four coordinates are finite (no NaN, no infinity), and
2. ``x2 >= x1`` and ``y2 >= y1`` (corner order).

Zero width and/or zero height is valid (a *degenerate* box). Coordinates are not bounded by the frame: a box may
reach beyond it or have negative coordinates (the annotation boxes are scored as the release gives them, never
clipped; a model's boxes are clipped only where its postprocess says so).

Where the rule is applied: the annotation pickles (:mod:`arn_lightning.data.ag`, error naming the file, the frame key
and the object index), prediction files and in-memory predictions (:mod:`arn_lightning.metrics.predictions`, error
naming the file and the line, or the frame), the metric ground truth (:mod:`arn_lightning.metrics.functional`) and
the model outputs (:mod:`arn_lightning.postprocess`, error naming the frame).

Overlap of valid boxes. ``IoU = area(A & B) / area(A | B)``; when the union has zero area (both boxes degenerate
and their intersection empty) the ratio is ``0 / 0`` and is defined as **1 if the two boxes are equal, else 0**,
so identical boxes always have IoU 1 and the IoU is never NaN. The generalized IoU (``IoU - (C - U) / C`` with
``C`` the area of the smallest enclosing box) uses that IoU and drops the second term when ``C`` is 0 (the two
boxes then lie on one line), so it is finite too, and its gradient is finite everywhere.

Example:
    >>> import numpy as np
    >>> invalid_box_mask(np.array([[0, 0, 5, 5], [5, 0, 5, 0], [4, 0, 3, 1], [0, 0, np.nan, 1]])).tolist()
    [False, False, True, True]
    >>> paired_iou(np.array([[5., 5., 5., 9.], [0., 0., 0., 0.]]), np.array([[5., 5., 5., 9.], [1., 1., 1., 1.]]))
    array([1., 0.])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # torch is imported lazily: the annotation tools (stats, synth) do not load it
    from torch import Tensor

#: The rule in words, for error messages.
BOX_RULE = "an xyxy box with finite coordinates, x2 >= x1 and y2 >= y1"


class InvalidBoxError(ValueError):
    """A box that breaks the rule; the message names where it is (``where``) and what is wrong.

    Attributes:
        where: the box's place, e.g. ``"preds[3]['boxes'][2]"``.
        box: its four coordinates as floats.
    """

    def __init__(self, where: str, box: Sequence[float]) -> None:
        self.where = where
        self.box = [float(value) for value in box]
        super().__init__(f"Expected {where} to be {BOX_RULE} but got {self.box} ({box_violation(self.box)})")


def invalid_box_mask(boxes: Any) -> Any:
    """Which rows break the rule: ``[..., 4]`` boxes -> bool ``[...]`` (True: invalid), vectorised.

    Args:
        boxes: a numpy array, a nested list or a torch tensor (kept on its device, the result is a bool tensor).

    Raises:
        ValueError: the last dimension is not 4.
    """
    if hasattr(boxes, "isfinite") and hasattr(boxes, "all") and not isinstance(boxes, np.ndarray):  # a tensor
        if boxes.shape[-1:] != (4,):
            raise ValueError(f"Expected boxes of shape [..., 4] but got {list(boxes.shape)}")
        valid = boxes.isfinite().all(dim=-1) & (boxes[..., 2] >= boxes[..., 0]) & (boxes[..., 3] >= boxes[..., 1])
        return ~valid
    array = np.asarray(boxes, dtype=np.float64) if not isinstance(boxes, np.ndarray) else boxes
    if array.shape[-1:] != (4,):
        raise ValueError(f"Expected boxes of shape [..., 4] but got {list(array.shape)}")
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(array).all(axis=-1) & (array[..., 2] >= array[..., 0]) & (array[..., 3] >= array[..., 1])
    return ~valid


def box_violation(box: Sequence[float]) -> str:
    """What is wrong with one box, in words (``"valid"`` if nothing).

    Example:
        >>> box_violation([0.0, 5.0, 1.0, 2.0])
        'y2 < y1'
    """
    x1, y1, x2, y2 = (float(value) for value in box)
    if not all(np.isfinite([x1, y1, x2, y2])):
        return "a non-finite coordinate"
    problems = [text for bad, text in ((x2 < x1, "x2 < x1"), (y2 < y1, "y2 < y1")) if bad]
    return " and ".join(problems) or "valid"


def first_invalid_box(boxes: Any) -> int:
    """Index of the first row of ``[M, 4]`` boxes that breaks the rule, ``-1`` if none (one device sync)."""
    mask = invalid_box_mask(boxes)
    if hasattr(mask, "nonzero") and not isinstance(mask, np.ndarray):  # a tensor
        rows = mask.reshape(-1).nonzero()
        return int(rows[0, 0]) if rows.shape[0] else -1
    rows = np.flatnonzero(mask)
    return int(rows[0]) if rows.size else -1


def check_boxes_xyxy(boxes: Any, where: str | Callable[[int], str]) -> None:
    """Raise if any row of ``boxes`` ``[M, 4]`` (array, list or tensor) breaks the rule, naming the first one.

    Args:
        boxes: xyxy boxes.
        where: the boxes' name (the row index is appended: ``"preds[0]['boxes'][3]"``), or a function row -> name.

    Raises:
        InvalidBoxError: "Expected <where> to be an xyxy box with finite coordinates, x2 >= x1 and y2 >= y1 but got
            [...] (<what is wrong>)".

    Example:
        >>> check_boxes_xyxy([[0, 0, 2, 2], [3, 0, 1, 2]], "boxes")
        Traceback (most recent call last):
        ...
        arn_lightning.boxes.InvalidBoxError: Expected boxes[1] to be an xyxy box with finite coordinates, \
x2 >= x1 and y2 >= y1 but got [3.0, 0.0, 1.0, 2.0] (x2 < x1)
    """
    row = first_invalid_box(boxes)
    if row < 0:
        return
    name = where(row) if callable(where) else f"{where}[{row}]"
    box = boxes[row]
    raise InvalidBoxError(name, box.tolist() if hasattr(box, "tolist") else list(box))


# ------------------------------------------------------------------------------------------------------ overlap
def paired_iou(boxes1: np.ndarray, boxes2: np.ndarray) -> np.ndarray:
    """IoU of ``boxes1[i]`` with ``boxes2[i]``: xyxy ``[M, 4]`` each -> float64 ``[M]`` in ``[0, 1]``, never NaN.

    The arithmetic is torchvision's ``box_iou`` in float64 (the same results bit for bit wherever the union is
    positive); a zero union gives 1 for equal boxes, 0 otherwise (module docstring). Inputs are expected to obey
    the rule.

    Example:
        >>> paired_iou(np.array([[0., 0., 10., 10.]]), np.array([[0., 0., 10., 5.]])).tolist()
        [0.5]
    """
    first = np.asarray(boxes1, dtype=np.float64).reshape(-1, 4)
    second = np.asarray(boxes2, dtype=np.float64).reshape(-1, 4)
    area1 = (first[:, 2] - first[:, 0]) * (first[:, 3] - first[:, 1])
    area2 = (second[:, 2] - second[:, 0]) * (second[:, 3] - second[:, 1])
    sides = (np.minimum(first[:, 2:], second[:, 2:]) - np.maximum(first[:, :2], second[:, :2])).clip(min=0)  # [M, 2]
    inter = sides[:, 0] * sides[:, 1]
    union = area1 + area2 - inter
    equal = (first == second).all(axis=1).astype(np.float64)  # the IoU where the union is 0
    return np.divide(inter, union, out=equal, where=union > 0)


def _safe_ratio(numerator: Tensor, denominator: Tensor, fallback: Tensor) -> Tensor:
    """``numerator / denominator`` where the denominator is positive, ``fallback`` elsewhere; finite gradients."""
    import torch

    positive = denominator > 0
    return torch.where(positive, numerator / torch.where(positive, denominator, torch.ones_like(denominator)), fallback)


def _generalized_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """GIoU of broadcastable xyxy boxes ``[..., 4]`` -> ``[...]`` (module docstring: never NaN)."""
    import torch

    area1 = (boxes1[..., 2] - boxes1[..., 0]) * (boxes1[..., 3] - boxes1[..., 1])
    area2 = (boxes2[..., 2] - boxes2[..., 0]) * (boxes2[..., 3] - boxes2[..., 1])
    sides = torch.minimum(boxes1[..., 2:], boxes2[..., 2:]) - torch.maximum(boxes1[..., :2], boxes2[..., :2])
    sides = sides.clamp(min=0)  # [..., 2] intersection width, height
    inter = sides[..., 0] * sides[..., 1]
    union = area1 + area2 - inter
    equal = (boxes1 == boxes2).all(dim=-1).to(inter.dtype)
    iou = _safe_ratio(inter, union, equal)
    hull = torch.maximum(boxes1[..., 2:], boxes2[..., 2:]) - torch.minimum(boxes1[..., :2], boxes2[..., :2])
    hull = hull.clamp(min=0)
    hull_area = hull[..., 0] * hull[..., 1]
    return iou - _safe_ratio(hull_area - union, hull_area, torch.zeros_like(hull_area))


def generalized_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise generalized IoU: xyxy ``[Q, 4]`` and ``[N, 4]`` -> ``[Q, N]`` in ``[-1, 1]``, never NaN.

    Equal to torchvision's ``generalized_box_iou`` wherever that one is finite; degenerate boxes follow the
    module docstring (equal boxes: GIoU 1).
    """
    return _generalized_iou(boxes1[:, None, :], boxes2[None, :, :])


def paired_generalized_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Generalized IoU of ``boxes1[i]`` with ``boxes2[i]``: xyxy ``[M, 4]`` each -> ``[M]``, never NaN, with
    finite gradients (``1 - GIoU`` is the DETR box loss)."""
    return _generalized_iou(boxes1, boxes2)


__all__ = [
    "BOX_RULE",
    "InvalidBoxError",
    "box_violation",
    "check_boxes_xyxy",
    "first_invalid_box",
    "generalized_box_iou",
    "invalid_box_mask",
    "paired_generalized_box_iou",
    "paired_iou",
]
