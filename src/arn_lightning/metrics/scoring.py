"""Scoring of a saved prediction file (R@K / mR@K) against the annotations of an AG root (``arn-lightning evaluate``).

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

The file (``.jsonl``, or ``.jsonl.gz``) is streamed: parsed with orjson, validated and scored
:data:`CHUNK_FRAMES` frames at a time, so memory does not grow with the file's size (it holds the split's
annotations, one chunk and the set of frame keys seen).

Example:
    >>> report = evaluate("data/ag", "outputs/predictions_test.jsonl", task="sgdet")   # doctest: +SKIP
    >>> report["with"]["R@20"]                                                        # doctest: +SKIP
    0.3125
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from arn_lightning import vocab
from arn_lightning.data.ag import DEFAULT_MIN_FRAMES, FrameAnnotation, FrameList, load_annotations
from arn_lightning.metrics.functional import (
    CONSTRAINTS,
    K_VALUES,
    RecallConfig,
    frame_hits,
    recall_from_state,
    state_increment,
    state_shapes,
)
from arn_lightning.metrics.predictions import (
    PredictionBatch,
    PredictionFileError,
    empty_prediction,
    iter_prediction_batches,
)

#: Frames scored per metric update (and validated together when the file is read).
CHUNK_FRAMES = 256
#: Missing frame keys listed in the report.
MISSING_SHOWN = 5


def _scored_chunks(
    path: Path, frames: Sequence[FrameAnnotation], position: Mapping[str, int], split: str, task: str
) -> Iterator[tuple[list[str], PredictionBatch, list[dict[str, Any]]]]:
    """(frames, predictions, targets) chunks of the file, each line checked against the split (``position``: frame
    key -> index in ``frames``; a frame is built only when its chunk is scored)."""
    for numbers, keys, batch in iter_prediction_batches(path, CHUNK_FRAMES):
        for number, key in zip(numbers, keys):
            if key not in position:
                raise PredictionFileError(
                    path, number, f"Expected a frame of the {split} split ({task} filtering) but got {key!r}"
                )
        yield keys, batch, [frames[position[key]].eval_target() for key in keys]


class _State:
    """The integer state of :class:`~arn_lightning.metrics.recall.SceneGraphRecall` (exact sums, so the results are
    the class's), accumulated with numpy: scoring a file needs neither torchmetrics nor its import time."""

    def __init__(self, config: RecallConfig) -> None:
        self.config = config
        self.sums = {name: np.zeros(shape, dtype=np.int64) for name, shape in state_shapes(config).items()}

    def update(self, preds: Any, targets: Sequence[Mapping[str, Any]]) -> None:
        for name, value in state_increment(frame_hits(preds, targets, self.config)).items():
            self.sums[name] += np.asarray(value, dtype=np.int64)

    def compute(self) -> dict[str, torch.Tensor]:
        return recall_from_state({name: torch.from_numpy(value) for name, value in self.sums.items()}, self.config)


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

    Args:
        root: the AG root (``annotations/``).
        predictions: the prediction file, ``.jsonl`` or ``.jsonl.gz``.
        split: ``"train"`` or ``"test"``.
        task: the filtering of the ground truth (``"sgdet"``, ``"sgcls"``, ``"predcls"``).
        iou: ``"continuous"`` or ``"legacy"`` (docs/boxes.md).
        min_frames: minimum kept frames per video (rule 4 of the filtering).
        iou_threshold: IoU needed on both boxes.

    Raises:
        PredictionFileError: a malformed line (a box breaking the box rule included), a frame outside the split or a
            repeated frame (with line number).
        AnnotationError: unreadable annotations (a pickle referencing code, a used box breaking the box rule).
    """
    frames = load_annotations(root, task=task, min_frames=min_frames).frames(split)
    all_keys = frames.keys if isinstance(frames, FrameList) else [frame.key for frame in frames]
    position = {key: index for index, key in enumerate(all_keys)}
    state = _State(RecallConfig(iou_threshold=iou_threshold, iou_convention=iou))
    seen: set[str] = set()
    for keys, batch, chunk_targets in _scored_chunks(Path(predictions), frames, position, split, task):
        state.update(batch, chunk_targets)
        seen.update(keys)
    missing = [key for key in all_keys if key not in seen]
    for start in range(0, len(missing), CHUNK_FRAMES):
        keys = missing[start : start + CHUNK_FRAMES]
        state.update([empty_prediction(key) for key in keys], [frames[position[key]].eval_target() for key in keys])
    report: dict[str, Any] = {
        "task": task,
        "split": split,
        "iou": iou,
        "iou_threshold": iou_threshold,
        "frames": len(frames),
        "missing_frames": {"count": len(missing), "first": missing[:MISSING_SHOWN]},
    }
    report.update(_nest(state.compute(), state.sums["gt_counts"].tolist()))
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
