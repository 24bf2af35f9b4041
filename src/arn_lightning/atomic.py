"""Atomic file writes: every file the project writes is complete or absent, never half written.

A file is written to a temporary file in the destination's own folder (same file system), flushed to disk, and
renamed over the destination (``os.replace``, atomic on POSIX and Windows). A crash, a kill or a full disk while
writing leaves the previous version of the destination intact and no partial file under its name; the temporary
file is removed when the write fails with an exception.

>>> import tempfile, pathlib
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> atomic_write_text(folder / "a.txt", "hello")
>>> (folder / "a.txt").read_text()
'hello'
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from arn_lightning._types import PathLike

#: Permission bits of a new file before the umask (what ``open(path, "w")`` would give; ``mkstemp`` gives 0600).
FILE_MODE = 0o666


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: The temporary files this module makes: ``.<name>.pid<process id>.<random>.tmp`` beside the file they become.
TEMPORARY_REGEX = re.compile(r"^\.(?P<name>.+)\.pid(?P<pid>\d+)\.[^.]+\.tmp$")


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (another user's process counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale_temporaries(folder: PathLike, name: str | None = None) -> list[Path]:
    """Remove this module's temporary files in ``folder`` (of the file ``name`` only, when given) whose process is
    gone: a SIGKILL, a power cut or a signal without a handler ends a process before it removes its temporary file.
    Files of running processes, and files not named by :data:`TEMPORARY_REGEX`, are never touched.

    Returns:
        The files removed.
    """
    folder, removed = Path(folder), []
    for tmp in sorted(folder.glob(".*.pid*.tmp")) if folder.is_dir() else []:
        match = TEMPORARY_REGEX.match(tmp.name)
        if match and (name is None or match["name"] == name) and not process_alive(int(match["pid"])):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


#: Per folder, per file name: the temporary files of processes that were gone when this process first wrote into
#: the folder. One directory listing a folder a process, so that writing n files into one folder stays O(n).
_STALE: dict[Path, dict[str, list[Path]]] = {}


def _stale_in(folder: Path) -> dict[str, list[Path]]:
    """This module's temporary files in ``folder`` whose process is gone, by the name of the file they were for
    (listed at this process's first write into ``folder``)."""
    if folder not in _STALE:
        found: dict[str, list[Path]] = {}
        for tmp in folder.glob(".*.pid*.tmp"):
            match = TEMPORARY_REGEX.match(tmp.name)
            if match and not process_alive(int(match["pid"])):
                found.setdefault(match["name"], []).append(tmp)
        _STALE[folder] = found
    return _STALE[folder]


def temporary_path(path: PathLike) -> Path:
    """A new, empty temporary file beside ``path`` (hidden, ``.<name>.pid<pid>.<random>.tmp``); the caller renames
    it. Temporary files of ``path`` left by processes that were gone when this process first wrote into the folder
    are removed first (a SIGKILLed writer's; :func:`sweep_stale_temporaries` looks again at any time)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in _stale_in(path.parent).pop(path.name, []):
        stale.unlink(missing_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.pid{os.getpid()}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    return Path(name)


def commit(tmp: PathLike, path: PathLike) -> None:
    """Flush ``tmp`` to disk, give it the permissions of a normally created file and rename it to ``path``."""
    tmp = Path(tmp)
    with open(tmp, "rb+") as handle:
        os.fsync(handle.fileno())
    os.chmod(tmp, FILE_MODE & ~_umask())
    os.replace(tmp, path)


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path to write ``path`` through (for libraries that take a file name: ``torch.save``,
    ``PIL.Image.save``, a video encoder); on a clean exit it replaces ``path``, on an exception it is removed.

    Raises:
        OSError: the folder cannot be created or written (a full disk while writing, for one).
    """
    path = Path(path)
    tmp = temporary_path(path)
    try:
        yield tmp
        commit(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_open(path: PathLike, mode: str = "w", encoding: str = "utf-8") -> Iterator[IO[Any]]:
    """``open(path, mode)`` through a temporary file (``mode`` ``"w"`` or ``"wb"``), renamed on a clean exit."""
    if mode not in ("w", "wb"):
        raise ValueError(f"Expected mode 'w' or 'wb' for an atomic write but got {mode!r}")
    with atomic_path(path) as tmp:
        with open(tmp, mode, encoding=None if "b" in mode else encoding) as handle:
            yield handle


def atomic_write_text(path: PathLike, text: str, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_open(path, "w", encoding=encoding) as handle:
        handle.write(text)


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def atomic_write_json(path: PathLike, obj: Any, **dumps_kwargs: Any) -> None:
    """Write ``json.dumps(obj, **dumps_kwargs)`` to ``path`` atomically (``indent=1, sort_keys=True`` by default)."""
    dumps_kwargs.setdefault("indent", 1)
    dumps_kwargs.setdefault("sort_keys", True)
    atomic_write_text(path, json.dumps(obj, **dumps_kwargs) + "\n")


def atomic_save(writer: Callable[[Path], Any], path: PathLike) -> None:
    """Call ``writer(tmp)`` to produce the file, then rename ``tmp`` to ``path`` (e.g.
    ``atomic_save(lambda p: torch.save(obj, p), path)``)."""
    with atomic_path(path) as tmp:
        writer(tmp)


def replace_folder(staging: PathLike, dest: PathLike, replace_existing: bool) -> None:
    """Rename the finished folder ``staging`` onto ``dest`` (same parent folder): the folder-level twin of the file
    writes above. An absent or empty ``dest`` is replaced by the rename itself; with ``replace_existing`` a non-empty
    ``dest`` is first moved aside (a hidden ``.<name>.<random>.old`` beside it), and deleted only once ``staging``
    is in its place, so that at every moment one complete version exists under a known name.

    Raises:
        FileExistsError: ``dest`` holds files and ``replace_existing`` is False (nothing is moved).
    """
    staging, dest = Path(staging), Path(dest)
    old = None
    if dest.is_dir() and any(dest.iterdir()):
        if not replace_existing:
            raise FileExistsError(
                f"Expected {dest} to be absent or empty but it holds {sorted(p.name for p in dest.iterdir())[:5]}"
            )
        old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".old", dir=dest.parent))
        os.replace(dest, old / dest.name)
    os.replace(staging, dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


__all__ = [
    "FILE_MODE",
    "atomic_open",
    "atomic_path",
    "atomic_save",
    "atomic_write_bytes",
    "atomic_write_json",
    "replace_folder",
    "atomic_write_text",
    "commit",
    "temporary_path",
]
