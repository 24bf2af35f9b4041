"""What the app's pages compute, without gradio: session folders, running a video, reading an inference output
(also one still being written), and comparing a prediction file with the ground truth.

Everything a session writes goes into its own folder (:class:`SessionFolders`) under the server's temporary root,
removed when the session ends and, with the whole root, when the server stops.
"""

from __future__ import annotations

import json
import re
import shutil
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from arn_lightning.drawing.graph_plot import figure_image, scene_graph_figure, video_layout
from arn_lightning.inference.output import OUTPUT_FILES
from arn_lightning.scene_graph import FrameGraph, Triplet
from arn_lightning.vocab import PREDICATES, predicate_type

#: Defaults of the limits (``arn-lightning serve --max-upload-mb / --max-seconds``).
DEFAULT_MAX_UPLOAD_MB = 200
DEFAULT_MAX_SECONDS = 120.0
#: Sampling rate of the videos run in the app (frames per second).
APP_FPS = 4.0
#: The generated sample video: frames, rate, size.
SAMPLE_FRAMES = 12
SAMPLE_FPS = 4
SAMPLE_SIZE = (160, 120)
#: The columns of the triplet tables.
TRIPLET_COLUMNS = ["rank", "subject", "predicate", "object", "type", "score"]
COMPARE_PRED_COLUMNS = ["rank", "subject", "predicate", "object", "score", "status"]
COMPARE_GT_COLUMNS = ["subject", "predicate", "object", "status"]
HIT, MISS, FALSE_POSITIVE = "hit", "miss", "false positive"


class AppInputError(ValueError):
    """Input the app refuses (not a video, too large, too long, not an inference output, ...): the message is shown
    in the page."""


# ----------------------------------------------------------------------------------------------- sessions
class SessionFolders:
    """One temporary folder per browser session under ``root / "sessions"``.

    Args:
        root: the server's temporary root (removed as a whole when the server stops).
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root) / "sessions"
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def path(self, session: str) -> Path:
        """The folder of ``session`` (not created)."""
        if not session or not re.fullmatch(r"[A-Za-z0-9_-]+", session):
            raise ValueError(f"Expected a session id of letters, digits, '_' or '-' but got {session!r}")
        return self.root / session

    def folder(self, session: str) -> Path:
        """The folder of ``session``, created on first use."""
        path = self.path(session)
        with self._lock:
            path.mkdir(exist_ok=True)
        return path

    def remove(self, session: str) -> None:
        """Delete the session's folder and everything in it (nothing if it does not exist)."""
        with self._lock:
            shutil.rmtree(self.path(session), ignore_errors=True)

    def sessions(self) -> list[str]:
        """The sessions that have a folder now."""
        return sorted(p.name for p in self.root.iterdir() if p.is_dir())


def new_subfolder(session_folder: Path, prefix: str) -> Path:
    """A fresh numbered folder ``<prefix>_<n>`` inside a session folder."""
    number = 1 + max((int(p.name.rsplit("_", 1)[1]) for p in session_folder.glob(f"{prefix}_*")), default=0)
    path = session_folder / f"{prefix}_{number}"
    path.mkdir()
    return path


def write_sample_video(path: Path, frames: int = SAMPLE_FRAMES, fps: int = SAMPLE_FPS) -> Path:
    """A small synthetic video: a stick person and a box that moves towards it (``SAMPLE_SIZE``, mp4)."""
    from arn_lightning.video.files import VideoWriter

    width, height = SAMPLE_SIZE
    writer = VideoWriter(path, fps)
    try:
        for i in range(frames):
            image = Image.new("RGB", SAMPLE_SIZE, (90, 110, 90))
            draw = ImageDraw.Draw(image)
            draw.ellipse((30, 20, 50, 40), fill=(230, 200, 170))
            draw.rectangle((32, 40, 48, 95), fill=(40, 60, 160))
            x = width - 30 - i * (width - 80) // max(1, frames - 1)
            draw.rectangle((x, 60, x + 18, 78), fill=(200, 40, 40))
            writer.write(image)
    finally:
        writer.close()
    return path


# ----------------------------------------------------------------------------------------------- checkpoints
def find_checkpoints(checkpoint: Path | None, runs: Path | None) -> list[Path]:
    """``checkpoint`` and every ``*.ckpt`` under ``runs`` (sorted, newest first within runs), without duplicates."""
    found: list[Path] = [Path(checkpoint)] if checkpoint is not None else []
    if runs is not None and Path(runs).is_dir():
        found += sorted(Path(runs).rglob("*.ckpt"), key=lambda p: (-p.stat().st_mtime, str(p)))
    unique: list[Path] = []
    for path in found:
        if path.resolve() not in {p.resolve() for p in unique}:
            unique.append(path)
    return unique


class PredictorCache:
    """Loaded models by checkpoint path, shared by the sessions (read-only), one prediction at a time."""

    def __init__(self) -> None:
        self._models: dict[Path, Any] = {}
        self.lock = threading.Lock()

    def get(self, checkpoint: Path) -> Any:
        """The :class:`~arn_lightning.inference.api.SceneGraphPredictor` of ``checkpoint`` (loaded on first use).

        Raises:
            AppInputError: the checkpoint cannot be loaded (message of :class:`CheckpointError`).
        """
        from arn_lightning.checkpoint_file import CheckpointError
        from arn_lightning.inference.api import load_model

        key = Path(checkpoint).resolve()
        if key not in self._models:
            try:
                self._models[key] = load_model(key, device="cpu")
            except (CheckpointError, OSError, ValueError) as error:
                raise AppInputError(f"Expected a loadable ARN checkpoint but {checkpoint} is not: {error}") from None
        return self._models[key]


# ----------------------------------------------------------------------------------------------- run a video
@dataclass
class VideoRun:
    """The result of running one video in a session.

    Attributes:
        folder: the run's folder (an ``infer`` output: ``scene_graphs.jsonl``, ``annotated.mp4``, ``timeline.png``,
            ``frames/``).
        graphs: the frames' scene graphs.
        layout: the node positions of the whole video (:func:`~arn_lightning.drawing.graph_plot.video_layout`).
        frame_images: per frame, the annotated frame PNG (boxes and triplet panel), or None when unavailable.
    """

    folder: Path
    graphs: list[FrameGraph]
    layout: dict[str, tuple[float, float]]
    frame_images: list[Path | None] = field(default_factory=list)

    @property
    def lines(self) -> Path:
        return self.folder / OUTPUT_FILES["graphs"]

    @property
    def video(self) -> Path | None:
        path = self.folder / OUTPUT_FILES["video"]
        return path if path.is_file() else None

    @property
    def timeline(self) -> Path | None:
        path = self.folder / OUTPUT_FILES["timeline"]
        return path if path.is_file() else None


def check_video(path: Path, max_bytes: int, max_seconds: float, fps: float = APP_FPS) -> Any:
    """Open an uploaded file as a video within the limits.

    Returns:
        Its :class:`~arn_lightning.video.files.FrameSource`.

    Raises:
        AppInputError: no file, a file over ``max_bytes``, not a readable video, or longer than ``max_seconds``.
    """
    from arn_lightning.video.files import VideoError, open_frames

    path = Path(path)
    if not path.is_file():
        raise AppInputError(f"Expected an uploaded video file but got {path.name or 'nothing'}")
    size = path.stat().st_size
    if size > max_bytes:
        raise AppInputError(
            f"Expected a video of at most {max_bytes / 1e6:.0f} MB but {path.name} has {size / 1e6:.1f} MB"
        )
    try:
        source = open_frames(path, fps)
    except (VideoError, OSError, ValueError) as error:
        raise AppInputError(
            f"Expected a video file (mp4, avi, mkv, webm, ...) but {path.name} is not one: {error}"
        ) from None
    duration = getattr(source, "duration", None)
    if duration is not None and duration > max_seconds:
        raise AppInputError(f"Expected a video of at most {max_seconds:g} s but {path.name} lasts {duration:.1f} s")
    return source


def run_video(
    predictor: Any,
    source: Any,
    folder: Path,
    top_k: int,
    threshold: float,
    max_seconds: float,
    progress: Callable[[int, int | None], None] | None = None,
) -> VideoRun:
    """Predict every sampled frame and write an ``infer`` output (with frame PNGs) into ``folder``.

    Args:
        predictor: a :class:`~arn_lightning.inference.api.SceneGraphPredictor`.
        source: the sampled frames (:func:`check_video`).
        folder: an existing, empty folder.
        top_k, threshold: triplets kept per frame.
        max_seconds: frames after this time stop the run (a container that under-reports its duration).
        progress: called with (frames done, frames expected or None) after each frame.

    Raises:
        AppInputError: the video cannot be decoded, holds no frame, or runs past ``max_seconds``.
    """
    from arn_lightning.inference.output import MARKER_FILE, OutputWriter
    from arn_lightning.video.files import VideoError

    (folder / MARKER_FILE).write_text("written by arn-lightning serve\n")
    total = source.estimated_count
    try:
        with OutputWriter(folder, source.fps, save_frames=True, title=source.name) as writer:
            for done, (frame, graph) in enumerate(predictor.stream(source, top_k=top_k, threshold=threshold), start=1):
                if frame.timestamp > max_seconds:
                    raise AppInputError(f"Expected a video of at most {max_seconds:g} s but it goes on past that")
                writer.add(frame, graph)
                if progress is not None:
                    progress(done, total)
    except VideoError as error:
        raise AppInputError(f"Expected a decodable video but {source.name} is not: {error}") from None
    if not writer.graphs:
        raise AppInputError(f"Expected at least one frame but {source.name} holds none")
    frames = folder / OUTPUT_FILES["frames"]
    images = [frames / f"{g.source_index:06d}.png" for g in writer.graphs]
    return VideoRun(folder, writer.graphs, video_layout(writer.graphs), [p if p.is_file() else None for p in images])


def triplet_table(triplets: Sequence[Triplet]) -> list[list[Any]]:
    """Rows of :data:`TRIPLET_COLUMNS` for a frame's triplets."""
    return [
        [rank, t.subject, t.predicate_name, t.object, t.kind, round(t.score, 4)]
        for rank, t in enumerate(triplets, start=1)
    ]


def graph_image(graph: FrameGraph, layout: dict[str, tuple[float, float]], path: Path) -> Path:
    """Draw the frame's scene graph with the video's layout into the PNG ``path``."""
    figure_image(scene_graph_figure(graph, layout)).save(path)
    return path


# ----------------------------------------------------------------------------------------------- inference outputs
def read_complete_records(path: Path) -> list[dict[str, Any]]:
    """The JSON lines of a ``scene_graphs.jsonl``, complete lines only (a line still being written is left out).

    Raises:
        AppInputError: a complete line that is not JSON (with its line number).
    """
    data = Path(path).read_bytes()
    complete = data[: data.rfind(b"\n") + 1]
    records = []
    for number, line in enumerate(complete.decode("utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as error:
            raise AppInputError(f"Expected a JSON object on line {number} of {path} but got: {error}") from None
    return records


def graph_from_record(record: dict[str, Any]) -> FrameGraph:
    """A :class:`FrameGraph` from one ``scene_graphs.jsonl`` line (:meth:`FrameGraph.to_json`).

    Raises:
        AppInputError: the line lacks the fields ``infer`` writes.
    """
    from arn_lightning.metrics.predictions import prediction_from_json

    try:
        prediction = prediction_from_json({k: record[k] for k in ("frame", *_RAW_KEYS)}, f"frame {record['frame']}")
        labels = record["label_names"]
        triplets = [
            Triplet(s, p, o, float(row[3]), labels[s], labels[o])
            for (s, p, o), row in zip(record["triplet_rows"], record["triplets"])
        ]
        timestamp = float(record["timestamp"])
        return FrameGraph(int(record["index"]), int(record["frame_index"]), timestamp, prediction, triplets)
    except (KeyError, IndexError, TypeError, ValueError) as error:
        raise AppInputError(f"Expected a scene_graphs.jsonl line of `arn-lightning infer` but got: {error}") from None


_RAW_KEYS = ("boxes", "labels", "scores", "pairs", "attention", "spatial", "contacting")


@dataclass
class OutputView:
    """An inference output folder as read now (complete lines only)."""

    folder: Path
    graphs: list[FrameGraph]
    layout: dict[str, tuple[float, float]]

    def frame_image(self, index: int) -> Path | None:
        """The annotated frame PNG of frame ``index`` (written with ``--save-frames``), if present."""
        path = self.folder / OUTPUT_FILES["frames"] / f"{self.graphs[index].source_index:06d}.png"
        return path if path.is_file() else None

    @property
    def video(self) -> Path | None:
        path = self.folder / OUTPUT_FILES["video"]
        return path if path.is_file() and path.stat().st_size > 0 else None

    @property
    def timeline(self) -> Path | None:
        path = self.folder / OUTPUT_FILES["timeline"]
        return path if path.is_file() else None


def open_output(folder: str | Path) -> OutputView:
    """Read an ``infer`` (or ``infer --stream``) output folder.

    Raises:
        AppInputError: not a folder, or no ``scene_graphs.jsonl`` in it.
    """
    folder = Path(str(folder).strip()).expanduser()
    if not folder.is_dir():
        raise AppInputError(f"Expected a folder written by `arn-lightning infer` but {folder} is not a folder")
    lines = folder / OUTPUT_FILES["graphs"]
    if not lines.is_file():
        raise AppInputError(f"Expected {OUTPUT_FILES['graphs']} in {folder} (an `infer` output) but it is not there")
    graphs = [graph_from_record(r) for r in read_complete_records(lines)]
    return OutputView(folder, graphs, video_layout(graphs))


# ----------------------------------------------------------------------------------------------- ground truth
@dataclass
class Comparison:
    """A prediction file against the ground truth of an AG root.

    Attributes:
        root: the AG root.
        frames: the keys of the split's frames that have a prediction, in order.
        predictions: frame key -> prediction (tensors), read from the file on access
            (:class:`~arn_lightning.metrics.prediction_files.PredictionIndex`).
        targets: frame key -> metric ground truth (:meth:`FrameAnnotation.eval_target`).
        report: the ``evaluate`` report of the whole file (:func:`arn_lightning.metrics.scoring.evaluate`).
    """

    root: Path
    frames: list[str]
    predictions: Mapping[str, dict[str, Any]]
    targets: dict[str, dict[str, Any]]
    report: dict[str, Any]


def load_comparison(root: str | Path, predictions: str | Path, task: str = "sgdet", split: str = "test") -> Comparison:
    """Read an AG root's ``split`` and a prediction file, and score the file as ``arn-lightning evaluate`` does.

    Raises:
        AppInputError: unreadable annotations or prediction file, or a prediction of a frame outside the split.
    """
    from arn_lightning.data.ag import AnnotationError, load_annotations
    from arn_lightning.metrics.prediction_files import PredictionIndex
    from arn_lightning.metrics.scoring import evaluate

    root, predictions = Path(str(root).strip()).expanduser(), Path(str(predictions).strip()).expanduser()
    if predictions.is_dir():  # an infer output folder
        predictions = predictions / OUTPUT_FILES["graphs"]
    try:
        frames = load_annotations(root, task=task).frames(split)
        report = evaluate(str(root), str(predictions), split=split, task=task)
        preds = PredictionIndex(predictions)
    except (AnnotationError, OSError, ValueError) as error:
        raise AppInputError(f"Expected an AG root and a prediction file of its {split} split but: {error}") from None
    targets = {f.key: f.eval_target() for f in frames if f.key in preds}
    return Comparison(root, [f.key for f in frames if f.key in preds], preds, targets, report)


def _names(labels: Iterable[int]) -> list[str]:
    from arn_lightning.scene_graph import object_name

    return [object_name(int(label)) for label in labels]


def ground_truth_triplets(target: dict[str, Any]) -> list[tuple[int, int, int]]:
    """The GT triplets of a frame as ``(subject row, predicate, object row)`` in reading order, one per label count
    (spatial ones read object -> person, as the metric reverses them)."""
    counts = np.concatenate([np.asarray(target[k]) for k in ("attention", "spatial", "contacting")], axis=1)
    triplets = []
    for j, predicate in zip(*np.nonzero(counts)):
        subject, obj = (j + 1, 0) if predicate_type(int(predicate)) == "spatial" else (0, j + 1)
        triplets += [(int(subject), int(predicate), int(obj))] * int(counts[j, predicate])
    return triplets


def compare_frame(
    prediction: dict[str, Any], target: dict[str, Any], constraint: str = "with", k: int = 20
) -> tuple[list[list[Any]], list[list[Any]], int]:
    """Predicted vs ground-truth triplets of one frame, marked as R@K counts them.

    A GT triplet is a ``hit`` when the metric's own matching (:func:`arn_lightning.metrics.functional.frame_hits`,
    run on that triplet alone) finds it among the first ``k`` candidates of ``constraint``, else a ``miss``. A
    predicted triplet (one of those first ``k`` candidates) is a ``hit`` when its classes and predicate equal a GT
    triplet's and both boxes overlap it with IoU >= 0.5 (the metric's rule), else a ``false positive``.

    Returns:
        (predicted rows of :data:`COMPARE_PRED_COLUMNS`, GT rows of :data:`COMPARE_GT_COLUMNS`, GT hits).
    """
    import torch

    from arn_lightning.metrics.functional import (
        IOU_THRESHOLD,
        RecallConfig,
        frame_hits,
        paired_box_iou,
        ranked_triplets,
    )

    config = RecallConfig(constraints=(constraint,), k_values=(k,))
    gt_labels = np.asarray(target["labels"])
    gt_boxes = np.asarray(target["boxes"], dtype=np.float64)
    gt_names = _names(gt_labels)
    gt_rows, hits = [], 0
    base = {key: torch.zeros_like(torch.as_tensor(target[key])) for key in ("attention", "spatial", "contacting")}
    offsets = {"attention": 0, "spatial": 3, "contacting": 9}
    for subject, predicate, obj in ground_truth_triplets(target):
        kind = predicate_type(predicate)
        single = {**target, **{key: value.clone() for key, value in base.items()}}
        j = (subject if kind == "spatial" else obj) - 1
        single[kind][j, predicate - offsets[kind]] = 1
        hit = bool(frame_hits([prediction], [single], config).hits.sum() > 0)
        hits += hit
        gt_rows.append([gt_names[subject], PREDICATES[predicate], gt_names[obj], HIT if hit else MISS])
    ranked = ranked_triplets(prediction, constraint, config)
    labels = np.asarray(torch.as_tensor(prediction["labels"]))
    boxes = np.asarray(torch.as_tensor(prediction["boxes"]), dtype=np.float64)
    names = _names(labels)
    gt = ground_truth_triplets(target)
    pred_rows = []
    for rank, (s, o, p, score) in enumerate(
        zip(*(ranked[key][:k].tolist() for key in ("subject", "object", "predicate", "score"))), start=1
    ):
        matched = False
        for gs, gp, go in gt:
            if gp != p or gt_labels[gs] != labels[s] or gt_labels[go] != labels[o]:
                continue
            iou = paired_box_iou(boxes[[s, o]], gt_boxes[[gs, go]], config.iou_convention)
            if (iou >= IOU_THRESHOLD).all():
                matched = True
                break
        pred_rows.append(
            [rank, names[s], PREDICATES[p], names[o], round(float(score), 4), HIT if matched else FALSE_POSITIVE]
        )
    return pred_rows, gt_rows, hits


def filter_rows(rows: list[list[Any]], predicate: str | None, obj: str | None, columns: Sequence[str]) -> list[list]:
    """The rows whose predicate is ``predicate`` and whose subject or object is ``obj`` (None or "all": any)."""
    p, s, o = columns.index("predicate"), columns.index("subject"), columns.index("object")
    return [
        r
        for r in rows
        if (predicate in (None, "", "all") or r[p] == predicate) and (obj in (None, "", "all") or obj in (r[s], r[o]))
    ]


def frames_with(comparison: Comparison, predicate: str | None, obj: str | None) -> list[str]:
    """The compared frames whose ground truth holds a triplet of ``predicate`` with ``obj`` (None / "all": any)."""
    keys = []
    for key in comparison.frames:
        target = comparison.targets[key]
        names = _names(np.asarray(target["labels"]))
        for s, p, o in ground_truth_triplets(target):
            if (predicate in (None, "", "all") or PREDICATES[p] == predicate) and (
                obj in (None, "", "all") or obj in (names[s], names[o])
            ):
                keys.append(key)
                break
    return keys


def comparison_frame_image(comparison: Comparison, key: str, top_k: int, path: Path) -> Path | None:
    """Prediction (left, its ``top_k`` no-constraint triplets) and ground truth (right) drawn on the frame's PNG
    from the root's ``frames/``; None when the root has no frame image."""
    from arn_lightning.data.ag import parse_frame_key
    from arn_lightning.drawing.annotate import prediction_and_truth
    from arn_lightning.metrics.predictions import prediction_from_ground_truth

    file = comparison.root / "frames" / key
    if not file.is_file():
        return None
    number = parse_frame_key(key, "the comparison")[1]
    image = Image.open(file).convert("RGB")
    truth = prediction_from_ground_truth(comparison.targets[key])
    prediction_and_truth(image, number, comparison.predictions[key], truth, top_k, 0.0).save(path)
    return path


def recall_chart(report: dict[str, Any], constraint: str, k: int, path: Path) -> Path:
    """The per-predicate recall chart of an ``evaluate`` report (head to tail by GT count), with both mR
    definitions, saved as a PNG."""
    from arn_lightning.drawing.recall_chart import mean_recalls, recall_figure, report_recall_rows, save_recall_chart

    means = mean_recalls(report[constraint], constraint, k)
    title = f"{constraint} constraint, R@{k} per predicate; R@{k} = {report[constraint][f'R@{k}']:.3f}"
    return save_recall_chart(recall_figure(report_recall_rows(report, constraint, k), title, means), path)
