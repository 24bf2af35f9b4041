"""The open_clip model of a :class:`~arn_lightning.text.config.ClipConfig`: its name, its weights and its identity.

* :func:`create_clip` builds the model (CPU, eval mode, frozen) from the weights found by :func:`resolve_weights`;
  the text embeddings (:mod:`arn_lightning.text.embeddings`) and the distillation target
  (:mod:`arn_lightning.text.image_tower`) both load their tower through it.
* Weights never hang on the network: a pretrained tag is looked up in the local open_clip / Hugging Face caches
  first and downloaded only when online, within ``ClipConfig.network_timeout_s``
  (:mod:`arn_lightning.weights.clip`); otherwise
  :class:`~arn_lightning.weights.clip.ClipWeightsUnavailable` is raised at once, naming the remedies
  (``docs/weights.md``).
* :func:`model_identity` is what determines the weights without loading them: the start of every cache key
  (:mod:`arn_lightning.text.cache`).
* :func:`register_tiny_clip` registers a tiny random CLIP architecture with open_clip for tests and the demo.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import open_clip
import torch
from torch import nn

from arn_lightning.text.cache import CACHE_FORMAT_VERSION
from arn_lightning.text.config import ClipConfig
from arn_lightning.weights.clip import ClipWeightsUnavailable, download_tag, locate_cached_weights
from arn_lightning.weights.download import WeightsUnavailable

log = logging.getLogger(__name__)


#: The tiny CLIP of :func:`register_tiny_clip`: a 1-layer text tower (width 32) and a 1-layer ViT on 32x32 images,
#: 16-d embeddings; real tokenizer (vocabulary 49408, context 77).
TINY_CLIP_CONFIG: dict[str, Any] = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


# --------------------------------------------------------------------------------------------------- tiny CLIP
#: Name under which :func:`register_tiny_clip` registers the tiny tower by default.
TINY_CLIP_NAME = "arn-tiny-clip"


def tiny_clip_config(context_length: int = 77) -> dict[str, Any]:
    """A copy of :data:`TINY_CLIP_CONFIG` whose text tower reads ``context_length`` tokens."""
    if context_length < 2:
        raise ValueError(f"Expected a context_length >= 2 (start and end tokens) but got {context_length}")
    config = json.loads(json.dumps(TINY_CLIP_CONFIG))
    config["text_cfg"]["context_length"] = context_length
    return config


def register_tiny_clip(name: str = TINY_CLIP_NAME, context_length: int = 77) -> str:
    """Register the tiny CLIP (:data:`TINY_CLIP_CONFIG`, text context ``context_length`` tokens) with open_clip under
    ``name`` (idempotent) and return ``name``.

    Use it with ``ClipConfig(clip_model=name, clip_pretrained=None)``: no download, a few MB, milliseconds per call.

    Raises:
        ValueError: ``name`` is already registered with another config.
    """
    config = tiny_clip_config(context_length)
    existing = open_clip.get_model_config(name)
    if existing == config:
        return name
    if existing is not None:
        raise ValueError(
            f"Expected {name!r} to be unused or the tiny CLIP but open_clip has another config: {existing}"
        )
    with tempfile.TemporaryDirectory(prefix="arn_tiny_clip_") as directory:
        path = Path(directory) / f"{name}.json"
        path.write_text(json.dumps(config))
        open_clip.add_model_config(path)  # read at once; later rescans skip the deleted file, the entry stays
    return name


# --------------------------------------------------------------------------------------------------- weights
@dataclass(frozen=True)
class ResolvedWeights:
    """Where a :class:`ClipConfig`'s weights come from.

    Attributes:
        path: local checkpoint file, or ``None`` for random weights.
        quick_gelu: whether the architecture must use QuickGELU for these weights.
        preprocess: preprocessing overrides of the pretrained tag (``mean``, ``std``, ...), possibly empty.
    """

    path: str | None
    quick_gelu: bool
    preprocess: dict[str, Any]


def check_model_name(config: ClipConfig) -> None:
    """Register the tiny tower if ``config`` names it, then check that open_clip knows ``config.clip_model``.

    Raises:
        ValueError: ``config.clip_model`` is not an open_clip architecture.
    """
    if config.clip_model == TINY_CLIP_NAME:
        register_tiny_clip()  # a config naming the tiny tower works without a Python call first
    if open_clip.get_model_config(config.clip_model) is None:
        raise ValueError(
            f"Expected clip_model to be an open_clip architecture ({', '.join(open_clip.list_models()[:8])}, ...; "
            f"call register_tiny_clip() for the test tower) but got {config.clip_model!r}"
        )


def _weights_source(config: ClipConfig) -> tuple[str, str | None]:
    """``("random", None)``, ``("file", absolute path)``, ``("registry", name)`` or ``("tag", tag)`` for
    ``config.clip_pretrained``; a registry name (:mod:`arn_lightning.weights.registry`) must be meant for
    ``clip_pretrained``
    and ``config.clip_model``."""
    from arn_lightning.weights import registry as weights

    value = config.clip_pretrained
    if value is None:
        return "random", None
    path = Path(value).expanduser()
    if path.is_file():
        return "file", str(path.resolve())
    if weights.is_registered(value):
        entry = weights.get_entry(value)
        if entry.setting != "clip_pretrained" or entry.architecture != config.clip_model:
            raise ValueError(
                f"Expected clip_pretrained to name CLIP weights of {config.clip_model} but got {value!r}, which are "
                f"weights of {entry.architecture} for {entry.setting}"
            )
        return "registry", value
    if open_clip.get_pretrained_cfg(config.clip_model, value):
        return "tag", value
    tags = open_clip.list_pretrained_tags_by_model(config.clip_model)
    names = [e.name for e in weights.list_entries() if e.architecture == config.clip_model]
    raise ValueError(
        f"Expected clip_pretrained to be null, an existing checkpoint file, a pretrained tag of "
        f"{config.clip_model} ({tags}) or a registered weights name ({names}) but got {value!r}"
    )


def registry_tag_cfg(clip_model: str, name: str) -> dict[str, Any]:
    """The open_clip pretrained config whose URL is the file of the registry entry ``name`` (its QuickGELU and
    preprocessing settings), or ``{}`` when open_clip lists no such URL."""
    from arn_lightning.weights import registry as weights

    entry = weights.get_entry(name)
    for tag in open_clip.list_pretrained_tags_by_model(clip_model):
        cfg = open_clip.get_pretrained_cfg(clip_model, tag)
        url = cfg.get("url", "")
        if url and os.path.basename(url) == entry.file_name and entry.sha256 in url:
            return dict(cfg)
    return {}


def resolve_weights(config: ClipConfig) -> ResolvedWeights:
    """Find the local checkpoint of ``config`` (downloading only when online), without loading it.

    Raises:
        ValueError: unknown architecture or ``clip_pretrained`` neither a file, a registered name nor a known tag.
        ClipWeightsUnavailable: a tag that is not cached while offline or with the hub unreachable, or a registry
            name (:mod:`arn_lightning.weights.registry`) whose file is absent and cannot be downloaded.
        WeightsMismatch: a registry name whose file has another hash (left in place, not used).
    """
    check_model_name(config)
    kind, value = _weights_source(config)
    if kind in ("random", "file"):
        return ResolvedWeights(value, bool(config.quick_gelu), {})
    if kind == "registry":
        from arn_lightning.weights import registry as weights

        tag_cfg = registry_tag_cfg(config.clip_model, value)
        try:
            path = str(weights.resolve(value, timeout_s=config.network_timeout_s))
        except weights.WeightsMismatch:
            raise
        except WeightsUnavailable as error:
            raise ClipWeightsUnavailable(str(error)) from error
    else:
        tag_cfg = open_clip.get_pretrained_cfg(config.clip_model, value)
        path = locate_cached_weights(tag_cfg, config.weights_dir) or download_tag(config, tag_cfg)
    quick_gelu = bool(tag_cfg.get("quick_gelu", False)) if config.quick_gelu is None else config.quick_gelu
    preprocess = {k: tag_cfg[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in tag_cfg}
    return ResolvedWeights(path, quick_gelu, preprocess)


def create_clip(config: ClipConfig) -> nn.Module:
    """The open_clip model of ``config`` on the CPU, in eval mode, with ``requires_grad`` False everywhere."""
    resolved = resolve_weights(config)
    with torch.random.fork_rng(devices=[]), _open_clip_random_weights_notice(config, resolved.path is None):
        torch.manual_seed(config.random_init_seed)  # reproducible random weights, global RNG untouched
        model = open_clip.create_model(
            config.clip_model,
            pretrained=resolved.path,
            force_quick_gelu=resolved.quick_gelu,
            force_preprocess_cfg=resolved.preprocess or None,
            cache_dir=config.weights_dir,
        )
    return model.eval().requires_grad_(False)


class _DropRandomWeightsWarning(logging.Filter):
    """Drops open_clip's root-logger warning that no pretrained weights were loaded (said once, our way, instead)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "No pretrained weights loaded" not in record.getMessage()


@contextlib.contextmanager
def _open_clip_random_weights_notice(config: ClipConfig, random: bool) -> Iterator[None]:
    """Random weights asked for (``clip_pretrained: null``): open_clip's generic warning is replaced by one line that
    says whether that is expected (the project's tiny test tower, the demo) or worth a look (a real architecture)."""
    if not random:
        yield
        return
    if config.clip_model.startswith(TINY_CLIP_NAME):
        log.info("CLIP %s: random weights, as configured (the tiny tower of the demo and the tests)", config.clip_model)
    else:
        log.warning(
            "CLIP %s has random weights (clip.clip_pretrained is null): the classifier initialisation and the "
            "distillation target carry no language knowledge; name a pretrained tag or file for real "
            "training (docs/weights.md)",
            config.clip_model,
        )
    drop = _DropRandomWeightsWarning()
    logging.getLogger().addFilter(drop)
    try:
        yield
    finally:
        logging.getLogger().removeFilter(drop)


# -------------------------------------------------------------------------------------------------- identity
def _weights_identity(config: ClipConfig) -> dict[str, Any]:
    kind, value = _weights_source(config)
    if kind == "random":
        return {"random_init_seed": config.random_init_seed}
    if kind == "tag":
        return {"tag": value}
    if kind == "registry":
        from arn_lightning.weights import registry as weights

        return {"registry": value, "sha256": weights.get_entry(value).sha256}
    stat = Path(value).stat()
    return {"file": value, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def model_identity(config: ClipConfig) -> dict[str, Any]:
    """What determines the CLIP weights of ``config`` (architecture, its config, weights source, QuickGELU), with
    the cache format version (:data:`arn_lightning.text.cache.CACHE_FORMAT_VERSION`): the start of every cache key.

    Raises:
        ValueError: unknown architecture or ``clip_pretrained`` neither a file nor a known tag.
    """
    check_model_name(config)
    return {
        "format": CACHE_FORMAT_VERSION,
        "model": config.clip_model,
        "model_config": open_clip.get_model_config(config.clip_model),
        "weights": _weights_identity(config),
        "quick_gelu": config.quick_gelu,
    }
