"""open_clip loading, cached CLIP text embeddings and the frozen CLIP image tower (``docs/model.md`` sections 3-4).

* :func:`text_embeddings` renders the prompts of :mod:`arn_lightning.text.prompts`, encodes them with the CLIP text
  tower and caches the L2-normalised float32 result on disk, keyed by a hash of everything that determines it.
* :class:`FrozenClipImageEncoder` embeds the frames of a batch for the distillation loss; it is invisible to
  ``state_dict()``, ``parameters()`` and the optimizer, and stays in eval mode.
* Every rendered prompt is checked against the text tower's context length and for classes that tokenize
  identically (:func:`check_clip_prompts`) before any model is built and before the cache is read or written.
* Weights never hang on the network: a pretrained tag is looked up in the local open_clip / Hugging Face caches
  first; if it is not there and the machine is offline (``ARN_OFFLINE`` or ``HF_HUB_OFFLINE``), or the hub (or the
  configured proxy) does not answer within ``ClipConfig.network_timeout_s``, :class:`ClipWeightsUnavailable` is
  raised at once, naming the remedies (``docs/weights.md``).
* :func:`register_tiny_clip` registers a tiny random CLIP architecture with open_clip for tests and the demo.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import socket
import tempfile
import threading
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple
from urllib.parse import urlparse

import open_clip
import torch
import torch.nn.functional as F
from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME, IMAGENET_MEAN, IMAGENET_STD
from torch import Tensor, nn

from arn_lightning import atomic
from arn_lightning.download import WeightsUnavailable, fetch_weights, offline_reason
from arn_lightning.text.prompts import PROMPT_KINDS, PromptConfig, build_prompts, check_prompts, prompt_classes

log = logging.getLogger(__name__)

#: Bumped whenever the content or layout of a cache file changes, so that old files are never read.
CACHE_FORMAT_VERSION = 1
#: Where embeddings are cached when neither ``ClipConfig.cache_dir`` nor an explicit ``cache_dir`` is given.
DEFAULT_CACHE_DIR = "~/.cache/arn_lightning/clip"
#: Where open_clip itself keeps weights downloaded from a URL (``open_clip.pretrained``'s default).
OPEN_CLIP_URL_CACHE = "~/.cache/clip"
#: Host probed before a download when offline mode is off (``HF_ENDPOINT`` overrides it, read at call time).
HF_DEFAULT_ENDPOINT = "https://huggingface.co"
HTTPS_PORT = 443
HTTP_PORT = 80

#: The tiny CLIP of :func:`register_tiny_clip`: a 1-layer text tower (width 32) and a 1-layer ViT on 32x32 images,
#: 16-d embeddings; real tokenizer (vocabulary 49408, context 77).
TINY_CLIP_CONFIG: Dict[str, Any] = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
_IMAGE_RESIZE_MODES = ("center_crop", "squash")


class ClipWeightsUnavailable(WeightsUnavailable):
    """Pretrained CLIP weights are neither cached locally nor downloadable (offline / unreachable hub)."""


@dataclass
class ClipConfig:
    """Which CLIP to load and where its by-products are cached.

    Attributes:
        clip_model: open_clip architecture name (``open_clip.list_models()``; ``"arn-tiny-clip"`` once
            :func:`register_tiny_clip` ran).
        clip_pretrained: an open_clip pretrained tag (``"openai"``), a local checkpoint file, or ``None`` for random
            weights (initialised with ``random_init_seed``, so that they are reproducible and cacheable).
        cache_dir: directory of the text / image embedding caches (``None``: ``~/.cache/arn_lightning/clip``).
        weights_dir: download cache of open_clip / Hugging Face hub for pretrained tags (``None``: their defaults).
        quick_gelu: force QuickGELU activations; ``None`` takes the pretrained tag's setting (OpenAI weights need
            QuickGELU: set it to true when ``clip_pretrained`` is a local OpenAI checkpoint file).
        random_init_seed: seed of the random weights when ``clip_pretrained`` is ``None``.
        image_cache: cache per-frame CLIP image embeddings on disk, keyed by frame key (the first view of a frame
            seen in training is kept: flips and rescaling barely move a whole-frame CLIP embedding).
        image_resize: fit of a frame's valid region to the tower's input: ``"center_crop"`` (CLIP's own
            preprocessing: shorter side to the input size, then a centre crop) or ``"squash"`` (resize to the input
            size, aspect ratio not kept, nothing cut off).
        text_batch_size: prompts encoded per forward pass of the text tower.
        network_timeout_s: seconds allowed to reach the hub (or the proxy) and for each answer of a download
            before declaring it unreachable.
    """

    clip_model: str = "ViT-B-32"
    clip_pretrained: Optional[str] = "openai"
    cache_dir: Optional[str] = None
    weights_dir: Optional[str] = None
    quick_gelu: Optional[bool] = None
    random_init_seed: int = 0
    image_cache: bool = False
    image_resize: str = "center_crop"
    text_batch_size: int = 256
    network_timeout_s: float = 3.0

    def __post_init__(self) -> None:
        if self.image_resize not in _IMAGE_RESIZE_MODES:
            raise ValueError(f"Expected image_resize in {_IMAGE_RESIZE_MODES} but got {self.image_resize!r}")
        if self.text_batch_size < 1:
            raise ValueError(f"Expected text_batch_size >= 1 but got {self.text_batch_size}")
        if self.network_timeout_s <= 0:
            raise ValueError(f"Expected network_timeout_s > 0 but got {self.network_timeout_s}")


# --------------------------------------------------------------------------------------------------- tiny CLIP
#: Name under which :func:`register_tiny_clip` registers the tiny tower by default.
TINY_CLIP_NAME = "arn-tiny-clip"


def tiny_clip_config(context_length: int = 77) -> Dict[str, Any]:
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

    path: Optional[str]
    quick_gelu: bool
    preprocess: Dict[str, Any]


def _check_model_name(config: ClipConfig) -> None:
    if config.clip_model == TINY_CLIP_NAME:
        register_tiny_clip()  # a config naming the tiny tower works without a Python call first
    if open_clip.get_model_config(config.clip_model) is None:
        raise ValueError(
            f"Expected clip_model to be an open_clip architecture ({', '.join(open_clip.list_models()[:8])}, ...; "
            f"call register_tiny_clip() for the test tower) but got {config.clip_model!r}"
        )


def _weights_source(config: ClipConfig) -> Tuple[str, Optional[str]]:
    """``("random", None)``, ``("file", absolute path)`` or ``("tag", tag)`` for ``config.clip_pretrained``."""
    value = config.clip_pretrained
    if value is None:
        return "random", None
    path = Path(value).expanduser()
    if path.is_file():
        return "file", str(path.resolve())
    if open_clip.get_pretrained_cfg(config.clip_model, value):
        return "tag", value
    tags = open_clip.list_pretrained_tags_by_model(config.clip_model)
    raise ValueError(
        f"Expected clip_pretrained to be null, an existing checkpoint file or a pretrained tag of "
        f"{config.clip_model} ({tags}) but got {value!r}"
    )


def _hub_candidates(hf_hub: str) -> List[Tuple[str, str]]:
    """(repo, filename) pairs open_clip would download for an ``hf_hub`` entry, safetensors first."""
    repo, filename = os.path.split(hf_hub)  # "org/repo/" -> default file names, "org/repo/file.bin" -> that file
    names = [HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME]
    if filename:
        names = [filename[:-4] + ".safetensors", filename] if filename.endswith((".bin", ".pth")) else [filename]
    return [(repo, name) for name in names]


def locate_cached_weights(tag_cfg: Mapping[str, Any], weights_dir: Optional[str] = None) -> Optional[str]:
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


def _probe_address(url: str) -> Tuple[Optional[str], int]:
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
    result: List[bool] = []

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


def _url_sha256(url: str) -> Optional[str]:
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
            raise _unavailable(config, "huggingface_hub is in offline mode (HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE "
                                       "was set when it was imported)")
    endpoint = os.environ.get("HF_ENDPOINT", HF_DEFAULT_ENDPOINT).rstrip("/") if hf_hub else tag_cfg.get("url", "")
    if not host_reachable(endpoint, config.network_timeout_s):
        raise _unavailable(config, f"{endpoint} is unreachable within {config.network_timeout_s} s")
    if hf_hub:
        return _download_from_hub(config, hf_hub, endpoint)
    url = tag_cfg["url"]
    folder = Path(config.weights_dir or OPEN_CLIP_URL_CACHE).expanduser()
    try:
        return str(fetch_weights(url, folder, what=f"the CLIP weights {config.clip_model}/{config.clip_pretrained}",
                                 timeout_s=config.network_timeout_s, sha256_prefix=_url_sha256(url)))
    except WeightsUnavailable as error:
        raise _unavailable(config, f"the download failed: {error}") from error


def resolve_weights(config: ClipConfig) -> ResolvedWeights:
    """Find the local checkpoint of ``config`` (downloading only when online), without loading it.

    Raises:
        ValueError: unknown architecture or ``clip_pretrained`` neither a file nor a known tag.
        ClipWeightsUnavailable: a tag that is not cached while offline or with the hub unreachable.
    """
    _check_model_name(config)
    kind, value = _weights_source(config)
    if kind != "tag":
        return ResolvedWeights(value, bool(config.quick_gelu), {})
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
            config.clip_model, pretrained=resolved.path, force_quick_gelu=resolved.quick_gelu,
            force_preprocess_cfg=resolved.preprocess or None, cache_dir=config.weights_dir,
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
        log.warning("CLIP %s has random weights (clip.clip_pretrained is null): the classifier initialisation and the "
                    "distillation target carry no language knowledge; name a pretrained tag or file for real "
                    "training (docs/weights.md)", config.clip_model)
    drop = _DropRandomWeightsWarning()
    logging.getLogger().addFilter(drop)
    try:
        yield
    finally:
        logging.getLogger().removeFilter(drop)


# --------------------------------------------------------------------------------------------------- caching
def _weights_identity(config: ClipConfig) -> Dict[str, Any]:
    kind, value = _weights_source(config)
    if kind == "random":
        return {"random_init_seed": config.random_init_seed}
    if kind == "tag":
        return {"tag": value}
    stat = Path(value).stat()
    return {"file": value, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def model_identity(config: ClipConfig) -> Dict[str, Any]:
    """What determines the CLIP weights of ``config`` (architecture, its config, weights source, QuickGELU)."""
    _check_model_name(config)
    return {
        "format": CACHE_FORMAT_VERSION, "model": config.clip_model,
        "model_config": open_clip.get_model_config(config.clip_model),
        "weights": _weights_identity(config), "quick_gelu": config.quick_gelu,
    }


def stable_hash(payload: Any) -> str:
    """SHA-256 hex digest of a JSON-serialisable value (keys sorted)."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def cache_root(config: ClipConfig, cache_dir: Optional[str] = None) -> Path:
    """The embedding cache directory: ``cache_dir``, else ``config.cache_dir``, else :data:`DEFAULT_CACHE_DIR`."""
    return Path(cache_dir or config.cache_dir or DEFAULT_CACHE_DIR).expanduser()


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save(obj)`` to ``path`` through :func:`arn_lightning.atomic.atomic_save` (a temporary file beside it,
    flushed and renamed): readers never see half a file, and a failed write leaves no temporary file behind."""
    atomic.atomic_save(lambda tmp: torch.save(obj, tmp), path)


# --------------------------------------------------------------------------------------------------- text
def prompt_token_ids(tokenizer: Any, text: str) -> List[int]:
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
    _check_model_name(config)
    lengths = [getattr(tokenizer, "context_length", None),
               (open_clip.get_model_config(config.clip_model) or {}).get("text_cfg", {}).get("context_length")]
    lengths = [int(n) for n in lengths if n]
    if not lengths:
        raise ValueError(f"Expected {config.clip_model!r} or its tokenizer to declare a context_length but got none")
    return min(lengths)


def check_clip_prompts(
    clip_cfg: ClipConfig,
    prompt_cfg: PromptConfig,
    prompts: Mapping[str, Sequence[str]],
    triplet_categories: Optional[Mapping[str, Sequence[Sequence[int]]]] = None,
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
    _check_model_name(clip_cfg)
    tokenizer = tokenizer if tokenizer is not None else open_clip.get_tokenizer(clip_cfg.clip_model)
    classes = prompt_classes(triplet_categories or {}, clip_triplets)
    check_prompts(prompt_cfg, prompts, classes, lambda text: prompt_token_ids(tokenizer, text),
                  text_context_length(clip_cfg, tokenizer), clip_triplets)
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
        model.encode_text(tokenizer(list(prompts[i:i + batch_size])).to(device)).float()
        for i in range(0, len(prompts), batch_size)
    ]
    return F.normalize(torch.cat(chunks), dim=-1).cpu()  # [len, E]


def _compute_text_embeddings(
    config: ClipConfig, prompts: Mapping[str, List[str]], device: str, tokenizer: Any = None
) -> Dict[str, Tensor]:
    model = create_clip(config).to(device)
    tokenizer = tokenizer if tokenizer is not None else open_clip.get_tokenizer(config.clip_model)
    flat = [p for kind in PROMPT_KINDS for p in prompts[kind]]
    embeds = encode_prompts(model, tokenizer, flat, config.text_batch_size)  # [sum K, E]
    sizes = [len(prompts[kind]) for kind in PROMPT_KINDS]
    return {kind: chunk.contiguous() for kind, chunk in zip(PROMPT_KINDS, embeds.split(sizes))}


def _read_text_cache(path: Path, prompts: Mapping[str, List[str]]) -> Optional[Dict[str, Tensor]]:
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
    cache_dir: Optional[str] = None,
) -> Path:
    """The cache file of :func:`text_embeddings`: ``<cache root>/text/<sha256>.pt``, the hash of the CLIP identity
    (:func:`model_identity`, text context length included), the templates and the rendered prompts."""
    key = stable_hash({"clip": model_identity(clip_cfg), "templates": asdict(prompt_cfg), "prompts": dict(prompts)})
    return cache_root(clip_cfg, cache_dir) / "text" / f"{key}.pt"


def text_embeddings(
    clip_cfg: ClipConfig,
    prompt_cfg: Optional[PromptConfig] = None,
    triplet_categories: Optional[Mapping[str, Sequence[Sequence[int]]]] = None,
    cache_dir: Optional[str] = None,
    clip_triplets: bool = True,
    device: str = "cpu",
) -> Dict[str, Tensor]:
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
        ClipWeightsUnavailable: a cache miss whose pretrained weights are not cached and cannot be downloaded.
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


# --------------------------------------------------------------------------------------------------- image tower
def _valid_extent(mask: Tensor) -> Tuple[int, int, int, int]:
    """``(top, bottom, left, right)`` (exclusive ends) of the True pixels of a ``[H, W]`` mask."""
    rows = mask.any(dim=1).nonzero().flatten()
    cols = mask.any(dim=0).nonzero().flatten()
    if rows.numel() == 0:
        raise ValueError("Expected every frame's pixel_mask to have valid (True) pixels but got an empty mask")
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def _fit(image: Tensor, size: Tuple[int, int], mode: str) -> Tensor:
    """Resize a ``[3, h, w]`` image in [0, 1] to ``[3, *size]``: shorter side + centre crop, or squash."""
    height, width = image.shape[-2:]
    if mode == "squash":
        target = size
    else:
        scale = max(size[0] / height, size[1] / width)
        target = (max(size[0], round(height * scale)), max(size[1], round(width * scale)))
    resized = F.interpolate(image[None], size=target, mode="bicubic", align_corners=False, antialias=True)[0]
    top, left = (target[0] - size[0]) // 2, (target[1] - size[1]) // 2
    return resized[:, top:top + size[0], left:left + size[1]].clamp(0.0, 1.0)  # [3, *size]


class FrozenClipImageEncoder(nn.Module):
    """The CLIP image tower, frozen, for the distillation target (``docs/model.md`` section 4).

    The tower is held outside PyTorch's module registry: it has no entry in ``state_dict()`` (so Lightning
    checkpoints of a parent module neither contain nor expect it), in ``parameters()`` (so no optimizer sees it) or
    in ``train()`` (it stays in eval mode). ``.to()`` / ``.cuda()`` / ``.half()`` still move it.

    Args:
        config: which CLIP (weights resolved as for :func:`text_embeddings`).
        cache_dir: overrides ``config.cache_dir`` for the per-frame embedding cache (used when
            ``config.image_cache`` is on).
        input_mean: per-channel mean that normalised ``pixel_values`` (ImageNet by default).
        input_std: per-channel std that normalised ``pixel_values``.
    """

    def __init__(
        self,
        config: ClipConfig,
        cache_dir: Optional[str] = None,
        input_mean: Sequence[float] = IMAGENET_MEAN,
        input_std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        self.config = config
        clip_model = create_clip(config)
        preprocess = open_clip.get_model_preprocess_cfg(clip_model)
        size = preprocess["size"]
        self.image_size: Tuple[int, int] = (size, size) if isinstance(size, int) else tuple(size)
        object.__setattr__(self, "_tower", clip_model.visual)  # not a registered submodule, on purpose
        self.register_buffer("input_mean", torch.tensor(input_mean).view(3, 1, 1), persistent=False)
        self.register_buffer("input_std", torch.tensor(input_std).view(3, 1, 1), persistent=False)
        self.register_buffer("clip_mean", torch.tensor(preprocess["mean"]).view(3, 1, 1), persistent=False)
        self.register_buffer("clip_std", torch.tensor(preprocess["std"]).view(3, 1, 1), persistent=False)
        identity = {"clip": model_identity(config), "resize": config.image_resize, "size": self.image_size}
        self.cache_path = cache_root(config, cache_dir) / "image" / stable_hash(identity)

    @property
    def tower(self) -> nn.Module:
        """The frozen open_clip image tower (read only)."""
        return self._tower

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> "FrozenClipImageEncoder":
        self._tower._apply(fn)
        return super()._apply(fn, *args, **kwargs)

    def train(self, mode: bool = True) -> "FrozenClipImageEncoder":
        """Set this module's flag; the tower itself always stays in eval mode."""
        super().train(mode)
        self._tower.eval()
        return self

    def preprocess(self, pixel_values: Tensor, pixel_mask: Tensor) -> Tensor:
        """CLIP input ``[BT, 3, S, S]``: undo the input normalisation, crop the valid region, resize, normalise."""
        if pixel_values.dim() != 4 or pixel_values.shape[1] != 3:
            raise ValueError(f"Expected pixel_values [BT, 3, H, W] but got {tuple(pixel_values.shape)}")
        expected = (pixel_values.shape[0], *pixel_values.shape[2:])
        if tuple(pixel_mask.shape) != expected:
            raise ValueError(f"Expected pixel_mask {expected} but got {tuple(pixel_mask.shape)}")
        images = pixel_values.float() * self.input_std + self.input_mean  # [BT, 3, H, W] in [0, 1]
        crops = []
        for image, mask in zip(images, pixel_mask):
            top, bottom, left, right = _valid_extent(mask)
            crops.append(_fit(image[:, top:bottom, left:right], self.image_size, self.config.image_resize))
        return (torch.stack(crops) - self.clip_mean) / self.clip_std  # [BT, 3, S, S]

    @torch.no_grad()
    def forward(self, pixel_values: Tensor, pixel_mask: Tensor) -> Tensor:
        """L2-normalised float32 CLIP image embeddings ``[BT, E]`` of ImageNet-normalised, padded frames.

        Args:
            pixel_values: ``[BT, 3, H, W]`` ImageNet-normalised, zero padded.
            pixel_mask: ``[BT, H, W]`` True on real pixels.
        """
        images = self.preprocess(pixel_values, pixel_mask)
        dtype = next(self._tower.parameters()).dtype
        features = self._tower(images.to(dtype))  # [BT, E]
        return F.normalize(features.float(), dim=-1)

    def _frame_file(self, key: str) -> Path:
        digest = hashlib.sha1(key.encode()).hexdigest()
        return self.cache_path / digest[:2] / f"{digest}.pt"

    @torch.no_grad()
    def embed(self, pixel_values: Tensor, pixel_mask: Tensor, frame_keys: Sequence[str]) -> Tensor:
        """Like :meth:`forward`, reading / writing the per-frame disk cache when ``config.image_cache`` is on.

        Args:
            pixel_values: ``[BT, 3, H, W]``.
            pixel_mask: ``[BT, H, W]``.
            frame_keys: ``BT`` frame keys (``"<VID>.mp4/<NNNNNN>.png"``) naming the cache entries.

        Returns:
            ``[BT, E]`` float32 embeddings on ``pixel_values``' device.
        """
        if len(frame_keys) != pixel_values.shape[0]:
            raise ValueError(f"Expected {pixel_values.shape[0]} frame keys but got {len(frame_keys)}")
        if not self.config.image_cache:
            return self(pixel_values, pixel_mask)
        files = [self._frame_file(key) for key in frame_keys]
        found = {i: torch.load(f, map_location="cpu", weights_only=True) for i, f in enumerate(files) if f.is_file()}
        missing = [i for i in range(len(files)) if i not in found]
        if missing:
            fresh = self(pixel_values[missing], pixel_mask[missing]).cpu()  # [M, E]
            for i, embedding in zip(missing, fresh):
                atomic_save(embedding.clone(), files[i])
                found[i] = embedding
        return torch.stack([found[i] for i in range(len(files))]).to(pixel_values.device)
