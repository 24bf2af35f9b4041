"""Named pretrained weight files: a registry, one cache folder, verified by their published hash.

The paper initialises ARN from the official COCO-trained DETR-R50 and uses an ImageNet ResNet-50 and the OpenAI
CLIP ViT-B/32. Each is a :class:`WeightsEntry` of :data:`REGISTRY` under a name that configs may use in place of a
path (``detr_checkpoint: detr-r50-coco``, ``backbone_weights: resnet50-imagenet``,
``clip_pretrained: clip-vit-b32-openai``) and that ``arn-lightning weights list | fetch | verify | path`` handles
(``docs/weights.md``).

* One cache folder for all files (:func:`weights_dir`): ``--dir`` / the ``folder`` argument, else
  ``$ARN_WEIGHTS_DIR``, else torch.hub's ``torch.hub.get_dir()/checkpoints`` (where torchvision and DETR's own
  ``torch.hub.load`` keep the same files, so an existing download is found).
* :func:`resolve` returns the verified file: present and matching its hash, it is used with no network access;
  absent, it is downloaded with :func:`arn_lightning.weights.download.fetch_weights` (``ARN_OFFLINE`` /
  ``HF_HUB_OFFLINE``,
  ``ARN_DOWNLOAD_TIMEOUT``, the mirror ``ARN_WEIGHTS_URL``, a temporary file renamed once complete and matching);
  offline or failing, :class:`~arn_lightning.weights.download.WeightsUnavailable` names the file, its checksum, the URL
  and
  the folder to place it in by hand. A present file with another hash is refused (:class:`WeightsMismatch`) and
  left where it is.
* :func:`verify` hashes a file once (1 MiB chunks) and remembers the result in ``.arn-weights-verified.json`` in the
  same folder, keyed by file name, size and modification time (ns): later calls (every training start) read no
  byte of an unchanged file. A file replaced by another of the same size and the same mtime would not be noticed.
* Tests and private setups add entries with :func:`register` or, scoped, :func:`registered`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from arn_lightning.atomic import atomic_write_json
from arn_lightning.redact import redact
from arn_lightning.weights.download import (
    CHUNK_BYTES,
    WeightsUnavailable,
    fetch_weights,
    offline_reason,
    weights_url,
)

log = logging.getLogger(__name__)

#: Environment variable naming the cache folder (overrides torch.hub's).
WEIGHTS_DIR_ENV = "ARN_WEIGHTS_DIR"
#: The verify cache kept in the weights folder.
VERIFY_CACHE_NAME = ".arn-weights-verified.json"
#: Format version of the verify cache (another version is ignored and rewritten).
VERIFY_CACHE_FORMAT = 1
#: Length of a full sha256 hex digest.
FULL_SHA256_LEN = 64


class WeightsMismatch(WeightsUnavailable):
    """A weight file is present under the expected name but its sha256 differs from the published one.

    The file is neither used nor deleted; the message says what to do with it.
    """


class UnknownWeights(ValueError):
    """A name that is not in the registry (the message lists the registered names)."""


@dataclass(frozen=True)
class WeightsEntry:
    """One named weight file.

    Attributes:
        name: the registry name (``detr-r50-coco``).
        file_name: the file's name in the cache folder (``detr-r50-e632da11.pth``).
        urls: official download URLs, tried in order (``$ARN_WEIGHTS_URL/<file_name>`` replaces each when set).
        sha256: the published hash: the full 64-digit sha256, or the leading hex digits torch.hub puts in the file
            name (``e632da11``).
        description: what the weights are.
        setting: the config setting that accepts the name (``detr_checkpoint``, ``backbone_weights``,
            ``clip_pretrained``).
        used_by: where the weights are used, for the listing.
        hash_source: where the hash is published.
        architecture: the model the weights fit (``resnet50``, ``ViT-B-32``), checked by the setting's loader;
            ``None``: not checked.
        size_bytes: the file's size in bytes when published, else ``None`` (shown by the listing; the hash decides).
    """

    name: str
    file_name: str
    urls: tuple[str, ...]
    sha256: str
    description: str
    setting: str
    used_by: str
    hash_source: str
    architecture: str | None = None
    size_bytes: int | None = None

    def __post_init__(self) -> None:
        digits = self.sha256.lower()
        if len(digits) < 8 or any(c not in "0123456789abcdef" for c in digits):
            raise ValueError(
                f"Expected at least 8 hex digits of sha256 for weights {self.name!r} but got {self.sha256!r}"
            )
        if not self.urls:
            raise ValueError(f"Expected at least one URL for weights {self.name!r} but got none")
        if "/" in self.file_name or os.sep in self.file_name:
            raise ValueError(f"Expected a bare file name for weights {self.name!r} but got {self.file_name!r}")
        object.__setattr__(self, "sha256", digits)

    @property
    def hash_kind(self) -> str:
        """``"sha256"`` (the full digest is published) or ``"sha256-prefix"`` (torch.hub's file-name prefix)."""
        return "sha256" if len(self.sha256) == FULL_SHA256_LEN else "sha256-prefix"

    def matches(self, digest: str) -> bool:
        """Whether a full sha256 hex ``digest`` is (or starts with) the published hash."""
        return digest.lower().startswith(self.sha256)

    def expected_clause(self) -> str:
        """``"is <digest>"`` or ``"starts with <prefix>"``, for messages."""
        return f"is {self.sha256}" if self.hash_kind == "sha256" else f"starts with {self.sha256}"

    def expected_text(self) -> str:
        """``"sha256 <digest>"`` or ``"sha256 starting with <prefix>"``, for messages."""
        return f"sha256 {self.sha256}" if self.hash_kind == "sha256" else f"sha256 starting with {self.sha256}"


@dataclass(frozen=True)
class VerifyResult:
    """The outcome of :func:`verify`.

    Attributes:
        entry: the registry entry.
        path: where the file is expected (``<folder>/<file_name>``).
        present: whether the file exists.
        ok: the hash matches (``False`` when absent or mismatching).
        actual_sha256: the file's full sha256 (``None`` when absent).
        cached: the result came from the verify cache, without reading the file.
    """

    entry: WeightsEntry
    path: Path
    present: bool
    ok: bool
    actual_sha256: str | None = None
    cached: bool = False

    def describe(self) -> str:
        """One line: ``ok``, ``absent`` or ``MISMATCH`` with the file, the expected and the actual hash."""
        entry = self.entry
        if not self.present:
            return f"absent    {entry.name}: {self.path} (expected {entry.expected_text()})"
        if self.ok:
            source = ", remembered" if self.cached else ""
            return f"ok        {entry.name}: {self.path} (sha256 {self.actual_sha256}{source})"
        return (
            f"MISMATCH  {entry.name}: {self.path}: expected {entry.expected_text()} but got {self.actual_sha256}; "
            f"{_mismatch_advice(entry, self.path)}"
        )


#: Registered entries by name (extend with :func:`register` / :func:`registered`).
REGISTRY: dict[str, WeightsEntry] = {}


def register(entry: WeightsEntry, *, replace: bool = False) -> WeightsEntry:
    """Add ``entry`` to the registry (e.g. a test's own file with its real sha256) and return it.

    Raises:
        ValueError: the name is taken and ``replace`` is False.
    """
    if entry.name in REGISTRY and not replace and REGISTRY[entry.name] != entry:
        raise ValueError(
            f"Expected a new weights name but {entry.name!r} is taken (by {REGISTRY[entry.name].file_name})"
        )
    REGISTRY[entry.name] = entry
    return entry


@contextlib.contextmanager
def registered(*entries: WeightsEntry) -> Iterator[tuple[WeightsEntry, ...]]:
    """Register ``entries`` for the duration of a ``with`` block, then restore the registry as it was."""
    saved = dict(REGISTRY)
    try:
        for entry in entries:
            register(entry)
        yield entries
    finally:
        REGISTRY.clear()
        REGISTRY.update(saved)


def list_entries() -> list[WeightsEntry]:
    """The registered entries, in registration order."""
    return list(REGISTRY.values())


def names() -> list[str]:
    """The registered names."""
    return list(REGISTRY)


def is_registered(value: object) -> bool:
    """Whether ``value`` is a registered name."""
    return isinstance(value, str) and value in REGISTRY


def get_entry(name: str) -> WeightsEntry:
    """The entry named ``name``.

    Raises:
        UnknownWeights: ``name`` is not registered (the message lists the names).
    """
    try:
        return REGISTRY[name]
    except KeyError:
        raise UnknownWeights(f"Expected a registered weights name ({', '.join(REGISTRY)}) but got {name!r}") from None


def weights_dir(folder: str | os.PathLike[str] | None = None) -> Path:
    """The cache folder: ``folder`` if given, else ``$ARN_WEIGHTS_DIR``, else ``torch.hub.get_dir()/checkpoints``
    (``$TORCH_HOME/hub/checkpoints``, by default ``~/.cache/torch/hub/checkpoints``); read at call time."""
    if folder is not None and str(folder):
        return Path(folder).expanduser()
    env = os.environ.get(WEIGHTS_DIR_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The full sha256 hex digest of a file, read once in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def load_torch_file(file: str | os.PathLike[str], what: str, setting: str | None = None, hint: str = "") -> Any:
    """``torch.load(file, map_location="cpu", weights_only=True)`` of a weights file; one torch cannot read
    (truncated, foreign, another format) is an error naming the file and what was expected.

    Args:
        what: what the file should hold, e.g. ``"a DETR checkpoint"``.
        setting: the setting that named the file, shown after it (``"detr_checkpoint"``).
        hint: appended to the message, e.g. where the right file comes from.

    Raises:
        ValueError: ``Expected <what> in <file> (<setting>) but it cannot be read (<torch's error>)<hint>``.
    """
    import torch  # only a weights load needs it; the registry's commands stay light

    where = f"{file} ({setting})" if setting else str(file)
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises UnpicklingError, RuntimeError, EOFError, ... for a foreign file
        raise ValueError(
            f"Expected {what} in {where} but it cannot be read ({type(err).__name__}: {err}){hint}"
        ) from err


# ---------------------------------------------------------------------------------------------- verify cache
def _read_verify_cache(folder: Path) -> dict[str, dict]:
    try:
        data = json.loads((folder / VERIFY_CACHE_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if (
        not isinstance(data, dict)
        or data.get("format") != VERIFY_CACHE_FORMAT
        or not isinstance(data.get("files"), dict)
    ):
        return {}
    return data["files"]


def _write_verify_cache(folder: Path, file_name: str, record: dict) -> None:
    files = _read_verify_cache(folder)
    files[file_name] = record
    try:
        atomic_write_json(folder / VERIFY_CACHE_NAME, {"format": VERIFY_CACHE_FORMAT, "files": files}, indent=1)
    except OSError as error:  # a read-only shared folder: verify again next time
        log.debug("cannot write the verify cache in %s (%s)", folder, error)


def remembered_sha256(path: str | os.PathLike[str]) -> str | None:
    """The sha256 the verify cache holds for ``path`` if its size and mtime are unchanged since, else ``None``."""
    path = Path(path)
    try:
        stat = path.stat()
    except OSError:
        return None
    record = _read_verify_cache(path.parent).get(path.name)
    if isinstance(record, dict) and record.get("size") == stat.st_size and record.get("mtime_ns") == stat.st_mtime_ns:
        digest = record.get("sha256")
        return digest if isinstance(digest, str) and len(digest) == FULL_SHA256_LEN else None
    return None


def file_sha256(path: str | os.PathLike[str]) -> tuple[str, bool]:
    """``(sha256, cached)`` of a file: from the verify cache when its size and mtime are unchanged, else hashed
    (and remembered)."""
    path = Path(path)
    digest = remembered_sha256(path)
    if digest is not None:
        return digest, True
    before = path.stat()
    digest = sha256_file(path)
    after = path.stat()
    if (before.st_size, before.st_mtime_ns) == (after.st_size, after.st_mtime_ns):  # not written meanwhile
        _write_verify_cache(
            path.parent, path.name, {"size": after.st_size, "mtime_ns": after.st_mtime_ns, "sha256": digest}
        )
    return digest, False


# ------------------------------------------------------------------------------------------- verify, resolve
def verify(name: str, folder: str | os.PathLike[str] | None = None) -> VerifyResult:
    """Check the file of ``name`` in the cache folder against its published hash (no network access).

    Args:
        name: a registered name.
        folder: the cache folder (``None``: :func:`weights_dir`).

    Raises:
        UnknownWeights: ``name`` is not registered.
    """
    entry = get_entry(name)
    path = weights_dir(folder) / entry.file_name
    if not path.is_file():
        return VerifyResult(entry, path, present=False, ok=False)
    digest, cached = file_sha256(path)
    return VerifyResult(entry, path, present=True, ok=entry.matches(digest), actual_sha256=digest, cached=cached)


def _mismatch_advice(entry: WeightsEntry, path: Path) -> str:
    return (
        f"the file was left in place and is not used: replace it with the file from {entry.urls[0]}, or move it "
        f"away and run `arn-lightning weights fetch {entry.name}`"
    )


def by_hand_message(entry: WeightsEntry, path: Path, reason: str) -> str:
    """The message of a missing file: the file name, its checksum, the URL and the folder to place it in."""
    sources = [weights_url(url, entry.file_name) for url in entry.urls]
    return redact(  # a mirror URL may hold a password or a token: masked (arn_lightning.redact)
        f"Expected the weight file {entry.file_name} ({entry.name}, {entry.expected_text()}) in {path.parent} but it "
        f"is not there and {reason}. Download {' or '.join(sources)} on a machine with network (`arn-lightning "
        f"weights fetch {entry.name}` does it and checks the hash), check that its sha256 "
        f"{entry.expected_clause()}, and place it in the folder {path.parent} under the file name {entry.file_name} "
        f"(or point --dir / {WEIGHTS_DIR_ENV} at a folder holding it).",
        *sources,
    )


def resolve(name: str, folder: str | os.PathLike[str] | None = None, *, timeout_s: float | None = None) -> Path:
    """The verified local file of ``name``, downloaded into the cache folder first when absent and online.

    Args:
        name: a registered name.
        folder: the cache folder (``None``: :func:`weights_dir`).
        timeout_s: seconds without an answer before a download fails (``None``: ``ARN_DOWNLOAD_TIMEOUT``, else 10).

    Returns:
        ``<folder>/<file_name>``, whose sha256 matches the published hash.

    Raises:
        UnknownWeights: ``name`` is not registered.
        WeightsMismatch: the file is present with another hash (it is left in place and not used).
        WeightsUnavailable: the file is absent and offline mode is on (no connection is attempted), or the download
            failed (no answer within the timeout, HTTP error, hash mismatch); the message names the file, its
            checksum, the URL and the folder.
        ValueError: a bad ``ARN_OFFLINE`` / ``ARN_DOWNLOAD_TIMEOUT`` value.
    """
    entry = get_entry(name)
    result = verify(name, folder)
    if result.present:
        if result.ok:
            return result.path
        raise WeightsMismatch(
            f"Expected the weight file {result.path} ({entry.name}) to have {entry.expected_text()} but got sha256 "
            f"{result.actual_sha256}; {_mismatch_advice(entry, result.path)}"
        )
    path = result.path
    reason = offline_reason()
    if reason:
        raise WeightsUnavailable(by_hand_message(entry, path, f"{reason} (no download attempted)"))
    failures: list[str] = []
    for url in entry.urls:
        try:
            fetch_weights(
                url,
                path.parent,
                entry.file_name,
                what=f"the weights {entry.name}",
                timeout_s=timeout_s,
                sha256_prefix=entry.sha256,
            )
        except WeightsUnavailable as error:
            failures.append(str(error))
            continue
        checked = verify(name, folder)  # hashes the new file once and remembers it
        if checked.ok:
            return checked.path
        raise WeightsMismatch(  # only if the file changed between the download and this check
            f"Expected the downloaded file {path} ({entry.name}) to have {entry.expected_text()} but got sha256 "
            f"{checked.actual_sha256}; {_mismatch_advice(entry, path)}"
        )
    raise WeightsUnavailable(by_hand_message(entry, path, "the download failed: " + " / ".join(failures)))


# ------------------------------------------------------------------------------------------------ the entries
#: The official DETR-R50 COCO checkpoint (paper Sec. 4.1).
DETR_R50_COCO = register(
    WeightsEntry(
        name="detr-r50-coco",
        file_name="detr-r50-e632da11.pth",
        urls=("https://dl.fbaipublicfiles.com/detr/detr-r50-e632da11.pth",),
        sha256="e632da11",
        description="official DETR with a ResNet-50 trained on COCO 2017 (facebookresearch/detr, 500 epochs; "
        "about 159 MB)",
        setting="detr_checkpoint",
        used_by="model.detr_checkpoint (configs/ag_sgdet|sgcls|predcls.yaml): backbone, encoder, both decoders",
        hash_source="torch.hub file-name prefix of the official file name (DETR's hubconf loads it with "
        "check_hash=True); no full sha256 is published",
        architecture="resnet50",
    )
)
#: torchvision's ImageNet ResNet-50 (``IMAGENET1K_V1``).
RESNET50_IMAGENET = register(
    WeightsEntry(
        name="resnet50-imagenet",
        file_name="resnet50-0676ba61.pth",
        urls=("https://download.pytorch.org/models/resnet50-0676ba61.pth",),
        sha256="0676ba61",
        description="torchvision ResNet-50 IMAGENET1K_V1 (about 98 MB)",
        setting="backbone_weights",
        used_by="model.arch.backbone_weights with backbone resnet50 (same file as backbone_weights: imagenet)",
        hash_source="torch.hub file-name prefix of torchvision's URL (torchvision downloads it with check_hash)",
        architecture="resnet50",
    )
)
#: OpenAI's CLIP ViT-B/32, the file of open_clip's ``openai`` tag URL.
CLIP_VIT_B32_OPENAI = register(
    WeightsEntry(
        name="clip-vit-b32-openai",
        file_name="ViT-B-32.pt",
        urls=(
            "https://openaipublic.azureedge.net/clip/models/"
            "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af/ViT-B-32.pt",
        ),
        sha256="40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af",
        description="OpenAI CLIP ViT-B/32 (TorchScript archive, QuickGELU; about 338 MB)",
        setting="clip_pretrained",
        used_by="model.clip.clip_pretrained with clip_model ViT-B-32: text embeddings and distillation target",
        hash_source="full sha256 in the path of OpenAI's URL (openai/CLIP and open_clip's pretrained table check it)",
        architecture="ViT-B-32",
    )
)


__all__ = [
    "CLIP_VIT_B32_OPENAI",
    "DETR_R50_COCO",
    "REGISTRY",
    "RESNET50_IMAGENET",
    "VERIFY_CACHE_NAME",
    "WEIGHTS_DIR_ENV",
    "UnknownWeights",
    "VerifyResult",
    "WeightsEntry",
    "WeightsMismatch",
    "by_hand_message",
    "file_sha256",
    "get_entry",
    "is_registered",
    "list_entries",
    "load_torch_file",
    "names",
    "register",
    "registered",
    "remembered_sha256",
    "resolve",
    "sha256_file",
    "verify",
    "weights_dir",
]
