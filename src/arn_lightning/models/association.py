"""Predicate Association Parsing (PAP, paper Sec. 3.3) and Hierarchical Attention (HA, Sec. 3.4).

:class:`AssociationLayer` replaces the last layer of each predicate-decoder branch. For branch A (S and C are
symmetric), with ``F^X`` the previous layer's output of branch X, ``F^s, F^o`` the entity decoder's subject / object
features of the same pair index, ``e^o`` the object position and ``e^A`` the branch's association embedding:

1. complementary cue (eq. 8): ``F^compA = concat[Lin_S(F^S), Lin_C(F^C)]``, each ``Lin`` mapping D -> D/2;
2. entity fusion (eq. 10), selected by ``entity_fusion`` (the rows of paper Table 4):

   - ``"add"`` (Model I): ``F_fusion = F^A + e^A + F^s + F^o``;
   - ``"mlp"`` (Model II) and ``"conditional"`` (ours): ``F_fusion = MLP(concat[F^A + e^A, F^s, F^o])``;

3. HA level 1 (eq. 11): ``F_comp = Norm(F^compA + Att1(query = F^compA, query pos = e^o, key = F_vit + pos,
   value = F_vit))``. With ``"conditional"`` the attention logits use the conditional weight mapping of eq. 9
   (:class:`CueAttention`): each complementary half gets its own query and key projection and every head's logit
   is ``q_S . k_S + q_C . k_C``; with ``"add"`` / ``"mlp"`` Att1 is a plain multi-head attention whose
   projections mix the two halves freely;
4. HA level 2 (eq. 12-13): ``F_assoc = Norm(F_fusion + Linear(Att2(query = F_fusion, key = F^compA,
   value = F_comp)))``, attention across the Q pairs of the frame, then the feed-forward block + norm. The
   ``Linear`` of eq. 13 is the attention's output projection (a second linear map would compose into it).
   Implemented as a :class:`~arn_lightning.models.transformer.TransformerLayer` with cross-attention only, whose
   keys (``F^compA``) differ from its values (``F_comp``).

With ``ha`` off (paper Table 3 row 4, "PAP without HA") level 2 does not associate across pairs: pair n takes its own
complementary feature, ``F_assoc = Norm(F_fusion + Linear(F_comp))``, then the feed-forward block + norm.

The key position: the paper adds the frame encoding ``p_t`` to the keys. Here the memory of a frame's queries is
that frame's tokens only, so ``p_t`` would add the same vector to every key and shift each query's logits uniformly,
which softmax cancels; the caller therefore passes the sine encoding alone, and ``p_t`` acts in the temporal
self-attention (:class:`~arn_lightning.models.transformer.TemporalEncoder`). The concatenated-query trick of step 3
is credited to Conditional DETR (Meng et al. 2021).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from arn_lightning.models.heads import MLP
from arn_lightning.models.transformer import Attention, Memory, TransformerLayer, safe_padding_mask

#: Entity-fusion variants (paper Table 4): Model I, Model II, ours.
FUSION_MODES = ("add", "mlp", "conditional")
#: Layers of the entity-fusion MLP of eq. 10 (``3D -> D -> D``; ``docs/model.md`` section 2).
FUSION_LAYERS = 2
#: Number of complementary branches feeding a branch's cue (the two other predicate types).
NUM_COMPLEMENTARY = 2


def _xavier_(module: nn.Module) -> None:
    for p in module.parameters():
        if p.dim() > 1:
            nn.init.xavier_uniform_(p)


class CueAttention(nn.Module):
    """Cross-attention of the complementary cue ``F^comp`` against the spatio-temporal memory (eq. 8-9, 11).

    Args:
        d_model: width ``D``.
        nhead: attention heads.
        dropout: dropout on the attention weights.
        conditional: True for the conditional weight mapping (eq. 9); False for a plain multi-head attention.
    """

    def __init__(self, d_model: int, nhead: int, dropout: float, conditional: bool) -> None:
        super().__init__()
        if d_model % (NUM_COMPLEMENTARY * nhead) != 0:
            raise ValueError(
                f"Expected d_model divisible by {NUM_COMPLEMENTARY} * nhead but got d_model={d_model}, nhead={nhead}"
            )
        self.nhead = nhead
        self.dropout = dropout
        self.conditional = conditional
        part = d_model // NUM_COMPLEMENTARY
        if conditional:
            self.query_parts = nn.ModuleList(nn.Linear(part, part) for _ in range(NUM_COMPLEMENTARY))
            self.key_parts = nn.ModuleList(nn.Linear(d_model, part) for _ in range(NUM_COMPLEMENTARY))
            self.value_proj = nn.Linear(d_model, d_model)
            self.out_proj = nn.Linear(d_model, d_model)
        else:
            self.attn = Attention(d_model, nhead, dropout=dropout)  # SDPA, nn.MultiheadAttention parameters
        _xavier_(self)

    def forward(self, cue: Tensor, cue_pos: Tensor, memory: Memory) -> Tensor:
        """Attend from the cue to the memory.

        Args:
            cue: ``[N, Q, D]`` complementary cue, its halves from the two other branches.
            cue_pos: ``[N or 1, Q, D]`` query position (``e^o``).
            memory: ``F_vit`` ``[N, S, D]`` with its key position and padding mask.

        Returns:
            ``[N, Q, D]`` attention output (after the output projection, before any residual).
        """
        query = cue + cue_pos
        key = memory.features if memory.pos is None else memory.features + memory.pos
        padding = safe_padding_mask(memory.padding_mask)
        if not self.conditional:
            return self.attn(query, key, memory.features, key_padding_mask=padding, need_weights=False)[0]
        halves = query.chunk(NUM_COMPLEMENTARY, dim=-1)
        # Each head sees the concatenation of its slice of every half, so its dot product sums one term per half.
        q = torch.cat(
            [proj(h).unflatten(-1, (self.nhead, -1)) for proj, h in zip(self.query_parts, halves)], dim=-1
        )  # [N, Q, H, D/H]
        k = torch.cat([proj(key).unflatten(-1, (self.nhead, -1)) for proj in self.key_parts], dim=-1)  # [N, S, H, D/H]
        v = self.value_proj(memory.features).unflatten(-1, (self.nhead, -1))  # [N, S, H, D/H]
        keep = None if padding is None else ~padding[:, None, None, :]  # [N, 1, 1, S], True = attend
        out = F.scaled_dot_product_attention(
            q.transpose(1, 2),
            k.transpose(1, 2),
            v.transpose(1, 2),
            attn_mask=keep,
            dropout_p=self.dropout if self.training else 0.0,
        )  # [N, H, Q, D/H]
        return self.out_proj(out.transpose(1, 2).flatten(-2))  # [N, Q, D]


class EntityFusion(nn.Module):
    """Fuse a branch's predicate feature with its pair's entity features (eq. 10; ``mode`` in :data:`FUSION_MODES`).

    Args:
        mode: ``"add"`` (sum), ``"mlp"`` / ``"conditional"`` (MLP over the concatenation).
        d_model: width ``D``.
        num_layers: layers of the fusion MLP (``3D -> D -> ... -> D``).
    """

    def __init__(self, mode: str, d_model: int, num_layers: int) -> None:
        super().__init__()
        if mode not in FUSION_MODES:
            raise ValueError(f"Expected entity_fusion in {FUSION_MODES} but got {mode!r}")
        self.mode = mode
        self.mlp = MLP(3 * d_model, d_model, d_model, num_layers) if mode != "add" else None

    def forward(self, pred: Tensor, assoc_pos: Tensor, sub: Tensor, obj: Tensor) -> Tensor:
        """``pred`` / ``sub`` / ``obj`` ``[N, Q, D]``, ``assoc_pos`` ``[N or 1, Q, D]`` -> ``[N, Q, D]``."""
        current = pred + assoc_pos
        if self.mlp is None:
            return current + sub + obj
        return self.mlp(torch.cat((current, sub, obj), dim=-1))  # [N, Q, 3D] -> [N, Q, D]


class AssociationLayer(nn.Module):
    """PAP + HA: the last layer of one predicate branch (see the module docstring for the equations).

    Args:
        d_model, nhead, dim_feedforward, dropout: as :class:`~arn_lightning.models.transformer.TransformerLayer`.
        entity_fusion: one of :data:`FUSION_MODES`.
        fusion_layers: layers of the fusion MLP.
        hierarchical: True for HA's level-2 attention across pairs; False for PAP alone.
    """

    def __init__(
        self,
        d_model: int,
        nhead: int,
        dim_feedforward: int,
        dropout: float,
        entity_fusion: str,
        fusion_layers: int,
        hierarchical: bool,
    ) -> None:
        super().__init__()
        part = d_model // NUM_COMPLEMENTARY
        self.cue_proj = nn.ModuleList(nn.Linear(d_model, part) for _ in range(NUM_COMPLEMENTARY))
        self.fusion = EntityFusion(entity_fusion, d_model, fusion_layers)
        self.cue_attention = CueAttention(d_model, nhead, dropout, conditional=entity_fusion == "conditional")
        self.cue_dropout = nn.Dropout(dropout)
        self.cue_norm = nn.LayerNorm(d_model)
        self.hierarchical = hierarchical
        if hierarchical:
            self.association = TransformerLayer(
                d_model, nhead, dim_feedforward, dropout, self_attention=False, cross_attention=True
            )
        else:
            self.pair_linear = nn.Linear(d_model, d_model)
            self.pair_dropout = nn.Dropout(dropout)
            self.pair_norm = nn.LayerNorm(d_model)
            self.update = TransformerLayer(d_model, nhead, dim_feedforward, dropout, self_attention=False)
        _xavier_(self.cue_proj)

    def forward(
        self,
        current: Tensor,
        complementary: Sequence[Tensor],
        assoc_pos: Tensor,
        pair_pos: Tensor,
        entities: Sequence[Tensor],
        memory: Memory,
        query_padding: Tensor | None = None,
    ) -> Tensor:
        """One association step for one branch.

        Args:
            current: ``[N, Q, D]`` the branch's previous-layer output ``F^A``.
            complementary: the two other branches' previous-layer outputs, each ``[N, Q, D]``.
            assoc_pos: ``[N or 1, Q, D]`` the branch's association embedding ``e^A``.
            pair_pos: ``[N or 1, Q, D]`` the object position ``e^o``.
            entities: ``(F^s, F^o)``, each ``[N, Q, D]``.
            memory: ``F_vit`` with its key position and padding mask.
            query_padding: ``[N, Q]`` True on padded pair queries (SGCls / PredCls), or None.

        Returns:
            ``[N, Q, D]`` the associated predicate feature ``F_assoc`` (un-normalised by the decoder norm).
        """
        if len(complementary) != NUM_COMPLEMENTARY or len(entities) != 2:
            raise ValueError(
                f"Expected {NUM_COMPLEMENTARY} complementary features and (subject, object) features "
                f"but got {len(complementary)} and {len(entities)}"
            )
        cue = torch.cat([proj(f) for proj, f in zip(self.cue_proj, complementary)], dim=-1)  # [N, Q, D]
        fused = self.fusion(current, assoc_pos, *entities)  # [N, Q, D]
        comp = self.cue_norm(cue + self.cue_dropout(self.cue_attention(cue, pair_pos, memory)))  # [N, Q, D]
        if self.hierarchical:
            return self.association(fused, memory=Memory(comp, None, query_padding), memory_key=cue)
        return self.update(self.pair_norm(fused + self.pair_dropout(self.pair_linear(comp))))
