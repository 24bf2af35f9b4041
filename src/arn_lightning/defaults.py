"""Defaults of the inference options, in a module without heavy imports (``arn-lightning infer --help`` reads them
without importing torch)."""

from __future__ import annotations

#: Default sampling rate (frames per second): Action Genome annotates videos at about 1-2 frames per second, so the
#: model sees frames as far apart as in training, and a minute of video costs 120 frames.
DEFAULT_FPS = 2.0
#: Default number of triplets kept per frame.
DEFAULT_TOP_K = 10
#: Default minimum triplet score (subject x object x predicate).
DEFAULT_THRESHOLD = 0.1
#: The ``precision`` choices of inference: ``auto`` (bf16 autocast on GPU, float32 on CPU), ``fp32``, ``bf16``.
PRECISIONS = ("auto", "fp32", "bf16")

__all__ = ["DEFAULT_FPS", "DEFAULT_THRESHOLD", "DEFAULT_TOP_K", "PRECISIONS"]
