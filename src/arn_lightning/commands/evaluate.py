"""``arn-lightning evaluate``: score a saved prediction file (R@K / mR@K) against the annotations of an AG root.

The scoring, its rules (missing frames, malformed lines, the box rule, both IoU conventions) and the report's keys
are :mod:`arn_lightning.metrics.scoring`; this command parses the arguments and prints the report: a table in
percent (rows with / semi / no, columns R@K and mR@K), or with ``--json`` the report with fractions in ``[0, 1]``.
A malformed line exits with code 2, naming its line number on stderr.

Example:
    arn-lightning evaluate --root data/ag --predictions outputs/test_predictions.jsonl --task sgdet --json
"""

from __future__ import annotations

import argparse
import json
import sys

from arn_lightning.data.ag import DEFAULT_MIN_FRAMES, SPLITS, TASKS, AnnotationError
from arn_lightning.metrics.functional import IOU_CONVENTIONS
from arn_lightning.metrics.predictions import PredictionFileError
from arn_lightning.metrics.scoring import evaluate, format_table


def build_parser() -> argparse.ArgumentParser:
    """The command's argument parser."""
    parser = argparse.ArgumentParser(
        prog="arn-lightning evaluate",
        description="Score a JSON Lines prediction file (docs/action_genome.md section 4) against the annotations of "
        "an Action Genome root: R@K and mR@K for with / semi / no constraint.",
    )
    parser.add_argument("--root", required=True, help="dataset root (with annotations/)")
    parser.add_argument("--predictions", required=True, help="prediction file (.jsonl or .jsonl.gz), one frame a line")
    parser.add_argument("--split", choices=SPLITS, default="test", help="split to score (default: test)")
    parser.add_argument("--task", choices=TASKS, default="sgdet", help="task filtering (default: sgdet)")
    parser.add_argument(
        "--iou-threshold",
        type=float,
        default=0.5,
        help="IoU needed on both the subject and the object box (default: 0.5, the standard)",
    )
    parser.add_argument(
        "--iou",
        choices=IOU_CONVENTIONS,
        default="continuous",
        help="IoU convention: continuous (torchvision) or legacy (+1 pixel) (default: continuous); "
        "either way two equal boxes have IoU 1, zero-area ones included (docs/boxes.md)",
    )
    parser.add_argument(
        "--min-frames",
        type=int,
        default=DEFAULT_MIN_FRAMES,
        help=f"minimum kept frames per video (default: {DEFAULT_MIN_FRAMES})",
    )
    parser.add_argument(
        "--triplet-nms",
        type=float,
        default=None,
        metavar="THRESHOLD",
        help="also score after the test-time triplet NMS of this overlap threshold in (0, 1] (OED's: 0.9; default: "
        "off): a lower triplet of the same classes and predicate goes when IoU(sub)^alpha * IoU(obj)^beta > THRESHOLD",
    )
    parser.add_argument("--triplet-nms-alpha", type=float, default=1.0, help="NMS exponent of the subject IoU (1)")
    parser.add_argument("--triplet-nms-beta", type=float, default=1.0, help="NMS exponent of the object IoU (1)")
    parser.add_argument("--json", action="store_true", help="print one JSON object (fractions) instead of a table")
    return parser


def main(argv: list[str]) -> int:
    """Print the scores; exit code 2 with the error on stderr for a malformed file or annotations."""
    args = build_parser().parse_args(argv)
    try:
        report = evaluate(
            args.root,
            args.predictions,
            args.split,
            args.task,
            args.iou,
            args.min_frames,
            args.iou_threshold,
            args.triplet_nms,
            args.triplet_nms_alpha,
            args.triplet_nms_beta,
        )
    except (PredictionFileError, AnnotationError, OSError, ValueError) as error:
        print(f"arn-lightning evaluate: error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(report) if args.json else format_table(report))
    return 0
