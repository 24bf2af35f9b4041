"""The open_clip model of a :class:`~arn_lightning.text.config.ClipConfig`: its name, its weights and its identity.

* :func:`create_clip` builds the model (CPU, eval mode, frozen) from the weights found by :func:`resolve_weights`;
  the text embeddings (:mod:`arn_lightning.text.embeddings`) and the distillation target
  (:mod:`arn_lightning.text.image_tower`) both load their tower through it.
* Weights never hang on the network: a pretrained tag is looked up in the local open_clip / Hugging Face caches
  first; if it is not there and the machine is offline (``ARN_OFFLINE`` or ``HF_HUB_OFFLINE``), or the hub (or the
  configured proxy) does not answer within ``ClipConfig.network_timeout_s``, :class:`ClipWeightsUnavailable` is
  raised at once, naming the remedies (``docs/weights.md``).
* :func:`model_identity` is what determines the weights without loading them: the start of every cache key
  (:mod:`arn_lightning.text.cache`).
* :func:`register_tiny_clip` registers a tiny random CLIP architecture with open_clip for tests and the demo.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import tempfile
import threading
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import open_clip
import torch
from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME
from torch import nn

from arn_lightning.text.cache import CACHE_FORMAT_VERSION
from arn_lightning.text.config import ClipConfig
from arn_lightning.weights.download import WeightsUnavailable, fetch_weights, offline_reason

log = logging.getLogger(__name__)

#: Where open_clip itself keeps weights downloaded from a URL (``open_clip.pretrained``'s default).
OPEN_CLIP_URL_CACHE = "~/.cache/clip"
#: Host probed before a download when offline mode is off (``HF_ENDPOINT`` overrides it, read at call time).
HF_DEFAULT_ENDPOINT = "https://huggingface.co"
HTTPS_PORT = 443
HTTP_PORT = 80

#: The tiny CLIP of :func:`register_tiny_clip`: a 1-layer text tower (width 32) and a 1-layer ViT on 32x32 images,
#: 16-d embeddings; real tokenizer (vocabulary 49408, context 77).
TINY_CLIP_CONFIG: dict[str, Any] = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


class ClipWeightsUnavailable(WeightsUnavailable):
    """Pretrained CLIP weights are neither cached locally nor downloadable (offline / unreachable hub)."""


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


def _hub_candidates(hf_hub: str) -> list[tuple[str, str]]:
    """(repo, filename) pairs open_clip would download for an ``hf_hub`` entry, safetensors first."""
    repo, filename = os.path.split(hf_hub)  # "org/repo/" -> default file names, "org/repo/file.bin" -> that file
    names = [HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME]
    if filename:
        names = [filename[:-4] + ".safetensors", filename] if filename.endswith((".bin", ".pth")) else [filename]
    return [(repo, name) for name in names]


def locate_cached_weights(tag_cfg: Mapping[str, Any], weights_dir: str | None = None) -> str | None:
    """The local file of a pretrained tag if a previous download left it in a cache, else ``None``.

    Looks where open_clip downloads to, without any network access: the Hugging Face hub cache
    (``huggingface_hub.try_to_load_from_cache``) for ``hf_hub`` entries and open_clip's URL cache
    (``~/.cache/clip`` or ``weights_dir``) for ``url`` entries.
    """
    from huggingface_hub import try_to_load_from_cache

    if tag_cfg.get("file") and Path(tag_cfg["file"]).is_file():
        return str(tag_cfg["file"])
    if tag_cfg.get("hf_hub"):
        for repo, name in _hub_candidates(tag_cfg["hf_hub"]):
            found = try_to_load_from_cache(repo, name, cache_dir=weights_dir)
            if isinstance(found, str) and Path(found).is_file():
                return found
    if tag_cfg.get("url"):
        candidate = Path(weights_dir or OPEN_CLIP_URL_CACHE).expanduser() / os.path.basename(tag_cfg["url"])
        if candidate.is_file():
            return str(candidate)
    return None


def hub_offline() -> bool:
    """True when ``ARN_OFFLINE`` or ``HF_HUB_OFFLINE`` asks for no network access (read at call time)."""
    return offline_reason() is not None


def _probe_address(url: str) -> tuple[str | None, int]:
    """``(host, port)`` a request to ``url`` connects to first: the proxy of the environment for that URL
    (``HTTPS_PROXY`` / ``HTTP_PROXY`` / ``ALL_PROXY``, unless ``NO_PROXY`` bypasses the host), else the host itself."""
    parsed = urlparse(url)
    default_port = HTTP_PORT if parsed.scheme == "http" else HTTPS_PORT
    if parsed.hostname and not urllib.request.proxy_bypass(parsed.hostname):
        proxies = urllib.request.getproxies()
        proxy = proxies.get(parsed.scheme or "https") or proxies.get("all")
        if proxy:
            proxy_url = urlparse(proxy if "://" in proxy else f"http://{proxy}")
            return proxy_url.hostname, proxy_url.port or (HTTPS_PORT if proxy_url.scheme == "https" else HTTP_PORT)
    return parsed.hostname, parsed.port or default_port


def host_reachable(url: str, timeout_s: float) -> bool:
    """Whether a TCP connection to ``url``'s host (or to the proxy that would carry the request) opens within
    ``timeout_s`` seconds, name resolution included. An open connection says nothing about an answer: a silent
    server is caught by the request timeouts of :func:`_download`."""
    host, port = _probe_address(url)
    if not host:
        return False
    result: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout_s).close()
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)  # DNS lookups ignore socket timeouts
    thread.start()
    thread.join(timeout_s)
    return bool(result and result[0])


def _unavailable(config: ClipConfig, reason: str) -> ClipWeightsUnavailable:
    return ClipWeightsUnavailable(
        f"CLIP weights {config.clip_model!r} / {config.clip_pretrained!r} are not in the local cache "
        f"(weights_dir={config.weights_dir or 'open_clip / Hugging Face default'}) and {reason}. Either pass a local "
        f"checkpoint file as clip_pretrained (e.g. open_clip_pytorch_model.bin of "
        f"timm/vit_base_patch32_clip_224.openai, with quick_gelu: true for OpenAI weights), pre-populate the cache on "
        f"a machine with network (python -c \"import open_clip; open_clip.create_model('{config.clip_model}', "
        f"pretrained='{config.clip_pretrained}')\"), or use clip_pretrained: null for random weights."
    )


def _url_sha256(url: str) -> str | None:
    """The sha256 (prefix) open_clip expects of a URL download: OpenAI URLs carry it as their folder name."""
    if "openaipublic" in url:
        return url.split("/")[-2]
    if "mlfoundations" in url:
        return os.path.splitext(os.path.basename(url))[0].split("-")[-1]
    return None


def _is_timeout(error: BaseException) -> bool:
    """Whether ``error`` or one of its causes is a timeout (``TimeoutError``, httpx's ``ReadTimeout``, ...)."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, TimeoutError) or type(error).__name__.endswith("Timeout"):
            return True
        error = error.__cause__ or error.__context__
    return False


def _download_from_hub(config: ClipConfig, hf_hub: str, endpoint: str) -> str:
    """Download the first existing candidate file of an ``hf_hub`` entry, each request bounded by the timeout.

    huggingface_hub retries an unanswered request for a minute or more; a metadata request without retries (timeout
    ``network_timeout_s``) must answer first, so that a silent server fails in seconds.
    """
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url
    from huggingface_hub.errors import EntryNotFoundError

    timeout = config.network_timeout_s
    for repo, name in _hub_candidates(hf_hub):
        url = hf_hub_url(repo, name, endpoint=endpoint)
        try:
            get_hf_file_metadata(url, timeout=timeout, endpoint=endpoint, retry_on_errors=False)
        except EntryNotFoundError:
            continue  # e.g. no safetensors variant: try the next name, as open_clip does
        except Exception as error:
            if _is_timeout(error):
                raise _unavailable(config, f"{url} gave no answer within {timeout:g} s") from error
            raise _unavailable(config, f"the request for {url} failed ({type(error).__name__}: {error})") from error
        try:
            return hf_hub_download(repo, name, cache_dir=config.weights_dir, endpoint=endpoint, etag_timeout=timeout)
        except Exception as error:
            raise _unavailable(config, f"the download of {url} failed ({type(error).__name__}: {error})") from error
    raise _unavailable(config, f"{endpoint} has none of {[n for _, n in _hub_candidates(hf_hub)]} in {hf_hub}")


def _download(config: ClipConfig, tag_cfg: Mapping[str, Any]) -> str:
    reason = offline_reason()
    if reason:
        raise _unavailable(config, reason)
    # open_clip prefers the hub when a tag has both a hub entry and a URL
    hf_hub = tag_cfg.get("hf_hub")
    if hf_hub:
        from huggingface_hub import constants as hf_constants

        if hf_constants.is_offline_mode():  # frozen when huggingface_hub was imported
            raise _unavailable(
                config,
                "huggingface_hub is in offline mode (HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE "
                "was set when it was imported)",
            )
    endpoint = os.environ.get("HF_ENDPOINT", HF_DEFAULT_ENDPOINT).rstrip("/") if hf_hub else tag_cfg.get("url", "")
    if not host_reachable(endpoint, config.network_timeout_s):
        raise _unavailable(config, f"{endpoint} is unreachable within {config.network_timeout_s} s")
    if hf_hub:
        return _download_from_hub(config, hf_hub, endpoint)
    url = tag_cfg["url"]
    folder = Path(config.weights_dir or OPEN_CLIP_URL_CACHE).expanduser()
    try:
        return str(
            fetch_weights(
                url,
                folder,
                what=f"the CLIP weights {config.clip_model}/{config.clip_pretrained}",
                timeout_s=config.network_timeout_s,
                sha256_prefix=_url_sha256(url),
            )
        )
    except WeightsUnavailable as error:
        raise _unavailable(config, f"the download failed: {error}") from error


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
        path = locate_cached_weights(tag_cfg, config.weights_dir) or _download(config, tag_cfg)
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
