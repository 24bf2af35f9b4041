"""Raw ARN outputs -> per-frame scene-graph predictions (``ARCHITECTURE.md`` section 4, paper Sec. 3.5).

Per frame and pair query (SGDet):

* object class = argmax of the softmax over the 36 AG classes (the "no object" column excluded), object score =
  its softmax probability, label = class + 1 (AG index); the subject is ``person`` (label 1) with score 1;
* predicate scores (eq. 15): the score of predicate j is the maximum sigmoid score over the branch's triplet
  categories whose predicate is j; a predicate without any category scores 0. ``restrict_to_object_class``
  (default off, the paper's literal eq. 15) keeps only the categories whose object is the pair's predicted class;
* attention scores are divided by their sum (a distribution over the 3 attention predicates, ``docs/model.md``
  section 6);
* boxes: normalised cxcywh w.r.t. the unpadded resized frame, which has the original aspect ratio, so they are
  multiplied by the original ``(w, h)`` and clipped to the frame.

Validity (``docs/boxes.md``): every box of a prediction obeys the box rule of :mod:`arn_lightning.boxes` (finite,
``x2 >= x1``, ``y2 >= y1``). A sigmoid ``w, h >= 0`` gives that by construction; a non-finite model output (boxes,
object or predicate logits of a used query) or a negative size raises a ``ValueError`` naming the frame, instead of
writing NaN into a prediction file. In SGCls / PredCls the ground-truth boxes are checked the same way.

Rows: the P subject boxes first, then the P object boxes; pair n is ``(n, P + n)``. Subject boxes are not merged
across pairs: each query predicts its own person box, and merging near-duplicates would change the IoU test of
the metrics. ``top_k_pairs`` keeps the pairs with the best achievable triplet score (object score x best predicate
score), in descending order.

SGCls / PredCls (``outputs.query_mask`` set): query n is GT pair n, so the rows are the frame's ground-truth boxes
(row 0 the person, row n + 1 the object of pair n; original pixels), pairs ``(0, n + 1)``; PredCls also takes the
ground-truth labels with score 1, SGCls the predicted object classes. All pairs are kept.

The test-time triplet NMS is no part of the postprocess: it filters a prediction for one metric constraint
(:mod:`arn_lightning.metrics.triplet_nms`), and the prediction file holds the plain predictions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import box_convert

from arn_lightning.boxes import BOX_RULE, box_violation, invalid_box_mask
from arn_lightning.models.outputs import ARNOutput
from arn_lightning.triplets import ANY_OBJECT, TripletVocabulary
from arn_lightning.vocab import PERSON_LABEL, PREDICATE_TYPES, TASKS, TYPE_OFFSETS, TYPE_SIZES

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

    The task is the model's (``ARNConfig.task``), handed to :class:`PostProcess`.
    """

    top_k_pairs: int | None = None
    restrict_to_object_class: bool = False
    normalize_attention: bool = True
    clip_boxes: bool = True

    def __post_init__(self) -> None:
        if self.top_k_pairs is not None and self.top_k_pairs < 1:
            raise ValueError(f"Expected top_k_pairs >= 1 or None but got {self.top_k_pairs}")


def predicate_scores(
    probs: Tensor, predicates: Tensor, objects: Tensor, kind: str, labels: Tensor | None = None
) -> Tensor:
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
    """Normalised cxcywh ``[Q, 4]`` -> float32 xyxy in original pixels, ``orig_size`` = ``(h, w)`` ``[2]``; or
    a batch: ``[BT, Q, 4]`` with ``orig_size`` ``[BT, 2]``. With ``w, h >= 0`` the result has ``x2 >= x1`` and
    ``y2 >= y1`` (clipping keeps the order)."""
    sizes = orig_size.to(boxes_cxcywh)
    scale = torch.stack((sizes[..., 1], sizes[..., 0], sizes[..., 1], sizes[..., 0]), dim=-1)  # (w, h, w, h)
    scale = scale.unsqueeze(-2) if sizes.dim() > 1 else scale  # [BT, 1, 4] against [BT, Q, 4]
    boxes = box_convert(boxes_cxcywh.float(), "cxcywh", "xyxy") * scale  # [..., Q, 4]
    if clip:
        boxes = torch.minimum(boxes.clamp(min=0), scale)
    return boxes


class PostProcess(nn.Module):
    """Turns :class:`~arn_lightning.models.outputs.ARNOutput` into per-frame predictions (see the module doc).

    Args:
        config: options.
        vocabulary: the classifier columns of each branch (the model's
            :class:`~arn_lightning.triplets.TripletVocabulary`), copied into non-persistent buffers.
        task: the model's task (``ARNConfig.task``): ``"sgdet"``, ``"sgcls"`` or ``"predcls"``.

    Raises:
        ValueError: no vocabulary, or an unknown task.
    """

    def __init__(
        self, config: PostProcessConfig | None = None, vocabulary: TripletVocabulary | None = None, task: str = "sgdet"
    ) -> None:
        super().__init__()
        self.config = config or PostProcessConfig()
        if not isinstance(vocabulary, TripletVocabulary):
            raise ValueError(f"Expected a TripletVocabulary for the triplet columns but got {vocabulary!r:.60}")
        if task not in TASKS:
            raise ValueError(f"Expected task in {TASKS} but got {task!r}")
        self.task = task
        vocab = vocabulary
        for kind in PREDICATE_TYPES:
            self.register_buffer(f"_predicates_{kind}", vocab.triplet_predicates[kind].clone(), persistent=False)
            self.register_buffer(f"_objects_{kind}", vocab.triplet_objects[kind].clone(), persistent=False)

    def _pair_scores(self, outputs: ARNOutput, frame: int, labels: Tensor) -> dict[str, Tensor]:
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
    def _object_classes(obj_logits: Tensor) -> tuple[Tensor, Tensor]:
        """``(scores [M], AG labels [M])`` of object logits ``[M, 37]``: best class without "no object"."""
        scores, classes = obj_logits.float().softmax(-1)[:, :-1].max(dim=-1)
        return scores, classes + 1

    def _detected(self, outputs: ARNOutput, frame: int, boxes: tuple[Tensor, Tensor]) -> dict[str, Any]:
        """SGDet prediction of one frame; ``boxes``: the batch's (subject, object) xyxy pixels ``[BT, Q, 4]``."""
        obj_scores, labels = self._object_classes(outputs.obj_logits[frame])  # [Q]
        scores = self._pair_scores(outputs, frame, labels)
        best = torch.cat(list(scores.values()), dim=1).amax(dim=1) * obj_scores  # [Q] best triplet score
        keep = best.argsort(descending=True, stable=True)[: self.config.top_k_pairs]  # [P]
        sub, obj = boxes[0][frame][keep], boxes[1][frame][keep]  # [P, 4] xyxy px
        rows = torch.arange(keep.numel(), device=keep.device)
        return {
            "boxes": torch.cat((sub, obj)),  # [2P, 4]
            "labels": torch.cat((torch.full_like(rows, PERSON_LABEL), labels[keep])),
            "scores": torch.cat((torch.ones_like(sub[:, 0]), obj_scores[keep])),
            "pairs": torch.stack((rows, rows + keep.numel()), dim=1),  # [P, 2]
            **{kind: value[keep] for kind, value in scores.items()},
        }

    def _given_boxes(self, outputs: ARNOutput, frame: int, target: Mapping[str, Any]) -> dict[str, Any]:
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
    def forward(
        self, outputs: ARNOutput, targets: Sequence[Mapping[str, Any]], only_evaluated: bool = False
    ) -> list[dict[str, Any]]:
        """Per-frame predictions of a training / evaluation batch (the training path; inference calls
        :meth:`detect`, the same core, with what it has).

        Args:
            outputs: model outputs for ``BT`` frames.
            targets: ``BT`` frame targets with ``frame`` (key), ``orig_size`` ``(h, w)``, ``evaluate`` and, in
                SGCls / PredCls, ``boxes`` ``[N+1, 4]`` xyxy original pixels and ``labels`` ``[N+1]``.
            only_evaluated: return only the frames whose ``evaluate`` is True.

        Returns:
            Per frame ``{"frame": str, "boxes": [R, 4] xyxy px, "labels": [R], "scores": [R], "pairs": [P, 2],
            "attention": [P, 3], "spatial": [P, 6], "contacting": [P, 17]}`` on the outputs' device; every box obeys
            the box rule of :mod:`arn_lightning.boxes`.

        Raises:
            ValueError: a target count that is not ``BT``; a query mask in SGDet; for a returned frame, a non-finite
                used model output, a box breaking the box rule (SGDet: model boxes, e.g. a negative size; SGCls /
                PredCls: the targets' boxes), naming the frame key and the output.
        """
        if len(targets) != outputs.obj_logits.shape[0]:
            raise ValueError(f"Expected {outputs.obj_logits.shape[0]} targets (one per frame) but got {len(targets)}")
        given = outputs.query_mask is not None
        if given and self.task == "sgdet":
            raise ValueError("Expected task sgcls or predcls for outputs with a query_mask but got sgdet")
        frames = [i for i, target in enumerate(targets) if target["evaluate"] or not only_evaluated]
        keys = [target.get("frame", i) for i, target in enumerate(targets)]
        if given:
            self._check_outputs(outputs, keys, frames, None)
            self._check_given_boxes(targets, frames)
            return [{"frame": targets[i]["frame"], **self._given_boxes(outputs, i, targets[i])} for i in frames]
        sizes = torch.stack([torch.as_tensor(t["orig_size"]) for t in targets])  # [BT, 2]
        return self._detect_frames(outputs, keys, sizes, frames)

    @torch.no_grad()
    def detect(
        self, outputs: ARNOutput, keys: Sequence[str], orig_sizes: Tensor, rows: Sequence[int] | None = None
    ) -> list[dict[str, Any]]:
        """SGDet predictions from what inference has: the model outputs, the frame keys and the original frame
        sizes (no target, no ``evaluate`` flag; the values :meth:`forward` gives for the same frames).

        The resized size is not needed: the model's boxes are normalised to the unpadded resized frame, which keeps
        the original aspect ratio, so they scale to pixels by the original size alone.

        Args:
            outputs: model outputs for ``BT`` frames, without a query mask.
            keys: ``BT`` frame keys (``"<video>/<NNNNNN>.png"``).
            orig_sizes: ``[BT, 2]`` original ``(h, w)`` in pixels.
            rows: the frames to predict, in order (e.g. the emitted frames of windowed clips); default all.

        Returns:
            Per frame of ``rows``, the prediction of :meth:`forward`.

        Raises:
            ValueError: a model of another task or outputs with a query mask, ``keys`` or ``orig_sizes`` of another
                frame count, a row outside ``0..BT-1``, or a non-finite output / a box breaking the box rule of a
                predicted frame (naming its key).
        """
        count = outputs.obj_logits.shape[0]
        if self.task != "sgdet" or outputs.query_mask is not None:
            raise ValueError(f"Expected an SGDet model's outputs without a query mask but got task {self.task!r}")
        sizes = torch.as_tensor(orig_sizes)
        if len(keys) != count or tuple(sizes.shape) != (count, 2):
            raise ValueError(
                f"Expected {count} frame keys and orig_sizes of shape [{count}, 2] (h, w) but got {len(keys)} keys "
                f"and shape {list(sizes.shape)}"
            )
        frames = list(range(count)) if rows is None else [int(row) for row in rows]
        if any(not 0 <= row < count for row in frames):
            raise ValueError(f"Expected rows in 0..{count - 1} but got {frames}")
        return self._detect_frames(outputs, list(keys), sizes, frames)

    def _detect_frames(
        self, outputs: ARNOutput, keys: Sequence[Any], sizes: Tensor, frames: list[int]
    ) -> list[dict[str, Any]]:
        """The SGDet core of :meth:`forward` and :meth:`detect`: ``frames`` of the batch, ``sizes`` ``[BT, 2]``."""
        boxes = self._batch_boxes(outputs, sizes)
        self._check_outputs(outputs, keys, frames, boxes)
        return [{"frame": keys[i], **self._detected(outputs, i, boxes)} for i in frames]

    def _batch_boxes(self, outputs: ARNOutput, sizes: Tensor) -> tuple[Tensor, Tensor]:
        """SGDet: the (subject, object) boxes of every query in original pixels, xyxy ``[BT, Q, 4]`` each;
        ``sizes`` ``[BT, 2]`` original ``(h, w)``."""
        sizes = sizes.to(outputs.sub_boxes.device)
        return (
            scale_boxes(outputs.sub_boxes, sizes, self.config.clip_boxes),
            scale_boxes(outputs.obj_boxes, sizes, self.config.clip_boxes),
        )

    def _check_outputs(
        self, outputs: ARNOutput, keys: Sequence[Any], frames: list[int], boxes: tuple[Tensor, Tensor] | None
    ) -> None:
        """Raise naming the first of ``frames`` whose used outputs are not finite, or whose SGDet boxes (the scaled
        model boxes) break the box rule; one device sync."""
        used = outputs.query_mask  # [BT, Q] or None: every query is used
        checks = {"obj_logits": outputs.obj_logits, **{f"{k}_logits": v for k, v in outputs.predicate_logits().items()}}
        bad = {}
        for name, value in checks.items():
            nonfinite = ~torch.isfinite(value).all(dim=-1)  # [BT, Q]
            bad[name] = (nonfinite & used if used is not None else nonfinite).any(dim=-1)  # [BT]
        if boxes is not None:
            for name, value in zip(("sub_boxes", "obj_boxes"), boxes):
                bad[name] = invalid_box_mask(value).any(dim=-1)  # [BT]
        selected = torch.zeros(len(keys), dtype=torch.bool, device=outputs.obj_logits.device)
        selected[frames] = True
        table = torch.stack(list(bad.values())) & selected  # [checks, BT]
        if bool(table.any()):
            frame = int(table.any(dim=0).nonzero()[0, 0])
            name = list(bad)[int(table[:, frame].nonzero()[0, 0])]
            raise self._output_error(outputs, keys[frame], frame, name, boxes)

    @staticmethod
    def _output_error(
        outputs: ARNOutput, key: Any, frame: int, name: str, boxes: tuple[Tensor, Tensor] | None
    ) -> ValueError:
        if name.endswith("_logits"):
            return ValueError(
                f"Expected finite model outputs for frame {key!r} but got non-finite {name} (a NaN or "
                f"inf would be written into the prediction file; are the weights or inputs finite?)"
            )
        assert boxes is not None
        scaled = boxes[0 if name == "sub_boxes" else 1][frame]  # [Q, 4] xyxy px
        query = int(invalid_box_mask(scaled).nonzero()[0, 0])
        raw = getattr(outputs, name)[frame, query].tolist()
        return ValueError(
            f"Expected {name} of frame {key!r} to give {BOX_RULE} but got {scaled[query].tolist()} "
            f"({box_violation(scaled[query].tolist())}) at query {query}, from the model's normalised "
            f"cxcywh {raw}"
        )

    @staticmethod
    def _check_given_boxes(targets: Sequence[Mapping[str, Any]], frames: list[int]) -> None:
        """SGCls / PredCls: the targets' ``boxes`` ``[N+1, 4]`` of ``frames`` obey the box rule (one check)."""
        if not frames:
            return
        parts = [torch.as_tensor(targets[i]["boxes"]).reshape(-1, 4) for i in frames]  # [N_i + 1, 4] each
        stacked = torch.cat(parts)
        invalid = invalid_box_mask(stacked)
        if not bool(invalid.any()):
            return
        row = int(invalid.nonzero()[0, 0])
        ends = torch.tensor([len(part) for part in parts]).cumsum(0)  # [F] end row of each frame
        position = int(torch.searchsorted(ends, torch.tensor(row), right=True))
        local = row - (int(ends[position - 1]) if position else 0)
        key = targets[frames[position]].get("frame", frames[position])
        raise ValueError(
            f"Expected the ground-truth boxes of frame {key!r} to be {BOX_RULE} but got row {local} "
            f"{stacked[row].tolist()} ({box_violation(stacked[row].tolist())})"
        )
