"""What the web app may read, who may use it, and how long uploads live (docs/app.md, "What the app may read" and
"Exposing it safely"). No gradio here.

* **Readable paths.** A path typed into the page (a checkpoint, an ``infer`` output folder, an AG root, a prediction
  file) is read only when it is the server's ``--checkpoint`` file, or lies inside ``--runs``, ``--root`` or the
  session's own folder (its uploads and results), after symbolic links are resolved. Any other path gets
  :data:`REFUSED`, one message that says nothing about the file (not whether it exists, nor what it is).
* **Who may connect.** Bound to a loopback address the app serves this machine only; bound beyond it, the server
  needs Gradio's login (``auth=``) or the operator's explicit ``--allow-unauthenticated``
  (:func:`check_exposure`).
* **Uploads.** Gradio's upload cache and the sessions' ``upload_*`` folders live under the server's temporary root;
  :func:`prune_uploads` removes the uploads older than the time to live, then the oldest ones until their total is
  under the cap. :class:`UploadSweeper` runs it in the background.
"""

from __future__ import annotations

import ipaddress
import os
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from arn_lightning._types import PathLike

#: The one answer to a path outside what the server was started with (nothing about the file itself).
REFUSED = (
    "Expected a path inside what this server was started with (its --checkpoint, --runs or --root) or this "
    "session's own files, but this path is not one of them"
)
#: Host names that bind this machine only (besides loopback IP addresses).
LOCAL_HOSTS = ("localhost",)
#: Defaults of ``serve --upload-ttl-minutes`` and ``--max-uploads-mb``: an upload lives 1 hour, all of them 2 GB.
DEFAULT_UPLOAD_TTL_MINUTES = 60.0
DEFAULT_MAX_UPLOADS_MB = 2000
#: Folders of the server's temporary root that hold no upload (the sample video, the sessions' results).
NOT_UPLOADS = ("samples", "sessions")
#: Prefix of a session's upload folders (``logic.new_subfolder(folder, "upload")``).
UPLOAD_PREFIX = "upload_"


class AccessError(ValueError):
    """A path or setting the server refuses; the message is shown as it is."""


def _real(path: PathLike) -> Path:
    """``path`` absolute, ``~`` expanded and symbolic links resolved (a missing path is resolved as far as it
    exists); nothing else is read."""
    return Path(os.path.realpath(Path(str(path).strip()).expanduser()))


@dataclass(frozen=True)
class ReadablePaths:
    """The paths a server may read for its users.

    Attributes:
        files: single files (the ``--checkpoint``), resolved.
        folders: trees (``--runs``, ``--root``), resolved.
    """

    files: tuple[Path, ...]
    folders: tuple[Path, ...]

    @classmethod
    def started_with(
        cls, checkpoint: PathLike | None = None, runs: PathLike | None = None, root: PathLike | None = None
    ) -> ReadablePaths:
        """The paths of ``serve --checkpoint CKPT --runs DIR --root AG_ROOT`` (any of them may be None)."""
        files = (_real(checkpoint),) if checkpoint is not None else ()
        folders = tuple(_real(p) for p in (runs, root) if p is not None)
        return cls(files, folders)

    def check(self, path: PathLike, session_folder: Path | None = None) -> Path:
        """``path`` resolved, when the server may read it (module docstring).

        Args:
            path: what the user typed (``~`` allowed; relative to the server's working folder).
            session_folder: the asking session's own folder, readable too.

        Raises:
            AccessError: :data:`REFUSED`, the same message for every refused path.
        """
        real = _real(path)
        folders = (*self.folders, *((_real(session_folder),) if session_folder is not None else ()))
        if real in self.files or any(real == folder or folder in real.parents for folder in folders):
            return real
        raise AccessError(REFUSED)


def is_local_host(host: str) -> bool:
    """Whether binding ``host`` serves this machine only (``localhost`` or a loopback address such as
    ``127.0.0.1`` or ``::1``); ``0.0.0.0``, ``::`` and every other address or name do not."""
    if host.strip().lower() in LOCAL_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False


def parse_credentials(entries: Iterable[str], where: str) -> list[tuple[str, str]]:
    """``user:password`` entries as Gradio's ``auth=`` list; blank entries and ``#`` comments are skipped.

    Args:
        entries: the entries (``--auth`` values, or the lines of an ``--auth-file``).
        where: what names an entry in errors (``"--auth"``, ``"users.txt line {}"`` with the 1-based entry number).

    Raises:
        AccessError: an entry without ``:``, or with an empty user or password (the password is not repeated).
    """
    credentials = []
    for number, entry in enumerate(entries, start=1):
        text = entry.strip()
        if not text or text.startswith("#"):
            continue
        user, colon, password = text.partition(":")
        if not colon or not user or not password:
            raise AccessError(f"Expected 'user:password' in {where.format(number)} but got an entry without both")
        credentials.append((user, password))
    return credentials


def read_auth_file(path: PathLike) -> list[tuple[str, str]]:
    """The credentials of an ``--auth-file``: one ``user:password`` per line (:func:`parse_credentials`).

    Raises:
        AccessError: the file cannot be read, holds no entry, or an entry is malformed (naming the file and line).
    """
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise AccessError(f"Expected a readable UTF-8 text file for --auth-file but {path}: {error}") from None
    credentials = parse_credentials(lines, f"{path} line {{}}")
    if not credentials:
        raise AccessError(f"Expected at least one 'user:password' line in {path} (--auth-file) but got none")
    return credentials


def check_exposure(host: str, credentials: Sequence[tuple[str, str]], allow_unauthenticated: bool) -> str:
    """The line the server prints on start about who may connect.

    Raises:
        AccessError: ``host`` binds beyond this machine without credentials and without ``allow_unauthenticated``.
    """
    if credentials:
        return f"login required ({len(credentials)} user(s), Gradio's authentication)"
    if is_local_host(host):
        return "no login (this machine only)"
    if not allow_unauthenticated:
        raise AccessError(
            f"Expected --auth USER:PASSWORD or --auth-file FILE (Gradio's login) to serve beyond this machine "
            f"(--host {host}), or --allow-unauthenticated to let anyone who reaches the port use the app and read "
            f"what it was started with"
        )
    return (
        f"WARNING: no login, and --host {host} reaches beyond this machine: anyone who reaches the port can run "
        f"models and read the files of --checkpoint, --runs and --root (--allow-unauthenticated)"
    )


# ----------------------------------------------------------------------------------------------- uploads
@dataclass(frozen=True)
class UploadLimits:
    """How long uploads live and how much they may hold together.

    Attributes:
        ttl_seconds: an upload older than this (by its modification time) is removed.
        max_bytes: the uploads' total; beyond it the oldest are removed first.
    """

    ttl_seconds: float = DEFAULT_UPLOAD_TTL_MINUTES * 60
    max_bytes: int = DEFAULT_MAX_UPLOADS_MB * 1_000_000

    def __post_init__(self) -> None:
        if not self.ttl_seconds > 0 or self.max_bytes < 1:
            raise ValueError(
                f"Expected a positive upload time to live and cap but got {self.ttl_seconds} s and {self.max_bytes} B"
            )


def upload_files(temp_root: Path) -> list[Path]:
    """The uploads under a server's temporary root: Gradio's cache (every folder of the root but
    :data:`NOT_UPLOADS`) and the sessions' ``upload_*`` folders."""
    files: list[Path] = []
    if not temp_root.is_dir():
        return files
    for child in temp_root.iterdir():
        if child.is_dir() and child.name not in NOT_UPLOADS:
            files += [p for p in child.rglob("*") if p.is_file()]
    sessions = temp_root / "sessions"
    if sessions.is_dir():
        files += [p for p in sessions.glob(f"*/{UPLOAD_PREFIX}*/*") if p.is_file()]
    return files


def prune_uploads(
    temp_root: Path, limits: UploadLimits, now: float | None = None, keep: Iterable[Path] = ()
) -> list[Path]:
    """Remove the expired uploads, then the oldest ones until the total is at most ``limits.max_bytes``.

    Args:
        temp_root: the server's temporary root.
        limits: time to live and cap.
        now: the clock (``time.time()``; a test passes its own).
        keep: files in use, never removed (e.g. the upload a handler is reading).

    Returns:
        The removed files, oldest first. Folders left empty by a removal are removed too.
    """
    now = time.time() if now is None else now
    kept = {Path(p).resolve() for p in keep}
    entries = []
    for path in upload_files(temp_root):
        try:
            stat = path.stat()
        except FileNotFoundError:  # removed meanwhile by its session
            continue
        entries.append((stat.st_mtime, str(path), stat.st_size, path))
    entries.sort()
    total = sum(size for _, _, size, _ in entries)
    removed = []
    for mtime, _, size, path in entries:
        if path.resolve() in kept or (now - mtime <= limits.ttl_seconds and total <= limits.max_bytes):
            continue
        path.unlink(missing_ok=True)
        total -= size
        removed.append(path)
        _remove_empty_parents(path.parent, temp_root)
    return removed


def _remove_empty_parents(folder: Path, temp_root: Path) -> None:
    """Remove ``folder`` and its parents while empty, up to (not including) the root's top-level folders and the
    session folders."""
    sessions = temp_root / "sessions"
    while temp_root in folder.parents and folder.parent != sessions and folder.name not in NOT_UPLOADS:
        try:
            folder.rmdir()
        except OSError:  # not empty, or gone
            return
        folder = folder.parent


class UploadSweeper:
    """:func:`prune_uploads` every ``interval`` seconds in a daemon thread, until :meth:`stop`.

    Args:
        temp_root: the server's temporary root.
        limits: time to live and cap.
        interval: seconds between sweeps (default: a tenth of the time to live, at most a minute).
    """

    def __init__(self, temp_root: Path, limits: UploadLimits, interval: float | None = None) -> None:
        self.temp_root, self.limits = temp_root, limits
        self.interval = interval if interval is not None else min(60.0, limits.ttl_seconds / 10)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="arn-upload-sweeper", daemon=True)

    def start(self) -> UploadSweeper:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            prune_uploads(self.temp_root, self.limits)

    def stop(self) -> None:
        """Stop sweeping (returns when the thread has ended)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
