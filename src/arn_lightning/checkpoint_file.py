"""Checkpoint files: integrity check and loading, with the file named in every failure (no Lightning import, so
that inference starts without the training stack).

A Lightning checkpoint is a zip archive (``torch.save``'s format) whose members carry CRC-32 checksums; torch does not
check them, so a flipped weight byte loads silently. :func:`verify_checkpoint` reads every member and checks it, and a
truncated or altered file is refused with its name.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path
from typing import Any

import torch

from arn_lightning._types import PathLike

#: Bytes read at a time while checking the archive's checksums.
_CHUNK = 1 << 22
#: MS-DOS attribute bit of a directory in a zip member's external attributes (miniz reads such a member as one).
_DIRECTORY_ATTRIBUTE = 0x10


class CheckpointError(ValueError):
    """A checkpoint file that is missing, truncated, altered or not a checkpoint of this project (names the file)."""


def is_local_path(path: PathLike) -> bool:
    """Whether ``path`` is a local file path rather than an fsspec URL (``s3://...``)."""
    return "://" not in str(path)


def _check_as_torch_reads_it(path: Path, members: list) -> None:
    """Every record as torch's own archive reader returns it must carry the checksum the archive states for it:
    Python's ``zipfile`` and torch's reader (miniz) do not interpret every header field alike (a member flagged as a
    directory, say, passes ``zipfile``'s checks but torch then reads other bytes for it).

    Raises:
        zipfile.BadZipFile: a member torch would not read as a plain file, or whose bytes as torch reads them do not
            match its CRC-32.
    """
    for member in members:
        if member.is_dir() or member.external_attr & _DIRECTORY_ATTRIBUTE:
            raise zipfile.BadZipFile(
                f"CRC check impossible: member {member.filename!r} is flagged as a directory, which torch never writes"
            )
    reader = torch._C.PyTorchFileReader(str(path))
    for member in members:
        record = member.filename.split("/", 1)[1] if "/" in member.filename else member.filename
        if zlib.crc32(reader.get_record(record)) & 0xFFFFFFFF != member.CRC:
            raise zipfile.BadZipFile(f"Bad CRC-32 for {member.filename!r} as torch reads it")


def verify_checkpoint(path: PathLike) -> Path:
    """Check that ``path`` is a complete, unaltered ``torch.save`` zip archive (every member's CRC-32).

    Reads the whole file twice, once through Python's ``zipfile`` and once through torch's own reader (about 0.2 s
    per 100 MB); remote (fsspec URL) paths are returned unchecked.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        CheckpointError: the path is missing or a folder, the file is not a zip archive (truncated, or not a
            checkpoint), or a member's bytes do not match its checksum (the file was altered or damaged).
    """
    path = Path(path)
    if not is_local_path(path):
        return path
    if not path.is_file():
        state = "is a directory" if path.is_dir() else "does not exist"
        raise CheckpointError(f"Expected a checkpoint file but {path} {state}")
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            for member in members:
                with archive.open(member) as stream:
                    while stream.read(_CHUNK):
                        pass
        _check_as_torch_reads_it(path, members)
    except zipfile.BadZipFile as error:
        if "CRC" in str(error) or "Bad magic" in str(error):
            raise CheckpointError(
                f"{path}: Expected an intact checkpoint but its contents do not match their "
                f"checksums ({error}); the file was altered or damaged: use another copy"
            ) from error
        raise CheckpointError(
            f"{path}: Expected a PyTorch checkpoint (a zip archive) but the file is truncated or "
            f"not a checkpoint ({error}; {path.stat().st_size} bytes)"
        ) from error
    except (OSError, EOFError, RuntimeError, ValueError) as error:
        raise CheckpointError(f"{path}: Expected a readable checkpoint but reading it failed: {error}") from error
    return path


def load_checkpoint_file(path: PathLike, map_location: Any = "cpu", **load_kwargs: Any) -> dict[str, Any]:
    """:func:`verify_checkpoint`, then ``torch.load(path, weights_only=True)``; every failure names the file.

    Raises:
        CheckpointError: see :func:`verify_checkpoint`; also when torch cannot unpickle it or it is not a dict.
    """
    path = verify_checkpoint(path)
    load_kwargs.setdefault("weights_only", True)
    try:
        checkpoint = torch.load(path, map_location=map_location, **load_kwargs)
    except Exception as error:  # torch raises UnpicklingError, RuntimeError, EOFError, ... for a foreign file
        raise CheckpointError(
            f"{path}: Expected a PyTorch checkpoint but loading failed: {type(error).__name__}: {error}"
        ) from error
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"{path}: Expected a Lightning checkpoint (a dict) but got a {type(checkpoint).__name__}")
    return checkpoint


__all__ = ["CheckpointError", "is_local_path", "load_checkpoint_file", "verify_checkpoint"]
