"""``arn-lightning export``: a checkpoint as an ONNX model of its streaming step, runnable without the model code, or
as a model folder to share (safetensors weights, settings, model card; optionally pushed to the Hugging Face Hub).

Examples::

    arn-lightning export --checkpoint last.ckpt --format onnx --out model.onnx --window 4
    arn-lightning export --checkpoint last.ckpt --format safetensors --out my-arn --push-to-hub me/my-arn

writes ``model.onnx`` (the graph, dynamic image size) and ``model.json`` (its settings: preprocessing, post-process,
triplet categories, input / output names), both atomically; run them with
:class:`~arn_lightning.inference.onnx_predictor.OnnxStreamingPredictor`. See
:mod:`arn_lightning.inference.onnx_export` for what the graph holds and what it leaves to the runner, and
:mod:`arn_lightning.training.model_folder` for the model folder (``--checkpoint`` of ``--format onnx`` may be such a
folder or ``hf://owner/name``). Exit codes:
0 done, 1 an unreadable checkpoint, an existing output (without ``--overwrite``) or a failed export (the message
names the file), 2 bad arguments (including a window the checkpoint's model cannot take).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

PROG = "arn-lightning export"
DESCRIPTION = (
    "onnx: export the streaming step of an SGDet checkpoint (one frame plus a cache of the previous frames' encoder "
    "features) to ONNX, with a JSON of its settings beside it (model.onnx -> model.json). Run it with "
    "arn_lightning.inference.onnx_predictor.OnnxStreamingPredictor. Needs pip install 'arn-lightning[onnx]'. "
    "safetensors: write a model folder to share (model.safetensors, config.json, a README.md model card), which "
    "every command taking a checkpoint also takes; --push-to-hub uploads it (pip install 'arn-lightning[hub]')."
)
FORMATS = ("onnx", "safetensors")
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
    parser.add_argument(
        "--checkpoint",
        required=True,
        help="Lightning checkpoint of an ARNLitModule (onnx: SGDet; also a model folder or hf://owner/name)",
    )
    parser.add_argument("--format", choices=FORMATS, default="onnx", help="export format (default: %(default)s)")
    parser.add_argument(
        "--out", type=Path, required=True, help="the model file (onnx, e.g. model.onnx) or folder (safetensors)"
    )
    parser.add_argument(
        "--window",
        type=_positive_int,
        default=None,
        help="frames of temporal context including the new one, 1..T (default: the model's T)",
    )
    parser.add_argument("--opset", type=_positive_int, default=None, help="ONNX opset, 18 or more (default: torch's)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.add_argument(
        "--metrics", type=Path, default=None, help="safetensors: the metrics_test.json of the card (default: found)"
    )
    parser.add_argument("--push-to-hub", metavar="REPO_ID", default=None, help="safetensors: upload to owner/name")
    parser.add_argument("--private", action="store_true", help="with --push-to-hub: create a private repository")
    return parser


def _size(num_bytes: int) -> str:
    return f"{num_bytes / 2**20:.1f} MiB" if num_bytes >= 2**20 else f"{num_bytes / 1024:.1f} KiB"


def _check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse options of the other format (exit code 2)."""
    if args.format == "safetensors" and (args.window is not None or args.opset is not None):
        parser.error("--window and --opset belong to --format onnx (a model folder keeps the whole model)")
    if args.format == "onnx" and (args.push_to_hub or args.metrics or args.private):
        parser.error("--push-to-hub, --private and --metrics belong to --format safetensors")


def _export_folder(args: argparse.Namespace) -> int:
    """``--format safetensors``: write the folder, print it, push it when asked."""
    from arn_lightning.training.model_folder import export_model_folder
    from arn_lightning.weights.hub import push_model_folder

    report = export_model_folder(args.checkpoint, args.out, metrics=args.metrics, overwrite=args.overwrite)
    print(f"{PROG}: wrote the model folder {report.folder}")
    for name, size in report.sizes.items():
        print(f"  {name}: {_size(size)}")
    print(f"  model card from: run {report.run or 'not found'}, metrics {report.metrics or 'not found'}")
    if args.push_to_hub:
        url = push_model_folder(report.folder, args.push_to_hub, private=args.private)
        print(
            f"{PROG}: pushed to https://huggingface.co/{args.push_to_hub} ({url}); load it as hf://{args.push_to_hub}"
        )
    return 0


def _export_onnx(args: argparse.Namespace) -> int:
    """``--format onnx``: export and print the report."""
    from arn_lightning.inference.onnx_export import export_onnx

    report = export_onnx(args.checkpoint, args.out, window=args.window, opset=args.opset, overwrite=args.overwrite)
    cache = "with a cache" if report.cache else "without a cache"
    print(f"{PROG}: wrote {report.model_path} ({_size(report.model_bytes)}, opset {report.opset})")
    print(f"{PROG}: wrote {report.settings_path} ({_size(report.settings_bytes)})")
    print(f"  window: {report.window} ({cache}), export took {report.seconds:.1f} s")
    print(f"  inputs: {', '.join(report.input_names)}")
    print(f"  outputs: {', '.join(report.output_names)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the command on ``argv``; returns the exit code (0 ok, 1 error, 2 bad arguments)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_arguments(parser, args)
    from arn_lightning.inference.onnx_export import ExportArgumentError

    try:
        return _export_folder(args) if args.format == "safetensors" else _export_onnx(args)
    except ExportArgumentError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except (ValueError, OSError, RuntimeError, ImportError) as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
