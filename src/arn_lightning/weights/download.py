"""Weight-file downloads that never hang: an offline switch, a timeout, an atomic file and a hash check.

Every weight file the project downloads itself (torchvision's ImageNet ResNets, CLIP weights that open_clip would
fetch from a plain URL) goes through :func:`fetch_weights`:

1. ``<folder>/<file name>`` already on disk: it is used, with no network access at all (a file placed there by hand
   works the same as a downloaded one).
2. Offline (``ARN_OFFLINE=1`` or ``HF_HUB_OFFLINE=1``): :class:`WeightsUnavailable` at once, before any connection.
3. Otherwise the file is streamed from its URL (or from the mirror ``$ARN_WEIGHTS_URL/<file name>``) with a timeout
   on the connection and on every read (``ARN_DOWNLOAD_TIMEOUT`` seconds, default 10) and a deadline on the whole
   transfer (``ARN_DOWNLOAD_DEADLINE`` seconds, default 1800), into a temporary file beside the destination that is
   renamed only once complete and verified (:func:`arn_lightning.atomic.commit`). A server that accepts and never
   answers fails after one timeout; one that sends a byte now and then, which no read timeout catches, fails at the
   deadline (within one read timeout after it).

No temporary file outlives its process: it is removed on an error, on Ctrl-C and on SIGTERM (a handler removes it,
then lets the signal end the process as it would have); a process killed
by SIGKILL cannot clean up, so its temporary file, which carries its process id (``.<name>.pid<N>.<random>.tmp``),
is removed by the next download into that folder once process N is gone (:func:`sweep_stale_downloads`).

Every failure is a :class:`WeightsUnavailable` naming the file, the folder to place it in by hand and the URL.

Environment (read at call time):

=========================  ===========================================================================================
``ARN_OFFLINE``            ``1`` / ``true`` / ``yes`` / ``on``: no download at all; ``0`` / ``false`` / empty: allowed
``HF_HUB_OFFLINE``         Hugging Face's switch; a true value is honoured the same way
``ARN_DOWNLOAD_TIMEOUT``   seconds without an answer (connect or any read) before a download fails (default 10)
``ARN_DOWNLOAD_DEADLINE``  seconds a whole download may take before it fails (default 1800: 30 minutes)
``ARN_WEIGHTS_URL``        base URL of a mirror: ``<base>/<file name>`` replaces the official URL
=========================  ===========================================================================================
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import logging
import math
import os
import re
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from arn_lightning.atomic import commit, sweep_stale_temporaries, temporary_path
from arn_lightning.redact import mask_url, redact

log = logging.getLogger(__name__)

#: The project's offline switch.
OFFLINE_ENV = "ARN_OFFLINE"
#: Hugging Face's offline switch, honoured as well.
HF_OFFLINE_ENV = "HF_HUB_OFFLINE"
#: Seconds without an answer before a download fails.
TIMEOUT_ENV = "ARN_DOWNLOAD_TIMEOUT"
#: Base URL of a mirror holding the weight files under their official file names.
MIRROR_ENV = "ARN_WEIGHTS_URL"
#: Timeout when neither an argument nor ``ARN_DOWNLOAD_TIMEOUT`` gives one (seconds).
DEFAULT_TIMEOUT_S = 10.0
#: Seconds a whole download may take.
DEADLINE_ENV = "ARN_DOWNLOAD_DEADLINE"
#: Deadline when neither an argument nor ``ARN_DOWNLOAD_DEADLINE`` gives one (seconds): the largest weight file, CLIP
#: ViT-B/32's 350 MB, at 0.2 MB/s.
DEFAULT_DEADLINE_S = 1800.0
#: Bytes read per chunk while streaming a download.
CHUNK_BYTES = 1 << 20
#: torch.hub's file-name convention ``name-<sha256 prefix>.ext`` (``resnet50-0676ba61.pth`` -> ``0676ba61``), with
#: at least 8 hex digits (torch.hub's documented minimum; ``ViT-B-32.pt`` carries no hash).
HASH_REGEX = re.compile(r"-([a-f0-9]{8,})\.")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}


class WeightsUnavailable(FileNotFoundError):
    """A weight file is not on disk and cannot be downloaded (offline, no answer in time, HTTP error, bad hash)."""


class DeadlineExceeded(TimeoutError):
    """A download still running at its deadline (``ARN_DOWNLOAD_DEADLINE``)."""


def offline_reason(environ: Mapping[str, str] | None = None) -> str | None:
    """Why downloads are switched off (``"ARN_OFFLINE is set"`` / ``"HF_HUB_OFFLINE is set"``), or ``None``.

    Args:
        environ: the environment to read (``None``: ``os.environ``, at call time).

    Raises:
        ValueError: ``ARN_OFFLINE`` holds something else than a boolean word.
    """
    env = os.environ if environ is None else environ
    value = env.get(OFFLINE_ENV, "").strip().lower()
    if value not in _TRUE | _FALSE:
        raise ValueError(
            f"Expected {OFFLINE_ENV} to be one of {sorted(_TRUE)} (offline) or {sorted(_FALSE - {''})} (online) "
            f"but got {env.get(OFFLINE_ENV)!r}"
        )
    if value in _TRUE:
        return f"{OFFLINE_ENV} is set"
    if env.get(HF_OFFLINE_ENV, "").strip().lower() in _TRUE:
        return f"{HF_OFFLINE_ENV} is set"
    return None


def is_offline(environ: Mapping[str, str] | None = None) -> bool:
    """True when ``ARN_OFFLINE`` or ``HF_HUB_OFFLINE`` switches downloads off (see :func:`offline_reason`)."""
    return offline_reason(environ) is not None


def _seconds(
    value: float | None, argument: str, variable: str, default: float, environ: Mapping[str, str] | None
) -> float:
    """``value`` (the function argument named ``argument``) if given, else the environment variable ``variable``,
    else ``default``; a finite number > 0.

    Raises:
        ValueError: the value is not a finite number > 0 (naming ``argument`` or ``variable``, where it came from).
    """
    env = os.environ if environ is None else environ
    source = argument
    if value is None and env.get(variable, "").strip():
        source, raw = variable, env[variable]
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"Expected {variable} to be a number of seconds but got {raw!r}") from None
    seconds = default if value is None else float(value)
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"Expected {source} to be a finite number of seconds > 0 but got {value!r}")
    return seconds


def download_timeout_s(timeout_s: float | None = None, environ: Mapping[str, str] | None = None) -> float:
    """The download timeout in seconds: ``timeout_s`` if given, else ``ARN_DOWNLOAD_TIMEOUT``, else 10.

    Raises:
        ValueError: the value is not a finite number > 0 (naming ``ARN_DOWNLOAD_TIMEOUT`` when it came from there).
    """
    return _seconds(timeout_s, "timeout_s", TIMEOUT_ENV, DEFAULT_TIMEOUT_S, environ)


def download_deadline_s(deadline_s: float | None = None, environ: Mapping[str, str] | None = None) -> float:
    """The time a whole download may take in seconds: ``deadline_s`` if given, else ``ARN_DOWNLOAD_DEADLINE``, else
    1800.

    Raises:
        ValueError: the value is not a finite number > 0 (naming ``ARN_DOWNLOAD_DEADLINE`` when it came from there).
    """
    return _seconds(deadline_s, "deadline_s", DEADLINE_ENV, DEFAULT_DEADLINE_S, environ)


def weights_url(url: str, file_name: str, environ: Mapping[str, str] | None = None) -> str:
    """``url``, or ``$ARN_WEIGHTS_URL/<file_name>`` when that mirror is set."""
    env = os.environ if environ is None else environ
    base = env.get(MIRROR_ENV, "").strip()
    return f"{base.rstrip('/')}/{file_name}" if base else url


def hash_prefix(file_name: str) -> str | None:
    """The sha256 prefix a torch.hub-style file name carries (``resnet50-0676ba61.pth`` -> ``"0676ba61"``), or None."""
    match = HASH_REGEX.search(file_name)
    return match.group(1) if match else None


def _unavailable(what: str, path: Path, url: str, reason: str, hint: str) -> WeightsUnavailable:
    return WeightsUnavailable(
        redact(  # a mirror URL may hold a password or a token: masked (arn_lightning.redact)
            f"Expected {what} in {path} but the file is not there and {reason}. Download {url} on a machine with "
            f"network and place it in the folder {path.parent} under the file name {path.name}{hint}.",
            url,
        )
    )


def sweep_stale_downloads(folder: str | Path) -> list[Path]:
    """Remove the temporary files of downloads into ``folder`` whose process is gone (killed by SIGKILL, which no
    handler sees); those of running processes are kept (:func:`arn_lightning.atomic.sweep_stale_temporaries`).

    Returns:
        The files removed.
    """
    removed = sweep_stale_temporaries(folder)
    for tmp in removed:
        log.info("removed %s, the temporary file of an interrupted download", tmp)
    return removed


@contextlib.contextmanager
def _temporary_download(path: Path) -> Iterator[Path]:
    """A temporary file beside ``path`` named after this process, removed on an exception (Ctrl-C included) and on
    SIGTERM / SIGHUP where those would end the process at once (their default action): the handler removes it, then
    restores the default and raises the signal again. A handler the program installed itself (a training run's) is
    left in place: the process goes on, and the download ends through the exception path."""
    tmp = temporary_path(path)
    replaced: dict[int, Any] = {}

    def remove_then_pass_on(signum: int, frame: Any) -> None:
        tmp.unlink(missing_ok=True)
        signal.signal(signum, replaced.pop(signum))
        signal.raise_signal(signum)

    if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread only
        for signum in (signal.SIGTERM, signal.SIGHUP):
            if signal.getsignal(signum) is signal.SIG_DFL:
                replaced[signum] = signal.SIG_DFL
                signal.signal(signum, remove_then_pass_on)
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        for signum, previous in replaced.items():
            signal.signal(signum, previous)


def download_file(
    url: str, path: str | Path, timeout_s: float, sha256_prefix: str | None = None, deadline_s: float | None = None
) -> Path:
    """Stream ``url`` into ``path`` atomically; no partial file is ever left under ``path``, and no temporary file
    outlives the process (module docstring).

    Args:
        url: http(s) URL (the proxy variables of the environment at call time apply, as for ``urllib``).
        path: destination file; its folder is created.
        timeout_s: seconds allowed for the connection and for every read (a stalled transfer fails after that).
        sha256_prefix: leading hex digits the file's sha256 must have (``None``: not checked).
        deadline_s: seconds the whole transfer may take (``None``: :func:`download_deadline_s`); checked after every
            read, so a download fails at most ``timeout_s`` after it.

    Returns:
        ``path``.

    Raises:
        OSError: no connection, no answer within ``timeout_s`` (``TimeoutError``), past the deadline
            (:class:`DeadlineExceeded`), an HTTP error status, a short body.
        http.client.HTTPException: a malformed answer.
        ValueError: the sha256 of the received bytes does not start with ``sha256_prefix``.
    """
    path = Path(path)
    deadline_s = download_deadline_s(deadline_s)
    deadline = time.monotonic() + deadline_s
    digest = hashlib.sha256()
    received = 0
    opener = urllib.request.build_opener()  # reads the proxy variables now (urlopen's opener keeps the first ones)
    with opener.open(url, timeout=timeout_s) as response, _temporary_download(path) as tmp:
        length = response.headers.get("Content-Length")
        with open(tmp, "wb") as handle:
            while chunk := response.read1(CHUNK_BYTES):  # one socket read at most: returns what has arrived
                handle.write(chunk)
                digest.update(chunk)
                received += len(chunk)
                if time.monotonic() > deadline:
                    raise DeadlineExceeded(
                        redact(
                            f"Expected {url} within the deadline of {deadline_s:g} s ({DEADLINE_ENV}) but got only "
                            f"{received} of {length or 'unknown'} bytes by then"
                        )
                    )
        if length is not None and received != int(length):
            raise OSError(redact(f"Expected {length} bytes from {url} but got {received} (connection closed early)"))
        if sha256_prefix and not digest.hexdigest().startswith(sha256_prefix.lower()):
            raise ValueError(
                redact(
                    f"Expected the sha256 of {url} to start with {sha256_prefix} (as its file name {path.name} says) "
                    f"but got {digest.hexdigest()}"
                )
            )
        commit(tmp, path)
    return path


def fetch_weights(
    url: str,
    folder: str | Path,
    file_name: str | None = None,
    *,
    what: str = "a weight file",
    timeout_s: float | None = None,
    sha256_prefix: str | None = None,
    check_hash: bool = True,
    hint: str = "",
    deadline_s: float | None = None,
) -> Path:
    """The local path of a weight file: ``<folder>/<file_name>`` if present, else downloaded there first.

    Args:
        url: official URL of the file (``$ARN_WEIGHTS_URL/<file_name>`` replaces it when set).
        folder: where the file lives (created when downloading), e.g. ``torch.hub.get_dir()/checkpoints``.
        file_name: name of the file in ``folder`` (``None``: the last component of ``url``).
        what: description of the file for the error message ("the ImageNet weights of resnet50").
        timeout_s: seconds without an answer before failing (``None``: ``ARN_DOWNLOAD_TIMEOUT``, else 10).
        sha256_prefix: expected leading sha256 hex digits of a download (``None``: taken from a torch.hub-style file
            name when ``check_hash``).
        check_hash: verify a download against ``sha256_prefix`` / the file name's hash. A file already on disk is
            used as it is (as torch.hub does), so a file placed by hand need not match.
        hint: appended to the error message (another way to provide the weights).
        deadline_s: seconds the whole download may take (``None``: ``ARN_DOWNLOAD_DEADLINE``, else 1800).

    Returns:
        The path of the file on disk.

    Raises:
        WeightsUnavailable: the file is absent and offline mode is on (no connection is attempted), or the download
            failed (no answer within the timeout, past the deadline, connection or HTTP error, hash mismatch); the
            message names the file, the folder to place it in and the URL.
        ValueError: a bad ``ARN_OFFLINE`` / ``ARN_DOWNLOAD_TIMEOUT`` / ``ARN_DOWNLOAD_DEADLINE`` value.
    """
    file_name = file_name or os.path.basename(url.split("?", 1)[0])
    if not file_name:
        raise ValueError(redact(f"Expected a URL ending in a file name (or a file_name) but got {url!r}", url))
    path = Path(folder).expanduser() / file_name
    if path.is_file():
        return path
    source = weights_url(url, file_name)
    reason = offline_reason()
    if reason:
        raise _unavailable(what, path, source, f"{reason} (no download attempted)", hint)
    timeout, deadline = download_timeout_s(timeout_s), download_deadline_s(deadline_s)
    expected = sha256_prefix or (hash_prefix(file_name) if check_hash else None)
    log.info("downloading %s to %s (timeout %.1f s)", mask_url(source), path, timeout)
    sweep_stale_downloads(path.parent)
    try:
        return download_file(source, path, timeout, expected if check_hash else None, deadline)
    except (OSError, http.client.HTTPException, ValueError) as error:
        cause = error.reason if isinstance(error, urllib.error.URLError) else error  # a connect timeout is wrapped
        if isinstance(cause, DeadlineExceeded):
            raise _unavailable(what, path, source, f"{cause}", hint) from error
        if isinstance(cause, TimeoutError):
            raise _unavailable(what, path, source, f"{source} gave no answer within {timeout:g} s", hint) from error
        raise _unavailable(
            what, path, source, f"the download failed ({type(error).__name__}: {error})", hint
        ) from error


__all__ = [
    "DEADLINE_ENV",
    "DEFAULT_DEADLINE_S",
    "DEFAULT_TIMEOUT_S",
    "DeadlineExceeded",
    "HF_OFFLINE_ENV",
    "MIRROR_ENV",
    "OFFLINE_ENV",
    "TIMEOUT_ENV",
    "WeightsUnavailable",
    "download_deadline_s",
    "download_file",
    "download_timeout_s",
    "fetch_weights",
    "hash_prefix",
    "is_offline",
    "offline_reason",
    "sweep_stale_downloads",
    "weights_url",
]
