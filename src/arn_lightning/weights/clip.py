"""Where the pretrained CLIP weights of a :class:`~arn_lightning.text.config.ClipConfig` are, and their download
(:func:`arn_lightning.text.clip.resolve_weights` decides which file a config means; this module finds or fetches it).

* :func:`locate_cached_weights` looks where open_clip downloads to, without any network access.
* :func:`download_tag` never hangs: offline (``ARN_OFFLINE`` or ``HF_HUB_OFFLINE``), or with the hub (or the
  configured proxy) silent for ``ClipConfig.network_timeout_s``, :class:`ClipWeightsUnavailable` is raised at once,
  naming the remedies (``docs/weights.md``). A URL goes through the project's one downloader
  (:func:`~arn_lightning.weights.download.fetch_weights`); a Hugging Face Hub entry through ``huggingface_hub``,
  whose cache layout open_clip reads, behind a metadata request without retries.
"""

from __future__ import annotations

import os
import socket
import threading
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

from arn_lightning.text.config import ClipConfig
from arn_lightning.weights.download import WeightsUnavailable, fetch_weights, offline_reason

#: Where open_clip itself keeps weights downloaded from a URL (``open_clip.pretrained``'s default).
OPEN_CLIP_URL_CACHE = "~/.cache/clip"
#: Host probed before a download when offline mode is off (``HF_ENDPOINT`` overrides it, read at call time).
HF_DEFAULT_ENDPOINT = "https://huggingface.co"
HTTPS_PORT = 443
HTTP_PORT = 80


class ClipWeightsUnavailable(WeightsUnavailable):
    """Pretrained CLIP weights are neither cached locally nor downloadable (offline / unreachable hub)."""


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
    server is caught by the request timeouts of :func:`download_tag`."""
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


def download_tag(config: ClipConfig, tag_cfg: Mapping[str, Any]) -> str:
    """Download the file of a pretrained tag (absent from the caches) and return its path: a Hub entry into the
    Hugging Face cache, a URL with :func:`~arn_lightning.weights.download.fetch_weights` into open_clip's URL cache.

    Raises:
        ClipWeightsUnavailable: offline, the host unreachable within ``network_timeout_s``, or a failed download.
    """
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
