"""Test-time triplet non-maximum suppression of per-frame predictions, for one metric constraint.

HOI detectors (PPDM, CDN, GEN-VLKT ``triplet_nms_filter``) and OED, on Action Genome (``models/evaluate_recall.py``:
threshold 0.9, alpha = beta = 1, applied to each constraint's ranked triplets), suppress a triplet when a
higher-scored one of the same subject class, predicate and object class overlaps it: ``IoU(sub)^alpha *
IoU(obj)^beta > threshold``. ARN's paper does not say it uses one; this project's metric runs without it unless
``evaluation.triplet_nms`` is set (``docs/model.md`` section 6, "Triplet NMS"; ``docs/metrics.md``).

The candidate triplets depend on the constraint (``with``: the argmax of each predicate type of a pair; ``semi``:
the argmax attention and the spatial / contacting predicates above the threshold; ``no``: every (pair, predicate)
cell), so the filtered prediction does too: one frame and one constraint at a time, in the prediction-file format
(``ARCHITECTURE.md`` section 4), suppressed candidates scoring 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import box_iou

from arn_lightning.metrics.functional import IOU_CONVENTIONS, SEMI_THRESHOLD
from arn_lightning.vocab import CONSTRAINTS, PREDICATE_TYPES


def check_settings(
    threshold: Any,
    alpha: Any,
    beta: Any,
    names: Sequence[str] = ("triplet_nms", "triplet_nms_alpha", "triplet_nms_beta"),
) -> None:
    """Check the NMS settings: ``threshold`` in ``(0, 1]`` or None (off), ``alpha`` and ``beta`` finite and > 0.

    Raises:
        ValueError: naming the setting as the caller spells it (``names``: threshold, alpha, beta).
    """
    if threshold is not None and not (isinstance(threshold, (int, float)) and 0.0 < threshold <= 1.0):
        raise ValueError(f"Expected {names[0]} in (0, 1] or None (off) but got {threshold!r}")
    for name, value in zip(names[1:], (alpha, beta)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ValueError(f"Expected {name} to be a finite number > 0 but got {value!r}")


def _self_iou(boxes: Tensor) -> Tensor:
    """float64 ``[P, P]`` IoU of every two of ``boxes`` ``[P, 4]`` xyxy (torchvision's ``box_iou``); where the union
    is empty (two degenerate boxes) 1 for equal boxes and 0 otherwise, as the metric (``docs/boxes.md``)."""
    iou = box_iou(boxes, boxes)
    return torch.where(iou.isnan(), (boxes[:, None] == boxes[None]).all(dim=-1).to(iou), iou)


def _candidate_mask(values: Tensor, kind: str, constraint: str, semi_threshold: float) -> Tensor:
    """bool ``[P, S]``: the (pair, predicate) cells of one predicate type that are candidate triplets under
    ``constraint`` (the metric's rule, :mod:`arn_lightning.metrics.functional`; argmax: the first maximum)."""
    if constraint == "no":
        return torch.ones_like(values, dtype=torch.bool)
    if constraint == "with" or kind == "attention":
        return F.one_hot(values.argmax(dim=1), values.shape[1]).bool()
    return values > semi_threshold


def _greedy_keep(scores: Tensor, candidate: Tensor, conflict: Tensor) -> Tensor:
    """Greedy NMS of every predicate column at once: bool ``[P, C]``, the candidates not suppressed.

    In column ``c`` the candidates are visited by descending ``scores`` ``[P, C]`` (ties: lower pair first, the
    metric's order); one is suppressed when a kept, earlier one of the column conflicts with it (``conflict``
    ``[C, P, P]``, symmetric per column). The greedy result is the unique fixed point of "kept = candidate and not
    conflicting with an earlier kept one" (a recursion over the visiting order), reached by iterating from "all
    kept" in at most ``P`` steps, usually two or three: one batched product a step."""
    num = scores.shape[0]
    order = torch.argsort(-scores, dim=0, stable=True)  # [P, C] pairs of each column, best first
    rank = torch.empty_like(order).scatter_(0, order, torch.arange(num, device=order.device)[:, None].expand_as(order))
    columns = candidate.T  # [C, P]
    earlier = rank.T[:, :, None] < rank.T[:, None, :]  # [C, i, j]: i visited before j
    blocks = (conflict & earlier & columns[:, :, None] & columns[:, None, :]).to(scores)  # [C, P, P]
    kept = columns
    for _ in range(num):
        update = columns & (torch.bmm(kept[:, None, :].to(scores), blocks)[:, 0] == 0)
        if torch.equal(update, kept):
            break
        kept = update
    return kept.T


def triplet_nms(
    pred: Mapping[str, Any],
    constraint: str,
    threshold: float,
    alpha: float = 1.0,
    beta: float = 1.0,
    semi_threshold: float = SEMI_THRESHOLD,
    iou_convention: str = "continuous",
) -> dict[str, Any]:
    """Triplet non-maximum suppression of one frame's prediction for one metric constraint.

    The candidate triplets of ``constraint`` (the metric's: ``with`` the argmax of each predicate type of a pair,
    ``semi`` the argmax attention and the spatial / contacting scores above ``semi_threshold``, ``no`` every
    (pair, predicate) cell) are visited by descending triplet score ``score[sub] * score[obj] * predicate score``;
    a candidate is suppressed when a kept, higher one has the same predicate, subject class and object class and
    ``IoU(sub)^alpha * IoU(obj)^beta > threshold`` (spatial candidates, which the metric reverses, take ``alpha``
    on the object box). The prediction file has no "absent" candidate, so a suppressed one scores 0: its cell
    (``no``; ``semi`` spatial / contacting), or the pair's whole row of that type (``with``; ``semi`` attention),
    whose argmax then scores 0. It ranks after every candidate that scores above 0, so R@K equals that of the
    filtered list wherever a frame keeps at least K such candidates.

    Args:
        pred: one frame's prediction (``ARCHITECTURE.md`` section 4; tensors, arrays or lists).
        constraint: ``"with"``, ``"semi"`` or ``"no"``.
        threshold: the overlap above which the lower candidate is suppressed, in ``(0, 1]``.
        alpha, beta: exponents of the subject and object IoU, ``> 0``.
        semi_threshold: the metric's ``semi`` threshold.
        iou_convention: the metric's ``"continuous"`` or ``"legacy"`` (+1 pixel, OED's) IoU.

    Returns:
        A copy of ``pred`` with float ``attention`` / ``spatial`` / ``contacting`` tensors (on the device of
        ``boxes``) in which the suppressed candidates score 0; the other keys are the same objects.

    Raises:
        ValueError: an unknown constraint or IoU convention.

    Source: the pairwise NMS of HOI detectors (PPDM, CDN, GEN-VLKT ``triplet_nms_filter``), as OED applies it to the
    ranked triplets of its Action Genome evaluation (``models/evaluate_recall.py``: threshold 0.9, alpha = beta = 1).
    """
    if constraint not in CONSTRAINTS or iou_convention not in IOU_CONVENTIONS:
        raise ValueError(
            f"Expected a constraint in {CONSTRAINTS} and an IoU convention in {IOU_CONVENTIONS} but got "
            f"{constraint!r} and {iou_convention!r}"
        )
    boxes = torch.as_tensor(pred["boxes"]).double().reshape(-1, 4)
    device = boxes.device
    pairs = torch.as_tensor(pred["pairs"], device=device).long().reshape(-1, 2)
    out = {**pred, **{kind: torch.as_tensor(pred[kind], device=device).float() for kind in PREDICATE_TYPES}}
    if pairs.shape[0] == 0:
        return out
    if iou_convention == "legacy":
        boxes = boxes + boxes.new_tensor([0.0, 0.0, 1.0, 1.0])
    labels = torch.as_tensor(pred["labels"], device=device).long()[pairs]  # [P, 2]
    same = (labels[:, None] == labels[None]).all(dim=-1)  # [P, P] same subject and object class
    sub_iou, obj_iou = _self_iou(boxes[pairs[:, 0]]), _self_iou(boxes[pairs[:, 1]])
    scores = torch.as_tensor(pred["scores"], device=device).double()
    pair_scores = scores[pairs[:, 0]] * scores[pairs[:, 1]]  # [P] float64, as the metric
    overlaps = torch.stack((sub_iou.pow(alpha) * obj_iou.pow(beta), obj_iou.pow(alpha) * sub_iou.pow(beta)))
    values = {kind: out[kind] for kind in PREDICATE_TYPES}  # [P, S] each
    reverse = torch.cat([torch.full((v.shape[1],), int(k == "spatial"), device=device) for k, v in values.items()])
    conflict = same & (overlaps > threshold)[reverse]  # [26, P, P]; spatial candidates are reversed pairs
    candidate = torch.cat([_candidate_mask(v, k, constraint, semi_threshold) for k, v in values.items()], dim=1)
    table = torch.cat(list(values.values()), dim=1).double() * pair_scores[:, None]  # [P, 26] triplet scores
    suppressed = (candidate & ~_greedy_keep(table, candidate, conflict)).split([v.shape[1] for v in values.values()], 1)
    for (kind, value), gone in zip(values.items(), suppressed):
        if constraint == "with" or (constraint == "semi" and kind == "attention"):
            gone = gone.any(dim=1, keepdim=True).expand_as(gone)
        out[kind] = value.masked_fill(gone, 0.0)
    return out
