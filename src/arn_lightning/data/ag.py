"""Read an Action Genome root in the release format and apply the standard filtering.

The format and the filtering rules are those of ``docs/action_genome.md`` (sections 1 and 2):

1. a frame's split is ``metadata['set']`` of its first object entry;
2. a frame is kept only if it has a person box and at least one visible object;
3. its ground truth is the person box (row 0) then every visible object, boxes converted xywh -> xyxy;
4. a video is kept only if at least ``min_frames`` frames survive;
5. SGDet/SGCls drop object boxes whose short side is below ``filter_small`` pixels (16), PredCls keeps them.

Boxes (``docs/boxes.md``): every box a kept-by-rule-2 frame contributes (its person box, its visible objects' boxes)
must obey the box rule of :mod:`arn_lightning.boxes` (finite, ``x2 >= x1``, ``y2 >= y1`` in float32 xyxy; zero width
or height allowed, coordinates beyond the frame allowed and never clipped), else :class:`AnnotationError` names the
file, the frame key and the object index. A box breaking the rule in a frame that rule 2 drops anyway (the person box
of a frame without visible object, the objects of a frame without person box) is not used: it is counted under
``boxes_invalid_ignored`` of the split's report instead. Whether a root loads therefore does not depend on the task
or ``min_frames``.

The pickles are read with a restricted unpickler (:func:`load_pickle`) that admits only the plain data types of the
release (builtins, numpy arrays, dtypes and scalars), so a crafted annotation file cannot run code.

Nothing here reads a frame image: the frame size comes from ``bbox_size`` of ``person_bbox.pkl``.

Example:
    >>> ann = load_annotations("data/ag", task="sgdet")          # doctest: +SKIP
    >>> ann.frames("test")[0].boxes_xyxy.shape                  # doctest: +SKIP
    (3, 4)
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import importlib
import json
import logging
import os
import pickle
import re
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, overload

import numpy as np

from arn_lightning import vocab
from arn_lightning._types import PathLike
from arn_lightning.atomic import atomic_open
from arn_lightning.boxes import BOX_RULE, box_violation, invalid_box_mask
from arn_lightning.reading import TextDecodeError, read_text
from arn_lightning.vocab import TASKS

log = logging.getLogger(__name__)

SPLITS = ("train", "test")
#: Split of a frame whose object list is empty and whose video has no other entry (report only).
UNKNOWN_SPLIT = "unknown"
DEFAULT_MIN_FRAMES = 3
#: "filter small": object boxes with a short side below this many pixels are dropped in SGDet/SGCls.
SMALL_BOX_MIN_SIDE = 16.0
#: Frame drop reasons, in the order they are tested (a frame counts under the first that applies).
DROP_REASONS = ("no_visible_object", "no_person", "all_objects_small", "short_video")

ANNOTATION_DIR = "annotations"
PERSON_FILE = "person_bbox.pkl"
OBJECT_FILE = "object_bbox_and_relationship.pkl"
OBJECT_CLASSES_FILE = "object_classes.txt"
RELATIONSHIP_CLASSES_FILE = "relationship_classes.txt"
FRAME_LIST_FILE = "frame_list.txt"
FRAMES_DIR = "frames"

_KEY_PATTERN = re.compile(r"^(?P<video>[^/]+\.mp4)/(?P<number>\d{6})\.png$")
_OBJECT_FIELDS = (
    "class",
    "bbox",
    "attention_relationship",
    "spatial_relationship",
    "contacting_relationship",
    "metadata",
    "visible",
)
#: predicate type -> {name: column}
_COLUMNS: dict[str, dict[str, int]] = {
    kind: {name: i for i, name in enumerate(names)} for kind, names in vocab.TYPE_PREDICATES.items()
}


class AnnotationError(ValueError):
    """Malformed or missing Action Genome annotation data; the message names the file and the key."""


@dataclass(frozen=True, eq=False)
class FrameAnnotation:
    """Ground truth of one kept frame after the task's filtering (contract: ARCHITECTURE.md section 1).

    Attributes:
        key: ``"<VID>.mp4/<NNNNNN>.png"``.
        video: ``"<VID>.mp4"``.
        number: the frame number ``NNNNNN``.
        split: ``"train"`` or ``"test"``.
        width: original frame width in pixels (``bbox_size[0]``).
        height: original frame height in pixels (``bbox_size[1]``).
        boxes_xyxy: ``float32 [N+1, 4]`` original pixels; row 0 is the person, row ``j+1`` object ``j``.
        labels: ``int64 [N+1]`` AG object index; ``labels[0] == 1`` (person).
        attention: ``int64 [N, 3]`` per object, the count of each attention label.
        spatial: ``int64 [N, 6]`` spatial label counts, column = global predicate index - 3.
        contacting: ``int64 [N, 17]`` contacting label counts, column = global predicate index - 9.
    """

    key: str
    video: str
    number: int
    split: str
    width: int
    height: int
    boxes_xyxy: np.ndarray
    labels: np.ndarray
    attention: np.ndarray
    spatial: np.ndarray
    contacting: np.ndarray

    @property
    def num_objects(self) -> int:
        """Number ``N`` of annotated objects (the person excluded)."""
        return int(self.labels.shape[0]) - 1

    def eval_target(self) -> dict[str, Any]:
        """Metric ground truth of the frame (ARCHITECTURE.md section 4).

        Returns:
            ``{"frame": str, "boxes": FloatTensor [N+1, 4] xyxy original pixels, "labels": LongTensor [N+1],
            "attention": LongTensor [N, 3], "spatial": LongTensor [N, 6], "contacting": LongTensor [N, 17]}``.
        """
        import torch  # here, so that the tools that only read annotations (stats, synth) do not load torch

        return {
            "frame": self.key,
            "boxes": torch.from_numpy(self.boxes_xyxy.copy()),
            "labels": torch.from_numpy(self.labels.copy()),
            "attention": torch.from_numpy(self.attention.copy()),
            "spatial": torch.from_numpy(self.spatial.copy()),
            "contacting": torch.from_numpy(self.contacting.copy()),
        }


@dataclass
class SplitReport:
    """Counts of one split before and after filtering.

    Attributes:
        videos_total: videos with at least one frame key in this split.
        videos_kept: videos with at least ``min_frames`` kept frames.
        videos_dropped: ``{"no_frames": n, "short": n}``: videos left with no frame, or with 1..min_frames-1.
        frames_total: frame keys of this split.
        frames_kept: frames kept.
        frames_dropped: reason (``DROP_REASONS``) -> frames dropped for it (first applicable reason only).
        objects_total: object entries of all frames.
        objects_invisible: entries with ``visible`` False.
        objects_small: visible objects removed by "filter small" (all frames).
        objects_kept: objects of the kept frames.
        boxes_invalid_ignored: boxes breaking the box rule in frames that rule 2 drops anyway (the person box of a
            ``no_visible_object`` frame, the object boxes of a ``no_person`` frame); never scored. Such a box in any
            other frame is an :class:`AnnotationError`.
    """

    videos_total: int = 0
    videos_kept: int = 0
    videos_dropped: dict[str, int] = field(default_factory=lambda: {"no_frames": 0, "short": 0})
    frames_total: int = 0
    frames_kept: int = 0
    frames_dropped: dict[str, int] = field(default_factory=lambda: {r: 0 for r in DROP_REASONS})
    objects_total: int = 0
    objects_invisible: int = 0
    objects_small: int = 0
    objects_kept: int = 0
    boxes_invalid_ignored: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly nested dict (keys documented in ``docs/stats.md``)."""
        return {
            "videos": {"total": self.videos_total, "kept": self.videos_kept, "dropped": dict(self.videos_dropped)},
            "frames": {"total": self.frames_total, "kept": self.frames_kept, "dropped": dict(self.frames_dropped)},
            "objects": {
                "total": self.objects_total,
                "invisible": self.objects_invisible,
                "small": self.objects_small,
                "kept": self.objects_kept,
            },
            "boxes": {"invalid_ignored": self.boxes_invalid_ignored},
        }


@dataclass
class FilterReport:
    """What the filtering kept and dropped, per split.

    Attributes:
        task: ``"sgdet"`` / ``"sgcls"`` / ``"predcls"``.
        min_frames: minimum kept frames per video.
        filter_small: minimum short side of an object box in pixels (0: no filtering).
        splits: split name -> :class:`SplitReport`.
    """

    task: str
    min_frames: int
    filter_small: float
    splits: dict[str, SplitReport] = field(default_factory=dict)

    def split(self, name: str) -> SplitReport:
        """The report of ``name``, created empty on first use."""
        return self.splits.setdefault(name, SplitReport())

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict: ``{"task", "min_frames", "filter_small", "splits": {name: SplitReport.to_dict()}}``."""
        return {
            "task": self.task,
            "min_frames": self.min_frames,
            "filter_small": self.filter_small,
            "splits": {name: rep.to_dict() for name, rep in sorted(self.splits.items())},
        }

    def summary(self) -> str:
        """One line per split, e.g. for a log: ``train: 7584/7842 videos, 166785/... frames kept (...)``."""
        lines = []
        for name, rep in sorted(self.splits.items()):
            dropped = ", ".join(f"{k} {v}" for k, v in rep.frames_dropped.items() if v)
            lines.append(
                f"{name}: {rep.videos_kept}/{rep.videos_total} videos, {rep.frames_kept}/"
                f"{rep.frames_total} frames kept ({dropped or 'none dropped'})"
            )
        return "\n".join(lines)


@dataclass
class _RawObject:
    """One visible object entry, parsed; ``box_xyxy`` in original pixels, ``valid`` False once :func:`_check_boxes`
    found that it breaks the box rule (only in a frame that rule 2 drops), ``index`` its position in the frame's
    entry list, label counts as plain lists."""

    index: int
    label: int
    box_xyxy: list[float]
    attention: list[int]
    spatial: list[int]
    contacting: list[int]
    valid: bool = True

    @property
    def short_side(self) -> float:
        """The shorter side of the box in pixels."""
        return min(self.box_xyxy[2] - self.box_xyxy[0], self.box_xyxy[3] - self.box_xyxy[1])


@dataclass
class _RawFrame:
    """One frame key, parsed but not yet filtered; ``person_xyxy`` is None when the detector found nobody."""

    key: str
    video: str
    number: int
    split: str | None
    width: int
    height: int
    person_xyxy: list[float] | None
    objects: list[_RawObject]
    num_entries: int
    invalid_boxes: int = 0


def parse_frame_key(key: Any, source: str) -> tuple[str, int]:
    """Split a frame key ``"<VID>.mp4/<NNNNNN>.png"`` into ``(video, number)``.

    Args:
        key: the key to parse.
        source: where the key comes from (a file name), for the error message.

    Raises:
        AnnotationError: the key does not have the AG form.
    """
    match = _KEY_PATTERN.match(key) if isinstance(key, str) else None
    if match is None:
        raise AnnotationError(f"{source}: Expected a frame key like '001YG.mp4/000089.png' but got {key!r}")
    return match.group("video"), int(match.group("number"))


def read_class_file(path: Path, expected: Sequence[str], raw_to_name: Mapping[str, str]) -> list[str]:
    """Read a class file in raw spelling and return the names in pickle spelling.

    Args:
        path: ``object_classes.txt`` or ``relationship_classes.txt``.
        expected: the vocabulary in index order (pickle spelling).
        raw_to_name: raw spelling -> pickle spelling; names already in pickle spelling are accepted too.

    Raises:
        AnnotationError: missing file, wrong number of lines, an unknown name, or a name out of vocabulary order.
    """
    if not path.is_file():
        raise AnnotationError(f"Expected the class file {path} but it does not exist")
    try:
        lines = [line.strip() for line in read_text(path).splitlines()]
    except TextDecodeError as error:
        raise AnnotationError(str(error)) from None
    lines = [line for line in lines if line]
    if len(lines) != len(expected):
        raise AnnotationError(f"{path}: Expected {len(expected)} non-empty lines but got {len(lines)}")
    names = []
    for number, raw in enumerate(lines, start=1):
        name = raw if raw in expected else raw_to_name.get(raw)
        if name is None:
            raise AnnotationError(f"{path} line {number}: Expected a known class name but got {raw!r}")
        if name != expected[number - 1]:
            raise AnnotationError(
                f"{path} line {number}: Expected {expected[number - 1]!r} (vocabulary order of "
                f"docs/action_genome.md 1.3) but got {raw!r}"
            )
        names.append(name)
    return names


#: Builtin types an annotation pickle may build (Python 2 pickles name the module ``__builtin__``).
_PICKLE_BUILTINS = frozenset(
    {"dict", "list", "tuple", "set", "frozenset", "str", "bytes", "bytearray", "int", "float", "complex", "bool"}
)
#: numpy internals that rebuild arrays and scalars: (submodule of ``numpy._core`` / numpy 1.x ``numpy.core``, name).
_PICKLE_NUMPY_CORE = frozenset({("multiarray", "_reconstruct"), ("multiarray", "scalar"), ("numeric", "_frombuffer")})
_PICKLE_MODULE_ALIASES = {"__builtin__": "builtins"}


class _RefusedGlobal(pickle.UnpicklingError):
    """A pickle referenced a global outside the annotation allow-list; ``name`` is ``module.name``."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"refused global {name}")


def _numpy_core(submodule: str, name: str) -> Any:
    """``numpy._core.<submodule>.<name>`` (numpy 2), or ``numpy.core.<submodule>.<name>`` (numpy 1.x): a pickle
    written by either numpy names one of the two paths, and both resolve to the running numpy's function."""
    for package in ("numpy._core", "numpy.core"):
        try:
            return getattr(importlib.import_module(f"{package}.{submodule}"), name)
        except (ImportError, AttributeError):
            continue
    raise _RefusedGlobal(f"numpy.core.{submodule}.{name}")


class _AnnotationUnpickler(pickle.Unpickler):
    """An unpickler that builds only what the AG release pickles contain: builtin containers, strings and numbers,
    numpy arrays, dtypes and scalars (old and new numpy module paths). Any other global (``os.system``,
    ``builtins.eval``, a class, ...) raises :class:`_RefusedGlobal` before anything is called."""

    def find_class(self, module: str, name: str) -> Any:
        module = _PICKLE_MODULE_ALIASES.get(module, module)
        if module == "builtins" and name in _PICKLE_BUILTINS:
            return getattr(importlib.import_module("builtins"), name)
        if (module, name) == ("_codecs", "encode"):  # bytes in a protocol 0-2 pickle written by Python 3
            return importlib.import_module("_codecs").encode
        if module == "numpy" and name in ("ndarray", "dtype"):
            return getattr(np, name)
        package, _, submodule = module.rpartition(".")
        if package in ("numpy.core", "numpy._core") and (submodule, name) in _PICKLE_NUMPY_CORE:
            return _numpy_core(submodule, name)
        raise _RefusedGlobal(f"{module}.{name}")


def load_pickle(path: Path) -> dict[str, Any]:
    """Load one of the two annotation pickles (a dict keyed by frame key) without running any code.

    The restricted unpickler admits the builtin containers, strings and numbers, ``_codecs.encode`` (bytes in old
    protocols) and numpy arrays, dtypes and scalars (``numpy.ndarray``, ``numpy.dtype``,
    ``numpy[._]core.multiarray._reconstruct`` / ``scalar``, ``numpy[._]core.numeric._frombuffer``); the release
    files, written by numpy 1.x, need nothing else.

    Raises:
        AnnotationError: the file is missing, is not a readable pickle, references any other global (named as
            ``module.name``; nothing is called), or does not hold a dict.
    """
    if not path.is_file():
        raise AnnotationError(f"Expected the annotation file {path} but it does not exist")
    try:
        with path.open("rb") as handle:
            data = _AnnotationUnpickler(handle).load()
    except _RefusedGlobal as exc:
        raise AnnotationError(
            f"{path}: Expected only plain data (dicts, lists, strings, numbers, numpy arrays) but "
            f"got a reference to the global {exc.name!r}, refused (unpickling it could run "
            f"code)"
        ) from None
    except (
        pickle.UnpicklingError,
        EOFError,
        AttributeError,
        ImportError,
        IndexError,
        KeyError,
        TypeError,
        ValueError,
        OverflowError,
    ) as exc:
        raise AnnotationError(f"{path}: Expected a pickled dict but the file cannot be unpickled ({exc})") from exc
    if not isinstance(data, dict):
        raise AnnotationError(f"{path}: Expected a dict keyed by frame key but got {type(data).__name__}")
    return data


def _check_same_keys(person: Mapping[str, Any], objects: Mapping[str, Any]) -> None:
    """Both pickles must share one key set; name a few keys that differ."""
    only_person = sorted(set(person) - set(objects))
    only_objects = sorted(set(objects) - set(person))
    if only_person or only_objects:
        raise AnnotationError(
            f"Expected {PERSON_FILE} and {OBJECT_FILE} to share their keys but {len(only_person)} key(s) are only in "
            f"{PERSON_FILE} (e.g. {only_person[:3]}) and {len(only_objects)} only in {OBJECT_FILE} "
            f"(e.g. {only_objects[:3]})"
        )


def _parse_person(entry: Any, key: str) -> tuple[list[float] | None, int, int]:
    """``(person box xyxy [4] or None, width, height)`` of a ``person_bbox.pkl`` entry (the box is float32-rounded
    and checked against the box rule later, by :func:`_check_boxes`)."""
    where = f"{PERSON_FILE}[{key!r}]"
    if not isinstance(entry, dict) or "bbox" not in entry or "bbox_size" not in entry:
        raise AnnotationError(f"{where}: Expected a dict with 'bbox' and 'bbox_size' but got {entry!r:.200}")
    try:
        boxes = np.asarray(entry["bbox"], dtype=np.float32)
        width, height = (int(v) for v in entry["bbox_size"])
    except (TypeError, ValueError) as exc:
        raise AnnotationError(f"{where}: Expected numeric 'bbox' and a (width, height) 'bbox_size' ({exc})") from exc
    if width <= 0 or height <= 0:
        raise AnnotationError(f"{where}['bbox_size']: Expected a positive (width, height) but got {(width, height)}")
    if boxes.size == 0:
        return None, width, height
    if boxes.shape != (1, 4):
        raise AnnotationError(f"{where}['bbox']: Expected an array of shape (0, 4) or (1, 4) but got {boxes.shape}")
    return boxes[0].tolist(), width, height


def _label_counts(names: Any, kind: str, where: str) -> list[int]:
    """Count list (length ``TYPE_SIZES[kind]``) of a list of predicate names of one type."""
    if not isinstance(names, (list, tuple)):
        raise AnnotationError(
            f"{where}['{kind}_relationship']: Expected a list of predicate names but got {names!r:.100}"
        )
    counts = [0] * vocab.TYPE_SIZES[kind]
    columns = _COLUMNS[kind]
    for name in names:
        column = columns.get(name)
        if column is None:
            raise AnnotationError(f"{where}['{kind}_relationship']: Expected one of {list(columns)} but got {name!r}")
        counts[column] += 1
    return counts


def _parse_box_xywh(value: Any, where: str) -> list[float]:
    """Convert an AG object box ``(x, y, w, h)`` to ``[x1, y1, x2, y2]`` (checked against the box rule later, by
    :func:`_check_boxes`: a negative ``w`` or ``h`` gives ``x2 < x1`` or ``y2 < y1``)."""
    try:
        x, y, w, h = (float(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise AnnotationError(f"{where}['bbox']: Expected 4 numbers (x, y, w, h) but got {value!r:.100}") from exc
    return [x, y, x + w, y + h]


def _entry_split(entry: Any, where: str) -> str:
    """``metadata['set']`` of an object entry."""
    meta = entry.get("metadata") if isinstance(entry, dict) else None
    split = meta.get("set") if isinstance(meta, dict) else None
    if split not in SPLITS:
        raise AnnotationError(f"{where}['metadata']['set']: Expected one of {list(SPLITS)} but got {split!r}")
    return split


def _parse_object(entry: Any, index: int, where: str) -> _RawObject | None:
    """A visible object entry (number ``index`` of its frame) parsed, or None for an invisible one."""
    if not isinstance(entry, dict) or any(name not in entry for name in _OBJECT_FIELDS):
        raise AnnotationError(f"{where}: Expected a dict with keys {list(_OBJECT_FIELDS)} but got {entry!r:.200}")
    if not entry["visible"]:
        return None
    label = vocab.OBJECT_INDEX.get(entry["class"])
    if label is None or label == vocab.PERSON_LABEL:
        raise AnnotationError(f"{where}['class']: Expected an AG object class but got {entry['class']!r}")
    if entry["bbox"] is None:
        raise AnnotationError(f"{where}: Expected a 'bbox' for a visible object but got None")
    return _RawObject(
        index=index,
        label=label,
        box_xyxy=_parse_box_xywh(entry["bbox"], where),
        attention=_label_counts(entry["attention_relationship"], "attention", where),
        spatial=_label_counts(entry["spatial_relationship"], "spatial", where),
        contacting=_label_counts(entry["contacting_relationship"], "contacting", where),
    )


def _parse_frame(key: str, person_entry: Any, object_entries: Any) -> _RawFrame:
    """Parse and validate the two pickle entries of one frame key."""
    video, number = parse_frame_key(key, PERSON_FILE)
    person_xyxy, width, height = _parse_person(person_entry, key)
    if not isinstance(object_entries, list):
        raise AnnotationError(
            f"{OBJECT_FILE}[{key!r}]: Expected a list of object dicts but got {type(object_entries).__name__}"
        )
    objects, split = [], None
    for index, entry in enumerate(object_entries):
        where = f"{OBJECT_FILE}[{key!r}][{index}]"
        parsed = _parse_object(entry, index, where)
        entry_split = _entry_split(entry, where)
        split = entry_split if split is None else split
        if parsed is not None:
            objects.append(parsed)
    return _RawFrame(
        key=key,
        video=video,
        number=number,
        split=split,
        width=width,
        height=height,
        person_xyxy=person_xyxy,
        objects=objects,
        num_entries=len(object_entries),
    )


def _invalid_box_error(frame: _RawFrame, index: int, box_xyxy: list[float]) -> AnnotationError:
    """The error of a box breaking the rule: the person box (``index`` -1) or object entry ``index`` of ``frame``."""
    with np.errstate(over="ignore"):
        shown = [float(v) for v in np.asarray(box_xyxy, dtype=np.float32)]
    reason = box_violation(shown)
    if index < 0:
        return AnnotationError(
            f"{PERSON_FILE}[{frame.key!r}]['bbox']: Expected {BOX_RULE} (docs/boxes.md) but got {shown} ({reason})"
        )
    x1, y1, x2, y2 = shown
    return AnnotationError(
        f"{OBJECT_FILE}[{frame.key!r}][{index}]['bbox']: Expected (x, y, w, h) with finite values "
        f"and w, h >= 0, i.e. {BOX_RULE} (docs/boxes.md), but got xyxy {shown} (w = {x2 - x1}, "
        f"h = {y2 - y1}: {reason})"
    )


def _check_boxes(frames: list[_RawFrame]) -> None:
    """Apply the box rule to every person and visible object box of ``frames`` at once (float32, as they are
    kept). A box breaking it raises if its frame passes rule 2 (it would be trained on and scored), else it is
    counted in the frame's ``invalid_boxes`` (the frame is dropped as ``no_visible_object`` or ``no_person``)."""
    rows: list[list[float]] = []
    owners: list[tuple[int, int]] = []  # (frame position, object entry index or -1 for the person)
    for position, frame in enumerate(frames):
        if frame.person_xyxy is not None:
            rows.append(frame.person_xyxy)
            owners.append((position, -1))
        rows.extend(o.box_xyxy for o in frame.objects)
        owners.extend((position, o.index) for o in frame.objects)
    with np.errstate(over="ignore", invalid="ignore"):  # a float64 value beyond float32 becomes inf: invalid
        invalid = invalid_box_mask(np.asarray(rows, dtype=np.float32).reshape(-1, 4))
    for row in np.flatnonzero(invalid):  # usually none
        position, index = owners[row]
        frame = frames[position]
        if frame.person_xyxy is not None and frame.objects:
            raise _invalid_box_error(frame, index, rows[row])
        frame.invalid_boxes += 1
        for obj in frame.objects:
            obj.valid = obj.valid and obj.index != index  # not counted as "small" either


def _assign_missing_splits(frames: list[_RawFrame]) -> None:
    """A frame without object entries takes the split of its video's other frames (rule 1 needs an entry)."""
    video_split: dict[str, str] = {}
    for frame in frames:
        if frame.split is not None:
            video_split.setdefault(frame.video, frame.split)
    for frame in frames:
        if frame.split is None:
            frame.split = video_split.get(frame.video, UNKNOWN_SPLIT)


def _filter_frame(raw: _RawFrame, min_side: float, rep: SplitReport) -> FrameAnnotation | None:
    """Rules 2, 3 and 5 for one frame: the annotation, or None after counting the drop reason in ``rep``."""
    valid = [o for o in raw.objects if o.valid]  # all of them unless the frame has no person box
    kept = [o for o in valid if o.short_side >= min_side]
    rep.objects_small += len(valid) - len(kept)
    reason = (
        "no_visible_object"
        if not raw.objects
        else "no_person"
        if raw.person_xyxy is None
        else "all_objects_small"
        if not kept
        else None
    )
    if reason is not None:
        rep.frames_dropped[reason] += 1
        return None
    assert raw.person_xyxy is not None and raw.split is not None
    boxes = np.array([raw.person_xyxy] + [o.box_xyxy for o in kept], dtype=np.float32)  # [N+1, 4]
    labels = np.array([vocab.PERSON_LABEL] + [o.label for o in kept], dtype=np.int64)
    return FrameAnnotation(
        key=raw.key,
        video=raw.video,
        number=raw.number,
        split=raw.split,
        width=raw.width,
        height=raw.height,
        boxes_xyxy=boxes,
        labels=labels,
        attention=np.array([o.attention for o in kept], dtype=np.int64),  # [N, 3]
        spatial=np.array([o.spatial for o in kept], dtype=np.int64),  # [N, 6]
        contacting=np.array([o.contacting for o in kept], dtype=np.int64),
    )  # [N, 17]


def _filter_videos(
    candidates: dict[str, list[FrameAnnotation]], min_frames: int, rep: SplitReport
) -> list[FrameAnnotation]:
    """Rule 4: keep the videos of one split with at least ``min_frames`` frames; frames sorted by number."""
    kept: list[FrameAnnotation] = []
    for video in sorted(candidates):
        frames = sorted(candidates[video], key=lambda f: f.number)
        if len(frames) >= min_frames:
            rep.videos_kept += 1
            kept.extend(frames)
        else:
            rep.videos_dropped["no_frames" if not frames else "short"] += 1
            rep.frames_dropped["short_video"] += len(frames)
    rep.frames_kept = len(kept)
    rep.objects_kept = sum(f.num_objects for f in kept)
    return kept


_COUNT_KINDS = vocab.PREDICATE_TYPES
#: The columns of :class:`FrameColumns`, as stored in a cache file (``<split>/<name>``).
_COLUMN_NAMES = ("keys", "videos", "video_index", "numbers", "widths", "heights", "object_offsets", "boxes", "labels")


class FrameColumns:
    """The kept frames of one split as arrays (columnar), the storage behind :class:`FrameList`.

    Frame ``i`` owns objects ``object_offsets[i]:object_offsets[i+1]`` of the concatenated per-object arrays
    (``attention``, ``spatial``, ``contacting``) and box rows ``object_offsets[i] + i`` to ``object_offsets[i+1] + i``
    (inclusive: the person row first) of ``boxes`` and ``labels``. A handful of numpy arrays and no per-frame Python
    object: forked loader workers and DDP processes share the pages instead of copying them as reference counts
    change (PyTorch's "memory grows with workers" trap). Arrays are read-only.

    Attributes:
        split: the split name.
        keys: ``str [F]`` frame keys; ``videos`` ``str [V]``; ``video_index`` ``int32 [F]`` into ``videos``.
        numbers: ``int64 [F]``; ``widths`` / ``heights`` ``int32 [F]`` original pixels.
        object_offsets: ``int64 [F+1]``.
        boxes: ``float32 [sum(N+1), 4]`` xyxy original pixels; ``labels`` ``uint8 [sum(N+1)]`` AG object index.
        counts: predicate type -> ``uint8 / int64 [sum N, K]`` label counts.
    """

    def __init__(self, split: str, arrays: Mapping[str, np.ndarray]) -> None:
        self.split = split
        for name in (*_COLUMN_NAMES, *_COUNT_KINDS):
            array = np.asarray(arrays[name])
            array.flags.writeable = False
            setattr(self, name, array)
        self.counts = {kind: getattr(self, kind) for kind in _COUNT_KINDS}

    @classmethod
    def from_frames(cls, split: str, frames: Sequence[FrameAnnotation]) -> FrameColumns:
        """The columns of ``frames`` (sorted as given)."""
        videos = sorted({f.video for f in frames})
        where = {video: i for i, video in enumerate(videos)}
        sizes = np.array([f.num_objects for f in frames], dtype=np.int64)
        labels = np.concatenate([f.labels for f in frames]) if frames else np.zeros(0, np.int64)
        arrays: dict[str, Any] = {
            "keys": np.array([f.key for f in frames], dtype=str),
            "videos": np.array(videos, dtype=str),
            "video_index": np.array([where[f.video] for f in frames], dtype=np.int32),
            "numbers": np.array([f.number for f in frames], dtype=np.int64),
            "widths": np.array([f.width for f in frames], dtype=np.int32),
            "heights": np.array([f.height for f in frames], dtype=np.int32),
            "object_offsets": np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
            "boxes": np.concatenate([f.boxes_xyxy for f in frames]) if frames else np.zeros((0, 4), np.float32),
            "labels": labels.astype(np.uint8),
        }
        for kind in _COUNT_KINDS:
            width = vocab.TYPE_SIZES[kind]
            counts = np.concatenate([getattr(f, kind) for f in frames]) if frames else np.zeros((0, width), np.int64)
            small = counts.size == 0 or (counts.min() >= 0 and counts.max() < 256)
            arrays[kind] = counts.astype(np.uint8) if small else counts
        return cls(split, arrays)

    def __len__(self) -> int:
        return len(self.keys)

    def frame(self, index: int) -> FrameAnnotation:
        """Frame ``index`` as a :class:`FrameAnnotation` (built now, its arrays copies: float32 boxes, int64 rest)."""
        start, end = int(self.object_offsets[index]), int(self.object_offsets[index + 1])
        rows = slice(start + index, end + index + 1)
        return FrameAnnotation(
            key=str(self.keys[index]),
            video=str(self.videos[self.video_index[index]]),
            number=int(self.numbers[index]),
            split=self.split,
            width=int(self.widths[index]),
            height=int(self.heights[index]),
            boxes_xyxy=self.boxes[rows].copy(),
            labels=self.labels[rows].astype(np.int64),
            **{kind: self.counts[kind][start:end].astype(np.int64) for kind in _COUNT_KINDS},
        )

    def arrays(self) -> dict[str, np.ndarray]:
        """The columns by name (what :meth:`__init__` takes)."""
        return {name: getattr(self, name) for name in (*_COLUMN_NAMES, *_COUNT_KINDS)}


class FrameList(Sequence[FrameAnnotation]):
    """A sequence of frames of one :class:`FrameColumns` (positions ``index``), each built on access.

    Slicing and :meth:`take` give another :class:`FrameList` (no frame built); :attr:`keys` reads the keys only.
    """

    def __init__(self, columns: FrameColumns, index: np.ndarray | None = None) -> None:
        self.columns = columns
        self.index = np.arange(len(columns), dtype=np.int64) if index is None else np.asarray(index, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.index)

    @overload
    def __getitem__(self, position: int) -> FrameAnnotation: ...

    @overload
    def __getitem__(self, position: slice) -> FrameList: ...

    def __getitem__(self, position: int | slice) -> FrameAnnotation | FrameList:
        if isinstance(position, slice):
            return FrameList(self.columns, self.index[position])
        return self.columns.frame(int(self.index[position]))

    def __iter__(self) -> Iterator[FrameAnnotation]:
        frame = self.columns.frame
        return (frame(i) for i in self.index.tolist())

    @property
    def keys(self) -> list[str]:
        """The frame keys, in order."""
        return self.columns.keys[self.index].tolist()

    def take(self, positions: Sequence[int] | np.ndarray) -> FrameList:
        """The frames at ``positions`` of this list."""
        return FrameList(self.columns, self.index[np.asarray(positions, dtype=np.int64)])

    @staticmethod
    def concat(parts: Sequence[FrameList]) -> Sequence[FrameAnnotation]:
        """The frames of ``parts`` one after another (parts of one :class:`FrameColumns`); ``[]`` for no part.

        Raises:
            ValueError: parts of different splits.
        """
        if not parts:
            return []
        if any(part.columns is not parts[0].columns for part in parts):
            raise ValueError("Expected frame lists of one split but got several")
        return FrameList(parts[0].columns, np.concatenate([part.index for part in parts]))


class AGAnnotations:
    """The filtered ground truth of an AG root (ARCHITECTURE.md section 6); build it with :func:`load_annotations`.

    The frames are stored as arrays (:class:`FrameColumns`, one per split); :meth:`frames` and :meth:`videos` give
    :class:`FrameList` sequences whose :class:`FrameAnnotation` items are built on access.

    Attributes:
        root: the dataset root.
        task: ``"sgdet"`` / ``"sgcls"`` / ``"predcls"``.
        report: the :class:`FilterReport` of the filtering.
    """

    def __init__(self, root: Path, task: str, columns_by_split: dict[str, FrameColumns], report: FilterReport) -> None:
        self.root = root
        self.task = task
        self.report = report
        self._columns = columns_by_split

    @property
    def splits(self) -> list[str]:
        """Names of the splits that have kept frames, sorted."""
        return sorted(name for name, columns in self._columns.items() if len(columns))

    def columns(self, split: str) -> FrameColumns | None:
        """The arrays of ``split`` (None for an unknown split)."""
        return self._columns.get(split)

    def frames(self, split: str) -> FrameList | list[FrameAnnotation]:
        """Kept frames of ``split``, sorted by video then frame number (empty for an unknown split)."""
        columns = self._columns.get(split)
        return FrameList(columns) if columns is not None else []

    def videos(self, split: str) -> dict[str, FrameList]:
        """``video -> its kept frames sorted by number`` for ``split``, videos in sorted order."""
        columns = self._columns.get(split)
        if columns is None or not len(columns):
            return {}
        starts = np.flatnonzero(np.diff(columns.video_index, prepend=-1))  # frames are grouped by video
        ends = [*starts[1:].tolist(), len(columns)]
        return {
            str(columns.videos[columns.video_index[start]]): FrameList(columns, np.arange(start, end))
            for start, end in zip(starts.tolist(), ends)
        }

    def triplet_categories(self, split: str = "train") -> dict[str, list[list[int]]]:
        """Sorted unique ``[global predicate index, AG object index]`` pairs per predicate type (section 3).

        Returns:
            ``{"attention": [[p, o], ...], "spatial": [...], "contacting": [...]}``, from ``split`` (train).
        """
        columns = self._columns.get(split)
        if columns is None:
            return {kind: [] for kind in vocab.PREDICATE_TYPES}
        sizes = np.diff(columns.object_offsets)
        box_row = np.arange(int(columns.object_offsets[-1])) + np.repeat(np.arange(len(sizes)), sizes) + 1
        found = {}
        for kind in vocab.PREDICATE_TYPES:
            rows, cols = np.nonzero(columns.counts[kind])
            pairs = np.stack([cols + vocab.TYPE_OFFSETS[kind], columns.labels[box_row[rows]].astype(np.int64)], 1)
            found[kind] = np.unique(pairs.reshape(-1, 2), axis=0).tolist()
        return found


def default_filter_small(task: str) -> float:
    """The "filter small" threshold of a task: 16 px for SGDet/SGCls, 0 (off) for PredCls."""
    return 0.0 if task == "predcls" else SMALL_BOX_MIN_SIDE


def _validate_options(task: str, min_frames: int, filter_small: float | None) -> float:
    """Check the loader options and return the effective "filter small" threshold."""
    if task not in TASKS:
        raise ValueError(f"Expected task in {list(TASKS)} but got {task!r}")
    if min_frames < 1:
        raise ValueError(f"Expected min_frames >= 1 but got {min_frames}")
    if filter_small is not None and filter_small < 0:
        raise ValueError(f"Expected filter_small >= 0 or None but got {filter_small}")
    return default_filter_small(task) if filter_small is None else float(filter_small)


def _read_raw_frames(root: PathLike) -> list[_RawFrame]:
    """Read and validate both pickles and the class files of ``root`` (no filtering)."""
    annotations = Path(root) / ANNOTATION_DIR
    read_class_file(annotations / OBJECT_CLASSES_FILE, vocab.OBJECT_CLASSES, vocab.RAW_OBJECT_NAMES)
    read_class_file(annotations / RELATIONSHIP_CLASSES_FILE, vocab.PREDICATES, vocab.RAW_PREDICATE_NAMES)
    person = load_pickle(annotations / PERSON_FILE)
    objects = load_pickle(annotations / OBJECT_FILE)
    _check_same_keys(person, objects)
    frames = [_parse_frame(key, person[key], objects[key]) for key in person]
    _check_boxes(frames)
    _assign_missing_splits(frames)
    return frames


#: Bumped whenever the parsing, the filtering or the cache layout changes, so that an old cache file is never read.
CACHE_VERSION = 1
#: Environment variable naming the annotation cache folder (``off``: no cache).
CACHE_ENV = "ARN_ANNOTATION_CACHE"
#: The annotation cache folder when :data:`CACHE_ENV` is unset.
DEFAULT_CACHE_DIR = "~/.cache/arn_lightning/annotations"


def annotation_cache_dir() -> Path | None:
    """The folder of the parsed-annotation cache: ``$ARN_ANNOTATION_CACHE``, else :data:`DEFAULT_CACHE_DIR`; None
    when the variable is ``off``."""
    folder = os.environ.get(CACHE_ENV, DEFAULT_CACHE_DIR)
    return None if folder.strip().lower() == "off" else Path(folder).expanduser()


def _file_digest(path: Path) -> str:
    """BLAKE2b of a file's bytes (read in 8 MiB blocks)."""
    digest = hashlib.blake2b(digest_size=20)
    with path.open("rb") as handle:
        while block := handle.read(8 * 2**20):
            digest.update(block)
    return digest.hexdigest()


def _cache_key(root: PathLike, task: str, min_frames: int, min_side: float) -> str:
    """The cache file name of a root's filtered index: the pickles' content and the filtering settings."""
    annotations = Path(root) / ANNOTATION_DIR
    payload = {
        "version": CACHE_VERSION,
        "pickles": [_file_digest(annotations / name) for name in (PERSON_FILE, OBJECT_FILE)],
        "task": task,
        "min_frames": min_frames,
        "filter_small": min_side,
    }
    return hashlib.blake2b(json.dumps(payload, sort_keys=True).encode(), digest_size=20).hexdigest()


def _report_from_dict(data: Mapping[str, Any]) -> FilterReport:
    """The :class:`FilterReport` of :meth:`FilterReport.to_dict`."""
    report = FilterReport(task=data["task"], min_frames=data["min_frames"], filter_small=data["filter_small"])
    for name, split in data["splits"].items():
        objects = split["objects"]
        report.splits[name] = SplitReport(
            videos_total=split["videos"]["total"],
            videos_kept=split["videos"]["kept"],
            videos_dropped=dict(split["videos"]["dropped"]),
            frames_total=split["frames"]["total"],
            frames_kept=split["frames"]["kept"],
            frames_dropped=dict(split["frames"]["dropped"]),
            objects_total=objects["total"],
            objects_invisible=objects["invisible"],
            objects_small=objects["small"],
            objects_kept=objects["kept"],
            boxes_invalid_ignored=split["boxes"]["invalid_ignored"],
        )
    return report


def _write_cache(path: Path, columns: Mapping[str, FrameColumns], report: FilterReport) -> None:
    """The filtered index as one uncompressed ``.npz`` (no pickled object), written atomically."""
    arrays = {f"{split}/{name}": array for split, cols in columns.items() for name, array in cols.arrays().items()}
    meta = {"version": CACHE_VERSION, "splits": list(columns), "report": report.to_dict()}
    arrays["meta"] = np.array(json.dumps(meta))
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "wb") as handle:
        np.savez(handle, **arrays)


def _read_cache(path: Path) -> tuple[dict[str, FrameColumns], FilterReport] | None:
    """The cached index, or None when the file is missing or unreadable (then rebuilt)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            if meta.get("version") != CACHE_VERSION:
                return None
            columns = {
                split: FrameColumns(split, {name: data[f"{split}/{name}"] for name in (*_COLUMN_NAMES, *_COUNT_KINDS)})
                for split in meta["splits"]
            }
            return columns, _report_from_dict(meta["report"])
    except (OSError, ValueError, KeyError, TypeError, EOFError) as error:
        if path.exists():
            log.warning("ignoring the unreadable annotation cache %s (%s)", path, error)
        return None


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off for the block (restored after). Unpickling and parsing build about
    ten objects a frame, none of them in a cycle, and each collection would scan them all again: it halves the time
    of a cold load."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _parse_and_filter(root: PathLike, task: str, min_frames: int, min_side: float) -> AGAnnotations:
    """Read the pickles of ``root`` and apply the filtering (the slow path, without the cache)."""
    with _gc_paused():
        return _parse_and_filter_all(root, task, min_frames, min_side)


def _parse_and_filter_all(root: PathLike, task: str, min_frames: int, min_side: float) -> AGAnnotations:
    report = FilterReport(task=task, min_frames=min_frames, filter_small=min_side)
    candidates: dict[str, dict[str, list[FrameAnnotation]]] = defaultdict(lambda: defaultdict(list))
    videos_seen: dict[str, set] = defaultdict(set)
    for raw in _read_raw_frames(root):
        split = raw.split or UNKNOWN_SPLIT
        rep = report.split(split)
        rep.frames_total += 1
        rep.objects_total += raw.num_entries
        rep.objects_invisible += raw.num_entries - len(raw.objects)
        rep.boxes_invalid_ignored += raw.invalid_boxes
        videos_seen[split].add(raw.video)
        frame = _filter_frame(raw, min_side, rep)
        candidates[split][raw.video] += [frame] if frame is not None else []
    columns = {}
    for split, videos in sorted(videos_seen.items()):
        rep = report.split(split)
        rep.videos_total = len(videos)
        kept = _filter_videos({v: candidates[split][v] for v in videos}, min_frames, rep)
        columns[split] = FrameColumns.from_frames(split, kept)
    return AGAnnotations(Path(root), task, columns, report)


def load_annotations(
    root: PathLike,
    task: str = "sgdet",
    min_frames: int = DEFAULT_MIN_FRAMES,
    filter_small: float | None = None,
    cache: bool = True,
) -> AGAnnotations:
    """Read an AG root and apply the standard filtering of the task.

    The parsed, filtered index is cached (:func:`annotation_cache_dir`, one ``.npz`` per key): the key hashes the
    two pickles' bytes, the filtering settings and :data:`CACHE_VERSION`, so a changed pickle or setting never reads
    a stale entry. The class files are checked on every load; a root that fails to load is never cached.

    Args:
        root: dataset root containing ``annotations/`` (see docs/action_genome.md section 1).
        task: ``"sgdet"``, ``"sgcls"`` or ``"predcls"``.
        min_frames: keep a video only if at least this many frames survive (rule 4).
        filter_small: minimum short side of object boxes in pixels; None -> the task default (16, PredCls 0).
        cache: read and write the cache (off: always parse the pickles).

    Returns:
        The filtered annotations, frames sorted by video then frame number.

    Raises:
        AnnotationError: missing or malformed annotation files, naming the file and the key (and the object index);
            a pickle referencing anything but plain data (:func:`load_pickle`); a used box breaking the box rule
            (module docstring).
        ValueError: invalid options.
    """
    min_side = _validate_options(task, min_frames, filter_small)
    folder = annotation_cache_dir() if cache else None
    if folder is None:
        return _parse_and_filter(root, task, min_frames, min_side)
    annotations = Path(root) / ANNOTATION_DIR
    read_class_file(annotations / OBJECT_CLASSES_FILE, vocab.OBJECT_CLASSES, vocab.RAW_OBJECT_NAMES)
    read_class_file(annotations / RELATIONSHIP_CLASSES_FILE, vocab.PREDICATES, vocab.RAW_PREDICATE_NAMES)
    for name in (PERSON_FILE, OBJECT_FILE):
        if not (annotations / name).is_file():
            raise AnnotationError(f"Expected the annotation file {annotations / name} but it does not exist")
    path = folder / f"{_cache_key(root, task, min_frames, min_side)}.npz"
    cached = _read_cache(path)
    if cached is not None:
        return AGAnnotations(Path(root), task, *cached)
    loaded = _parse_and_filter(root, task, min_frames, min_side)
    try:
        _write_cache(path, loaded._columns, loaded.report)
    except OSError as error:  # a read-only or full cache folder: work without the cache
        log.warning("could not write the annotation cache %s (%s)", path, error)
    return loaded
