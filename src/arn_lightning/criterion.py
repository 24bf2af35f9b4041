"""The ARN training losses (paper Sec. 3.5, eq. 7 and 14; ``docs/model.md`` section 4).

:class:`SetCriterion` matches the pair queries of every decoder layer to the ground truth
(:class:`~arn_lightning.matcher.HungarianMatcher`, or the identity in SGCls / PredCls) and returns the *unweighted*
loss terms, one ``loss_*`` method per term, auxiliary layers suffixed ``_0``, ``_1``, ...;
:meth:`SetCriterion.weighted_total` applies the :class:`LossConfig` weights, in this one place only.

Normalisation: box, GIoU and predicate terms are sums divided by the number of matched pairs of the batch, summed
over all processes and divided by the world size (DETR), at least 1. The object term is DETR's class-weighted mean
cross-entropy ("no object" weighted ``eos_coef``). The distillation term is the mean absolute difference per
element (GEN-VLKT's mimic loss), so that its weight 20 is on the scale of the other terms.

Predicate loss variants (paper Table 3, rows 1-2):

* ``"focal"`` (ARN): sigmoid focal loss (alpha, gamma) on every branch's triplet logits against the multi-hot
  triplet targets; every real query contributes, unmatched queries with all-zero targets (eq. 7).
* ``"ce"`` (the baseline row "cross-entropy"): our reading is the loss a DETR baseline uses for each predicate type
  without focal modulation: softmax cross-entropy for the single-label attention branch (AG gives every object
  exactly one attention label; matched queries with a positive column, target spread evenly over its positive
  columns) and binary cross-entropy on the sigmoid for the multi-label spatial and contacting branches (same queries
  and normalisation as focal, so focal with ``gamma = 0`` and no alpha weighting reproduces it exactly).

The three branch losses are summed into ``loss_predicate``: each branch is a separate classifier and summing keeps
every predicate type's gradient independent of how many branches exist.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import box_convert, sigmoid_focal_loss

from arn_lightning.boxes import paired_generalized_box_iou
from arn_lightning.matcher import HungarianMatcher, Indices
from arn_lightning.models.outputs import ARNOutput
from arn_lightning.triplets import TripletVocabulary, triplet_targets
from arn_lightning.vocab import NUM_OBJECT_CLASSES, PREDICATE_TYPES

PREDICATE_LOSSES = ("focal", "ce")
#: Values of ``LossConfig.frames``: which frames of a training clip get a loss.
LOSS_FRAMES = ("all", "key")
#: Branches whose ground truth has exactly one label per pair (softmax cross-entropy in the "ce" variant).
SINGLE_LABEL_BRANCHES = ("attention",)
#: Class target of queries excluded from the object loss (padding queries of SGCls / PredCls).
IGNORE_INDEX = -100
_AUX_SUFFIX = re.compile(r"_\d+$")


@dataclass
class LossConfig:
    """Loss weights, matching costs and loss variants.

    Attributes:
        weight_obj_ce: weight of the object-class cross-entropy.
        weight_bbox: weight of each L1 box term (subject and object).
        weight_giou: weight of each GIoU term (subject and object).
        weight_predicate: weight of the predicate / triplet term.
        weight_distill: weight of the CLIP image-embedding distillation term.
        cost_class: matching weight of the object-class cost.
        cost_bbox: matching weight of the L1 box cost.
        cost_giou: matching weight of the GIoU cost.
        cost_predicate: matching weight of the predicate cost.
        eos_coef: cross-entropy weight of the "no object" class.
        focal_alpha: focal-loss weight of positives (negatives get ``1 - alpha``; negative: no weighting).
        focal_gamma: focal-loss focusing exponent.
        predicate_loss: ``"focal"`` (ARN) or ``"ce"`` (the cross-entropy baseline, see the module docstring).
        frames: the frames of a training clip that get a loss: ``"all"`` (every frame, the ``T`` frames of each
            clip) or ``"key"`` (the clip's key frame only, the other frames being its temporal context, as in OED's
            training on a target frame with reference frames); evaluation frames always all count.

    Whether the distillation term is computed is the model's switch (``ARNConfig.distill``), handed to
    :class:`SetCriterion`.
    """

    weight_obj_ce: float = 1.0
    weight_bbox: float = 2.5
    weight_giou: float = 1.0
    weight_predicate: float = 2.0
    weight_distill: float = 20.0
    cost_class: float = 1.0
    cost_bbox: float = 2.5
    cost_giou: float = 1.0
    cost_predicate: float = 2.0
    eos_coef: float = 0.1
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    predicate_loss: str = "focal"
    frames: str = "all"

    def __post_init__(self) -> None:
        if self.predicate_loss not in PREDICATE_LOSSES:
            raise ValueError(f"Expected predicate_loss in {PREDICATE_LOSSES} but got {self.predicate_loss!r}")
        if self.frames not in LOSS_FRAMES:
            raise ValueError(f"Expected loss frames in {LOSS_FRAMES} but got {self.frames!r}")
        if not 0.0 <= self.eos_coef <= 1.0:
            raise ValueError(f"Expected eos_coef in [0, 1] but got {self.eos_coef}")
        if self.focal_gamma < 0:
            raise ValueError(f"Expected focal_gamma >= 0 but got {self.focal_gamma}")

    def term_weights(self) -> dict[str, float]:
        """Weight of every loss term name (without an auxiliary suffix)."""
        return {
            "loss_obj_ce": self.weight_obj_ce,
            "loss_sub_bbox": self.weight_bbox,
            "loss_obj_bbox": self.weight_bbox,
            "loss_sub_giou": self.weight_giou,
            "loss_obj_giou": self.weight_giou,
            "loss_predicate": self.weight_predicate,
            "loss_distill": self.weight_distill,
        }


def matched_positions(indices: Indices, device: torch.device) -> tuple[Tensor, Tensor]:
    """``(frame_idx [M], query_idx [M])`` on ``device`` of every matched query of a batch."""
    frames = [torch.full_like(query, i) for i, (query, _) in enumerate(indices)]
    queries = [query for query, _ in indices]
    return torch.cat(frames).to(device), torch.cat(queries).to(device)


def gather_targets(values: Sequence[Tensor], indices: Indices) -> Tensor:
    """Concatenate ``values[i][gt_idx_i]`` over frames: the GT rows in matched-query order (``[M, ...]``)."""
    return torch.cat([value[gt.to(value.device)] for value, (_, gt) in zip(values, indices)])


def world_mean_count(count: float, device: torch.device) -> float:
    """``count`` summed over processes, divided by the world size, clamped to at least 1 (single process: count)."""
    total = torch.tensor([float(count)], device=device)
    world = 1
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(total)
        world = dist.get_world_size()
    return float(torch.clamp(total / world, min=1.0).item())


class SetCriterion(nn.Module):
    """Matches queries to ground truth and computes the unweighted ARN loss terms of every decoder layer.

    Args:
        config: weights, matching costs, variants.
        vocabulary: the classifier columns of each branch (the model's
            :class:`~arn_lightning.triplets.TripletVocabulary`); copied into non-persistent buffers, so that they
            follow ``.to(device)`` and stay out of checkpoints.
        distill: compute the distillation term (the model's ``ARNConfig.distill``: it needs ``predicate_embeds``
            and CLIP image embeddings).

    Raises:
        TypeError: ``vocabulary`` is not a :class:`~arn_lightning.triplets.TripletVocabulary`.
    """

    def __init__(self, config: LossConfig, vocabulary: TripletVocabulary, distill: bool = True) -> None:
        super().__init__()
        if not isinstance(vocabulary, TripletVocabulary):
            raise TypeError(f"Expected a TripletVocabulary but got {type(vocabulary).__name__}")
        self.config = config
        self.distill = bool(distill)
        self.matcher = HungarianMatcher(config.cost_class, config.cost_bbox, config.cost_giou, config.cost_predicate)
        vocab = vocabulary
        for kind in PREDICATE_TYPES:
            self.register_buffer(f"_predicates_{kind}", vocab.triplet_predicates[kind].clone(), persistent=False)
            self.register_buffer(f"_objects_{kind}", vocab.triplet_objects[kind].clone(), persistent=False)
        class_weight = torch.ones(NUM_OBJECT_CLASSES + 1)
        class_weight[-1] = config.eos_coef
        self.register_buffer("class_weight", class_weight, persistent=False)

    @property
    def vocab(self) -> TripletVocabulary:
        """The classifier columns, on this module's device."""
        return TripletVocabulary(
            {kind: getattr(self, f"_predicates_{kind}") for kind in PREDICATE_TYPES},
            {kind: getattr(self, f"_objects_{kind}") for kind in PREDICATE_TYPES},
        )

    # ------------------------------------------------------------------ terms
    def loss_obj_ce(
        self, outputs: ARNOutput, targets: Sequence[Mapping[str, Any]], indices: Indices
    ) -> dict[str, Tensor]:
        """``loss_obj_ce``: cross-entropy over 36 classes + no-object; unmatched queries target no-object."""
        logits = outputs.obj_logits.float()  # [BT, Q, C+1]
        classes = torch.full(logits.shape[:2], NUM_OBJECT_CLASSES, dtype=torch.long, device=logits.device)
        labels = [t["obj_labels"].to(logits.device) - 1 for t in targets]  # AG index -> class
        if any(len(query) for query, _ in indices):
            classes[matched_positions(indices, logits.device)] = gather_targets(labels, indices)
        if outputs.query_mask is not None:
            classes[~outputs.query_mask] = IGNORE_INDEX
        if not bool((classes != IGNORE_INDEX).any()):
            return {"loss_obj_ce": logits.sum() * 0.0}
        loss = F.cross_entropy(logits.transpose(1, 2), classes, self.class_weight, ignore_index=IGNORE_INDEX)
        return {"loss_obj_ce": loss}

    def loss_boxes(
        self, outputs: ARNOutput, targets: Sequence[Mapping[str, Any]], indices: Indices, num_pairs: float
    ) -> dict[str, Tensor]:
        """``loss_{sub,obj}_bbox`` (L1) and ``loss_{sub,obj}_giou`` (1 - GIoU) of matched pairs, per pair.

        The GIoU is :func:`arn_lightning.boxes.paired_generalized_box_iou` (exact, no epsilon): finite with finite
        gradients for degenerate (zero-area) boxes too, and 1 for a box equal to its target.
        """
        position = matched_positions(indices, outputs.sub_boxes.device)
        losses = {}
        for role in ("sub", "obj"):
            pred = getattr(outputs, f"{role}_boxes")[position].float()  # [M, 4] cxcywh
            gt = gather_targets([t[f"{role}_boxes"] for t in targets], indices).to(pred)  # [M, 4] cxcywh
            losses[f"loss_{role}_bbox"] = F.l1_loss(pred, gt, reduction="sum") / num_pairs
            giou = paired_generalized_box_iou(box_convert(pred, "cxcywh", "xyxy"), box_convert(gt, "cxcywh", "xyxy"))
            losses[f"loss_{role}_giou"] = (1 - giou).sum() / num_pairs  # [M] -> scalar
        return losses

    def _branch_loss(self, kind: str, logits: Tensor, target: Tensor, matched: Tensor) -> Tensor:
        """Summed loss of one branch: ``logits`` / ``target`` ``[R, K]`` of the real queries, ``matched`` ``[R]``."""
        cfg = self.config
        if cfg.predicate_loss == "focal":
            return sigmoid_focal_loss(logits, target, alpha=cfg.focal_alpha, gamma=cfg.focal_gamma, reduction="sum")
        if kind not in SINGLE_LABEL_BRANCHES:
            return F.binary_cross_entropy_with_logits(logits, target, reduction="sum")
        rows = matched & (target.sum(dim=1) > 0)  # matched pairs whose label is a known category
        distribution = target[rows] / target[rows].sum(dim=1, keepdim=True).clamp(min=1.0)  # [R', K]
        return -(distribution * logits[rows].log_softmax(dim=1)).sum()

    def loss_predicate(
        self, outputs: ARNOutput, branch_targets: Sequence[Mapping[str, Tensor]], indices: Indices, num_pairs: float
    ) -> dict[str, Tensor]:
        """``loss_predicate``: sum over branches of the predicate loss of every real query, per matched pair."""
        position = matched_positions(indices, outputs.obj_logits.device)
        total = outputs.obj_logits.new_zeros(())
        for kind, logits in outputs.predicate_logits().items():
            logits = logits.float()  # [BT, Q, K]
            target = torch.zeros_like(logits)
            matched = torch.zeros(logits.shape[:2], dtype=torch.bool, device=logits.device)
            if position[0].numel():
                target[position] = gather_targets([b[kind] for b in branch_targets], indices).to(logits)
                matched[position] = True
            real = outputs.query_mask if outputs.query_mask is not None else torch.ones_like(matched)
            total = total + self._branch_loss(kind, logits[real], target[real], matched[real])
        return {"loss_predicate": total / num_pairs}

    def loss_distill(self, outputs: ARNOutput, clip_image_embeds: Tensor | None) -> dict[str, Tensor]:
        """``loss_distill``: mean L1 between ``predicate_embeds`` ``[BT, E]`` and CLIP image embeddings ``[BT, E]``.

        Skipped (no key) when distillation is off or either side is None.
        """
        if not self.distill or outputs.predicate_embeds is None or clip_image_embeds is None:
            return {}
        pred = outputs.predicate_embeds.float()
        if pred.shape != clip_image_embeds.shape:
            raise ValueError(
                f"Expected CLIP image embeddings of shape {tuple(pred.shape)} but got {tuple(clip_image_embeds.shape)}"
            )
        return {"loss_distill": F.l1_loss(pred, clip_image_embeds.to(pred))}

    # ------------------------------------------------------------------ driver
    def layer_losses(
        self,
        outputs: ARNOutput,
        targets: Sequence[Mapping[str, Any]],
        branch_targets: Sequence[Mapping[str, Tensor]],
        num_pairs: float,
        clip_image_embeds: Tensor | None,
    ) -> dict[str, Tensor]:
        """All terms of one decoder layer (its own matching)."""
        indices = self.matcher(outputs, targets, branch_targets)
        losses = self.loss_obj_ce(outputs, targets, indices)
        losses.update(self.loss_boxes(outputs, targets, indices, num_pairs))
        losses.update(self.loss_predicate(outputs, branch_targets, indices, num_pairs))
        losses.update(self.loss_distill(outputs, clip_image_embeds))
        return losses

    def forward(
        self, outputs: ARNOutput, targets: Sequence[Mapping[str, Any]], clip_image_embeds: Tensor | None = None
    ) -> dict[str, Tensor]:
        """Unweighted loss terms of the last layer and of every auxiliary layer.

        Args:
            outputs: model outputs (``ARCHITECTURE.md`` section 5) for ``BT`` frames.
            targets: ``BT`` frame targets (``ARCHITECTURE.md`` section 2): ``sub_boxes`` / ``obj_boxes`` ``[N, 4]``
                normalised cxcywh, ``obj_labels`` ``[N]``, predicate counts ``[N, 3 / 6 / 17]``.
            clip_image_embeds: ``[BT, E]`` CLIP image embeddings of the frames, or None.

        Returns:
            ``{"loss_obj_ce", "loss_sub_bbox", "loss_obj_bbox", "loss_sub_giou", "loss_obj_giou",
            "loss_predicate"[, "loss_distill"]}`` scalars, plus the same keys suffixed ``_{i}`` for
            ``outputs.aux_outputs[i]``.
        """
        if len(targets) != outputs.obj_logits.shape[0]:
            raise ValueError(f"Expected {outputs.obj_logits.shape[0]} targets (one per frame) but got {len(targets)}")
        if self.config.frames == "key" and any("key" in t for t in targets):  # training clips: key frames only
            keep = [i for i, t in enumerate(targets) if t.get("key", False)]
            index = torch.tensor(keep, dtype=torch.long, device=outputs.obj_logits.device)
            outputs, targets = outputs.select(index), [targets[i] for i in keep]
            clip_image_embeds = None if clip_image_embeds is None else clip_image_embeds[index]
        vocab = self.vocab
        branch_targets = [triplet_targets(t, vocab) for t in targets]
        queries = outputs.obj_logits.shape[1]
        num_pairs = world_mean_count(
            sum(min(queries, int(t["obj_labels"].shape[0])) for t in targets), outputs.obj_logits.device
        )
        losses = self.layer_losses(outputs, targets, branch_targets, num_pairs, clip_image_embeds)
        for i, aux in enumerate(outputs.aux_outputs):
            aux_losses = self.layer_losses(aux, targets, branch_targets, num_pairs, clip_image_embeds)
            losses.update({f"{name}_{i}": value for name, value in aux_losses.items()})
        return losses

    def weighted_total(self, losses: Mapping[str, Tensor]) -> Tensor:
        """``sum(weight(term) * value)`` over ``losses`` (aux terms weighted like their main term)."""
        if not losses:
            raise ValueError("Expected at least one loss term but got an empty dict")
        weights = self.config.term_weights()
        total: Tensor | None = None
        for name, value in losses.items():
            base = _AUX_SUFFIX.sub("", name)
            if base not in weights:
                raise ValueError(f"Expected loss terms named {sorted(weights)} (+ _<i>) but got {name!r}")
            total = weights[base] * value if total is None else total + weights[base] * value
        return total
