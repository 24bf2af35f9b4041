"""Hungarian matching of pair queries to ground-truth (person, object) pairs (``docs/model.md`` section 4).

The predicate cost compares sigmoid scores with the multi-hot triplet targets of
:func:`arn_lightning.triplets.triplet_targets`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence
from torchvision.ops import box_convert

from arn_lightning.boxes import _generalized_iou, generalized_box_iou
from arn_lightning.models.outputs import ARNOutput
from arn_lightning.vocab import NUM_OBJECT_CLASSES, PREDICATE_TYPES

#: Keeps the QPIC predicate cost finite for a pair with no positive (or no negative) category.
PREDICATE_COST_EPS = 1e-4
#: Per frame ``(query indices [M], ground-truth pair indices [M])`` of the matched pairs.
Indices = list[tuple[Tensor, Tensor]]


def class_cost(obj_logits: Tensor, labels: Tensor) -> Tensor:
    """``-p(class of GT n)`` for every query: ``[Q, N]`` from logits ``[Q, C+1]`` and AG labels ``[N]``."""
    return -obj_logits.softmax(-1)[:, labels - 1]


def box_l1_cost(pred_cxcywh: Tensor, gt_cxcywh: Tensor) -> Tensor:
    """L1 distance ``[Q, N]`` between normalised cxcywh boxes ``[Q, 4]`` and ``[N, 4]``."""
    return torch.cdist(pred_cxcywh, gt_cxcywh, p=1)


def giou_cost(pred_cxcywh: Tensor, gt_cxcywh: Tensor) -> Tensor:
    """``-GIoU`` ``[Q, N]`` between normalised cxcywh boxes ``[Q, 4]`` and ``[N, 4]``, never NaN: degenerate
    (zero-area) boxes follow :mod:`arn_lightning.boxes` (equal boxes cost -1), where torchvision's would give 0/0."""
    return -generalized_box_iou(box_convert(pred_cxcywh, "cxcywh", "xyxy"), box_convert(gt_cxcywh, "cxcywh", "xyxy"))


def batched_giou_cost(pred_cxcywh: Tensor, gt_cxcywh: Tensor) -> Tensor:
    """The GIoU cost of every frame at once (:func:`giou_cost` batched): boxes ``[BT, Q, 4]`` and ``[BT, N, 4]``
    -> ``[BT, Q, N]``."""
    pred, gt = box_convert(pred_cxcywh, "cxcywh", "xyxy"), box_convert(gt_cxcywh, "cxcywh", "xyxy")
    return -_generalized_iou(pred[:, :, None, :], gt[:, None, :, :])


def batched_multilabel_cost(probs: Tensor, targets: Tensor) -> Tensor:
    """QPIC's multi-label cost of every frame: sigmoid scores ``[BT, Q, K]`` and multi-hot targets ``[BT, N, K]``
    -> ``[BT, Q, N]``.

    ``-(mean score on the pair's positive columns + mean (1 - score) on its negative columns) / 2``, in [-1, 0].
    Credit: the cost of QPIC (Tamura et al., CVPR 2021) for HOI verbs.
    """
    positives = probs @ targets.transpose(1, 2) / (targets.sum(dim=2)[:, None, :] + PREDICATE_COST_EPS)
    negatives = (
        (1 - probs) @ (1 - targets).transpose(1, 2) / ((1 - targets).sum(dim=2)[:, None, :] + PREDICATE_COST_EPS)
    )
    return -(positives + negatives) / 2


def assign(cost: Tensor) -> tuple[Tensor, Tensor]:
    """Minimum-cost assignment of a ``[Q, N]`` cost matrix: ``(query_idx, gt_idx)`` LongTensors, query-sorted."""
    if not torch.isfinite(cost).all():
        raise ValueError("Expected finite matching costs but got NaN/inf (are the model outputs finite?)")
    rows, cols = linear_sum_assignment(cost.cpu().numpy())
    return torch.as_tensor(rows, dtype=torch.long), torch.as_tensor(cols, dtype=torch.long)


def identity_matching(query_mask: Tensor, targets: Sequence[Mapping[str, Any]]) -> Indices:
    """SGCls / PredCls: query n of a frame is its GT pair n; ``query_mask`` ``[BT, Q]`` marks the real queries."""
    indices = []
    for i, target in enumerate(targets):
        num = int(target["obj_labels"].shape[0])
        real = query_mask[i]
        if int(real.sum()) != num or not bool(real[:num].all()):
            raise ValueError(
                f"Expected frame {i} to have its {num} GT pairs as the first {num} real queries but query_mask "
                f"marks {int(real.sum())}"
            )
        index = torch.arange(num, dtype=torch.long)
        indices.append((index, index.clone()))
    return indices


class HungarianMatcher:
    """Per-frame optimal matching of the Q pair queries to the N ground-truth pairs (stateless).

    Cost of query q and GT pair n (paper Sec. 3.5, ``docs/model.md`` section 4):
    ``cost_class * -p_q(obj class of n) + cost_bbox * max(L1 sub, L1 obj) + cost_giou * max(-GIoU sub, -GIoU obj)
    + cost_predicate * mean over branches of the QPIC multi-label cost`` (boxes normalised cxcywh). Taking the max
    over subject and object (as QPIC) makes a pair cheap only if both of its boxes fit. Computed in float32 with
    autocast disabled and without gradients. When ``outputs.query_mask`` is set (SGCls / PredCls) the matching is
    the identity.

    Args:
        cost_class: weight of the object-class term.
        cost_bbox: weight of the L1 box term.
        cost_giou: weight of the GIoU term.
        cost_predicate: weight of the predicate (triplet) term.
    """

    def __init__(
        self, cost_class: float = 1.0, cost_bbox: float = 2.5, cost_giou: float = 1.0, cost_predicate: float = 2.0
    ) -> None:
        weights = {
            "cost_class": cost_class,
            "cost_bbox": cost_bbox,
            "cost_giou": cost_giou,
            "cost_predicate": cost_predicate,
        }
        if any(w < 0 for w in weights.values()) or not any(w > 0 for w in weights.values()):
            raise ValueError(f"Expected non-negative matching weights, not all zero, but got {weights}")
        self.cost_class, self.cost_bbox = cost_class, cost_bbox
        self.cost_giou, self.cost_predicate = cost_giou, cost_predicate

    def cost_matrices(
        self,
        outputs: ARNOutput,
        targets: Sequence[Mapping[str, Any]],
        branch_targets: Sequence[Mapping[str, Tensor]],
    ) -> list[Tensor]:
        """Float32 matching costs of every frame, ``[Q, N_i]`` each, from one batched computation.

        The ground truth is padded to the largest frame (``[BT, N_max, ...]``; padded columns get label 1, empty
        boxes and no positive category, and are cut off again), the costs of all frames are computed as one
        ``[BT, Q, N_max]`` tensor and moved to the CPU once. Each frame's matrix equals the per-frame formula of
        ``tests/matcher_reference.py`` (checked there to 1e-6, with identical assignments).
        """
        device = outputs.obj_logits.device
        sizes = [int(t["obj_labels"].shape[0]) for t in targets]
        logits = outputs.predicate_logits()

        def padded(rows: list[Tensor], value: float = 0.0) -> Tensor:  # [BT, N_max, ...]
            return pad_sequence(rows, batch_first=True, padding_value=value).to(device)

        with torch.autocast(device_type=device.type, enabled=False):
            labels = padded([t["obj_labels"].long() for t in targets], 1.0)  # [BT, N]
            gt_sub = padded([t["sub_boxes"].float().reshape(-1, 4) for t in targets])  # [BT, N, 4] cxcywh
            gt_obj = padded([t["obj_boxes"].float().reshape(-1, 4) for t in targets])
            branch = {
                kind: padded(
                    [
                        b[kind].float() if n else logits[kind].new_zeros(0, logits[kind].shape[-1]).float()
                        for b, n in zip(branch_targets, sizes)
                    ]
                )
                for kind in PREDICATE_TYPES
            }  # [BT, N, K]
            sub, obj = outputs.sub_boxes.float(), outputs.obj_boxes.float()  # [BT, Q, 4] cxcywh
            probs = outputs.obj_logits.float().softmax(-1)  # [BT, Q, C+1]
            index = (labels - 1)[:, None, :].expand(-1, probs.shape[1], -1)  # [BT, Q, N]
            cost = self.cost_class * -probs.gather(2, index)
            cost = cost + self.cost_bbox * torch.maximum(box_l1_cost(sub, gt_sub), box_l1_cost(obj, gt_obj))
            cost = cost + self.cost_giou * torch.maximum(batched_giou_cost(sub, gt_sub), batched_giou_cost(obj, gt_obj))
            predicate = [
                batched_multilabel_cost(logits[kind].float().sigmoid(), branch[kind]) for kind in PREDICATE_TYPES
            ]
            cost = (cost + self.cost_predicate * torch.stack(predicate).mean(dim=0)).cpu()  # [BT, Q, N], one copy
        return [cost[i, :, :size] for i, size in enumerate(sizes)]

    @torch.no_grad()
    def __call__(
        self, outputs: ARNOutput, targets: Sequence[Mapping[str, Any]], branch_targets: Sequence[Mapping[str, Tensor]]
    ) -> Indices:
        """Match every frame.

        Args:
            outputs: model outputs for ``BT`` frames (``obj_logits`` ``[BT, Q, 37]``, boxes ``[BT, Q, 4]``,
                branch logits ``[BT, Q, K]``, ``query_mask`` ``[BT, Q]`` or None).
            targets: ``BT`` frame targets (``sub_boxes`` / ``obj_boxes`` ``[N, 4]`` normalised cxcywh,
                ``obj_labels`` ``[N]`` AG index).
            branch_targets: per frame :func:`triplet_targets` (``{kind: [N, K]}``).

        Returns:
            Per frame ``(query_idx [M], gt_idx [M])`` int64 CPU tensors, ``M = min(Q, N)`` (empty when N = 0).
        """
        frames = outputs.obj_logits.shape[0]
        if len(targets) != frames or len(branch_targets) != frames:
            raise ValueError(f"Expected {frames} targets but got {len(targets)} (branch: {len(branch_targets)})")
        if outputs.obj_logits.shape[-1] != NUM_OBJECT_CLASSES + 1:
            raise ValueError(
                f"Expected obj_logits [BT, Q, {NUM_OBJECT_CLASSES + 1}] but got {tuple(outputs.obj_logits.shape)}"
            )
        if outputs.query_mask is not None:
            return identity_matching(outputs.query_mask, targets)
        empty = torch.zeros(0, dtype=torch.long)
        indices: Indices = []
        for cost in self.cost_matrices(outputs, targets, branch_targets):
            indices.append(assign(cost) if cost.shape[1] else (empty, empty.clone()))
        return indices
