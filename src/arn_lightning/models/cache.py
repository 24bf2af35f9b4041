"""The streaming cache of one stream: the encoder features ``F_vi`` of its previous frames (``docs/streaming.md``).

One home for what a stream remembers between frames, used by streaming inference
(:class:`~arn_lightning.inference.streaming.StreamState`, the ONNX predictor) and by causal evaluation
(:class:`~arn_lightning.training.lit_module.ARNLitModule`, one cache per video).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from torch import Tensor


@dataclass
class FeatureCache:
    """``F_vi`` maps ``[h, w, D]`` of a stream's previous ``window - 1`` frames, oldest first, each on its own
    frame's feature grid (bounded: ``(window - 1) * h * w * D`` floats).

    Attributes:
        window: frames of temporal context including the new one (``>= 1``).
        cache: the maps, oldest first (``maxlen = window - 1``).
    """

    window: int
    cache: deque[Tensor] = field(init=False)

    def __post_init__(self) -> None:
        if self.window < 1:
            raise ValueError(f"Expected a window of at least 1 frame but got {self.window}")
        self.cache = deque(maxlen=self.window - 1)

    @property
    def starts(self) -> bool:
        """Whether the next frame starts the temporal context (nothing cached: a new stream or a reset)."""
        return len(self.cache) == 0

    def remember(self, maps: Tensor, reset: bool) -> None:
        """Cache the new frame's ``F_vi`` ``[h, w, D]``; after a ``reset`` it also stands for the frames before the
        stream (a causal clip that starts before the stream repeats its first frame)."""
        if self.cache.maxlen == 0:
            return
        if reset:
            self.cache.extend([maps] * self.cache.maxlen)
        else:
            self.cache.append(maps)


__all__ = ["FeatureCache"]
