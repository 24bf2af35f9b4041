"""The hyperparameters of ARN (:class:`ARNConfig`), apart from the model so that every part of ``models/`` can import
them without a circle.

Settings that no config ever changed are module constants of the module that uses them (``docs/model.md``
section 6 lists them); a checkpoint that still stores one is of an older format and is refused
(:func:`arn_lightning.build.check_stored_settings`).
"""

from __future__ import annotations

from dataclasses import dataclass

from arn_lightning.models.association import FUSION_MODES
from arn_lightning.models.backbone import BACKBONES, NORMS, STAGES, STRIDE_STAGES
from arn_lightning.models.transformer import CONTENT_QUERIES
from arn_lightning.vocab import TASKS

#: Values of :attr:`ARNConfig.distill_features`.
DISTILL_FEATURES = ("classifier", "projection")


@dataclass
class ARNConfig:
    """Hyperparameters of :class:`ARN` (defaults: the paper's model).

    Attributes:
        backbone: torchvision ResNet, ``"resnet50"`` | ``"resnet34"`` | ``"resnet18"``.
        backbone_weights: None (random), ``"imagenet"`` (torchvision ``IMAGENET1K_V1``; fails with a clear message
            when it can be neither found in torch's hub cache nor downloaded), a registry name or a local state-dict
            path; loaded after the model is built, at the start of a fresh ``fit``
            (:func:`arn_lightning.build.load_pretrained`), never by the model itself.
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
        content_queries: initial value of every learned content query set (subject ``Q^s``, object ``Q^o``, each
            predicate branch's ``Q^{pred_i}``): ``"normal"`` (``nn.Embedding``'s N(0, 1) draws) or ``"zeros"``
            (the regime DETR's decoder was trained in, ``tgt = 0``; the draws are made all the same, then zeroed, so
            every other parameter gets the same random values). The queries stay learnable either way.
        num_frames: largest clip length ``T`` (rows of the frame encoding ``p_t``); shorter clips are accepted.
        temporal_causal: frame t attends only to frames ``<= t`` in the temporal self-attention.
        temporal_layers: temporal self-attention layers (0: ``F_vit = F_vi``).
        pap: Predicate Association Parsing in the last predicate layer.
        ha: Hierarchical Attention (requires ``pap``).
        entity_fusion: ``"add"`` (Model I), ``"mlp"`` (Model II) or ``"conditional"`` (paper Table 4).
        clip_triplets: CLIP-initialised cosine triplet / object classifiers; off: linear predicate and object
            classifiers (the DETR baseline).
        clip_embed_dim: CLIP embedding width ``E``.
        distill: output ``predicate_embeds`` for the CLIP image-embedding distillation.
        distill_features: what ``predicate_embeds`` distils (``docs/model.md`` section 6): ``"classifier"`` (the
            mean over branches and real queries of each branch classifier's own projected features, the space the
            cosine classifiers compare with the text embeddings, as GEN-VLKT's mimic loss; needs ``clip_triplets``)
            or ``"projection"`` (a separate Linear ``D -> E``, ``distill_proj``, of the mean predicate feature; the
            form of the versions before this setting, which a stored ``arch`` without it is read as:
            :func:`arn_lightning.build.complete_stored_config`). Read only when ``distill`` is on.
        task: ``"sgdet"``, ``"sgcls"`` or ``"predcls"``.
        aux_loss: return the outputs of the earlier decoder layers.
        triplet_prior: when set, the triplet classifiers get a learnable logit bias initialised so that every class
            starts at this probability (the focal-loss prior of RetinaNet, e.g. 0.01); speeds up short trainings from
            random text embeddings. None (the paper): no bias on the cosine logits.
    """

    backbone: str = "resnet50"
    backbone_weights: str | None = None
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
    content_queries: str = "normal"
    num_frames: int = 3
    temporal_causal: bool = False
    temporal_layers: int = 1
    pap: bool = True
    ha: bool = True
    entity_fusion: str = "conditional"
    clip_triplets: bool = True
    clip_embed_dim: int = 512
    distill: bool = True
    distill_features: str = "classifier"
    task: str = "sgdet"
    aux_loss: bool = True
    triplet_prior: float | None = None

    def __post_init__(self) -> None:
        self._check_choices()
        self._check_sizes()
        self._check_distillation()
        if self.ha and not self.pap:
            raise ValueError("Expected pap=True with ha=True (HA runs inside the PAP layer) but got pap=False")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"Expected dropout in [0, 1) but got {self.dropout}")
        if self.triplet_prior is not None and not 0.0 < self.triplet_prior < 1.0:
            raise ValueError(f"Expected triplet_prior in (0, 1) or None but got {self.triplet_prior}")

    @property
    def standard_predicate_layers(self) -> int:
        """Standard decoder layers of each predicate branch: ``predicate_layers``, less the PAP layer when ``pap``."""
        return self.predicate_layers - (1 if self.pap else 0)

    def _check_choices(self) -> None:
        choices = {
            "backbone": BACKBONES,
            "task": TASKS,
            "entity_fusion": FUSION_MODES,
            "backbone_norm": tuple(NORMS),
            "backbone_stride": tuple(STRIDE_STAGES),
            "content_queries": CONTENT_QUERIES,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"Expected {name} in {allowed} but got {getattr(self, name)!r}")

    def _check_distillation(self) -> None:
        if self.distill_features not in DISTILL_FEATURES:
            raise ValueError(f"Expected distill_features in {DISTILL_FEATURES} but got {self.distill_features!r}")
        if self.distill and self.distill_features == "classifier" and not self.clip_triplets:
            raise ValueError(
                "Expected clip_triplets=True with distill=True and distill_features='classifier' (the plain linear "
                "classifiers of clip_triplets=False have no projected features to distil) but got "
                "clip_triplets=False; set distill=False, or distill_features='projection'"
            )

    def _check_sizes(self) -> None:
        minimum = {
            "hidden_dim": 4,
            "nheads": 1,
            "ffn_dim": 1,
            "entity_layers": 1,
            "predicate_layers": 1,
            "num_queries": 1,
            "num_frames": 1,
            "clip_embed_dim": 1,
            "enc_layers": 0,
            "temporal_layers": 0,
            "freeze_backbone_layers": 0,
        }
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
