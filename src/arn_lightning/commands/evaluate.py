"""``arn-lightning evaluate``: score a saved prediction file (R@K / mR@K) against the annotations of an AG root.

The ground truth is read with the task's standard filtering (:func:`arn_lightning.data.ag.load_annotations`).
Every line of the prediction file must be a frame of the chosen split, once; a frame of the split without a line
scores recall 0 and is reported under ``missing_frames``. Any malformed line is an error naming its line number
(exit code 2, message on stderr), a box that breaks the box rule of ``docs/boxes.md`` (non-finite, ``x2 < x1`` or
``y2 < y1``) included; a ground-truth box breaking it stops the annotation loader, naming the pickle, the frame key and
the object. Degenerate boxes (zero width or height) are valid and match themselves (IoU 1) under both conventions.

Output: a table in percent (rows with / semi / no, columns R@K and mR@K), or with ``--json`` one object with
fractions in ``[0, 1]``::

    {"task": "sgdet", "split": "test", "iou": "continuous", "frames": N,
     "missing_frames": {"count": n, "first": [key, ...]},
     "with": {"R@10": r, ..., "mR@10": r, ..., "mR_per_frame@10": r, ..., "hmean@10": r, ...},
     "semi": {...}, "no": {...},
     "per_predicate": {"looking_at": {"gt_triplets": n, "with": {"R@10": r, ...}, "semi": {...}, "no": {...}}, ...}}

Example:
    arn-lightning evaluate --root data/ag --predictions outputs/test_predictions.jsonl --task sgdet --json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from arn_lightning import vocab
from arn_lightning.data.ag import DEFAULT_MIN_FRAMES, SPLITS, TASKS, AnnotationError, FrameAnnotation, load_annotations
from arn_lightning.metrics.functional import CONSTRAINTS, IOU_CONVENTIONS, K_VALUES
from arn_lightning.metrics.predictions import PREDICTION_FIELDS, PredictionFileError, empty_prediction, iter_predictions
from arn_lightning.metrics.recall import SceneGraphRecall

#: Frames scored per metric update.
CHUNK_FRAMES = 256
#: Missing frame keys listed in the report.
MISSING_SHOWN = 5


def build_parser() -> argparse.ArgumentParser:
    """The command's argument parser."""
    parser = argparse.ArgumentParser(
        prog="arn-lightning evaluate",
        description="Score a JSON Lines prediction file (docs/action_genome.md section 4) against the annotations of "
        "an Action Genome root: R@K and mR@K for with / semi / no constraint.",
    )
    parser.add_argument("--root", required=True, help="dataset root (with annotations/)")
    parser.add_argument("--predictions", required=True, help="prediction file (.jsonl), one frame a line")
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
    parser.add_argument("--json", action="store_true", help="print one JSON object (fractions) instead of a table")
    return parser


def _scored_chunks(
    path: Path, targets: Mapping[str, FrameAnnotation], split: str, task: str
) -> Iterator[tuple[list[dict[str, Any]], list[dict[str, Any]]]]:
    """(predictions, targets) chunks of the file's frames, each line checked against the split."""
    preds: list[dict[str, Any]] = []
    for line, frame, arrays in iter_predictions(path):
        if frame not in targets:
            raise PredictionFileError(
                path, line, f"Expected a frame of the {split} split ({task} filtering) but got {frame!r}"
            )
        preds.append({"frame": frame, **{key: torch.from_numpy(getattr(arrays, key)) for key in PREDICTION_FIELDS}})
        if len(preds) == CHUNK_FRAMES:
            yield preds, [targets[p["frame"]].eval_target() for p in preds]
            preds = []
    if preds:
        yield preds, [targets[p["frame"]].eval_target() for p in preds]


def _nest(results: Mapping[str, torch.Tensor], gt_counts: Sequence[int]) -> dict[str, Any]:
    """The flat metric results as the report's nested sections (floats)."""
    report: dict[str, Any] = {constraint: {} for constraint in CONSTRAINTS}
    per_predicate: dict[str, Any] = {
        name: {"gt_triplets": int(count), **{c: {} for c in CONSTRAINTS}}
        for name, count in zip(vocab.PREDICATES, gt_counts)
    }
    for key, value in results.items():
        parts = key.split("/")
        if parts[0] == "per_predicate":  # per_predicate/<constraint>/R@K/<predicate>
            per_predicate[parts[3]][parts[1]][parts[2]] = value.item()
        else:  # <constraint>/<name>@K
            report[parts[0]][parts[1]] = value.item()
    report["per_predicate"] = per_predicate
    return report


def evaluate(
    root: str,
    predictions: str,
    split: str = "test",
    task: str = "sgdet",
    iou: str = "continuous",
    min_frames: int = DEFAULT_MIN_FRAMES,
    iou_threshold: float = 0.5,
) -> dict[str, Any]:
    """Score ``predictions`` against the ``split`` frames of ``root``; returns the JSON report (module docstring).

    Raises:
        PredictionFileError: a malformed line (a box breaking the box rule included), a frame outside the split or a
            repeated frame (with line number).
        AnnotationError: unreadable annotations (a pickle referencing code, a used box breaking the box rule).
    """
    frames = load_annotations(root, task=task, min_frames=min_frames).frames(split)
    targets = {frame.key: frame for frame in frames}
    metric = SceneGraphRecall(iou_convention=iou, iou_threshold=iou_threshold)
    seen = set()
    for preds, chunk_targets in _scored_chunks(Path(predictions), targets, split, task):
        metric.update(preds, chunk_targets)
        seen.update(p["frame"] for p in preds)
    missing = [frame.key for frame in frames if frame.key not in seen]
    for start in range(0, len(missing), CHUNK_FRAMES):
        keys = missing[start : start + CHUNK_FRAMES]
        metric.update([empty_prediction(key) for key in keys], [targets[key].eval_target() for key in keys])
    report: dict[str, Any] = {
        "task": task,
        "split": split,
        "iou": iou,
        "iou_threshold": iou_threshold,
        "frames": len(frames),
        "missing_frames": {"count": len(missing), "first": missing[:MISSING_SHOWN]},
    }
    report.update(_nest(metric.compute(), metric.gt_counts.tolist()))
    return report


def format_table(report: Mapping[str, Any]) -> str:
    """The report as text tables in percent, like the papers (rows with / semi / no)."""
    missing = report["missing_frames"]
    lines = [
        f"{report['task']} / {report['split']}: {report['frames']} frames, {missing['count']} without "
        f"prediction (scored 0), IoU {report['iou']} >= {report.get('iou_threshold', 0.5)}"
    ]
    if missing["count"]:
        lines.append(
            "  missing: " + ", ".join(missing["first"]) + (" ..." if missing["count"] > len(missing["first"]) else "")
        )
    tables = ((("R", "mR"), "R@K and mR@K (aggregated mR), %"), (("mR_per_frame",), "mR@K, per-frame definition, %"))
    for names, title in tables:
        columns = [(f"{name}@{k}", f"{name.replace('_per_frame', '')}@{k}") for name in names for k in K_VALUES]
        lines += ["", title, f"{'':<6}" + "".join(f"{label:>8}" for _, label in columns)]
        for constraint in CONSTRAINTS:
            lines.append(f"{constraint:<6}" + "".join(f"{100.0 * report[constraint][key]:>8.2f}" for key, _ in columns))
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    """Print the scores; exit code 2 with the error on stderr for a malformed file or annotations."""
    args = build_parser().parse_args(argv)
    try:
        report = evaluate(
            args.root, args.predictions, args.split, args.task, args.iou, args.min_frames, args.iou_threshold
        )
    except (PredictionFileError, AnnotationError, OSError, ValueError) as error:
        print(f"arn-lightning evaluate: error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(report) if args.json else format_table(report))
    return 0
