"""Prediction heads: the box / embedding MLP and the CLIP-initialised cosine classifier (paper eq. 6)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: Initial log logit scale of the cosine classifiers: CLIP's temperature 0.07 (``docs/model.md`` section 3).
LOGIT_SCALE_INIT = math.log(1 / 0.07)
#: Upper bound of the exponentiated logit scale (CLIP's clamp).
LOGIT_SCALE_MAX = 100.0


class MLP(nn.Module):
    """``num_layers`` linear layers with ReLU in between (no activation after the last).

    The layers are ``layers.{i}``, DETR's naming for its box head, so its ``bbox_embed`` loads directly.

    Args:
        in_dim: input width.
        hidden_dim: width of the hidden layers.
        out_dim: output width.
        num_layers: number of linear layers (>= 1; 1 is a plain linear map).
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"Expected num_layers >= 1 but got {num_layers}")
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: Tensor) -> Tensor:
        """``[..., in_dim]`` -> ``[..., out_dim]``."""
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


class CosineClassifier(nn.Module):
    """Cosine-similarity classifier against learnable class embeddings (CLIP text embeddings at init).

    ``logits = exp(s) * <norm(LayerNorm(Linear(x))), norm(w_k)>`` with a learnable logit scale ``s`` initialised to
    ``log(1/0.07)`` (CLIP's temperature) and clamped at ``log(logit_scale_max)``.
    ``class_embeds`` [K, E] is what :meth:`load_text_embeddings` overwrites with CLIP text embeddings; the
    ``num_extra`` extra rows (``extra_embeds``, e.g. the "no object" class) have no text and stay randomly
    initialised; their logits come last. They are separate parameters so that an optimiser can give the
    CLIP-initialised rows their own learning rate.

    Args:
        in_dim: feature width ``D``.
        embed_dim: CLIP embedding width ``E``.
        num_classes: number of text-initialised classes ``K``.
        num_extra: number of extra learned classes appended after the ``K`` classes.
        logit_scale_init: initial value of the log logit scale.
        logit_scale_max: upper bound of the (exponentiated) logit scale.
        bias_init: when set, a learnable per-class logit bias starting at this value (a focal-loss prior:
            ``-log((1 - p) / p)`` for a prior probability ``p``); None: no bias (plain cosine logits).
    """

    def __init__(
        self,
        in_dim: int,
        embed_dim: int,
        num_classes: int,
        num_extra: int = 0,
        logit_scale_init: float = LOGIT_SCALE_INIT,
        logit_scale_max: float = LOGIT_SCALE_MAX,
        bias_init: float | None = None,
    ) -> None:
        super().__init__()
        if num_classes < 1 or num_extra < 0:
            raise ValueError(f"Expected num_classes >= 1, num_extra >= 0 but got {num_classes}, {num_extra}")
        self.proj = nn.Sequential(nn.Linear(in_dim, embed_dim), nn.LayerNorm(embed_dim))
        self.class_embeds = nn.Parameter(torch.randn(num_classes, embed_dim))
        self.extra_embeds = nn.Parameter(torch.randn(num_extra, embed_dim)) if num_extra else None
        self.logit_scale = nn.Parameter(torch.tensor(float(logit_scale_init)))
        self.log_scale_max = math.log(logit_scale_max)
        self.bias = (
            nn.Parameter(torch.full((num_classes + num_extra,), float(bias_init))) if bias_init is not None else None
        )

    @property
    def num_outputs(self) -> int:
        """Number of logits: the text-initialised classes plus the extra ones."""
        return self.class_embeds.shape[0] + (0 if self.extra_embeds is None else self.extra_embeds.shape[0])

    def embeddings(self) -> Tensor:
        """``[K + num_extra, E]`` L2-normalised class embeddings."""
        rows = self.class_embeds if self.extra_embeds is None else torch.cat((self.class_embeds, self.extra_embeds))
        return F.normalize(rows, dim=-1)

    def project(self, x: Tensor) -> Tensor:
        """``x`` ``[..., D]`` -> the projected features ``[..., E]`` (``LayerNorm(Linear(x))``) before their L2
        normalisation: what :meth:`forward` compares with the class embeddings, and what the CLIP image-embedding
        distillation pulls towards CLIP's space (``ARNConfig.distill_features``, ``docs/model.md`` section 6)."""
        return self.proj(x)

    def forward(self, x: Tensor) -> Tensor:
        """``x`` ``[..., D]`` -> logits ``[..., K + num_extra]``."""
        feats = F.normalize(self.project(x), dim=-1)  # [..., E]
        scale = self.logit_scale.clamp(max=self.log_scale_max).exp()
        logits = scale * feats @ self.embeddings().t()
        return logits if self.bias is None else logits + self.bias

    @torch.no_grad()
    def load_text_embeddings(self, embeds: Tensor, name: str) -> None:
        """Copy text embeddings ``[K, E]`` into ``class_embeds`` (``name`` names them in errors)."""
        if tuple(embeds.shape) != tuple(self.class_embeds.shape):
            raise ValueError(
                f"Expected {name} text embeddings of shape {tuple(self.class_embeds.shape)} "
                f"but got {tuple(embeds.shape)}"
            )
        self.class_embeds.copy_(embeds.to(self.class_embeds))
