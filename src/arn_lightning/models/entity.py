"""The entity decoder with paired subject / object queries (paper Sec. 3.1, eq. 1-2) and the task-specific queries.

SGDet: ``Q`` pairs of learned queries. Subject query n and object query n form pair n: ``Q^E = concat[Q^s + e^s,
Q^o + e^o]`` (2Q queries per frame, eq. 1), where ``Q^s, Q^o`` are learned contents and ``e^s, e^o`` learned
positions; as in DETR the positions are added to queries and keys at every layer. Self-attention runs over all 2Q
queries, cross-attention over the frame's encoder features ``F_vi``. Heads: subject / object box MLPs (sigmoid,
normalised cxcywh) and the object classifier over the AG classes plus a trailing "no object" class.

SGCls / PredCls (docs/model.md section 1): one pair query per ground-truth pair of the frame, padded to the
largest frame of the batch (``query_mask`` False on padding). The pair position comes from the GT boxes,
``[e^s_n, e^o_n] = MLP(concat[sub_cxcywh_n, obj_cxcywh_n])`` (so both queries know both boxes), and in PredCls a
learned embedding of the GT object label is added to ``e^o_n`` (``e^o`` also positions the predicate queries, so
the predicate decoder sees the given label). The output boxes are the GT boxes. SGCls keeps the object classifier;
PredCls outputs the GT label as logits (0 on the label, float32's minimum elsewhere: softmax gives exactly 1) and
runs the decoder only when PAP needs its subject / object features. Padded rows hold the whole-image box and the
"no object" class, so that box and loss operations stay finite on them.

The object classifier is a cosine classifier whose 36 class rows take the CLIP text embeddings of the object
prompts and whose "no object" row is an extra learned embedding (random init, trained at the default learning rate);
with ``clip_triplets`` off it is a plain linear layer over 37 outputs (the DETR baseline of paper Table 3).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from arn_lightning.models.config import ARNConfig
from arn_lightning.models.heads import MLP, CosineClassifier
from arn_lightning.models.transformer import Memory, TransformerDecoder, content_query_embedding
from arn_lightning.vocab import NUM_OBJECT_CLASSES

#: Normalised cxcywh box written into padded pair rows (the whole image: finite IoU / GIoU).
PAD_BOX_CXCYWH = (0.5, 0.5, 1.0, 1.0)
#: Box coordinates of one pair fed to the GT pair embedding: subject cxcywh + object cxcywh.
PAIR_BOX_DIM = 8
#: Layers of the subject / object box MLPs (DETR's 3-layer box head).
BOX_MLP_LAYERS = 3
#: Layers of the GT pair-box embedding MLP (SGCls / PredCls; ``docs/model.md`` section 2).
GT_EMBED_LAYERS = 2


class GroundTruthPairs(NamedTuple):
    """The GT pairs of a batch of frames, padded to the largest frame.

    Attributes:
        sub_boxes: ``[N, P, 4]`` normalised cxcywh subject boxes.
        obj_boxes: ``[N, P, 4]`` normalised cxcywh object boxes.
        labels: ``[N, P]`` AG object index, 0 on padding.
        mask: ``[N, P]`` True on real pairs.
    """

    sub_boxes: Tensor
    obj_boxes: Tensor
    labels: Tensor
    mask: Tensor


@dataclass
class EntityOutputs:
    """What the entity stage hands to the predicate decoder and the output heads.

    Attributes:
        obj_logits: per entity layer (only the last without aux outputs) ``[N, Q, C+1]``.
        sub_boxes: per entity layer ``[N, Q, 4]`` normalised cxcywh.
        obj_boxes: per entity layer ``[N, Q, 4]`` normalised cxcywh.
        sub_feats: ``[N, Q, D]`` last-layer subject features ``F^s`` (None when no decoder runs).
        obj_feats: ``[N, Q, D]`` last-layer object features ``F^o``.
        pair_pos: ``[N or 1, Q, D]`` the object position ``e^o`` shared with the predicate decoder (eq. 4).
        query_mask: ``[N, Q]`` True on real queries (SGCls / PredCls), None in SGDet.
    """

    obj_logits: list[Tensor]
    sub_boxes: list[Tensor]
    obj_boxes: list[Tensor]
    sub_feats: Tensor | None
    obj_feats: Tensor | None
    pair_pos: Tensor
    query_mask: Tensor | None = None


def _check_target(i: int, target: dict[str, Any], num_classes: int) -> int:
    """Validate the SGCls / PredCls fields of target ``i``; returns its number of pairs."""
    missing = [k for k in ("sub_boxes", "obj_boxes", "obj_labels") if k not in target]
    if missing:
        raise ValueError(f"Expected targets[{i}] to hold sub_boxes, obj_boxes and obj_labels but {missing} are absent")
    n = target["obj_labels"].shape[0]
    for key in ("sub_boxes", "obj_boxes"):
        if tuple(target[key].shape) != (n, 4):
            raise ValueError(f"Expected targets[{i}][{key!r}] of shape ({n}, 4) but got {tuple(target[key].shape)}")
    labels = target["obj_labels"]
    if n and (int(labels.min()) < 1 or int(labels.max()) > num_classes):
        raise ValueError(f"Expected targets[{i}]['obj_labels'] in [1, {num_classes}] but got {labels.tolist()}")
    return n


def pack_ground_truth(
    targets: Sequence[dict[str, Any]],
    num_frames: int,
    max_pairs: int,
    num_classes: int,
    device: torch.device,
) -> GroundTruthPairs:
    """Stack the GT pairs of ``num_frames`` targets (contract section 2), padded to the largest frame.

    At least one (padded) row is kept so that a batch without pairs still runs.
    """
    if len(targets) != num_frames:
        raise ValueError(f"Expected one target per frame ({num_frames}) but got {len(targets)}")
    counts = [_check_target(i, t, num_classes) for i, t in enumerate(targets)]
    width = max([1, *counts])
    if width > max_pairs:
        raise ValueError(f"Expected at most num_queries={max_pairs} pairs per frame but got {width}")
    pad = torch.tensor(PAD_BOX_CXCYWH, device=device)
    sub = pad.repeat(num_frames, width, 1)  # [N, P, 4]
    obj = pad.repeat(num_frames, width, 1)  # [N, P, 4]
    labels = torch.zeros(num_frames, width, dtype=torch.long, device=device)
    for i, (target, n) in enumerate(zip(targets, counts)):
        sub[i, :n] = target["sub_boxes"].to(device=device, dtype=sub.dtype)
        obj[i, :n] = target["obj_boxes"].to(device=device, dtype=obj.dtype)
        labels[i, :n] = target["obj_labels"].to(device)
    return GroundTruthPairs(sub, obj, labels, labels > 0)


def label_logits(labels: Tensor, num_classes: int) -> Tensor:
    """Logits ``[N, P, C+1]`` putting all probability on the given AG labels ``[N, P]`` (0 -> "no object")."""
    index = torch.where(labels > 0, labels - 1, torch.full_like(labels, num_classes))  # [N, P]
    logits = torch.full((*labels.shape, num_classes + 1), torch.finfo(torch.float32).min, device=labels.device)
    return logits.scatter(-1, index.unsqueeze(-1), 0.0)


class EntityDecoder(nn.Module):
    """Entity queries, the entity decoder and the entity heads of one task (see the module docstring).

    Args:
        config: the model configuration (:class:`~arn_lightning.models.config.ARNConfig`).
    """

    def __init__(self, config: ARNConfig) -> None:
        super().__init__()
        d, q = config.hidden_dim, config.num_queries
        self.task = config.task
        self.num_classes = NUM_OBJECT_CLASSES
        self.num_queries = q
        self.aux = config.aux_loss
        if config.task == "sgdet":
            self.subject_pos = nn.Embedding(q, d)  # e^s
            self.object_pos = nn.Embedding(q, d)  # e^o
            self.sub_box_head = MLP(d, d, 4, BOX_MLP_LAYERS)
            self.obj_box_head = MLP(d, d, 4, BOX_MLP_LAYERS)
        else:
            self.pair_box_embed = MLP(PAIR_BOX_DIM, d, 2 * d, GT_EMBED_LAYERS)
        if config.task == "predcls":
            self.label_embed = nn.Embedding(NUM_OBJECT_CLASSES + 1, d)  # row 0: padding
        self.decoder: TransformerDecoder | None = None
        if config.task != "predcls" or config.pap:
            self.subject_queries = content_query_embedding(q, d, config.content_queries)  # Q^s
            self.object_queries = content_query_embedding(q, d, config.content_queries)  # Q^o
            self.decoder = TransformerDecoder(config.entity_layers, d, config.nheads, config.ffn_dim, config.dropout)
        self.classifier: nn.Module | None = None
        if config.task != "predcls":
            self.classifier = (
                CosineClassifier(d, config.clip_embed_dim, NUM_OBJECT_CLASSES, num_extra=1)
                if config.clip_triplets
                else nn.Linear(d, NUM_OBJECT_CLASSES + 1)
            )

    def forward(self, memory: Memory, targets: Sequence[dict[str, Any]] | None = None) -> EntityOutputs:
        """Run the entity stage on the encoder memory ``F_vi`` ``[N, HW, D]`` (targets: SGCls / PredCls only)."""
        if self.task == "sgdet":
            return self._detect(memory)
        if targets is None:
            raise ValueError(f"Expected targets with the ground-truth pairs for task {self.task!r} but got None")
        n = memory.features.shape[0]
        gt = pack_ground_truth(targets, n, self.num_queries, self.num_classes, memory.features.device)
        return self._from_ground_truth(memory, gt)

    def _decode(self, memory: Memory, pos: Tensor, padding: Tensor | None) -> list[Tensor]:
        """Decoder outputs ``[N, 2Q', D]`` per returned layer (all with aux outputs, else the last)."""
        assert self.decoder is not None
        width = pos.shape[1] // 2
        content = torch.cat((self.subject_queries.weight[:width], self.object_queries.weight[:width]))  # [2Q', D]
        tgt = content.unsqueeze(0).expand(memory.features.shape[0], -1, -1)  # [N, 2Q', D]
        outputs, _ = self.decoder(tgt, pos, memory, tgt_padding_mask=padding)
        return outputs if self.aux else outputs[-1:]

    def _detect(self, memory: Memory) -> EntityOutputs:
        q = self.num_queries
        pos = torch.cat((self.subject_pos.weight, self.object_pos.weight)).unsqueeze(0)  # [1, 2Q, D]
        hs = torch.stack(self._decode(memory, pos, None))  # [L, N, 2Q, D]
        sub, obj = hs[:, :, :q], hs[:, :, q:]  # [L, N, Q, D] each
        return EntityOutputs(
            obj_logits=list(self.classifier(obj).unbind(0)),
            sub_boxes=list(self.sub_box_head(sub).sigmoid().unbind(0)),
            obj_boxes=list(self.obj_box_head(obj).sigmoid().unbind(0)),
            sub_feats=sub[-1],
            obj_feats=obj[-1],
            pair_pos=self.object_pos.weight.unsqueeze(0),
        )

    def _from_ground_truth(self, memory: Memory, gt: GroundTruthPairs) -> EntityOutputs:
        pair = self.pair_box_embed(torch.cat((gt.sub_boxes, gt.obj_boxes), dim=-1))  # [N, P, 2D]
        sub_pos, obj_pos = pair.chunk(2, dim=-1)  # [N, P, D] each
        if self.task == "predcls":
            obj_pos = obj_pos + self.label_embed(gt.labels)
        width = gt.mask.shape[1]
        obj_layers: Tensor | None = None
        sub_feats = obj_feats = None
        if self.decoder is not None:
            padding = torch.cat((~gt.mask, ~gt.mask), dim=1)  # [N, 2P]
            hs = torch.stack(self._decode(memory, torch.cat((sub_pos, obj_pos), dim=1), padding))  # [L, N, 2P, D]
            obj_layers = hs[:, :, width:]  # [L, N, P, D]
            sub_feats, obj_feats = hs[-1, :, :width], hs[-1, :, width:]
        num_layers = 1 if obj_layers is None else obj_layers.shape[0]
        if self.classifier is not None and obj_layers is not None:
            obj_logits = list(self.classifier(obj_layers).unbind(0))
        else:
            obj_logits = [label_logits(gt.labels, self.num_classes)] * num_layers
        return EntityOutputs(
            obj_logits=obj_logits,
            sub_boxes=[gt.sub_boxes] * num_layers,
            obj_boxes=[gt.obj_boxes] * num_layers,
            sub_feats=sub_feats,
            obj_feats=obj_feats,
            pair_pos=obj_pos,
            query_mask=gt.mask,
        )
