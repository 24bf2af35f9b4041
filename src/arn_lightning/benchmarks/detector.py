"""ARN's detector path alone: the reference the benchmark suite divides every ARN speed figure by.

The detector path of an :class:`~arn_lightning.models.arn.ARN` is backbone + input projection + position encoding
+ spatial encoder + entity decoder with its heads (object classes, subject / object boxes): a plain DETR-R50 with
paired subject / object queries, built from the very modules of the ARN instance. What ARN adds on top of it (the
temporal encoder, the predicate decoder with PAP and HA, the triplet classifiers, the distillation embedding and
their losses) is what a ratio ``ARN / detector path`` below 1 costs.

- :func:`detector_forward`: the detector path's forward (SGDet only: the other tasks take their boxes from the
  ground truth, there is no detector).
- :func:`detector_losses`: DETR's losses on its output: Hungarian matching on class + box costs only, the object
  cross-entropy and the L1 / GIoU box terms of every entity decoder layer (no predicate or distillation term).
- :class:`DetectorPathLitModule`: an :class:`~arn_lightning.training.lit_module.ARNLitModule` whose training step is
that
  of the detector path (same optimiser, parameter groups and gradient clipping), for ``benchmark train``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from arn_lightning.criterion import SetCriterion, world_mean_count
from arn_lightning.matcher import Indices, assign, box_l1_cost, class_cost, giou_cost
from arn_lightning.models.arn import ARN
from arn_lightning.models.entity import EntityOutputs
from arn_lightning.training.lit_module import ARNLitModule


def detector_forward(model: ARN, pixel_values: Tensor, pixel_mask: Tensor) -> EntityOutputs:
    """Run only the detector path of ``model`` (the first three stages of ``ARN.forward``).

    Args:
        model: an SGDet ARN.
        pixel_values: ``[B, T, 3, H, W]`` normalised frames.
        pixel_mask: ``[B, T, H, W]`` bool, True on real pixels.

    Returns:
        The entity outputs of the ``B*T`` frames (object logits ``[BT, Q, 37]``, boxes ``[BT, Q, 4]`` per layer).

    Raises:
        ValueError: the model's task is not SGDet, or the inputs are malformed.
    """
    if model.config.task != "sgdet":
        raise ValueError(
            f"Expected an ARN with task='sgdet' (the only task with a detector) but got {model.config.task!r}"
        )
    model._check_inputs(pixel_values, pixel_mask)
    memory, _ = model.encode(pixel_values.flatten(0, 1), pixel_mask.flatten(0, 1))
    return model.entity(memory, None)


@dataclass
class DetectorLayer:
    """One entity decoder layer's output, shaped like the parts of an ``ARNOutput`` the box / class losses read."""

    obj_logits: Tensor  #: ``[BT, Q, C+1]``
    sub_boxes: Tensor  #: ``[BT, Q, 4]`` normalised cxcywh
    obj_boxes: Tensor  #: ``[BT, Q, 4]`` normalised cxcywh
    query_mask: Tensor | None = None


@torch.no_grad()
def detector_indices(criterion: SetCriterion, layer: DetectorLayer, targets: Sequence[Mapping[str, Any]]) -> Indices:
    """DETR's Hungarian matching of one layer: the ARN matcher's class, L1 and GIoU costs with the same weights
    (max over subject and object), without the predicate cost; float32, autocast off."""
    matcher = criterion.matcher
    empty = torch.zeros(0, dtype=torch.long)
    indices: Indices = []
    with torch.autocast(device_type=layer.obj_logits.device.type, enabled=False):
        for i, target in enumerate(targets):
            labels = target["obj_labels"]
            if labels.numel() == 0:
                indices.append((empty, empty.clone()))
                continue
            sub, obj = layer.sub_boxes[i].float(), layer.obj_boxes[i].float()
            gt_sub, gt_obj = target["sub_boxes"].float(), target["obj_boxes"].float()
            cost = matcher.cost_class * class_cost(layer.obj_logits[i].float(), labels)
            cost = cost + matcher.cost_bbox * torch.maximum(box_l1_cost(sub, gt_sub), box_l1_cost(obj, gt_obj))
            cost = cost + matcher.cost_giou * torch.maximum(giou_cost(sub, gt_sub), giou_cost(obj, gt_obj))
            indices.append(assign(cost))
    return indices


def detector_losses(
    criterion: SetCriterion, entity: EntityOutputs, targets: Sequence[Mapping[str, Any]]
) -> dict[str, Tensor]:
    """Unweighted DETR loss terms of every entity decoder layer (the last plain, earlier ones suffixed ``_0``, ...).

    Terms: ``loss_obj_ce``, ``loss_{sub,obj}_bbox`` and ``loss_{sub,obj}_giou``, normalised as in
    :class:`~arn_lightning.criterion.SetCriterion` (per matched pair of the batch).
    """
    layers = [
        DetectorLayer(logits, sub, obj)
        for logits, sub, obj in zip(entity.obj_logits, entity.sub_boxes, entity.obj_boxes)
    ]
    queries = layers[-1].obj_logits.shape[1]
    num_pairs = world_mean_count(
        sum(min(queries, int(t["obj_labels"].shape[0])) for t in targets), layers[-1].obj_logits.device
    )
    per_layer = []
    for layer in layers:
        indices = detector_indices(criterion, layer, targets)
        losses = criterion.loss_obj_ce(layer, targets, indices)  # type: ignore[arg-type]  # duck-typed ARNOutput
        losses.update(criterion.loss_boxes(layer, targets, indices, num_pairs))  # type: ignore[arg-type]
        per_layer.append(losses)
    result = dict(per_layer[-1])
    for i, aux in enumerate(per_layer[:-1]):
        result.update({f"{name}_{i}": value for name, value in aux.items()})
    return result


class DetectorPathLitModule(ARNLitModule):
    """``ARNLitModule`` whose training step runs the detector path only, with DETR's losses (module docstring)."""

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        entity = detector_forward(self.model, batch["pixel_values"], batch["pixel_mask"])
        losses = detector_losses(self.criterion, entity, batch["targets"])
        losses["loss"] = self.criterion.weighted_total(losses)
        self._log_losses("train", losses, batch["pixel_values"].shape[0])
        return losses["loss"]
