"""CLIP text embeddings of the prompts, cached on disk (``docs/model.md`` section 3).

* :func:`text_embeddings` renders the prompts of :mod:`arn_lightning.text.prompts`, encodes them with the CLIP text
  tower (:func:`arn_lightning.text.clip.create_clip`) and caches the L2-normalised float32 result on disk, keyed by a
  hash of everything that determines it (:func:`text_cache_path`).
* Every rendered prompt is checked against the text tower's context length and for classes that tokenize
  identically (:func:`check_clip_prompts`) before any model is built and before the cache is read or written.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import open_clip
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from arn_lightning.text.cache import CACHE_FORMAT_VERSION, atomic_save, cache_root, stable_hash
from arn_lightning.text.clip import check_model_name, create_clip, model_identity
from arn_lightning.text.config import ClipConfig
from arn_lightning.text.prompts import PROMPT_KINDS, PromptConfig, build_prompts, check_prompts, prompt_classes

log = logging.getLogger(__name__)


def prompt_token_ids(tokenizer: Any, text: str) -> list[int]:
    """The full token ids of ``text`` that ``tokenizer`` would feed the text tower before cutting it to its context:
    start and end tokens included, no padding, no truncation.

    Supports open_clip's ``SimpleTokenizer`` (every CLIP architecture: ``[sot] + encode(text) + [eot]``) and
    tokenizers wrapping a Hugging Face tokenizer as ``.tokenizer`` (``HFTokenizer``, ``SigLipTokenizer``: its own
    special tokens; ``tokenizer_mode="clips"`` adds start, end and class tokens).

    Raises:
        TypeError: another tokenizer type, whose untruncated length cannot be read.
    """
    if isinstance(tokenizer, open_clip.SimpleTokenizer):
        return [tokenizer.sot_token_id, *tokenizer.encode(text), tokenizer.eot_token_id]
    hf = getattr(tokenizer, "tokenizer", None)
    if callable(hf):
        clean = getattr(tokenizer, "clean_fn", None)
        text = clean(text) if callable(clean) else text
        if getattr(tokenizer, "tokenizer_mode", "") == "clips":  # bos + tokens + eos + class token
            ids = list(hf(text, add_special_tokens=False, truncation=False)["input_ids"])
            return [hf.bos_token_id, *ids, hf.eos_token_id, hf.cls_token_id]
        return list(hf(text, add_special_tokens=True, truncation=False)["input_ids"])
    raise TypeError(
        f"Expected an open_clip SimpleTokenizer or a tokenizer wrapping a Hugging Face tokenizer but got "
        f"{type(tokenizer).__name__}: its untruncated prompt length cannot be checked"
    )


def text_context_length(config: ClipConfig, tokenizer: Any) -> int:
    """Tokens the text tower of ``config`` reads: the smaller of the tokenizer's ``context_length`` and the model
    config's ``text_cfg.context_length`` (77 for the CLIP models)."""
    check_model_name(config)
    lengths = [
        getattr(tokenizer, "context_length", None),
        (open_clip.get_model_config(config.clip_model) or {}).get("text_cfg", {}).get("context_length"),
    ]
    lengths = [int(n) for n in lengths if n]
    if not lengths:
        raise ValueError(f"Expected {config.clip_model!r} or its tokenizer to declare a context_length but got none")
    return min(lengths)


def check_clip_prompts(
    clip_cfg: ClipConfig,
    prompt_cfg: PromptConfig,
    prompts: Mapping[str, Sequence[str]],
    triplet_categories: Mapping[str, Sequence[Sequence[int]]] | None = None,
    clip_triplets: bool = True,
    tokenizer: Any = None,
) -> Any:
    """Check rendered prompts against the text tower of ``clip_cfg`` (no weights loaded, no cache touched).

    Args:
        clip_cfg: which CLIP (only its tokenizer and model config are read).
        prompt_cfg: the templates (named in the errors).
        prompts: ``{kind: [prompt, ...]}`` of :func:`arn_lightning.text.prompts.build_prompts`.
        triplet_categories: the categories that rendered the branch prompts (for the class names of the errors).
        clip_triplets: triplet prompts (True) or per-predicate prompts (False).
        tokenizer: the open_clip tokenizer of ``clip_cfg.clip_model`` (``None``: created).

    Returns:
        The tokenizer, for reuse.

    Raises:
        ValueError: a prompt longer than the context length (start / end tokens included), or two classes of one
            family with identical tokens (:func:`arn_lightning.text.prompts.check_prompts`).
    """
    check_model_name(clip_cfg)
    tokenizer = tokenizer if tokenizer is not None else open_clip.get_tokenizer(clip_cfg.clip_model)
    classes = prompt_classes(triplet_categories or {}, clip_triplets)
    check_prompts(
        prompt_cfg,
        prompts,
        classes,
        lambda text: prompt_token_ids(tokenizer, text),
        text_context_length(clip_cfg, tokenizer),
        clip_triplets,
    )
    return tokenizer


@torch.no_grad()
def encode_prompts(model: nn.Module, tokenizer: Any, prompts: Sequence[str], batch_size: int) -> Tensor:
    """L2-normalised float32 text embeddings ``[len(prompts), E]``.

    Raises:
        ValueError: ``prompts`` is empty, or a prompt has more tokens (start / end included) than the model's
            ``context_length`` (the tokenizer would cut it silently).
        TypeError: a tokenizer whose untruncated length cannot be read (:func:`prompt_token_ids`).
    """
    if not prompts:
        raise ValueError("Expected at least one prompt but got none")
    limits = [int(n) for n in (getattr(model, "context_length", None), getattr(tokenizer, "context_length", None)) if n]
    for i, text in enumerate(prompts):
        count = len(prompt_token_ids(tokenizer, text))
        if limits and count > min(limits):
            limit = min(limits)
            raise ValueError(
                f"Expected at most {limit} tokens (the text tower's context, start and end tokens included) per "
                f"prompt but got {count} tokens for prompt {i}: {text!r}"
            )
    device = next(model.parameters()).device
    chunks = [
        model.encode_text(tokenizer(list(prompts[i : i + batch_size])).to(device)).float()
        for i in range(0, len(prompts), batch_size)
    ]
    return F.normalize(torch.cat(chunks), dim=-1).cpu()  # [len, E]


def _compute_text_embeddings(
    config: ClipConfig, prompts: Mapping[str, list[str]], device: str, tokenizer: Any = None
) -> dict[str, Tensor]:
    model = create_clip(config).to(device)
    tokenizer = tokenizer if tokenizer is not None else open_clip.get_tokenizer(config.clip_model)
    flat = [p for kind in PROMPT_KINDS for p in prompts[kind]]
    embeds = encode_prompts(model, tokenizer, flat, config.text_batch_size)  # [sum K, E]
    sizes = [len(prompts[kind]) for kind in PROMPT_KINDS]
    return {kind: chunk.contiguous() for kind, chunk in zip(PROMPT_KINDS, embeds.split(sizes))}


def _read_text_cache(path: Path, prompts: Mapping[str, list[str]]) -> dict[str, Tensor] | None:
    """Embeddings of a cache file if it exists, is readable and was built from exactly ``prompts``."""
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        embeds = {kind: payload["embeddings"][kind] for kind in PROMPT_KINDS}
        valid = payload["prompts"] == dict(prompts) and all(
            embeds[kind].shape[0] == len(prompts[kind]) for kind in PROMPT_KINDS
        )
    except Exception as error:  # a truncated or foreign file is rebuilt, never trusted
        log.warning("ignoring unreadable text-embedding cache %s: %s", path, error)
        return None
    return embeds if valid else None


def text_cache_path(
    clip_cfg: ClipConfig,
    prompt_cfg: PromptConfig,
    prompts: Mapping[str, Sequence[str]],
    cache_dir: str | None = None,
) -> Path:
    """The cache file of :func:`text_embeddings`: ``<cache root>/text/<sha256>.pt``, the hash of the CLIP identity
    (:func:`arn_lightning.text.clip.model_identity`, text context length included), the templates and the
    rendered prompts."""
    key = stable_hash({"clip": model_identity(clip_cfg), "templates": asdict(prompt_cfg), "prompts": dict(prompts)})
    return cache_root(clip_cfg, cache_dir) / "text" / f"{key}.pt"


def text_embeddings(
    clip_cfg: ClipConfig,
    prompt_cfg: PromptConfig | None = None,
    triplet_categories: Mapping[str, Sequence[Sequence[int]]] | None = None,
    cache_dir: str | None = None,
    clip_triplets: bool = True,
    device: str = "cpu",
) -> dict[str, Tensor]:
    """CLIP text embeddings of the object and branch prompts, computed once and cached on disk.

    The cache file ``<cache_dir>/text/<sha256>.pt`` is named by a hash of the CLIP identity (architecture and its
    config, pretrained tag or checkpoint path + size + mtime, QuickGELU, random-init seed), the templates and the
    rendered prompts (hence the class lists and the triplet categories). A change of any of them gives a new file;
    a hit needs neither the weights nor the network. Every prompt is checked first (:func:`check_clip_prompts`),
    before the cache is read or written and before any weights are loaded.

    Args:
        clip_cfg: which CLIP.
        prompt_cfg: the templates (``None``: the paper's).
        triplet_categories: ``{"attention": [[predicate, object], ...], ...}`` (``ARCHITECTURE.md`` section 3);
            may be ``None`` when ``clip_triplets`` is off.
        cache_dir: overrides ``clip_cfg.cache_dir``.
        clip_triplets: triplet prompts (True) or per-predicate prompts (False) for the three branches.
        device: where to run the text tower on a cache miss.

    Returns:
        ``{"objects": [36, E], "attention": [K_A, E], "spatial": [K_S, E], "contacting": [K_C, E]}``, float32,
        L2-normalised rows, on the CPU (``K`` = number of triplet categories, or 3 / 6 / 17 predicates).

    Raises:
        ValueError: a prompt longer than the text tower's context, two classes of one family with identical tokens
            (the message names the template setting), bad categories or templates.
        ClipWeightsUnavailable: a cache miss whose pretrained weights are not cached and cannot be downloaded
            (:class:`arn_lightning.weights.clip.ClipWeightsUnavailable`).
    """
    prompt_cfg = prompt_cfg or PromptConfig()
    if clip_triplets and triplet_categories is None:
        raise ValueError("Expected triplet_categories when clip_triplets is on but got None")
    prompts = build_prompts(prompt_cfg, triplet_categories or {}, clip_triplets)
    tokenizer = check_clip_prompts(clip_cfg, prompt_cfg, prompts, triplet_categories, clip_triplets)
    path = text_cache_path(clip_cfg, prompt_cfg, prompts, cache_dir)
    cached = _read_text_cache(path, prompts)
    if cached is not None:
        log.debug("text embeddings: cache hit %s", path)
        return cached
    embeds = _compute_text_embeddings(clip_cfg, prompts, device, tokenizer)
    atomic_save({"format": CACHE_FORMAT_VERSION, "prompts": prompts, "embeddings": embeds}, path)
    log.info("text embeddings: cached %d prompts in %s", sum(len(p) for p in prompts.values()), path)
    return embeds
