"""ARN: the Association Reasoning Network (paper Sec. 3, ``docs/model.md`` sections 1-4) as a pure nn.Module.

Pipeline per clip of T frames (``BT = B*T`` frames, frame-major):

1. :class:`~.backbone.Backbone` (frozen BN) -> 1x1 ``input_proj`` to D -> HW tokens with the masked sine
   encoding (:class:`~.position.SinePositionEncoding`);
2. post-norm :class:`~.transformer.TransformerEncoder` per frame -> ``F_vi`` ``[BT, HW, D]``;
3. :class:`~.entity.EntityDecoder`: paired subject / object queries, boxes and object classes (or the ground truth
   in SGCls / PredCls);
4. :class:`~.transformer.TemporalEncoder`: self-attention along time per spatial token -> ``F_vit``;
5. :class:`~.predicate.PredicateDecoder`: three branches, last layer PAP + HA;
6. per-branch classifiers: cosine classifiers over the branch's triplet categories (``clip_triplets``), or plain
   linear layers over its 3 / 6 / 17 predicates.

Auxiliary outputs pair the decoder layers from the end: with ``L_e`` entity and ``L_p`` predicate layers there are
``max(L_e, L_p)`` output sets; set k (counting from the last) uses entity layer ``L_e - 1 - k`` and predicate layer
``L_p - 1 - k``, clamped at the first layer of the shorter stack. The last set is the main output, the others are its
``aux_outputs`` (none with ``aux_loss`` off).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from arn_lightning.models.association import FUSION_MODES
from arn_lightning.models.backbone import BACKBONES, NORMS, STAGES, STRIDE_STAGES, Backbone
from arn_lightning.models.entity import EntityDecoder, EntityOutputs
from arn_lightning.models.heads import CosineClassifier
from arn_lightning.models.outputs import BRANCHES, ARNOutput
from arn_lightning.models.position import SinePositionEncoding
from arn_lightning.models.predicate import PredicateDecoder
from arn_lightning.models.transformer import Memory, TemporalEncoder, TransformerEncoder
from arn_lightning.vocab import TYPE_OFFSETS, TYPE_SIZES

TASKS = ("sgdet", "sgcls", "predcls")


@dataclass
class ARNConfig:
    """Hyperparameters of :class:`ARN` (defaults: the paper's model).

    Attributes:
        backbone: torchvision ResNet, ``"resnet50"`` | ``"resnet34"`` | ``"resnet18"``.
        backbone_weights: None (random), ``"imagenet"`` (torchvision ``IMAGENET1K_V1``; fails with a clear message
            when it can be neither found in torch's hub cache nor downloaded) or a local state-dict path.
        backbone_stride: 32 (``layer4``, the paper) or 16 (``layer3`` output; for tiny inputs).
        train_backbone: False freezes the whole backbone.
        backbone_norm: ``"frozen"`` BatchNorm (DETR, the paper: pretrained trunks) or ``"batch"`` (trainable, for a
            trunk trained from random weights, e.g. the synthetic demo).
        freeze_backbone_layers: leading backbone stages frozen (stem, layer1, ..., layer4); 2 = stem + layer1.
        hidden_dim: transformer width ``D``.
        nheads: attention heads.
        ffn_dim: feed-forward hidden width.
        dropout: transformer dropout.
        enc_layers: encoder layers.
        entity_layers: entity decoder layers.
        predicate_layers: predicate decoder layers per branch (the last one is PAP + HA when ``pap``).
        num_queries: pair queries ``Q`` (also the largest number of GT pairs per frame in SGCls / PredCls).
        num_frames: largest clip length ``T`` (rows of the frame encoding ``p_t``); shorter clips are accepted.
        temporal_causal: frame t attends only to frames ``<= t`` in the temporal self-attention.
        temporal_layers: temporal self-attention layers (0: ``F_vit = F_vi``).
        pap: Predicate Association Parsing in the last predicate layer.
        ha: Hierarchical Attention (requires ``pap``).
        entity_fusion: ``"add"`` (Model I), ``"mlp"`` (Model II) or ``"conditional"`` (paper Table 4).
        fusion_layers: layers of the entity-fusion MLP.
        clip_triplets: CLIP-initialised cosine triplet / object classifiers; off: linear predicate and object
            classifiers (the DETR baseline).
        clip_embed_dim: CLIP embedding width ``E``.
        distill: output ``predicate_embeds`` for the CLIP image-embedding distillation.
        task: ``"sgdet"``, ``"sgcls"`` or ``"predcls"``.
        aux_loss: return the outputs of the earlier decoder layers.
        num_object_classes: AG object classes (person included).
        box_mlp_layers: layers of the subject / object box MLPs.
        gt_embed_layers: layers of the GT pair-box embedding MLP (SGCls / PredCls).
        position_temperature: temperature of the sine position encoding.
        logit_scale_init: initial log logit scale of the cosine classifiers (``log(1/0.07)``).
        logit_scale_max: upper bound of the cosine classifiers' logit scale.
        triplet_prior: when set, the triplet classifiers get a learnable logit bias initialised so that every class
            starts at this probability (the focal-loss prior of RetinaNet, e.g. 0.01); speeds up short trainings from
            random text embeddings. None (the paper): no bias on the cosine logits.
    """

    backbone: str = "resnet50"
    backbone_weights: Optional[str] = None
    backbone_stride: int = 32
    train_backbone: bool = True
    freeze_backbone_layers: int = 2
    backbone_norm: str = "frozen"
    hidden_dim: int = 256
    nheads: int = 8
    ffn_dim: int = 2048
    dropout: float = 0.1
    enc_layers: int = 6
    entity_layers: int = 3
    predicate_layers: int = 3
    num_queries: int = 100
    num_frames: int = 3
    temporal_causal: bool = False
    temporal_layers: int = 1
    pap: bool = True
    ha: bool = True
    entity_fusion: str = "conditional"
    fusion_layers: int = 2
    clip_triplets: bool = True
    clip_embed_dim: int = 512
    distill: bool = True
    task: str = "sgdet"
    aux_loss: bool = True
    num_object_classes: int = 36
    box_mlp_layers: int = 3
    gt_embed_layers: int = 2
    position_temperature: float = 10000.0
    logit_scale_init: float = math.log(1 / 0.07)
    logit_scale_max: float = 100.0
    triplet_prior: Optional[float] = None

    def __post_init__(self) -> None:
        self._check_choices()
        self._check_sizes()
        if self.ha and not self.pap:
            raise ValueError("Expected pap=True with ha=True (HA runs inside the PAP layer) but got pap=False")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"Expected dropout in [0, 1) but got {self.dropout}")
        if self.triplet_prior is not None and not 0.0 < self.triplet_prior < 1.0:
            raise ValueError(f"Expected triplet_prior in (0, 1) or None but got {self.triplet_prior}")
        if not math.isfinite(self.logit_scale_init) or self.logit_scale_max <= 1.0:
            raise ValueError(
                f"Expected a finite logit_scale_init and logit_scale_max > 1 but got "
                f"{self.logit_scale_init}, {self.logit_scale_max}"
            )

    def _check_choices(self) -> None:
        choices = {"backbone": BACKBONES, "task": TASKS, "entity_fusion": FUSION_MODES, "backbone_norm": tuple(NORMS),
                   "backbone_stride": tuple(STRIDE_STAGES)}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"Expected {name} in {allowed} but got {getattr(self, name)!r}")

    def _check_sizes(self) -> None:
        minimum = {"hidden_dim": 4, "nheads": 1, "ffn_dim": 1, "entity_layers": 1, "predicate_layers": 1,
                   "num_queries": 1, "num_frames": 1, "fusion_layers": 1, "clip_embed_dim": 1,
                   "num_object_classes": 1, "box_mlp_layers": 1, "gt_embed_layers": 1,
                   "enc_layers": 0, "temporal_layers": 0, "freeze_backbone_layers": 0}
        for name, low in minimum.items():
            if not isinstance(getattr(self, name), int) or getattr(self, name) < low:
                raise ValueError(f"Expected {name} to be an int >= {low} but got {getattr(self, name)!r}")
        if self.freeze_backbone_layers > len(STAGES):
            raise ValueError(f"Expected freeze_backbone_layers <= {len(STAGES)} but got {self.freeze_backbone_layers}")
        # Sine encoding: D/2 channels per axis in sin/cos pairs; PAP: two D/2 cue halves split over the heads.
        divisor = 2 * self.nheads if self.pap else self.nheads
        if self.hidden_dim % 4 != 0 or self.hidden_dim % divisor != 0:
            raise ValueError(
                f"Expected hidden_dim to be a multiple of 4 and of {divisor} (nheads={self.nheads}, pap={self.pap}) "
                f"but got {self.hidden_dim}"
            )


def _branch_triplets(
    kind: str, categories: Optional[Mapping[str, Sequence[Sequence[int]]]], config: ARNConfig,
) -> Tuple[Tensor, Tensor]:
    """Global predicate and AG object index ``[K]`` of branch ``kind``'s classes (contract sections 3 and 5)."""
    low, size = TYPE_OFFSETS[kind], TYPE_SIZES[kind]
    if not config.clip_triplets:
        return torch.arange(low, low + size), torch.full((size,), -1, dtype=torch.long)
    if categories is None or kind not in categories:
        raise ValueError(f"Expected triplet_categories with a {kind!r} list but got {categories!r:.80}")
    pairs = [tuple(int(v) for v in pair) for pair in categories[kind]]
    bad = [p for p in pairs
           if len(p) != 2 or not low <= p[0] < low + size or not 1 <= p[1] <= config.num_object_classes]
    if not pairs or bad or len(set(pairs)) != len(pairs):
        raise ValueError(
            f"Expected a non-empty list of unique [predicate in [{low}, {low + size}), object in "
            f"[1, {config.num_object_classes}]] pairs for {kind!r} but got {len(pairs)} pairs, invalid: {bad[:5]}"
        )
    table = torch.tensor(pairs, dtype=torch.long)  # [K, 2]
    return table[:, 0].contiguous(), table[:, 1].contiguous()


class ARN(nn.Module):
    """End-to-end dynamic scene graph generation model (see the module docstring for the pipeline).

    Args:
        config: hyperparameters.
        triplet_categories: per predicate type the ``[global predicate index, AG object index]`` pairs that form
            its triplet classes (contract section 3); may be None with ``clip_triplets`` off.
    """

    def __init__(
        self, config: ARNConfig, triplet_categories: Optional[Mapping[str, Sequence[Sequence[int]]]],
    ) -> None:
        super().__init__()
        self.config = config
        d = config.hidden_dim
        layer = dict(d_model=d, nhead=config.nheads, dim_feedforward=config.ffn_dim, dropout=config.dropout)
        self.backbone = Backbone(config.backbone, config.backbone_weights, config.backbone_stride,
                                 config.train_backbone, config.freeze_backbone_layers, config.backbone_norm)
        self.input_proj = nn.Conv2d(self.backbone.num_channels, d, kernel_size=1)
        self.position = SinePositionEncoding(d, config.position_temperature)
        self.encoder = TransformerEncoder(config.enc_layers, **layer)
        self.entity = EntityDecoder(config)
        self.temporal = (TemporalEncoder(config.temporal_layers, config.num_frames, config.temporal_causal, **layer)
                         if config.temporal_layers else None)
        self.predicate = PredicateDecoder(config)
        for kind in BRANCHES:
            predicates, objects = _branch_triplets(kind, triplet_categories, config)
            self.register_buffer(f"triplet_predicates_{kind}", predicates)
            self.register_buffer(f"triplet_objects_{kind}", objects)
        self.classifiers = nn.ModuleDict({kind: self._branch_classifier(kind) for kind in BRANCHES})
        self.distill_proj = nn.Linear(d, config.clip_embed_dim) if config.distill else None

    def _branch_classifier(self, kind: str) -> nn.Module:
        c = self.config
        k = self.triplet_index(kind)[0].numel()
        # RetinaNet-style prior (Lin et al. 2017): start every class at probability triplet_prior.
        bias = None if c.triplet_prior is None else -math.log((1.0 - c.triplet_prior) / c.triplet_prior)
        if c.clip_triplets:
            return CosineClassifier(c.hidden_dim, c.clip_embed_dim, k, logit_scale_init=c.logit_scale_init,
                                    logit_scale_max=c.logit_scale_max, bias_init=bias)
        linear = nn.Linear(c.hidden_dim, k)
        if bias is not None:
            nn.init.constant_(linear.bias, bias)
        return linear

    # ------------------------------------------------------------------ triplet classes
    def triplet_index(self, kind: str) -> Tuple[Tensor, Tensor]:
        """``(predicates [K], objects [K])`` of branch ``kind``: global predicate index and AG object index of each
        output class (objects are -1 with ``clip_triplets`` off, where the classes are the branch's predicates)."""
        if kind not in BRANCHES:
            raise ValueError(f"Expected a branch in {BRANCHES} but got {kind!r}")
        return getattr(self, f"triplet_predicates_{kind}"), getattr(self, f"triplet_objects_{kind}")

    @property
    def triplet_predicates(self) -> Dict[str, Tensor]:
        """Branch -> ``[K]`` global predicate index of each output class."""
        return {kind: self.triplet_index(kind)[0] for kind in BRANCHES}

    @property
    def triplet_objects(self) -> Dict[str, Tensor]:
        """Branch -> ``[K]`` AG object index of each output class (-1 with ``clip_triplets`` off)."""
        return {kind: self.triplet_index(kind)[1] for kind in BRANCHES}

    # ------------------------------------------------------------------ initialisation / optimisation
    @torch.no_grad()
    def init_text_classifiers(self, embeds: Mapping[str, Tensor]) -> None:
        """Copy CLIP text embeddings into the cosine classifiers.

        Args:
            embeds: ``objects`` ``[36, E]`` (object prompts, AG index order from 1), ``attention`` ``[K_A, E]``,
                ``spatial`` ``[K_S, E]``, ``contacting`` ``[K_C, E]`` (one row per triplet category, in the order of
                :meth:`triplet_index`). In PredCls, which has no object classifier, ``objects`` is only checked.
        """
        if not self.config.clip_triplets:
            raise ValueError("Expected clip_triplets=True to initialise classifiers from text but got False")
        expected = ("objects", *BRANCHES)
        if set(embeds) != set(expected):
            raise ValueError(f"Expected text embeddings for exactly {expected} but got {sorted(embeds)}")
        shape = (self.config.num_object_classes, self.config.clip_embed_dim)
        if tuple(embeds["objects"].shape) != shape:
            raise ValueError(
                f"Expected objects text embeddings of shape {shape} but got {tuple(embeds['objects'].shape)}"
            )
        if isinstance(self.entity.classifier, CosineClassifier):
            self.entity.classifier.load_text_embeddings(embeds["objects"], "objects")
        for kind in BRANCHES:
            self.classifiers[kind].load_text_embeddings(embeds[kind], kind)

    def param_groups(self) -> Dict[str, List[nn.Parameter]]:
        """Trainable parameters by optimiser group.

        Returns:
            ``{"backbone": [...], "text": [...], "rest": [...]}``: the trainable backbone parameters, the
            CLIP-initialised class embeddings of the cosine classifiers, and every other trainable parameter.
        """
        backbone = [p for p in self.backbone.parameters() if p.requires_grad]
        text = [m.class_embeds for m in self.modules() if isinstance(m, CosineClassifier)]
        taken = {id(p) for p in backbone + text}
        rest = [p for p in self.parameters() if p.requires_grad and id(p) not in taken]
        return {"backbone": backbone, "text": text, "rest": rest}

    # ------------------------------------------------------------------ forward
    def forward(
        self, pixel_values: Tensor, pixel_mask: Tensor, targets: Optional[Sequence[Dict[str, Any]]] = None,
    ) -> ARNOutput:
        """Predict the scene graphs of a batch of clips.

        Args:
            pixel_values: ``[B, T, 3, H, W]`` normalised frames, zero padded.
            pixel_mask: ``[B, T, H, W]`` bool, True on real pixels.
            targets: ``B*T`` frame targets (contract section 2), frame-major; SGCls / PredCls read their
                ``sub_boxes`` / ``obj_boxes`` (normalised cxcywh) and ``obj_labels``. Ignored in SGDet.

        Returns:
            :class:`~arn_lightning.models.outputs.ARNOutput` of the last decoder layers, earlier ones in
            ``aux_outputs``.
        """
        num_clips = self._check_inputs(pixel_values, pixel_mask)
        memory = self._encode(pixel_values.flatten(0, 1), pixel_mask.flatten(0, 1))
        entity = self.entity(memory, targets if self.config.task != "sgdet" else None)
        features = memory.features
        if self.temporal is not None:
            features = self.temporal(features, memory.padding_mask, num_clips)
        predicate = self.predicate(
            entity.pair_pos, Memory(features, memory.pos, memory.padding_mask),
            entities=None if entity.sub_feats is None else (entity.sub_feats, entity.obj_feats),
            query_padding=None if entity.query_mask is None else ~entity.query_mask,
        )
        return self._assemble(entity, predicate)

    def _check_inputs(self, pixel_values: Tensor, pixel_mask: Tensor) -> int:
        """Validate the batch tensors; returns the number of clips ``B``."""
        if pixel_values.dim() != 5 or pixel_values.shape[2] != 3:
            raise ValueError(f"Expected pixel_values [B, T, 3, H, W] but got {tuple(pixel_values.shape)}")
        b, t, _, h, w = pixel_values.shape
        if tuple(pixel_mask.shape) != (b, t, h, w) or pixel_mask.dtype != torch.bool:
            raise ValueError(
                f"Expected a bool pixel_mask of shape {(b, t, h, w)} but got {tuple(pixel_mask.shape)} "
                f"of {pixel_mask.dtype}"
            )
        if t > self.config.num_frames:
            raise ValueError(f"Expected at most num_frames={self.config.num_frames} frames per clip but got {t}")
        return b

    def _encode(self, images: Tensor, pixel_mask: Tensor) -> Memory:
        """Backbone, projection, position and encoder: ``[BT, 3, H, W]`` -> ``F_vi`` ``[BT, HW, D]``."""
        features, mask = self.backbone(images, pixel_mask)  # [BT, C, h, w], [BT, h, w]
        src = self.input_proj(features).flatten(2).transpose(1, 2)  # [BT, hw, D]
        pos = self.position(mask).flatten(1, 2).to(src.dtype)  # [BT, hw, D]
        padding = ~mask.flatten(1)  # [BT, hw]
        return Memory(self.encoder(src, pos, padding), pos, padding)

    def _assemble(self, entity: EntityOutputs, predicate: Mapping[str, List[Tensor]]) -> ARNOutput:
        """Pair entity and predicate layers from the end (module docstring) and apply the predicate heads."""
        n_entity, n_predicate = len(entity.obj_logits), self.config.predicate_layers
        n_out = max(n_entity, n_predicate) if self.config.aux_loss else 1
        outputs = [
            self._layer_output(entity, predicate, max(0, n_entity - n_out + k), max(0, n_predicate - n_out + k))
            for k in range(n_out)
        ]
        outputs[-1].aux_outputs = outputs[:-1]
        return outputs[-1]

    def _layer_output(
        self, entity: EntityOutputs, predicate: Mapping[str, List[Tensor]], e: int, p: int,
    ) -> ARNOutput:
        feats = {kind: predicate[kind][p] for kind in BRANCHES}  # [BT, Q, D] each
        return ARNOutput(
            obj_logits=entity.obj_logits[e], sub_boxes=entity.sub_boxes[e], obj_boxes=entity.obj_boxes[e],
            **{f"{kind}_logits": self.classifiers[kind](feats[kind]) for kind in BRANCHES},
            predicate_embeds=self._predicate_embeds(feats, entity.query_mask),
            query_mask=entity.query_mask,
        )

    def _predicate_embeds(self, feats: Mapping[str, Tensor], query_mask: Optional[Tensor]) -> Optional[Tensor]:
        """``[BT, E]`` mean over branches and (real) queries of the predicate features, projected to E.

        The projection is linear, so projecting the mean equals the mean of the projected features.
        """
        if self.distill_proj is None:
            return None
        mean = torch.stack(list(feats.values())).mean(dim=0)  # [BT, Q, D]
        if query_mask is None:
            return self.distill_proj(mean.mean(dim=1))
        weight = query_mask.to(mean.dtype).unsqueeze(-1)  # [BT, Q, 1]
        pooled = (mean * weight).sum(dim=1) / weight.sum(dim=1).clamp(min=1.0)  # [BT, D]
        return self.distill_proj(pooled)
