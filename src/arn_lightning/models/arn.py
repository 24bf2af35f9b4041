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
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from arn_lightning.models.backbone import Backbone
from arn_lightning.models.config import ARNConfig
from arn_lightning.models.entity import EntityDecoder, EntityOutputs
from arn_lightning.models.heads import CosineClassifier
from arn_lightning.models.outputs import BRANCHES, ARNOutput
from arn_lightning.models.position import TEMPERATURE, SinePositionEncoding
from arn_lightning.models.predicate import PredicateDecoder
from arn_lightning.models.transformer import Memory, TemporalEncoder, TransformerEncoder
from arn_lightning.triplets import TripletCategories, TripletVocabulary
from arn_lightning.vocab import NUM_OBJECT_CLASSES

__all__ = ["ARN", "ARNConfig", "place_on_grid"]


def place_on_grid(maps: Sequence[Tensor], grid: tuple[int, int] | None = None) -> tuple[Tensor, Tensor]:
    """Feature maps of frames of different sizes on one grid, each at the top-left, zero elsewhere.

    Args:
        maps: ``N`` maps ``[h_i, w_i, D]``.
        grid: ``(H, W)``; default the largest ``h_i`` / ``w_i``. A map larger than the grid is cropped.

    Returns:
        ``(features [N, H, W, D], cells [N, H, W])``; ``cells`` is True inside each frame's own map.
    """
    if grid is None:
        grid = (max(m.shape[0] for m in maps), max(m.shape[1] for m in maps))
    height, width = grid
    first = maps[0]
    if all(tuple(m.shape[:2]) == (height, width) for m in maps):  # one size: nothing to place
        return torch.stack(list(maps)), torch.ones(len(maps), height, width, dtype=torch.bool, device=first.device)
    features = first.new_zeros(len(maps), height, width, first.shape[-1])
    cells = torch.zeros(len(maps), height, width, dtype=torch.bool, device=first.device)
    for i, m in enumerate(maps):
        h, w = min(m.shape[0], height), min(m.shape[1], width)
        features[i, :h, :w] = m[:h, :w]
        cells[i, :h, :w] = True
    return features, cells


def _stream_window(
    maps: Tensor, cells: Tensor, past_maps: Tensor, past_cells: Tensor, reset: Tensor
) -> tuple[Tensor, Tensor]:
    """The streaming window ``([W, h, w, D], [W, h, w])``: the cache (or, on ``reset``, the new frame repeated)
    followed by the new frame's ``maps`` ``[1, h, w, D]`` / ``cells`` ``[1, h, w]``."""
    past_maps = torch.where(reset, maps.expand_as(past_maps), past_maps.to(maps.dtype))
    # logic, not torch.where, on bool: an exported bool Where has no onnxruntime CPU kernel
    past_cells = (reset & cells.expand_as(past_cells)) | (~reset & past_cells)
    return torch.cat((past_maps, maps)), torch.cat((past_cells, cells))


class ARN(nn.Module):
    """End-to-end dynamic scene graph generation model (see the module docstring for the pipeline).

    Args:
        config: hyperparameters.
        vocabulary: the triplet classes of each branch (:class:`~arn_lightning.triplets.TripletVocabulary`), or
            the ``triplet_categories`` to build it from (``docs/ARCHITECTURE.md`` section 3; may be None with
            ``clip_triplets`` off).

    Raises:
        ValueError: invalid triplet categories, or a branch without any (it would have no classifier column).
    """

    def __init__(
        self,
        config: ARNConfig,
        vocabulary: TripletVocabulary | TripletCategories | None,
    ) -> None:
        super().__init__()
        self.config = config
        if not isinstance(vocabulary, TripletVocabulary):
            vocabulary = TripletVocabulary.from_categories(vocabulary, config.clip_triplets)
        empty = [kind for kind in BRANCHES if vocabulary.num_classes(kind) == 0]
        if empty:
            raise ValueError(f"Expected at least one triplet category per branch but got none for {empty}")
        #: The triplet classes (CPU tensors); the same indices are the checkpointed buffers ``triplet_*_<branch>``.
        self.vocabulary = vocabulary
        d = config.hidden_dim
        layer = dict(d_model=d, nhead=config.nheads, dim_feedforward=config.ffn_dim, dropout=config.dropout)
        self.backbone = Backbone(
            config.backbone,
            config.backbone_stride,
            config.train_backbone,
            config.freeze_backbone_layers,
            config.backbone_norm,
        )
        self.input_proj = nn.Conv2d(self.backbone.num_channels, d, kernel_size=1)
        self.position = SinePositionEncoding(d, TEMPERATURE)
        self.encoder = TransformerEncoder(config.enc_layers, **layer)
        self.entity = EntityDecoder(config)
        self.temporal = (
            TemporalEncoder(config.temporal_layers, config.num_frames, config.temporal_causal, **layer)
            if config.temporal_layers
            else None
        )
        self.predicate = PredicateDecoder(config)
        for kind in BRANCHES:  # persistent: a checkpoint names its classes
            self.register_buffer(f"triplet_predicates_{kind}", vocabulary.triplet_predicates[kind].clone())
            self.register_buffer(f"triplet_objects_{kind}", vocabulary.triplet_objects[kind].clone())
        self.classifiers = nn.ModuleDict({kind: self._branch_classifier(kind) for kind in BRANCHES})
        # The projection form only: the classifier form distils the classifiers' own projections (no extra module).
        projection = config.distill and config.distill_features == "projection"
        self.distill_proj = nn.Linear(d, config.clip_embed_dim) if projection else None

    def _branch_classifier(self, kind: str) -> nn.Module:
        c = self.config
        k = self.vocabulary.num_classes(kind)
        # RetinaNet-style prior (Lin et al. 2017): start every class at probability triplet_prior.
        bias = None if c.triplet_prior is None else -math.log((1.0 - c.triplet_prior) / c.triplet_prior)
        if c.clip_triplets:
            return CosineClassifier(c.hidden_dim, c.clip_embed_dim, k, bias_init=bias)
        linear = nn.Linear(c.hidden_dim, k)
        if bias is not None:
            nn.init.constant_(linear.bias, bias)
        return linear

    # ------------------------------------------------------------------ triplet classes
    def triplet_index(self, kind: str) -> tuple[Tensor, Tensor]:
        """``(predicates [K], objects [K])`` of branch ``kind``: global predicate index and AG object index of each
        output class (objects are -1 with ``clip_triplets`` off, where the classes are the branch's predicates)."""
        if kind not in BRANCHES:
            raise ValueError(f"Expected a branch in {BRANCHES} but got {kind!r}")
        return getattr(self, f"triplet_predicates_{kind}"), getattr(self, f"triplet_objects_{kind}")

    @property
    def triplet_predicates(self) -> dict[str, Tensor]:
        """Branch -> ``[K]`` global predicate index of each output class."""
        return {kind: self.triplet_index(kind)[0] for kind in BRANCHES}

    @property
    def triplet_objects(self) -> dict[str, Tensor]:
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
        shape = (NUM_OBJECT_CLASSES, self.config.clip_embed_dim)
        if tuple(embeds["objects"].shape) != shape:
            raise ValueError(
                f"Expected objects text embeddings of shape {shape} but got {tuple(embeds['objects'].shape)}"
            )
        if isinstance(self.entity.classifier, CosineClassifier):
            self.entity.classifier.load_text_embeddings(embeds["objects"], "objects")
        for kind in BRANCHES:
            self.classifiers[kind].load_text_embeddings(embeds[kind], kind)

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
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
        self,
        pixel_values: Tensor,
        pixel_mask: Tensor,
        targets: Sequence[dict[str, Any]] | None = None,
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
        memory, _ = self.encode(pixel_values.flatten(0, 1), pixel_mask.flatten(0, 1))
        return self.decode(memory, num_clips, targets)

    def decode(self, memory: Memory, num_clips: int, targets: Sequence[dict[str, Any]] | None = None) -> ARNOutput:
        """Everything after the encoder: entity decoder, temporal encoder, predicate decoder, heads.

        Args:
            memory: ``F_vi`` of ``B*T`` frames, frame-major: ``features`` / ``pos`` ``[BT, HW, D]``, ``padding_mask``
                ``[BT, HW]`` (:meth:`encode` or :meth:`encode_frames`).
            num_clips: ``B``.
            targets: see :meth:`forward`.

        Returns:
            :class:`~arn_lightning.models.outputs.ARNOutput` as :meth:`forward`.
        """
        entity = self.entity(memory, targets if self.config.task != "sgdet" else None)
        features = memory.features
        if self.temporal is not None:
            features = self.temporal(features, memory.padding_mask, num_clips)
        predicate = self.predicate(
            entity.pair_pos,
            Memory(features, memory.pos, memory.padding_mask),
            entities=None if entity.sub_feats is None else (entity.sub_feats, entity.obj_feats),
            query_padding=None if entity.query_mask is None else ~entity.query_mask,
        )
        return self._assemble(entity, predicate)

    def encode(self, images: Tensor, pixel_mask: Tensor) -> tuple[Memory, Tensor]:
        """Backbone, projection, position and encoder (paper eq. 1-2).

        Args:
            images: ``[N, 3, H, W]`` normalised frames, zero padded.
            pixel_mask: ``[N, H, W]`` bool, True on real pixels.

        Returns:
            ``(memory, cells)``: ``F_vi`` (``features`` / ``pos`` ``[N, hw, D]``, ``padding_mask`` ``[N, hw]``,
            row-major over the ``h x w`` feature grid) and ``cells`` ``[N, h, w]`` bool, True on real cells.
        """
        features, cells = self.backbone(images, pixel_mask)  # [N, C, h, w], [N, h, w]
        src = self.input_proj(features).flatten(2).transpose(1, 2)  # [N, hw, D]
        pos = self.position(cells).flatten(1, 2).to(src.dtype)  # [N, hw, D]
        padding = ~cells.flatten(1)  # [N, hw]
        return Memory(self.encoder(src, pos, padding), pos, padding), cells

    def encode_frames(self, images: Sequence[Tensor]) -> Memory:
        """Encode frames of any sizes, each at its own size, on one token grid (inference; ``docs/streaming.md``).

        A batch padded to its largest frame changes the features near the border of a smaller frame (the
        backbone's receptive field reaches into the padding), so a frame's scene graph would depend on the size of
        the frames it is batched with. Here frames are encoded in groups of equal size without padding, and the
        feature maps are then placed top-left on the largest feature grid (the padding masked), as the temporal
        encoder aligns the tokens of a clip. Frames of one size give exactly :meth:`encode` of their batch.

        Args:
            images: ``N`` normalised frames ``[3, h_i, w_i]`` (unpadded), frame-major.

        Returns:
            ``F_vi`` of the ``N`` frames on the grid ``(max h'_i, max w'_i)``: ``features`` / ``pos`` ``[N, HW, D]``,
            ``padding_mask`` ``[N, HW]``.
        """
        return self._grid_memory(self.encode_maps(images))[0]

    def _grid_memory(self, maps: Sequence[Tensor]) -> tuple[Memory, tuple[int, int]]:
        """Feature maps ``[h_i, w_i, D]`` placed top-left on the largest grid ``(H, W)``, as ``F_vi`` (``[N, HW, D]``
        features and positions, padding masked) and that grid."""
        features, cells = place_on_grid(maps)  # [N, H, W, D], [N, H, W]
        memory = Memory(
            features.flatten(1, 2),
            self.position(cells).flatten(1, 2).to(features.dtype),
            ~cells.flatten(1),
        )
        return memory, (int(cells.shape[1]), int(cells.shape[2]))

    def encode_maps(self, images: Sequence[Tensor]) -> list[Tensor]:
        """``F_vi`` of frames of any sizes, each encoded at its own size, in groups of equal size, without padding.

        Args:
            images: ``N`` normalised frames ``[3, h_i, w_i]`` (unpadded).

        Returns:
            ``N`` feature maps ``[h'_i, w'_i, D]`` on each frame's own feature grid (``h_i / stride`` rounded up).

        Raises:
            ValueError: no frame.
        """
        if not images:
            raise ValueError("Expected at least one frame to encode but got none")
        groups: dict[tuple[int, int], list[int]] = {}
        for i, image in enumerate(images):
            groups.setdefault(tuple(image.shape[-2:]), []).append(i)
        maps: list[Tensor | None] = [None] * len(images)
        for (h, w), members in groups.items():
            batch = torch.stack([images[i] for i in members])  # [n, 3, h, w]
            full = torch.ones(len(members), h, w, dtype=torch.bool, device=batch.device)
            memory, cells = self.encode(batch, full)
            grid = memory.features.unflatten(1, cells.shape[-2:])  # [n, h', w', D]
            for row, i in enumerate(members):
                maps[i] = grid[row]
        return maps  # type: ignore[return-value]

    def stream_step(
        self,
        image: Tensor,
        past_maps: Tensor,
        past_cells: Tensor,
        reset: Tensor,
    ) -> tuple[ARNOutput, Tensor, Tensor]:
        """One step of streaming inference: the newest frame's outputs at the cost of one frame (``docs/streaming.md``).

        The window is the ``W - 1`` previous frames' encoder features (the cache) and the new frame, in time order;
        the new frame is last, as in a causal clip of ``W`` frames (:mod:`arn_lightning.inference.clips`), so its
        outputs equal those of :meth:`forward` on that clip (frames encoded by :meth:`encode_frames`). Only the new
        frame goes through the backbone, the encoder and the decoders; the temporal encoder reads the cache. A
        token of the new frame attends to the same grid cell of the earlier frames, so the cache is given on the
        new frame's feature grid (cells outside an earlier frame are padding).

        Args:
            image: ``[1, 3, H, W]`` the new frame, normalised, unpadded.
            past_maps: ``[W-1, h, w, D]`` ``F_vi`` of the previous frames, oldest first, on the new frame's feature
                grid ``h x w`` (``H / stride`` rounded up).
            past_cells: ``[W-1, h, w]`` bool, True on the cells that are inside each previous frame.
            reset: bool scalar tensor; True for the first frame of a stream: the cache is then the new frame itself
                repeated (a causal clip that starts before the stream repeats its first frame).

        Returns:
            ``(outputs, maps, cells)``: the new frame's :class:`~arn_lightning.models.outputs.ARNOutput` (``BT = 1``,
            last decoder layers, no ``aux_outputs``), and the cache for the next frame: ``[W-1, h, w, D]`` /
            ``[W-1, h, w]``, the oldest frame dropped and the new one appended.

        Raises:
            ValueError: a task other than SGDet (streaming has no ground truth), a batch of more than one frame, or a
                window longer than ``num_frames``.
        """
        self._check_stream_inputs(image, past_maps)
        full = torch.ones(image.shape[0], *image.shape[-2:], dtype=torch.bool, device=image.device)
        memory, cells = self.encode(image, full)  # [1, hw, D], [1, h, w]
        maps = memory.features.unflatten(1, cells.shape[-2:])  # [1, h, w, D]
        window_maps, window_cells = _stream_window(maps, cells, past_maps, past_cells, reset)
        outputs = self._decode_newest(memory, window_maps, window_cells)
        return outputs, window_maps[1:], window_cells[1:]

    def stream_frames(
        self,
        images: Sequence[Tensor],
        caches: Sequence[Sequence[Tensor]],
        window: int,
        targets: Sequence[dict[str, Any]] | None = None,
    ) -> tuple[ARNOutput, list[Tensor]]:
        """One streaming step of ``B`` independent streams at once: each new frame's outputs at the cost of one frame
        (causal evaluation, ``docs/streaming.md`` section 6).

        Frame ``b``'s outputs equal :meth:`stream_step`'s for the same frame and cache (within float rounding: the
        frames are decoded side by side on one token grid, the padding masked): the temporal encoder reads the
        ``window - 1`` cached maps of its stream, oldest first, then the new frame; a stream without a cache
        starts, and its new frame stands for the frames before it (a causal clip at a video's start repeats its
        first frame). Frames of equal size are encoded together without padding (:meth:`encode_maps`).

        Args:
            images: ``B`` normalised frames ``[3, h_b, w_b]`` (unpadded), one per stream.
            caches: per frame, the ``F_vi`` maps ``[h, w, D]`` of its stream's previous frames (at most
                ``window - 1``, oldest first, each on its own frame's grid); empty for a frame that starts its stream.
            window: frames of temporal context including the new one (``1..num_frames``).
            targets: ``B`` frame targets (contract section 2) for SGCls / PredCls, whose entities come from the
                ground truth; ignored in SGDet.

        Returns:
            ``(outputs, maps)``: the new frames' :class:`~arn_lightning.models.outputs.ARNOutput` (``BT = B``, last
            decoder layers, no ``aux_outputs``) and each new frame's ``F_vi`` ``[h'_b, w'_b, D]`` (to cache).

        Raises:
            ValueError: a window outside ``1..num_frames``, a cache longer than ``window - 1``, or mismatched counts.
        """
        if not 1 <= window <= self.config.num_frames:
            raise ValueError(f"Expected a window in [1, {self.config.num_frames}] frames but got {window}")
        if len(caches) != len(images) or (targets is not None and len(targets) != len(images)):
            raise ValueError(f"Expected one cache (and target) per frame of {len(images)} but got {len(caches)}")
        maps = self.encode_maps(images)
        memory, grid = self._grid_memory(maps)  # the batch's token grid: the largest new frame's
        history = []
        for new, cache in zip(maps, caches):
            if len(cache) > window - 1:
                raise ValueError(f"Expected at most {window - 1} cached frames but got {len(cache)}")
            past = list(cache) if cache else [new] * (window - 1)
            history += [past[0]] * (window - 1 - len(past)) + past + [new]
        window_maps, window_cells = place_on_grid(history, grid)  # [B*W, H', W', D], clip-major
        outputs = self._decode_newest(memory, window_maps, window_cells, len(maps), targets)
        return outputs, maps

    def _decode_newest(
        self,
        memory: Memory,
        window_maps: Tensor,
        window_cells: Tensor,
        num_clips: int = 1,
        targets: Sequence[dict[str, Any]] | None = None,
    ) -> ARNOutput:
        """The newest frames' last-layer outputs from their encoder ``memory`` (``[B, hw, D]``) and the windows'
        maps ``[B*W, h, w, D]`` / cells ``[B*W, h, w]``, clip-major (the temporal encoder updates the newest frame
        of each window only); SGCls / PredCls read the newest frames' ``targets``."""
        entity = self.entity(memory, targets if self.config.task != "sgdet" else None)
        features = memory.features
        if self.temporal is not None:
            features = self.temporal(window_maps.flatten(1, 2), ~window_cells.flatten(1), num_clips, last_only=True)
        predicate = self.predicate(
            entity.pair_pos,
            Memory(features, memory.pos, memory.padding_mask),
            entities=None if entity.sub_feats is None else (entity.sub_feats, entity.obj_feats),
            query_padding=None if entity.query_mask is None else ~entity.query_mask,
        )
        n_entity, n_predicate = len(entity.obj_logits), self.config.predicate_layers
        return self._layer_output(entity, predicate, n_entity - 1, n_predicate - 1)

    def _check_stream_inputs(self, image: Tensor, past_maps: Tensor) -> None:
        """Validate :meth:`stream_step`'s task, frame ``[1, 3, H, W]`` and window (cache ``[W-1, h, w, D]`` + 1)."""
        if self.config.task != "sgdet":
            raise ValueError(f"Expected an SGDet model to stream (no ground truth given) but got {self.config.task!r}")
        if image.dim() != 4 or image.shape[0] != 1:
            raise ValueError(f"Expected one frame [1, 3, H, W] but got {tuple(image.shape)}")
        window = past_maps.shape[0] + 1
        if window > self.config.num_frames:
            raise ValueError(f"Expected a window of at most {self.config.num_frames} frames but got {window}")

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

    def _assemble(self, entity: EntityOutputs, predicate: Mapping[str, list[Tensor]]) -> ARNOutput:
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
        self,
        entity: EntityOutputs,
        predicate: Mapping[str, list[Tensor]],
        e: int,
        p: int,
    ) -> ARNOutput:
        feats = {kind: predicate[kind][p] for kind in BRANCHES}  # [BT, Q, D] each
        return ARNOutput(
            obj_logits=entity.obj_logits[e],
            sub_boxes=entity.sub_boxes[e],
            obj_boxes=entity.obj_boxes[e],
            **{f"{kind}_logits": self.classifiers[kind](feats[kind]) for kind in BRANCHES},
            predicate_embeds=self._predicate_embeds(feats, entity.query_mask),
            query_mask=entity.query_mask,
        )

    def _predicate_embeds(self, feats: Mapping[str, Tensor], query_mask: Tensor | None) -> Tensor | None:
        """``[BT, E]`` the embedding distilled towards the CLIP image embedding, None when ``distill`` is off: the mean
        over the three branches and over the real queries (``query_mask`` ``[BT, Q]`` in SGCls / PredCls; every query
        in SGDet, where it is None) of (``ARNConfig.distill_features``, ``docs/model.md`` section 6)

        - ``"classifier"``: each branch classifier's projected features (:meth:`CosineClassifier.project`, before
          its L2 normalisation), the space the classifier compares with the text embeddings (GEN-VLKT's mimic loss);
        - ``"projection"``: the predicate features ``[BT, Q, D]``, then ``distill_proj`` (linear, so projecting the
          mean equals the mean of the projected features).
        """
        if not self.config.distill:
            return None
        if self.distill_proj is None:  # "classifier"
            mean = torch.stack([self.classifiers[kind].project(feats[kind]) for kind in BRANCHES]).mean(dim=0)
        else:
            mean = torch.stack(list(feats.values())).mean(dim=0)  # [BT, Q, D]
        if query_mask is None:
            pooled = mean.mean(dim=1)
        else:
            weight = query_mask.to(mean.dtype).unsqueeze(-1)  # [BT, Q, 1]
            pooled = (mean * weight).sum(dim=1) / weight.sum(dim=1).clamp(min=1.0)  # [BT, D or E]
        return pooled if self.distill_proj is None else self.distill_proj(pooled)
