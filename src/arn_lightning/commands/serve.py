"""``arn-lightning serve``: the local web app (docs/app.md) on Gradio (``pip install -e '.[app]'``).

Example::

    arn-lightning serve --checkpoint last.ckpt --runs runs --root data/ag

then open http://127.0.0.1:7860. Bound to 127.0.0.1 unless ``--host`` says otherwise; binding beyond this machine
needs ``--auth`` / ``--auth-file`` (Gradio's login) or ``--allow-unauthenticated``, and the start line says which
(:mod:`arn_lightning.app.access`). The app reads only the ``--checkpoint`` file, what lies under ``--runs`` and
``--root``, and each session's own files. Gradio's analytics are off and no font or asset is fetched from the
internet. Every session writes into its own temporary folder, removed when the session's tab closes; uploads expire
(``--upload-ttl-minutes``) and their total is capped (``--max-uploads-mb``); the server's temporary root is removed
at every stop: Ctrl-C (SIGINT), SIGTERM, SIGHUP and the end of the process. Exit codes: 0 stopped, 1 gradio missing
or the server could not start, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import atexit
import importlib.util
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from types import FrameType

from arn_lightning.app.access import (
    DEFAULT_MAX_UPLOADS_MB,
    DEFAULT_UPLOAD_TTL_MINUTES,
    AccessError,
    UploadLimits,
    check_exposure,
    parse_credentials,
    read_auth_file,
)

PROG = "arn-lightning serve"
#: Defaults (the same numbers as :mod:`arn_lightning.app.logic`, kept here so that --help imports nothing).
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
DEFAULT_MAX_UPLOAD_MB = 200
DEFAULT_MAX_SECONDS = 120.0
MISSING_GRADIO = (
    f"{PROG}: error: the web app needs gradio and networkx, which are not installed; "
    "install the extra with: pip install -e '.[app]'"
)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer but got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number but got {text}")
    return value


def _add_access_arguments(parser: argparse.ArgumentParser) -> None:
    """``--auth``, ``--auth-file`` and ``--allow-unauthenticated`` (:func:`arn_lightning.app.access.check_exposure`)."""
    access = parser.add_argument_group("who may connect (docs/app.md, 'Exposing it safely')")
    access.add_argument(
        "--auth",
        action="append",
        default=[],
        metavar="USER:PASSWORD",
        help="require Gradio's login with this user (repeatable; prefer --auth-file: a command line is visible to "
        "other users of the machine)",
    )
    access.add_argument("--auth-file", type=Path, default=None, help="one USER:PASSWORD per line (# comments)")
    access.add_argument(
        "--allow-unauthenticated",
        action="store_true",
        help="serve beyond this machine (--host) without a login: anyone who reaches the port can use the app",
    )


def build_parser() -> argparse.ArgumentParser:
    """The command's argument parser."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="A local web app to explore scene graphs: run a video, open an `infer` output (also while "
        "`infer --stream` writes it), compare a prediction file with an Action Genome root (docs/app.md).",
    )
    parser.add_argument("--checkpoint", type=Path, default=None, help="the default checkpoint of the Run tab")
    parser.add_argument("--runs", type=Path, default=None, help="a folder whose *.ckpt files are offered too")
    parser.add_argument("--root", type=Path, default=None, help="default Action Genome root of the Compare tab")
    parser.add_argument(
        "--host", default=DEFAULT_HOST, help="address to bind (default: %(default)s, this machine only)"
    )
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (default: %(default)s)")
    parser.add_argument(
        "--max-upload-mb",
        type=_positive_int,
        default=DEFAULT_MAX_UPLOAD_MB,
        help="largest upload (default: %(default)s MB)",
    )
    parser.add_argument(
        "--max-seconds",
        type=_positive_float,
        default=DEFAULT_MAX_SECONDS,
        help="longest video accepted, in seconds (default: %(default)s)",
    )
    parser.add_argument(
        "--upload-ttl-minutes",
        type=_positive_float,
        default=DEFAULT_UPLOAD_TTL_MINUTES,
        help="an upload is removed this long after it arrived (default: %(default)s minutes)",
    )
    parser.add_argument(
        "--max-uploads-mb",
        type=_positive_int,
        default=DEFAULT_MAX_UPLOADS_MB,
        help="total of the uploads kept; beyond it the oldest are removed first (default: %(default)s MB)",
    )
    _add_access_arguments(parser)
    return parser


def gradio_available() -> bool:
    """Whether the ``app`` extra (gradio, networkx) is installed."""
    return all(importlib.util.find_spec(name) is not None for name in ("gradio", "networkx"))


def credentials(args: argparse.Namespace) -> list[tuple[str, str]]:
    """The logins of ``--auth`` and ``--auth-file`` (raises :class:`AccessError`)."""
    found = parse_credentials(args.auth, "--auth value {}")
    return found + (read_auth_file(args.auth_file) if args.auth_file is not None else [])


def _stop_on_signals() -> None:
    """SIGINT, SIGTERM and SIGHUP stop the server as Ctrl-C does (Gradio's wait loop ends on KeyboardInterrupt, then
    the ``finally`` blocks remove the temporary root). SIGINT is set too: a process started in the background of a
    non-interactive shell (``cmd &`` in a script) inherits SIGINT ignored, and Python then keeps it ignored."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, interrupt)


def main(argv: list[str] | None = None) -> int:
    """Serve until Ctrl-C, SIGTERM or SIGHUP; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        logins = credentials(args)
        exposure = check_exposure(args.host, logins, args.allow_unauthenticated)
    except AccessError as error:
        parser.exit(2, f"{PROG}: error: {error}\n")
    if not gradio_available():
        print(MISSING_GRADIO, file=sys.stderr)
        return 1
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    temp_root = Path(tempfile.mkdtemp(prefix="arn-lightning-app-"))
    atexit.register(shutil.rmtree, temp_root, ignore_errors=True)  # the end of the process, whatever ends it
    _stop_on_signals()
    try:
        return _serve(args, temp_root, logins, exposure)
    except KeyboardInterrupt:  # a stop before the server was up
        return 0
    finally:
        shutil.rmtree(temp_root, ignore_errors=True)


def _serve(args: argparse.Namespace, temp_root: Path, logins: list[tuple[str, str]], exposure: str) -> int:
    from arn_lightning.app.ui import AppSettings, build_app, launch

    limits = UploadLimits(args.upload_ttl_minutes * 60, args.max_uploads_mb * 1_000_000)
    settings = AppSettings(
        args.checkpoint, args.runs, args.root, args.max_upload_mb, args.max_seconds, temp_root, limits
    )
    demo, context = build_app(settings)
    print(f"{PROG}: http://{args.host}:{args.port} (temporary files in {context.temp_root}; Ctrl-C stops)")
    print(f"{PROG}: {exposure}", flush=True)
    try:
        launch(demo, context, args.host, args.port, block=True, auth=logins or None)
    except KeyboardInterrupt:
        pass
    except OSError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 1
    finally:
        context.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
