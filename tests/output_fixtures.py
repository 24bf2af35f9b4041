"""Hand-made model outputs shared by the matcher and postprocess tests."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

#: Object logits: 36 AG classes + "no object" last.
NUM_LOGITS = 37


def class_logits(rows: Sequence[dict[int, float]]) -> Tensor:
    """Logits ``[Q, 37]`` whose softmax is the given ``{class: prob}`` per query (about 0 elsewhere)."""
    probs = torch.full((len(rows), NUM_LOGITS), 1e-12)
    for q, row in enumerate(rows):
        for c, p in row.items():
            probs[q, c] = p
    return probs.log()
