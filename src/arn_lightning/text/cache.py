"""On-disk caches of CLIP by-products (text embeddings, per-frame image embeddings): where they live, how their keys
are hashed and how their files are written.

A cache key is :func:`stable_hash` of a JSON payload that starts with the CLIP identity
(:func:`arn_lightning.text.clip.model_identity`, which carries :data:`CACHE_FORMAT_VERSION`); files are written with
:func:`atomic_save`, so that a reader never sees half a file.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from arn_lightning import atomic
from arn_lightning.text.config import ClipConfig

#: Bumped whenever the content or layout of a cache file changes, so that old files are never read.
CACHE_FORMAT_VERSION = 1
#: Where embeddings are cached when neither ``ClipConfig.cache_dir`` nor an explicit ``cache_dir`` is given.
DEFAULT_CACHE_DIR = "~/.cache/arn_lightning/clip"


def stable_hash(payload: Any) -> str:
    """SHA-256 hex digest of a JSON-serialisable value (keys sorted)."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def cache_root(config: ClipConfig, cache_dir: str | None = None) -> Path:
    """The embedding cache directory: ``cache_dir``, else ``config.cache_dir``, else :data:`DEFAULT_CACHE_DIR`."""
    return Path(cache_dir or config.cache_dir or DEFAULT_CACHE_DIR).expanduser()


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save(obj)`` to ``path`` through :func:`arn_lightning.atomic.atomic_save` (a temporary file beside it,
    flushed and renamed): readers never see half a file, and a failed write leaves no temporary file behind."""
    atomic.atomic_save(lambda tmp: torch.save(obj, tmp), path)
