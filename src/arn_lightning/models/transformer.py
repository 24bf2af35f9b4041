"""The project's one transformer layer and the stacks built from it (encoder, decoders, temporal encoder).

:class:`TransformerLayer` is a post-norm layer (self-attention, optional cross-attention, feed-forward), written
once and reused by the encoder, the entity decoder, the predicate-decoder branches, the temporal encoder and the
hierarchical attention of :mod:`arn_lightning.models.association`. Its parameters carry DETR's names
(``self_attn``, ``multihead_attn``, ``linear1``, ``linear2``, ``norm1..3``, ``torch.nn.MultiheadAttention``'s
``in_proj_weight``) so that a DETR checkpoint maps onto it key for key (see :mod:`arn_lightning.weights.detr`).
The attention pattern (positions added to queries and keys, not to values, at every layer) is DETR's.

Masks follow ``torch.nn.MultiheadAttention``: a key padding mask is True on padding, an attention mask is True where
attention is *not* allowed.

The attention itself is :class:`Attention`, an ``nn.MultiheadAttention`` (same parameters, same state dict) whose
weight-free forward calls :func:`torch.nn.functional.scaled_dot_product_attention` (flash / memory-efficient kernels
on GPU); asked for weights (``need_weights=True``, e.g. by :mod:`arn_lightning.inference.attention`) it runs
torch's explicit math. Both agree within :data:`SDPA_TOLERANCE` in float32 (``tests/test_models_attention.py``).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Memory(NamedTuple):
    """What a decoder cross-attends to.

    Attributes:
        features: ``[N, S, D]`` values (and keys before ``pos`` is added).
        pos: ``[N, S, D]`` position added to the keys, or None.
        padding_mask: ``[N, S]`` bool, True on padding tokens, or None.
    """

    features: Tensor
    pos: Tensor | None = None
    padding_mask: Tensor | None = None


def safe_padding_mask(padding_mask: Tensor | None) -> Tensor | None:
    """Unmask the rows of a key padding mask ``[N, S]`` that mask every key.

    Such rows belong to inputs with nothing real to attend to (a frame without ground-truth pairs in SGCls);
    their outputs are ignored downstream, but a fully masked softmax would produce NaN that poisons gradients.
    """
    if padding_mask is None:
        return None
    return padding_mask & ~padding_mask.all(dim=-1, keepdim=True)


#: Largest absolute difference allowed in float32 between :class:`Attention`'s SDPA path and torch's explicit math
#: (``nn.MultiheadAttention`` with the same weights), checked by ``tests/test_models_attention.py``.
SDPA_TOLERANCE = 1e-5
#: Initial values of the learned content queries (``ARNConfig.content_queries``, :func:`content_query_embedding`).
CONTENT_QUERIES = ("normal", "zeros")


class Attention(nn.MultiheadAttention):
    """``nn.MultiheadAttention`` (``batch_first``, same parameters and state dict: DETR's ``in_proj_weight``,
    ``in_proj_bias``, ``out_proj.*``) computed by :func:`~torch.nn.functional.scaled_dot_product_attention`.

    With ``need_weights=False`` the queries, keys and values are projected with the slices of ``in_proj_weight``
    and attended with SDPA, dropout on the attention weights in training only. With ``need_weights=True`` (attention
    maps for visualisation) the parent's explicit math runs and returns the weights as well. Masks are torch's:
    ``key_padding_mask`` ``[N, S]`` True on padding, ``attn_mask`` ``[L, S]`` or ``[N*nhead, L, S]`` True where
    attention is not allowed (converted to SDPA's convention, True = allowed). A query row whose keys are all masked
    has no defined output (NaN or zeros, by torch version and kernel); callers unmask such rows first
    (:func:`safe_padding_mask`).

    Args:
        embed_dim: width ``D``.
        num_heads: heads (``D`` divisible by it).
        dropout: dropout on the attention weights (training only).
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__(embed_dim, num_heads, dropout=dropout, batch_first=True)

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        key_padding_mask: Tensor | None = None,
        need_weights: bool = True,
        attn_mask: Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """Attend ``query`` ``[N, L, D]`` to ``key`` / ``value`` ``[N, S, D]``: ``([N, L, D], weights or None)``.

        ``weights`` (``need_weights=True`` only) is ``[N, L, S]`` averaged over the heads, or ``[N, H, L, S]``.
        """
        explicit = (
            need_weights
            or is_causal
            or query.dim() != 3
            or any(m is not None and m.dtype != torch.bool for m in (key_padding_mask, attn_mask))
        )
        if explicit:
            return super().forward(
                query,
                key,
                value,
                key_padding_mask=key_padding_mask,
                need_weights=need_weights,
                attn_mask=attn_mask,
                average_attn_weights=average_attn_weights,
                is_causal=is_causal,
            )
        return self._sdpa(query, key, value, key_padding_mask, attn_mask), None

    def _sdpa(
        self, query: Tensor, key: Tensor, value: Tensor, key_padding_mask: Tensor | None, attn_mask: Tensor | None
    ) -> Tensor:
        """The weight-free path of :meth:`forward`: ``[N, L, D]`` attended with SDPA and projected out."""
        n, length, d = query.shape
        q, k, v = self._project(query, key, value)
        out = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=_allowed(key_padding_mask, attn_mask, n, self.num_heads),
            dropout_p=self.dropout if self.training else 0.0,
        )  # [N, H, L, D/H]
        out = out.transpose(1, 2).reshape(n, length, d)  # [N, L, D]
        return self.out_proj(out)

    def _project(self, query: Tensor, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Queries ``[N, H, L, D/H]``, keys and values ``[N, H, S, D/H]`` by the slices of ``in_proj_weight``."""
        n, length, d = query.shape
        heads = self.num_heads
        w_q, w_k, w_v = self.in_proj_weight.chunk(3)
        b_q, b_k, b_v = self.in_proj_bias.chunk(3) if self.in_proj_bias is not None else (None, None, None)
        if key is query:  # self-attention: one projection for queries and keys
            w_qk = self.in_proj_weight[: 2 * d]
            b_qk = None if self.in_proj_bias is None else self.in_proj_bias[: 2 * d]
            q, k = F.linear(query, w_qk, b_qk).chunk(2, dim=-1)
        else:
            q, k = F.linear(query, w_q, b_q), F.linear(key, w_k, b_k)
        v = F.linear(value, w_v, b_v)
        q = q.view(n, length, heads, -1).transpose(1, 2)  # [N, H, L, D/H]
        k = k.view(n, k.shape[1], heads, -1).transpose(1, 2)  # [N, H, S, D/H]
        v = v.view(n, v.shape[1], heads, -1).transpose(1, 2)  # [N, H, S, D/H]
        return q, k, v


def _allowed(key_padding_mask: Tensor | None, attn_mask: Tensor | None, n: int, heads: int) -> Tensor | None:
    """SDPA's bool mask (True = may attend), broadcastable to ``[N, H, L, S]``, from torch's blocked-masks.

    Args:
        key_padding_mask: ``[N, S]`` True on padding keys, or None.
        attn_mask: ``[L, S]`` or ``[N*H, L, S]`` True where attention is not allowed, or None.
    """
    blocked = None
    if attn_mask is not None:
        blocked = attn_mask if attn_mask.dim() == 2 else attn_mask.view(n, heads, *attn_mask.shape[-2:])
    if key_padding_mask is not None:
        padding = key_padding_mask.view(n, 1, 1, -1)  # [N, 1, 1, S]
        blocked = padding if blocked is None else blocked | padding
    return None if blocked is None else ~blocked


def _with_pos(x: Tensor, pos: Tensor | None) -> Tensor:
    return x if pos is None else x + pos


class TransformerLayer(nn.Module):
    """Post-norm transformer layer: [self-attention] -> [cross-attention] -> feed-forward, each residual + norm.

    Norms and dropouts are numbered in block order (an encoder layer has ``norm1`` after self-attention and
    ``norm2`` after the feed-forward; a decoder layer ``norm1..3``), as in DETR.

    Args:
        d_model: width ``D``.
        nhead: attention heads.
        dim_feedforward: hidden width of the feed-forward block.
        dropout: dropout on attention weights, the feed-forward hidden layer and every residual branch.
        self_attention: include the self-attention block.
        cross_attention: include the cross-attention block.
    """

    def __init__(
        self,
        d_model: int,
        nhead: int,
        dim_feedforward: int,
        dropout: float,
        self_attention: bool = True,
        cross_attention: bool = False,
    ) -> None:
        super().__init__()
        if d_model % nhead != 0:
            raise ValueError(f"Expected d_model divisible by nhead but got d_model={d_model}, nhead={nhead}")
        if self_attention:
            self.self_attn = Attention(d_model, nhead, dropout=dropout)
        if cross_attention:
            self.multihead_attn = Attention(d_model, nhead, dropout=dropout)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        blocks = [name for name, on in (("self", self_attention), ("cross", cross_attention), ("ffn", True)) if on]
        self._block_index = {block: i for i, block in enumerate(blocks, start=1)}
        for i in self._block_index.values():
            self.add_module(f"norm{i}", nn.LayerNorm(d_model))
            self.add_module(f"dropout{i}", nn.Dropout(dropout))
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    @property
    def has_self_attention(self) -> bool:
        """Whether the layer has the self-attention block."""
        return "self" in self._block_index

    @property
    def has_cross_attention(self) -> bool:
        """Whether the layer has the cross-attention block."""
        return "cross" in self._block_index

    def _residual(self, block: str, x: Tensor, update: Tensor) -> Tensor:
        i = self._block_index[block]
        return getattr(self, f"norm{i}")(x + getattr(self, f"dropout{i}")(update))

    def forward(
        self,
        tgt: Tensor,
        query_pos: Tensor | None = None,
        memory: Memory | None = None,
        memory_key: Tensor | None = None,
        self_attn_mask: Tensor | None = None,
        tgt_padding_mask: Tensor | None = None,
        context: Tensor | None = None,
        context_pos: Tensor | None = None,
    ) -> Tensor:
        """Update ``tgt``.

        Args:
            tgt: ``[N, L, D]`` queries (content).
            query_pos: ``[N or 1, L, D]`` position added to the queries (and self-attention keys), or None.
            memory: cross-attention memory (required with cross-attention); values are ``memory.features``.
            memory_key: ``[N, S, D]`` keys of the cross-attention when they differ from the values
                (hierarchical attention, eq. 12); default ``memory.features``. ``memory.pos`` is added to them.
            self_attn_mask: ``[L, L]`` or ``[N*nhead, L, L]`` bool, True where self-attention is not allowed.
            tgt_padding_mask: ``[N, L]`` bool, True on padded queries (masked as self-attention keys; with
                ``context``, on padded context rows ``[N, S]``).
            context: ``[N, S, D]`` the self-attention's keys and values when only some of the sequence's rows are
                updated (``tgt`` holds those rows; streaming updates the newest frame only); default ``tgt``.
            context_pos: ``[N or 1, S, D]`` the position of ``context`` (added to its keys).

        Returns:
            ``[N, L, D]`` updated queries.
        """
        if self.has_self_attention:
            update = self._self_attention(tgt, query_pos, self_attn_mask, tgt_padding_mask, context, context_pos)
            tgt = self._residual("self", tgt, update)
        if self.has_cross_attention:
            tgt = self._residual("cross", tgt, self._cross_attention(tgt, query_pos, memory, memory_key))
        update = self.linear2(self.dropout(F.relu(self.linear1(tgt))))
        return self._residual("ffn", tgt, update)

    def _self_attention(
        self,
        tgt: Tensor,
        query_pos: Tensor | None,
        self_attn_mask: Tensor | None,
        tgt_padding_mask: Tensor | None,
        context: Tensor | None,
        context_pos: Tensor | None,
    ) -> Tensor:
        """The self-attention update ``[N, L, D]`` of :meth:`forward` (before its residual and norm)."""
        q = _with_pos(tgt, query_pos)
        k = q if context is None else _with_pos(context, context_pos)
        return self.self_attn(
            q,
            k,
            tgt if context is None else context,
            attn_mask=self_attn_mask,
            key_padding_mask=safe_padding_mask(tgt_padding_mask),
            need_weights=False,
        )[0]

    def _cross_attention(
        self, tgt: Tensor, query_pos: Tensor | None, memory: Memory | None, memory_key: Tensor | None
    ) -> Tensor:
        """The cross-attention update ``[N, L, D]`` of :meth:`forward` (before its residual and norm)."""
        if memory is None:
            raise ValueError("Expected a memory for the cross-attention layer but got None")
        key = memory.features if memory_key is None else memory_key
        return self.multihead_attn(
            _with_pos(tgt, query_pos),
            _with_pos(key, memory.pos),
            memory.features,
            key_padding_mask=safe_padding_mask(memory.padding_mask),
            need_weights=False,
        )[0]


class TransformerEncoder(nn.Module):
    """A stack of self-attention :class:`TransformerLayer` (no final norm: post-norm layers end normalised).

    Args:
        num_layers: number of layers.
        d_model, nhead, dim_feedforward, dropout: see :class:`TransformerLayer`.
    """

    def __init__(self, num_layers: int, d_model: int, nhead: int, dim_feedforward: int, dropout: float) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            TransformerLayer(d_model, nhead, dim_feedforward, dropout) for _ in range(num_layers)
        )

    def forward(self, src: Tensor, pos: Tensor, padding_mask: Tensor | None = None) -> Tensor:
        """``src`` ``[N, S, D]`` with position ``pos`` ``[N, S, D]`` and padding ``[N, S]`` -> ``[N, S, D]``."""
        for layer in self.layers:
            src = layer(src, query_pos=pos, tgt_padding_mask=padding_mask)
        return src


class TransformerDecoder(nn.Module):
    """A stack of decoder :class:`TransformerLayer` with a shared output norm applied to every layer's output.

    The shared norm is DETR's ``transformer.decoder.norm``; the next layer consumes the un-normalised output.

    Args:
        num_layers: number of layers (0 allowed: the input is returned unchanged, with no intermediate output).
        d_model, nhead, dim_feedforward, dropout: see :class:`TransformerLayer`.
    """

    def __init__(self, num_layers: int, d_model: int, nhead: int, dim_feedforward: int, dropout: float) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            TransformerLayer(d_model, nhead, dim_feedforward, dropout, cross_attention=True) for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(d_model)

    def forward(
        self,
        tgt: Tensor,
        query_pos: Tensor,
        memory: Memory,
        tgt_padding_mask: Tensor | None = None,
    ) -> tuple[list[Tensor], Tensor]:
        """Decode.

        Args:
            tgt: ``[N, L, D]`` initial query content.
            query_pos: ``[N or 1, L, D]`` query position, added at every layer.
            memory: the cross-attention memory.
            tgt_padding_mask: ``[N, L]`` True on padded queries.

        Returns:
            ``(outputs, last)``: per layer the normalised output ``[N, L, D]``, and the last layer's raw output
            ``[N, L, D]`` (what a following layer would consume).
        """
        outputs = []
        for layer in self.layers:
            tgt = layer(tgt, query_pos=query_pos, memory=memory, tgt_padding_mask=tgt_padding_mask)
            outputs.append(self.norm(tgt))
        return outputs, tgt


def content_query_embedding(num_queries: int, d_model: int, init: str) -> nn.Embedding:
    """A learned content query set ``[num_queries, d_model]`` (``Q^s``, ``Q^o``, ``Q^{pred_i}``).

    ``nn.Embedding`` draws its N(0, 1) values in both cases, so the random numbers of every later parameter do not
    depend on ``init``; ``"zeros"`` then zeroes them in place (DETR's decoder is trained with ``tgt = 0``).

    Args:
        num_queries: rows ``Q``.
        d_model: width ``D``.
        init: one of :data:`CONTENT_QUERIES`.

    Raises:
        ValueError: ``init`` is not one of :data:`CONTENT_QUERIES` (the message names ``content_queries``).
    """
    if init not in CONTENT_QUERIES:
        raise ValueError(f"Expected content_queries in {CONTENT_QUERIES} but got {init!r}")
    embedding = nn.Embedding(num_queries, d_model)
    if init == "zeros":
        with torch.no_grad():
            embedding.weight.zero_()
    return embedding


class TemporalEncoder(nn.Module):
    """Self-attention along time for every spatial token of a clip (paper eq. 3), with a learned frame encoding.

    The frame encoding ``p_t`` (``frame_embed`` ``[T, D]``) is the position of the temporal self-attention, so
    the attention can tell the frames apart. ``causal`` restricts frame t to frames ``<= t`` (streaming inference).
    A token that is padding in some frames is not attended to in those frames (a token always sees itself).

    Args:
        num_layers: number of self-attention layers.
        num_frames: the largest clip length ``T`` (rows of ``p_t``).
        causal: causal attention mask.
        d_model, nhead, dim_feedforward, dropout: see :class:`TransformerLayer`.
    """

    def __init__(
        self,
        num_layers: int,
        num_frames: int,
        causal: bool,
        d_model: int,
        nhead: int,
        dim_feedforward: int,
        dropout: float,
    ) -> None:
        super().__init__()
        self.frame_embed = nn.Embedding(num_frames, d_model)
        self.layers = nn.ModuleList(
            TransformerLayer(d_model, nhead, dim_feedforward, dropout) for _ in range(num_layers)
        )
        self.causal = causal
        self.nhead = nhead

    def forward(self, memory: Tensor, padding_mask: Tensor, num_clips: int, last_only: bool = False) -> Tensor:
        """Mix every spatial token with the same token of the clip's other frames.

        Args:
            memory: ``[B*T, HW, D]`` per-frame encoder features ``F_vi``, frame-major.
            padding_mask: ``[B*T, HW]`` True on padding tokens.
            num_clips: ``B``.
            last_only: return the last frame of each clip only; its last layer then updates that frame alone
                (the same values as the full computation's last frame; streaming inference).

        Returns:
            ``[B*T, HW, D]`` spatio-temporal features ``F_vit`` (``[B, HW, D]``, the last frames, with
            ``last_only``).
        """
        bt, hw, d = memory.shape
        t = bt // num_clips
        if t > self.frame_embed.num_embeddings:
            raise ValueError(f"Expected at most {self.frame_embed.num_embeddings} frames per clip but got {t}")
        x = memory.view(num_clips, t, hw, d).transpose(1, 2).reshape(num_clips * hw, t, d)  # [B*HW, T, D]
        padding = padding_mask.view(num_clips, t, hw).transpose(1, 2).reshape(num_clips * hw, t)  # [B*HW, T]
        attn_mask = self._attention_mask(padding)
        pos = self.frame_embed.weight[:t].unsqueeze(0)  # [1, T, D]
        layers = list(self.layers)
        if last_only and layers:
            for layer in layers[:-1]:
                x = layer(x, query_pos=pos, self_attn_mask=attn_mask)
            last_mask = None if attn_mask is None else attn_mask[:, -1:]  # [B*HW*nhead, 1, T]
            x = layers[-1](x[:, -1:], pos[:, -1:], self_attn_mask=last_mask, context=x, context_pos=pos)
            return x.view(num_clips, hw, d)  # [B, HW, D]
        for layer in layers:
            x = layer(x, query_pos=pos, self_attn_mask=attn_mask)
        if last_only:  # no layer: F_vit = F_vi
            return x[:, -1].reshape(num_clips, hw, d)
        return x.view(num_clips, hw, t, d).transpose(1, 2).reshape(bt, hw, d)  # [B*T, HW, D]

    def _attention_mask(self, padding: Tensor) -> Tensor | None:
        """``[B*HW*nhead, T, T]`` bool (True = blocked) from padding ``[B*HW, T]`` and causality, or None."""
        t = padding.shape[1]
        # no mask when nothing is blocked (the fast path); an exported graph always builds it, since torch.export
        # refuses a branch on data (an all-False mask blocks nothing, exactly as no mask)
        if not self.causal and not torch.compiler.is_exporting() and not bool(padding.any()):
            return None
        future = torch.ones(t, t, dtype=torch.bool, device=padding.device).triu(diagonal=1)  # [T, T]
        blocked = padding.unsqueeze(1).expand(-1, t, -1)  # [B*HW, T, T]: key s padded
        if self.causal:
            blocked = blocked | future
        blocked = blocked & ~torch.eye(t, dtype=torch.bool, device=padding.device)  # always see yourself
        return blocked.repeat_interleave(self.nhead, dim=0)  # [B*HW*nhead, T, T]
