"""Model folders (:mod:`arn_lightning.weights.folder`) on the Hugging Face Hub: pushed by ``arn-lightning export
--push-to-hub owner/name``, loaded wherever a checkpoint is taken as ``hf://owner/name`` (or ``hf://owner/name@rev``).

Needs the optional extra ``pip install 'arn-lightning[hub]'`` (``huggingface_hub``). Loading goes through
``huggingface_hub.snapshot_download`` and its cache (``HF_HOME`` / ``HF_HUB_CACHE``); with ``HF_HUB_OFFLINE=1`` or
``ARN_OFFLINE=1`` only the cache is read and nothing is downloaded.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from arn_lightning.checkpoint_file import CheckpointError
from arn_lightning.weights.download import offline_reason
from arn_lightning.weights.folder import CARD_FILE, CONFIG_FILE, WEIGHTS_FILE

#: ``hf://owner/name`` or ``hf://owner/name@revision`` (``pathlib`` folds ``//`` to ``/``, so both are read).
HUB_SOURCE = re.compile(r"hf:/{1,2}(?P<repo>[\w.-]+/[\w.-]+)(?:@(?P<revision>[\w./-]+))?")
INSTALL_HINT = "pip install 'arn-lightning[hub]' (huggingface_hub)"
#: The files of a model folder (nothing else of a repository is downloaded).
FOLDER_FILES = [CONFIG_FILE, WEIGHTS_FILE, CARD_FILE]


def import_hub() -> Any:
    """The ``huggingface_hub`` module.

    Raises:
        ModuleNotFoundError: it is not installed (the message names the extra).
    """
    try:
        import huggingface_hub
    except ModuleNotFoundError as error:
        raise ModuleNotFoundError(f"Expected huggingface_hub for a model on the Hub: {INSTALL_HINT}") from error
    return huggingface_hub


def parse_hub_source(source: str) -> tuple[str, str | None]:
    """``(repo_id, revision)`` of ``hf://owner/name[@revision]``.

    Raises:
        CheckpointError: ``source`` is not of that form.
    """
    match = HUB_SOURCE.fullmatch(source)
    if match is None:
        raise CheckpointError(f"Expected a Hub model as hf://owner/name or hf://owner/name@revision but got {source}")
    return match["repo"], match["revision"]


def download_model_folder(source: str, cache_dir: str | Path | None = None) -> Path:
    """The local folder of the Hub model ``hf://owner/name[@revision]``: its files from the Hugging Face cache,
    downloaded there first unless offline (``HF_HUB_OFFLINE`` / ``ARN_OFFLINE``: the cache only).

    Raises:
        CheckpointError: the model is neither cached nor downloadable (offline, unknown repository, no network);
            the message names the repository and the cache.
        ModuleNotFoundError: ``huggingface_hub`` is not installed.
    """
    hub = import_hub()
    repo_id, revision = parse_hub_source(source)
    offline = offline_reason()
    try:
        folder = hub.snapshot_download(
            repo_id,
            revision=revision,
            cache_dir=cache_dir,
            local_files_only=offline is not None,
            allow_patterns=FOLDER_FILES,
        )
    except Exception as error:  # huggingface_hub raises its own error classes (LocalEntryNotFoundError, HTTP ...)
        where = f"the cache {cache_dir or hub.constants.HF_HUB_CACHE}"
        reason = f"{offline}, so only {where} was read" if offline else f"the download failed ({error})"
        raise CheckpointError(
            f"Expected the model folder {source} in {where} or on the Hub but {reason}: {type(error).__name__}"
        ) from error
    return Path(folder)


def push_model_folder(folder: str | Path, repo_id: str, private: bool = False, token: str | None = None) -> str:
    """Upload a model folder to the Hub repository ``repo_id`` (created if absent); returns the commit URL.

    Raises:
        CheckpointError: ``folder`` is not a model folder (no ``config.json`` / ``model.safetensors``).
        ConnectionError: offline (``HF_HUB_OFFLINE`` / ``ARN_OFFLINE``): nothing is sent.
        ModuleNotFoundError: ``huggingface_hub`` is not installed.
    """
    folder = Path(folder)
    missing = [name for name in (CONFIG_FILE, WEIGHTS_FILE) if not (folder / name).is_file()]
    if missing:
        raise CheckpointError(f"Expected a model folder of arn-lightning export in {folder} but it lacks {missing}")
    reason = offline_reason()
    if reason:
        raise ConnectionError(f"Expected network access to push {folder} to {repo_id} but {reason}")
    hub = import_hub()
    api = hub.HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    commit = api.upload_folder(folder_path=str(folder), repo_id=repo_id, allow_patterns=FOLDER_FILES)
    return str(getattr(commit, "commit_url", commit))


__all__ = ["download_model_folder", "import_hub", "parse_hub_source", "push_model_folder"]
