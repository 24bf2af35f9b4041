"""``arn-lightning dump-frames --videos DIR --root DIR [--keys frame_list.txt]``: annotated frames to PNG.

Frames are numbered like the Action Genome toolkit's ``ffmpeg -i <video> <dir>/%06d.png``: 1-based decode order,
turned upright by the display rotation (see ``docs/frames.md``). Exit codes: 0 every frame is on disk, 1 a video
failed (each listed with its reason on stderr) or the keys / annotations are unusable, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import sys

from arn_lightning.data.ag import AnnotationError
from arn_lightning.data.frames import DEFAULT_PNG_LEVEL, dump_frames, load_annotated_frames

PROG = "arn-lightning dump-frames"


def build_parser() -> argparse.ArgumentParser:
    """The command's argument parser."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Decode the annotated frames of the Charades videos (PyAV) into "
        "<root>/frames/<VID>.mp4/<NNNNNN>.png with the Action Genome toolkit's numbering: NNNNNN is the "
        "1-based position in decode order (000001.png is the first frame, as ffmpeg's %06d.png names "
        "it) and frames are turned upright by the video's display rotation. Frames whose size differs "
        "from bbox_size in annotations/person_bbox.pkl are reported and not written. Resumable: frames "
        "already written are skipped. Exits with status 1 and lists the videos that failed, with the "
        "reason; a failed video leaves no empty folder. See docs/frames.md.",
    )
    parser.add_argument("--videos", required=True, help="folder with the <VID>.mp4 files")
    parser.add_argument("--root", required=True, help="dataset root (frames go to <root>/frames)")
    parser.add_argument(
        "--keys",
        default=None,
        help="file with one frame key per line (default: the key set of "
        "annotations/person_bbox.pkl, else annotations/frame_list.txt)",
    )
    parser.add_argument("--workers", type=int, default=1, help="parallel decoding processes (default 1)")
    parser.add_argument(
        "--png-level",
        type=int,
        default=DEFAULT_PNG_LEVEL,
        choices=range(10),
        metavar="0-9",
        help=f"PNG zlib level (default {DEFAULT_PNG_LEVEL})",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def main(argv: list[str]) -> int:
    """Dump the frames; exit code 1 when a video failed or the keys are unusable."""
    args = build_parser().parse_args(argv)
    try:
        keys, sizes = load_annotated_frames(args.root, args.keys)
        report = dump_frames(
            args.videos,
            args.root,
            keys,
            workers=args.workers,
            png_level=args.png_level,
            progress=not args.no_progress,
            sizes=sizes,
        )
    except (FileNotFoundError, AnnotationError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    print(
        f"{report.written} frame(s) written, {report.skipped} already present, "
        f"{len(report.failures)} video(s) failed, {len(report.warnings)} warning(s)"
    )
    for video, note in sorted(report.warnings.items()):
        print(f"  WARNING {video}: {note}", file=sys.stderr)
    for video, reason in sorted(report.failures.items()):
        print(f"  FAILED {video}: {reason}", file=sys.stderr)
    return 1 if report.failures else 0
