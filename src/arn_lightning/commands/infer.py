"""``arn-lightning infer``: scene graphs for any video or frame folder, with an annotated video and a timeline.

Example::

    arn-lightning infer --checkpoint last.ckpt --input my_video.mp4 --out my_graphs --fps 2 --top-k 10

writes ``my_graphs/scene_graphs.jsonl`` (one line per sampled frame), ``my_graphs/annotated.mp4`` and
``my_graphs/timeline.png`` (plus ``my_graphs/frames/*.png`` with ``--save-frames``), all or nothing. Exit codes:
0 done, 1 an unreadable input, checkpoint or output folder (the message names the file), 2 bad arguments.

Each line's ``frame`` key is ``<video file name>/<NNNNNN>.png`` with the frame's 1-based number in decode order and
``frame_index`` that number, exactly as ``arn-lightning dump-frames`` and the Action Genome toolkit number frames
(``docs/frames.md``), so the predictions of an AG video carry AG keys; for a folder the key is
``<folder name>/<file name>``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# the parser needs only these constants: torch, PyAV and the model are imported by `run`, so --help is instant
from arn_lightning.inference.defaults import DEFAULT_FPS, DEFAULT_THRESHOLD, DEFAULT_TOP_K, PRECISIONS

PROG = "arn-lightning infer"
DESCRIPTION = (
    "Scene graphs for any video or frame folder: one JSON line per sampled frame, an annotated video "
    "and a relation timeline, written all or nothing. Frame keys are <video>/<NNNNNN>.png with the 1-based "
    "frame number in decode order (as dump-frames and the Action Genome toolkit number them), or "
    "<folder>/<file name> for a folder."
)
EXIT_ERROR = 1


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number but got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer but got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The command's argument parser."""
    parser = argparse.ArgumentParser(prog=PROG, description=DESCRIPTION)
    parser.add_argument("--checkpoint", type=Path, required=True, help="Lightning checkpoint of an ARNLitModule")
    parser.add_argument(
        "--input", type=Path, required=True, help="a video file (mp4, avi, mkv, ...) or a folder of images"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder (default: <input name without suffix>_scene_graphs next to the input)",
    )
    parser.add_argument(
        "--fps",
        type=_positive_float,
        default=DEFAULT_FPS,
        help="frames sampled per second of video (Action Genome annotates about 1-2 per second); "
        "for a folder, the rate of its images (default: %(default)s)",
    )
    parser.add_argument(
        "--top-k", type=_positive_int, default=DEFAULT_TOP_K, help="triplets kept per frame (default: %(default)s)"
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=DEFAULT_THRESHOLD,
        help="lowest triplet score kept, subject x object x predicate score (default: %(default)s)",
    )
    parser.add_argument(
        "--causal",
        action="store_true",
        help="predict each frame from itself and the previous frames only (T times the compute)",
    )
    parser.add_argument(
        "--batch-size", type=_positive_int, default=1, help="clips per forward pass (default: %(default)s)"
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: %(default)s)")
    parser.add_argument(
        "--precision", choices=PRECISIONS, default="auto", help="auto: bf16 autocast on GPU, fp32 on CPU"
    )
    parser.add_argument("--save-frames", action="store_true", help="also write every annotated frame as a PNG")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing, non-empty output folder")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def default_out(input_path: Path) -> Path:
    """``<input name without suffix>_scene_graphs`` next to the input."""
    return input_path.parent / f"{input_path.stem or input_path.name}_scene_graphs"


def run(args: argparse.Namespace) -> Path:
    """Predict and write every output; returns the output folder (raises on any error, leaving nothing behind)."""
    from arn_lightning.inference.api import load_model
    from arn_lightning.inference.output import staged_directory, write_inference
    from arn_lightning.inference.video import open_frames

    out = args.out or default_out(args.input)
    source = open_frames(args.input, args.fps)
    with staged_directory(out, overwrite=args.overwrite) as staging:
        predictor = load_model(args.checkpoint, device=args.device, precision=args.precision)
        write_inference(
            predictor,
            source,
            staging,
            causal=args.causal,
            batch_size=args.batch_size,
            top_k=args.top_k,
            threshold=args.threshold,
            save_frames=args.save_frames,
            progress=not args.quiet,
        )
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the command on ``argv``; returns the exit code (0 ok, 1 error, 2 bad arguments)."""
    args = build_parser().parse_args(argv)
    try:
        out = run(args)
    except (ValueError, OSError) as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return EXIT_ERROR
    print(f"{PROG}: wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
