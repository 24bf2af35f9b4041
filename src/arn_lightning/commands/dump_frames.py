"""``arn-lightning dump-frames --videos DIR --root DIR [--keys frame_list.txt]``: annotated frames to PNG."""

from __future__ import annotations

import argparse
import sys
from typing import List

from arn_lightning.data.ag import AnnotationError
from arn_lightning.data.frames import DEFAULT_PNG_LEVEL, dump_frames, load_frame_keys


def build_parser() -> argparse.ArgumentParser:
    """The command's argument parser."""
    parser = argparse.ArgumentParser(
        prog="arn-lightning dump-frames",
        description="Decode the annotated frames of the Charades videos (PyAV) into "
                    "<root>/frames/<VID>.mp4/<NNNNNN>.png, NNNNNN being the 0-based decoded frame index. Resumable: "
                    "frames already written are skipped. Exits with status 1 and lists the videos that failed.")
    parser.add_argument("--videos", required=True, help="folder with the <VID>.mp4 files")
    parser.add_argument("--root", required=True, help="dataset root (frames go to <root>/frames)")
    parser.add_argument("--keys", default=None,
                        help="file with one frame key per line (default: the key set of "
                             "annotations/person_bbox.pkl, else annotations/frame_list.txt)")
    parser.add_argument("--workers", type=int, default=1, help="parallel decoding processes (default 1)")
    parser.add_argument("--png-level", type=int, default=DEFAULT_PNG_LEVEL, choices=range(10), metavar="0-9",
                        help=f"PNG zlib level (default {DEFAULT_PNG_LEVEL})")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def main(argv: List[str]) -> int:
    """Dump the frames; exit code 1 when a video failed or the keys are unusable."""
    args = build_parser().parse_args(argv)
    try:
        keys = load_frame_keys(args.root, args.keys)
    except (FileNotFoundError, AnnotationError) as exc:
        print(f"arn-lightning dump-frames: error: {exc}", file=sys.stderr)
        return 1
    report = dump_frames(args.videos, args.root, keys, workers=args.workers, png_level=args.png_level,
                         progress=not args.no_progress)
    print(f"{report.written} frame(s) written, {report.skipped} already present, "
          f"{len(report.failures)} video(s) failed")
    for video, reason in sorted(report.failures.items()):
        print(f"  FAILED {video}: {reason}", file=sys.stderr)
    return 1 if report.failures else 0
