"""The three-branch predicate decoder (paper Sec. 3.1 "Predicate Decoder", eq. 4-5) ending in PAP + HA.

Branch i (attention, spatial, contacting) has learned query contents ``Q^{pred_i}`` [Q, D] and a learned predicate
association embedding ``e^{pred_i}`` [Q, D]. Its query position is ``e^o + e^{pred_i}`` (eq. 4), which aligns
predicate query n with entity pair n. Each layer self-attends among the branch's queries and cross-attends to the
frame's spatio-temporal features ``F_vit`` (eq. 5; key position: the sine encoding, see
:mod:`arn_lightning.models.association` for why the frame encoding is left out there). With ``pap`` on, the last
layer of every branch is an :class:`~arn_lightning.models.association.AssociationLayer` fed by the three branches'
previous-layer outputs and the entity features; with ``pap`` off all ``predicate_layers`` are standard layers.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from arn_lightning.models.association import FUSION_LAYERS, AssociationLayer
from arn_lightning.models.config import ARNConfig
from arn_lightning.models.outputs import BRANCHES
from arn_lightning.models.transformer import Memory, TransformerDecoder, content_query_embedding


class PredicateDecoder(nn.Module):
    """Three predicate branches; each returns one normalised feature map per layer.

    Args:
        config: the model configuration (:class:`~arn_lightning.models.config.ARNConfig`).
    """

    def __init__(self, config: ARNConfig) -> None:
        super().__init__()
        d, q = config.hidden_dim, config.num_queries
        standard_layers = config.standard_predicate_layers
        self.queries = nn.ModuleDict(
            {kind: content_query_embedding(q, d, config.content_queries) for kind in BRANCHES}
        )  # Q^{pred_i}
        self.assoc_embeds = nn.ModuleDict({kind: nn.Embedding(q, d) for kind in BRANCHES})  # e^{pred_i}
        self.decoders = nn.ModuleDict(
            {
                kind: TransformerDecoder(standard_layers, d, config.nheads, config.ffn_dim, config.dropout)
                for kind in BRANCHES
            }
        )
        self.association: nn.ModuleDict | None = None
        if config.pap:
            self.association = nn.ModuleDict(
                {
                    kind: AssociationLayer(
                        d,
                        config.nheads,
                        config.ffn_dim,
                        config.dropout,
                        config.entity_fusion,
                        FUSION_LAYERS,
                        hierarchical=config.ha,
                    )
                    for kind in BRANCHES
                }
            )

    def forward(
        self,
        pair_pos: Tensor,
        memory: Memory,
        entities: Sequence[Tensor] | None = None,
        query_padding: Tensor | None = None,
    ) -> dict[str, list[Tensor]]:
        """Decode the predicate features of every branch.

        Args:
            pair_pos: ``[N or 1, Q, D]`` the object position ``e^o`` of the entity stage.
            memory: ``F_vit`` ``[N, HW, D]`` with its key position and padding mask.
            entities: ``(F^s, F^o)`` ``[N, Q, D]`` each; required with PAP.
            query_padding: ``[N, Q]`` True on padded pair queries (SGCls / PredCls), or None.

        Returns:
            branch name -> list over the ``predicate_layers`` layers of ``[N, Q, D]`` normalised features.
        """
        n, width = memory.features.shape[0], pair_pos.shape[1]
        outputs: dict[str, list[Tensor]] = {}
        last: dict[str, Tensor] = {}
        for kind in BRANCHES:
            tgt = self.queries[kind].weight[:width].unsqueeze(0).expand(n, -1, -1)  # [N, Q, D]
            pos = pair_pos + self.assoc_embeds[kind].weight[:width]  # eq. 4, [N or 1, Q, D]
            outputs[kind], last[kind] = self.decoders[kind](tgt, pos, memory, tgt_padding_mask=query_padding)
        if self.association is None:
            return outputs
        if entities is None:
            raise ValueError("Expected the entity features (F^s, F^o) for PAP but got None")
        for kind in BRANCHES:
            outputs[kind].append(self._associate(kind, last, pair_pos, memory, entities, query_padding))
        return outputs

    def _associate(
        self,
        kind: str,
        last: dict[str, Tensor],
        pair_pos: Tensor,
        memory: Memory,
        entities: Sequence[Tensor],
        query_padding: Tensor | None,
    ) -> Tensor:
        """Branch ``kind``'s PAP (+ HA) layer on the raw last outputs ``[N, Q, D]``: ``[N, Q, D]`` normalised."""
        width = pair_pos.shape[1]
        assoc = self.association[kind](
            last[kind],
            [last[other] for other in BRANCHES if other != kind],
            assoc_pos=self.assoc_embeds[kind].weight[:width],
            pair_pos=pair_pos,
            entities=entities,
            memory=memory,
            query_padding=query_padding,
        )
        return self.decoders[kind].norm(assoc)
