"""The per-frame reference of the matching cost, kept in the tests only.

``HungarianMatcher.cost_matrices`` computes every frame's cost in one batched pass; this module computes one frame's
``[Q, N]`` matrix term by term, the paper's formula as written (Sec. 3.5, ``docs/model.md`` section 4), so that
tests can check the batched path against it (1e-6, identical assignments).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from arn_lightning.matcher import PREDICATE_COST_EPS, HungarianMatcher, box_l1_cost, class_cost, giou_cost
from arn_lightning.models.outputs import ARNOutput
from arn_lightning.vocab import PREDICATE_TYPES


def multilabel_cost(probs: Tensor, targets: Tensor) -> Tensor:
    """QPIC's multi-label cost ``[Q, N]`` of one frame from sigmoid scores ``[Q, K]`` and multi-hot targets ``[N, K]``:
    ``-(mean score on the pair's positive columns + mean (1 - score) on its negative columns) / 2``."""
    positives = probs @ targets.T / (targets.sum(dim=1)[None, :] + PREDICATE_COST_EPS)  # [Q, N]
    negatives = (1 - probs) @ (1 - targets).T / ((1 - targets).sum(dim=1)[None, :] + PREDICATE_COST_EPS)
    return -(positives + negatives) / 2


def predicate_cost(logits: Mapping[str, Tensor], targets: Mapping[str, Tensor]) -> Tensor:
    """Mean over the three branches of :func:`multilabel_cost` on the sigmoid of the branch logits ``[Q, K]``."""
    costs = [multilabel_cost(logits[kind].sigmoid(), targets[kind]) for kind in PREDICATE_TYPES]
    return torch.stack(costs).mean(dim=0)


def cost_matrix(
    matcher: HungarianMatcher,
    outputs: ARNOutput,
    frame: int,
    target: Mapping[str, Any],
    branch_targets: Mapping[str, Tensor],
) -> Tensor:
    """Float32 matching cost ``[Q, N]`` of frame ``frame`` with ``matcher``'s weights, autocast disabled."""
    with torch.autocast(device_type=outputs.obj_logits.device.type, enabled=False):
        sub, obj = outputs.sub_boxes[frame].float(), outputs.obj_boxes[frame].float()  # [Q, 4] cxcywh
        gt_sub, gt_obj = target["sub_boxes"].float(), target["obj_boxes"].float()  # [N, 4] cxcywh
        cost = matcher.cost_class * class_cost(outputs.obj_logits[frame].float(), target["obj_labels"])
        cost = cost + matcher.cost_bbox * torch.maximum(box_l1_cost(sub, gt_sub), box_l1_cost(obj, gt_obj))
        cost = cost + matcher.cost_giou * torch.maximum(giou_cost(sub, gt_sub), giou_cost(obj, gt_obj))
        logits = {kind: value[frame].float() for kind, value in outputs.predicate_logits().items()}
        targets = {kind: branch_targets[kind].float() for kind in PREDICATE_TYPES}
        return cost + matcher.cost_predicate * predicate_cost(logits, targets)  # [Q, N]
