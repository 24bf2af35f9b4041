"""``arn-lightning serve``: the local web app (docs/app.md) on Gradio (``pip install -e '.[app]'``).

Example::

    arn-lightning serve --checkpoint last.ckpt --runs runs --root data/ag

then open http://127.0.0.1:7860. Bound to 127.0.0.1 unless ``--host`` says otherwise; Gradio's analytics are off and
no font or asset is fetched from the internet. Every session writes into its own temporary folder, removed when the
session's tab closes; the server's temporary root is removed when it stops (Ctrl-C). Exit codes: 0 stopped, 1 gradio
missing or the server could not start, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path

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
    return parser


def gradio_available() -> bool:
    """Whether the ``app`` extra (gradio, networkx) is installed."""
    return all(importlib.util.find_spec(name) is not None for name in ("gradio", "networkx"))


def main(argv: list[str] | None = None) -> int:
    """Serve until Ctrl-C; returns the exit code."""
    args = build_parser().parse_args(argv)
    if not gradio_available():
        print(MISSING_GRADIO, file=sys.stderr)
        return 1
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from arn_lightning.app.ui import AppSettings, build_app, launch

    settings = AppSettings(args.checkpoint, args.runs, args.root, args.max_upload_mb, args.max_seconds)
    demo, context = build_app(settings)
    print(f"{PROG}: http://{args.host}:{args.port} (temporary files in {context.temp_root}; Ctrl-C stops)")
    try:
        launch(demo, context, args.host, args.port, block=True)
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
