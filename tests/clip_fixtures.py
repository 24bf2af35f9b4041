"""Shared pieces of the CLIP tests (test_text_clip, test_text_embeddings, test_text_image_tower)."""

from __future__ import annotations

from pathlib import Path

from arn_lightning.text.clip import register_tiny_clip
from arn_lightning.text.config import ClipConfig

CATEGORIES = {"attention": [[0, 11], [1, 8]], "spatial": [[5, 8]], "contacting": [[14, 11], [19, 8], [9, 2]]}


def tiny_clip_config(tmp_path: Path) -> ClipConfig:
    """The tiny random CLIP with its caches under ``tmp_path / "cache"`` (conftest's ``tiny_clip`` fixture)."""
    return ClipConfig(clip_model=register_tiny_clip(), clip_pretrained=None, cache_dir=str(tmp_path / "cache"))
