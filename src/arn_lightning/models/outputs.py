"""Typed raw outputs of the ARN model (one instance per decoder layer)."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor

BRANCHES = ("attention", "spatial", "contacting")


@dataclass
class ARNOutput:
    """Raw outputs for every frame of a batch of clips. ``BT = B*T`` frames, frame-major (clip b frame t is b*T+t).

    Attributes:
        obj_logits: ``[BT, Q, C+1]`` object-class logits over the 36 AG classes (class ``c`` is AG index ``c+1``)
            and a trailing "no object" class.
        sub_boxes: ``[BT, Q, 4]`` subject (person) boxes, normalised cxcywh in ``[0, 1]``.
        obj_boxes: ``[BT, Q, 4]`` object boxes, normalised cxcywh in ``[0, 1]``.
        attention_logits: ``[BT, Q, K_A]`` triplet logits of the attention branch (predicate logits ``[.., 3]``
            with ``clip_triplets`` off).
        spatial_logits: ``[BT, Q, K_S]`` likewise for the spatial branch (``[.., 6]`` with ``clip_triplets`` off).
        contacting_logits: ``[BT, Q, K_C]`` likewise for the contacting branch (``[.., 17]``).
        predicate_embeds: ``[BT, E]`` mean predicate feature of a frame in the CLIP width (the classifiers' own
            projection, or ``distill_proj``'s: ``ARNConfig.distill_features``), for the image-embedding distillation
            loss; ``None`` when distillation is disabled.
        query_mask: ``[BT, Q]`` True for real queries; set in SGCls/PredCls where query n is GT pair n and frames
            with fewer pairs are padded, ``None`` in SGDet (all queries real).
        aux_outputs: outputs of the earlier decoder layers (each without ``aux_outputs`` of its own).
    """

    obj_logits: Tensor
    sub_boxes: Tensor
    obj_boxes: Tensor
    attention_logits: Tensor
    spatial_logits: Tensor
    contacting_logits: Tensor
    predicate_embeds: Tensor | None = None
    query_mask: Tensor | None = None
    aux_outputs: list[ARNOutput] = field(default_factory=list)

    def select(self, index: Tensor) -> ARNOutput:
        """The outputs of the frames ``index`` (``[n]`` long, into ``BT``), auxiliary outputs included."""
        fields = {
            name: None if getattr(self, name) is None else getattr(self, name)[index]
            for name in (
                "obj_logits",
                "sub_boxes",
                "obj_boxes",
                "attention_logits",
                "spatial_logits",
                "contacting_logits",
                "predicate_embeds",
                "query_mask",
            )
        }
        return ARNOutput(**fields, aux_outputs=[aux.select(index) for aux in self.aux_outputs])

    def predicate_logits(self) -> dict[str, Tensor]:
        """The three branch logits keyed by predicate type (``"attention"``, ``"spatial"``, ``"contacting"``)."""
        return {kind: getattr(self, f"{kind}_logits") for kind in BRANCHES}
