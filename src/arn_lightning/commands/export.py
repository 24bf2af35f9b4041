"""``arn-lightning export``: the streaming step of a checkpoint as an ONNX model, runnable without the model code.

Example::

    arn-lightning export --checkpoint last.ckpt --format onnx --out model.onnx --window 4

writes ``model.onnx`` (the graph, dynamic image size) and ``model.json`` (its settings: preprocessing, post-process,
triplet categories, input / output names), both atomically; run them with
:class:`~arn_lightning.inference.onnx_predictor.OnnxStreamingPredictor`. See
:mod:`arn_lightning.inference.onnx_export` for what the graph holds and what it leaves to the runner. Exit codes:
0 done, 1 an unreadable checkpoint, an existing output (without ``--overwrite``) or a failed export (the message
names the file), 2 bad arguments (including a window the checkpoint's model cannot take).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

PROG = "arn-lightning export"
DESCRIPTION = (
    "Export the streaming step of an SGDet checkpoint (one frame plus a cache of the previous frames' encoder "
    "features) to ONNX, with a JSON of its settings beside it (model.onnx -> model.json). Run it with "
    "arn_lightning.inference.onnx_predictor.OnnxStreamingPredictor. Needs pip install 'arn-lightning[onnx]'."
)
FORMATS = ("onnx",)
EXIT_ERROR = 1
EXIT_USAGE = 2


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer but got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The command's argument parser."""
    parser = argparse.ArgumentParser(prog=PROG, description=DESCRIPTION)
    parser.add_argument("--checkpoint", type=Path, required=True, help="Lightning checkpoint of an SGDet ARNLitModule")
    parser.add_argument("--format", choices=FORMATS, default="onnx", help="export format (default: %(default)s)")
    parser.add_argument("--out", type=Path, required=True, help="the model file to write, e.g. model.onnx")
    parser.add_argument(
        "--window",
        type=_positive_int,
        default=None,
        help="frames of temporal context including the new one, 1..T (default: the model's T)",
    )
    parser.add_argument("--opset", type=_positive_int, default=None, help="ONNX opset, 18 or more (default: torch's)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    return parser


def _size(num_bytes: int) -> str:
    return f"{num_bytes / 2**20:.1f} MiB" if num_bytes >= 2**20 else f"{num_bytes / 1024:.1f} KiB"


def main(argv: list[str] | None = None) -> int:
    """Run the command on ``argv``; returns the exit code (0 ok, 1 error, 2 bad arguments)."""
    args = build_parser().parse_args(argv)
    from arn_lightning.inference.onnx_export import ExportArgumentError, export_onnx

    try:
        report = export_onnx(args.checkpoint, args.out, window=args.window, opset=args.opset, overwrite=args.overwrite)
    except ExportArgumentError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except (ValueError, OSError, RuntimeError, ImportError) as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return EXIT_ERROR
    cache = "with a cache" if report.cache else "without a cache"
    print(f"{PROG}: wrote {report.model_path} ({_size(report.model_bytes)}, opset {report.opset})")
    print(f"{PROG}: wrote {report.settings_path} ({_size(report.settings_bytes)})")
    print(f"  window: {report.window} ({cache}), export took {report.seconds:.1f} s")
    print(f"  inputs: {', '.join(report.input_names)}")
    print(f"  outputs: {', '.join(report.output_names)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
