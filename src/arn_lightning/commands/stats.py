"""``arn-lightning stats --root DIR [--task sgdet|sgcls|predcls] [--json]``: statistics of an AG-format root.

The pickles are read without running code (a restricted unpickler); a used box breaking the box rule of
``docs/boxes.md`` is an error naming the file, the frame key and the object, one in a frame dropped anyway is counted
under ``boxes.invalid_ignored`` (``docs/stats.md``).
"""

from __future__ import annotations

import argparse
import json
import sys

from arn_lightning.data.ag import DEFAULT_MIN_FRAMES, TASKS, AnnotationError, load_annotations
from arn_lightning.data.stats import dataset_stats, format_stats


def build_parser() -> argparse.ArgumentParser:
    """The command's argument parser."""
    parser = argparse.ArgumentParser(
        prog="arn-lightning stats",
        description="Videos and frames per split, kept and dropped by reason, objects per class and predicate "
        "counts (head to tail) of an Action Genome root after the task's standard filtering, and the "
        "invalid boxes of dropped frames (docs/boxes.md). The JSON keys are described in docs/stats.md.",
    )
    parser.add_argument("--root", required=True, help="dataset root (with annotations/)")
    parser.add_argument("--task", choices=TASKS, default="sgdet", help="filtering of this task (default: sgdet)")
    parser.add_argument(
        "--min-frames",
        type=int,
        default=DEFAULT_MIN_FRAMES,
        help=f"minimum kept frames per video (default: {DEFAULT_MIN_FRAMES})",
    )
    parser.add_argument(
        "--filter-small",
        type=float,
        default=None,
        help="minimum object box side in px (default: 16 for sgdet/sgcls, 0 for predcls)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    return parser


def main(argv: list[str]) -> int:
    """Print the statistics; exit code 1 with the error on malformed data."""
    args = build_parser().parse_args(argv)
    try:
        annotations = load_annotations(args.root, args.task, args.min_frames, args.filter_small)
    except (AnnotationError, ValueError) as exc:
        print(f"arn-lightning stats: error: {exc}", file=sys.stderr)
        return 1
    stats = dataset_stats(annotations)
    print(json.dumps(stats, indent=2) if args.json else format_stats(stats))
    return 0
