"""Raw ARN outputs -> per-frame scene-graph predictions (``ARCHITECTURE.md`` section 4, paper Sec. 3.5).

Per frame and pair query (SGDet):

* object class = argmax of the softmax over the 36 AG classes (the "no object" column excluded), object score =
  its softmax probability, label = class + 1 (AG index); the subject is ``person`` (label 1) with score 1;
* predicate scores (eq. 15): the score of predicate j is the maximum sigmoid score over the branch's triplet
  categories whose predicate is j; a predicate without any category scores 0. ``restrict_to_object_class``
  (default off, the paper's literal eq. 15) keeps only the categories whose object is the pair's predicted class;
* attention scores are divided by their sum (a distribution over the 3 attention predicates, ``ARN_SPEC.md`` 3);
* boxes: normalised cxcywh w.r.t. the unpadded resized frame, which has the original aspect ratio, so they are
  multiplied by the original ``(w, h)`` and clipped to the frame.

Rows: the P subject boxes first, then the P object boxes; pair n is ``(n, P + n)``. Subject boxes are not merged
across pairs: each query predicts its own person box, and merging near-duplicates would change the IoU test of
the metrics. ``top_k_pairs`` keeps the pairs with the best achievable triplet score (object score x best predicate
score), in descending order.

SGCls / PredCls (``outputs.query_mask`` set): query n is GT pair n, so the rows are the frame's ground-truth boxes
(row 0 the person, row n + 1 the object of pair n; original pixels), pairs ``(0, n + 1)``; PredCls also takes the
ground-truth labels with score 1, SGCls the predicted object classes. All pairs are kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import box_convert

from arn_lightning.matcher import ANY_OBJECT, TripletVocabulary
from arn_lightning.models.outputs import ARNOutput
from arn_lightning.vocab import PERSON_LABEL, PREDICATE_TYPES, TYPE_OFFSETS, TYPE_SIZES

TASKS = ("sgdet", "sgcls", "predcls")
#: Floor of the attention-score sum when normalising to a distribution (all-zero rows stay zero).
ATTENTION_SUM_EPS = 1e-12


@dataclass
class PostProcessConfig:
    """How raw outputs become predictions.

    Attributes:
        top_k_pairs: pairs kept per frame in SGDet, best first (``None``: all queries).
        restrict_to_object_class: eq. 15 over the categories of the pair's predicted object class only (False: over
            all categories of the predicate, as the paper writes it).
        normalize_attention: divide the 3 attention scores by their sum.
        clip_boxes: clip SGDet boxes to the original frame.
        task: ``"sgdet"``, ``"sgcls"`` or ``"predcls"``; ``None`` takes ``config.task`` of the model passed to
            :class:`PostProcess` (``"sgdet"`` if it has none).
    """

    top_k_pairs: Optional[int] = None
    restrict_to_object_class: bool = False
    normalize_attention: bool = True
    clip_boxes: bool = True
    task: Optional[str] = None

    def __post_init__(self) -> None:
        if self.top_k_pairs is not None and self.top_k_pairs < 1:
            raise ValueError(f"Expected top_k_pairs >= 1 or None but got {self.top_k_pairs}")
        if self.task is not None and self.task not in TASKS:
            raise ValueError(f"Expected task in {TASKS} or None but got {self.task!r}")


def predicate_scores(probs: Tensor, predicates: Tensor, objects: Tensor, kind: str,
                     labels: Optional[Tensor] = None) -> Tensor:
    """Eq. 15: per-predicate scores ``[Q, P_kind]`` from triplet sigmoid scores ``[Q, K]``.

    Args:
        probs: sigmoid scores of the branch's ``K`` columns.
        predicates: ``[K]`` global predicate index of each column.
        objects: ``[K]`` AG object index of each column (``-1``: any object).
        kind: the branch.
        labels: ``[Q]`` predicted AG labels; when given, only columns of that object (or ``-1``) count.
    """
    num = TYPE_SIZES[kind]
    if probs.shape[-1] == 0:
        return probs.new_zeros(probs.shape[0], num)
    member = F.one_hot(predicates - TYPE_OFFSETS[kind], num).to(probs.dtype)  # [K, P]
    if labels is not None:
        allowed = (objects[None, :] == labels[:, None]) | (objects[None, :] == ANY_OBJECT)  # [Q, K]
        probs = probs * allowed
    return (probs[:, :, None] * member[None]).amax(dim=1)  # [Q, P]; scores >= 0, so masking by 0 is exact


def scale_boxes(boxes_cxcywh: Tensor, orig_size: Tensor, clip: bool) -> Tensor:
    """Normalised cxcywh ``[Q, 4]`` -> xyxy in original pixels, ``orig_size`` = ``(h, w)``."""
    height, width = orig_size.to(boxes_cxcywh).unbind()
    scale = torch.stack((width, height, width, height))
    boxes = box_convert(boxes_cxcywh.float(), "cxcywh", "xyxy") * scale  # [Q, 4]
    if clip:
        boxes = torch.minimum(boxes.clamp(min=0), scale)
    return boxes


def to_jsonable(prediction: Mapping[str, Any]) -> Dict[str, Any]:
    """A prediction with tensors turned into (nested) Python lists, for one JSON line."""
    return {key: value.detach().cpu().tolist() if isinstance(value, Tensor) else value
            for key, value in prediction.items()}


def _model_task(source: Any) -> str:
    task = getattr(getattr(source, "config", None), "task", None)
    return task if task in TASKS else "sgdet"


class PostProcess(nn.Module):
    """Turns :class:`~arn_lightning.models.outputs.ARNOutput` into per-frame predictions (see the module doc).

    Args:
        config: options.
        triplets: anything with ``triplet_predicates`` / ``triplet_objects`` per branch (the ARN model or a
            :class:`~arn_lightning.matcher.TripletVocabulary`), copied into non-persistent buffers.
    """

    def __init__(self, config: Optional[PostProcessConfig] = None, triplets: Any = None) -> None:
        super().__init__()
        self.config = config or PostProcessConfig()
        if triplets is None:
            raise ValueError("Expected the model (or a TripletVocabulary) for the triplet columns but got None")
        self.task = self.config.task or _model_task(triplets)
        vocab = TripletVocabulary.of(triplets)
        for kind in PREDICATE_TYPES:
            self.register_buffer(f"_predicates_{kind}", vocab.triplet_predicates[kind].clone(), persistent=False)
            self.register_buffer(f"_objects_{kind}", vocab.triplet_objects[kind].clone(), persistent=False)

    def _pair_scores(self, outputs: ARNOutput, frame: int, labels: Tensor) -> Dict[str, Tensor]:
        """Per branch ``[M, P_kind]`` predicate scores of the first ``M = len(labels)`` queries of a frame."""
        restrict = labels if self.config.restrict_to_object_class else None
        scores = {}
        for kind, logits in outputs.predicate_logits().items():
            probs = logits[frame, : labels.shape[0]].float().sigmoid()  # [M, K]
            predicates, objects = getattr(self, f"_predicates_{kind}"), getattr(self, f"_objects_{kind}")
            scores[kind] = predicate_scores(probs, predicates, objects, kind, restrict)
        if self.config.normalize_attention:
            attention = scores["attention"]
            scores["attention"] = attention / attention.sum(dim=1, keepdim=True).clamp(min=ATTENTION_SUM_EPS)
        return scores

    @staticmethod
    def _object_classes(obj_logits: Tensor) -> Tuple[Tensor, Tensor]:
        """``(scores [M], AG labels [M])`` of object logits ``[M, 37]``: best class without "no object"."""
        scores, classes = obj_logits.float().softmax(-1)[:, :-1].max(dim=-1)
        return scores, classes + 1

    def _detected(self, outputs: ARNOutput, frame: int, target: Mapping[str, Any]) -> Dict[str, Any]:
        """SGDet prediction of one frame."""
        obj_scores, labels = self._object_classes(outputs.obj_logits[frame])  # [Q]
        scores = self._pair_scores(outputs, frame, labels)
        best = torch.cat(list(scores.values()), dim=1).amax(dim=1) * obj_scores  # [Q] best triplet score
        keep = best.argsort(descending=True, stable=True)[: self.config.top_k_pairs]  # [P]
        size, clip = target["orig_size"], self.config.clip_boxes
        sub = scale_boxes(outputs.sub_boxes[frame][keep], size, clip)  # [P, 4] xyxy px
        obj = scale_boxes(outputs.obj_boxes[frame][keep], size, clip)
        rows = torch.arange(keep.numel(), device=keep.device)
        return {
            "boxes": torch.cat((sub, obj)),  # [2P, 4]
            "labels": torch.cat((torch.full_like(rows, PERSON_LABEL), labels[keep])),
            "scores": torch.cat((torch.ones_like(sub[:, 0]), obj_scores[keep])),
            "pairs": torch.stack((rows, rows + keep.numel()), dim=1),  # [P, 2]
            **{kind: value[keep] for kind, value in scores.items()},
        }

    def _given_boxes(self, outputs: ARNOutput, frame: int, target: Mapping[str, Any]) -> Dict[str, Any]:
        """SGCls / PredCls prediction of one frame: GT boxes, pair n = query n."""
        device = outputs.obj_logits.device
        boxes = target["boxes"].to(device).float()  # [N+1, 4] xyxy px, row 0 the person
        num = boxes.shape[0] - 1
        if self.task == "predcls":
            labels, obj_scores = target["labels"][1:].to(device), torch.ones(num, device=device)
        else:
            obj_scores, labels = self._object_classes(outputs.obj_logits[frame, :num])  # [N]
        objects = torch.arange(1, num + 1, device=device)
        return {
            "boxes": boxes,
            "labels": torch.cat((labels.new_full((1,), PERSON_LABEL), labels)),
            "scores": torch.cat((torch.ones(1, device=device), obj_scores)),
            "pairs": torch.stack((torch.zeros_like(objects), objects), dim=1),  # [N, 2]
            **self._pair_scores(outputs, frame, labels),
        }

    @torch.no_grad()
    def forward(self, outputs: ARNOutput, targets: Sequence[Mapping[str, Any]],
                only_evaluated: bool = False) -> List[Dict[str, Any]]:
        """Per-frame predictions.

        Args:
            outputs: model outputs for ``BT`` frames.
            targets: ``BT`` frame targets with ``frame`` (key), ``orig_size`` ``(h, w)``, ``evaluate`` and, in
                SGCls / PredCls, ``boxes`` ``[N+1, 4]`` xyxy original pixels and ``labels`` ``[N+1]``.
            only_evaluated: return only the frames whose ``evaluate`` is True.

        Returns:
            Per frame ``{"frame": str, "boxes": [R, 4] xyxy px, "labels": [R], "scores": [R], "pairs": [P, 2],
            "attention": [P, 3], "spatial": [P, 6], "contacting": [P, 17]}`` on the outputs' device.
        """
        if len(targets) != outputs.obj_logits.shape[0]:
            raise ValueError(f"Expected {outputs.obj_logits.shape[0]} targets (one per frame) but got {len(targets)}")
        given = outputs.query_mask is not None
        if given and self.task == "sgdet":
            raise ValueError("Expected task sgcls or predcls for outputs with a query_mask but got sgdet")
        predictions = []
        for i, target in enumerate(targets):
            if only_evaluated and not target["evaluate"]:
                continue
            body = self._given_boxes(outputs, i, target) if given else self._detected(outputs, i, target)
            predictions.append({"frame": target["frame"], **body})
        return predictions
