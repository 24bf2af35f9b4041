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

With ``triplet_nms`` (``--triplet-nms``, off by default) the report also holds ``"triplet_nms": {"threshold": t,
"alpha": a, "beta": b, "with": {...}, "semi": {...}, "no": {...}, "per_predicate": {...}}``: the same scores after the
test-time triplet NMS of each constraint (:mod:`arn_lightning.metrics.triplet_nms`); the plain ones stay the headline.

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
    PREDICTION_FIELDS,
    PredictionBatch,
    PredictionFileError,
    empty_prediction,
    iter_prediction_batches,
    split_batch,
    stack_predictions,
)
from arn_lightning.metrics.triplet_nms import check_settings, triplet_nms

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


class _NMSStates:
    """One :class:`_State` per constraint for the predictions after the triplet NMS (none when it is off)."""

    def __init__(self, threshold: float | None, alpha: float, beta: float, iou: str, iou_threshold: float) -> None:
        check_settings(threshold, alpha, beta, ("--triplet-nms", "--triplet-nms-alpha", "--triplet-nms-beta"))
        self.settings = {"threshold": threshold, "alpha": alpha, "beta": beta}
        self.iou = iou
        self.states = {}
        if threshold is not None:
            self.states = {
                c: _State(RecallConfig(constraints=(c,), iou_threshold=iou_threshold, iou_convention=iou))
                for c in CONSTRAINTS
            }

    def update(self, batch: PredictionBatch, targets: Sequence[Mapping[str, Any]]) -> None:
        if not self.states:
            return
        preds = [{key: getattr(part, key) for key in PREDICTION_FIELDS} for part in split_batch(batch)]
        for constraint, state in self.states.items():
            filtered = [triplet_nms(pred, constraint, iou_convention=self.iou, **self.settings) for pred in preds]
            state.update(filtered, targets)

    def report(self) -> dict[str, Any]:
        results = {key: value for state in self.states.values() for key, value in state.compute().items()}
        counts = next(iter(self.states.values())).sums["gt_counts"].tolist()
        return {**self.settings, **_nest(results, counts)}


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
    triplet_nms: float | None = None,
    triplet_nms_alpha: float = 1.0,
    triplet_nms_beta: float = 1.0,
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
        triplet_nms, triplet_nms_alpha, triplet_nms_beta: also score the predictions after the triplet NMS of this
            overlap threshold (None: off) and exponents (the report's ``triplet_nms`` section).

    Raises:
        PredictionFileError: a malformed line (a box breaking the box rule included), a frame outside the split or a
            repeated frame (with line number).
        AnnotationError: unreadable annotations (a pickle referencing code, a used box breaking the box rule).
        ValueError: NMS settings out of range.
    """
    nms = _NMSStates(triplet_nms, triplet_nms_alpha, triplet_nms_beta, iou, iou_threshold)
    frames = load_annotations(root, task=task, min_frames=min_frames).frames(split)
    all_keys = frames.keys if isinstance(frames, FrameList) else [frame.key for frame in frames]
    position = {key: index for index, key in enumerate(all_keys)}
    state = _State(RecallConfig(iou_threshold=iou_threshold, iou_convention=iou))
    seen: set[str] = set()
    for keys, batch, chunk_targets in _scored_chunks(Path(predictions), frames, position, split, task):
        state.update(batch, chunk_targets)
        nms.update(batch, chunk_targets)
        seen.update(keys)
    missing = [key for key in all_keys if key not in seen]
    for start in range(0, len(missing), CHUNK_FRAMES):
        keys = missing[start : start + CHUNK_FRAMES]
        empty, targets = [empty_prediction(key) for key in keys], [frames[position[key]].eval_target() for key in keys]
        state.update(empty, targets)
        nms.update(stack_predictions(empty), targets)
    report: dict[str, Any] = {
        "task": task,
        "split": split,
        "iou": iou,
        "iou_threshold": iou_threshold,
        "frames": len(frames),
        "missing_frames": {"count": len(missing), "first": missing[:MISSING_SHOWN]},
    }
    report.update(_nest(state.compute(), state.sums["gt_counts"].tolist()))
    if nms.states:
        report["triplet_nms"] = nms.report()
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
    nms = report.get("triplet_nms")
    if nms:
        lines += [
            "",
            f"after the triplet NMS (threshold {nms['threshold']}, alpha {nms['alpha']}, beta {nms['beta']}), %",
        ]
        columns = [(f"{name}@{k}", f"{name}@{k}") for name in ("R", "mR") for k in K_VALUES]
        lines.append(f"{'':<6}" + "".join(f"{label:>8}" for _, label in columns))
        for constraint in CONSTRAINTS:
            lines.append(f"{constraint:<6}" + "".join(f"{100.0 * nms[constraint][key]:>8.2f}" for key, _ in columns))
    return "\n".join(lines)
