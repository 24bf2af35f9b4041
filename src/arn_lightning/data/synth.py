"""The synthetic Action Genome: a small, learnable dataset written in the real AG release format.

:func:`generate` writes ``annotations/person_bbox.pkl``, ``annotations/object_bbox_and_relationship.pkl``, the two
class files in the release's raw spelling, ``annotations/frame_list.txt`` and ``frames/<VID>.mp4/<NNNNNN>.png``,
so that training and tests read it through exactly the code path of the real data (:mod:`arn_lightning.data.ag`).

Each video is one scenario of :mod:`arn_lightning.data.synth_plans` (a person holding, drinking, sitting, lying,
walking with a bag, wearing a jacket, touching a door, ...) rendered by :mod:`arn_lightning.data.synth_render` on a
plain background; every predicate is derived from the drawn geometry (:mod:`arn_lightning.data.synth_scene`). The
awkward cases of the real data occur at small rates: invisible objects (``bbox`` None, ``visible`` False,
relationships None), frames whose person box is missing, tiny boxes (a lamp, < 16 px), videos of one or two frames,
frame numbers with irregular gaps, and keys inserted into the pickles out of frame order.

The output is a deterministic function of the arguments: the same seed gives bit-identical pickles and PNGs.
"""

from __future__ import annotations

import pickle
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from arn_lightning import vocab
from arn_lightning._types import PathLike
from arn_lightning.atomic import replace_folder
from arn_lightning.data import ag
from arn_lightning.data.synth_plans import VideoPlan, frame_scene, make_plan
from arn_lightning.data.synth_render import render_frame
from arn_lightning.data.synth_scene import Figure, clip_box, keypoint_visibility, relationship_labels

DEFAULT_VIDEOS = 40
DEFAULT_FRAMES = 8
DEFAULT_SIZE = (320, 240)
DEFAULT_TEST_FRACTION = 0.25
#: Fraction of videos that get only 1 or 2 annotated frames (dropped by the min-frames filter).
SHORT_VIDEO_RATE = 0.05
#: Frame number of a video's first annotated frame, and the gap between annotated frames (half-open ranges).
FIRST_FRAME_RANGE = (1, 60)
FRAME_GAP_RANGE = (8, 40)
#: Smallest frame size the figure and objects can be drawn at.
MIN_SIZE = (64, 48)
PNG_COMPRESS_LEVEL = 6
PICKLE_PROTOCOL = 4
#: Detector-like scores of the person box and keypoint logits for drawn / hidden keypoints.
PERSON_SCORE_RANGE = (0.9, 1.0)
KEYPOINT_LOGITS = (8.0, -4.0)
#: Decimal places kept for the boxes written to the pickles.
BOX_DECIMALS = 2
#: Permissions of the written root (mkdtemp would leave it private).
FOLDER_MODE = 0o755


@dataclass
class SynthResult:
    """What :func:`generate` wrote.

    Attributes:
        root: the dataset root.
        videos: ``split -> number of videos``.
        frames: ``split -> number of frame keys`` (before any filtering).
        scenarios: ``scenario -> number of videos``.
    """

    root: Path
    videos: dict[str, int] = field(default_factory=dict)
    frames: dict[str, int] = field(default_factory=dict)
    scenarios: dict[str, int] = field(default_factory=dict)


def video_name(index: int) -> str:
    """Charades-like video file name of video ``index``: ``S0007.mp4``."""
    return f"S{index:04d}.mp4"


def frame_numbers(rng: np.random.Generator, count: int) -> list[int]:
    """Increasing frame numbers with irregular gaps, like the sampled frames of AG."""
    first = int(rng.integers(*FIRST_FRAME_RANGE))
    gaps = rng.integers(*FRAME_GAP_RANGE, size=max(0, count - 1))
    return [first] + [first + int(g) for g in np.cumsum(gaps)]


def _person_entry(figure: Figure | None, box_xyxy: np.ndarray, size: tuple[int, int], score: float) -> dict[str, Any]:
    """A ``person_bbox.pkl`` entry; ``figure`` None writes the empty arrays of a missed detection."""
    n = 0 if figure is None else 1
    entry: dict[str, Any] = {
        "bbox": np.zeros((n, 4), dtype=np.float32),
        "bbox_score": np.full((n,), score, dtype=np.float32),
        "bbox_size": (int(size[0]), int(size[1])),
        "bbox_mode": "xyxy",
        "keypoints": np.zeros((n, 17, 3), dtype=np.float32),
        "keypoints_logits": np.zeros((n, 17), dtype=np.float32),
    }
    if figure is not None:
        visible = keypoint_visibility(figure)
        entry["bbox"][0] = np.round(box_xyxy, BOX_DECIMALS)
        entry["keypoints"][0, :, :2] = np.round(figure.keypoints, BOX_DECIMALS)
        entry["keypoints"][0, :, 2] = visible
        entry["keypoints_logits"][0] = np.where(visible > 0, *KEYPOINT_LOGITS)
    return entry


def _object_entry(
    name: str, key_tag: str, split: str, box_xyxy: np.ndarray | None, labels: dict[str, list[str]] | None
) -> dict[str, Any]:
    """An ``object_bbox_and_relationship.pkl`` entry; ``box_xyxy`` None writes an invisible object."""
    video, number = key_tag.split("/")
    entry: dict[str, Any] = {
        "class": name,
        "bbox": None,
        "attention_relationship": None,
        "spatial_relationship": None,
        "contacting_relationship": None,
        "visible": box_xyxy is not None,
        "metadata": {"tag": f"{video}/{name.replace('/', '_')}/{number}", "set": split},
    }
    if box_xyxy is not None and labels is not None:
        x1, y1, x2, y2 = (float(v) for v in box_xyxy)
        entry["bbox"] = tuple(round(v, BOX_DECIMALS) for v in (x1, y1, x2 - x1, y2 - y1))
        for kind in vocab.PREDICATE_TYPES:
            entry[f"{kind}_relationship"] = list(labels[kind])
    return entry


def render_video_frame(
    plan: VideoPlan, index: int, number: int, u: float, video: str, split: str, score: float
) -> tuple[Image.Image, dict[str, Any], list[dict[str, Any]]]:
    """Image, person entry and object entries of one frame of a planned video."""
    figure, things = frame_scene(plan, index, u)
    person_xyxy = clip_box(figure.box_xyxy, *plan.size)
    tag = f"{video}/{number:06d}"
    objects = []
    for obj, thing in things:
        labels = relationship_labels(figure, person_xyxy, thing) if thing is not None else None
        objects.append(_object_entry(obj.name, tag, split, None if thing is None else thing.box_xyxy, labels))
    image = render_frame(plan.size, figure, [t for _, t in things if t is not None])
    detected = index not in plan.missed_person
    return image, _person_entry(figure if detected else None, person_xyxy, plan.size, score), objects


def _check_args(videos: int, frames: int, size: tuple[int, int], test_fraction: float) -> None:
    """Validate the arguments of :func:`generate`."""
    if videos < 1 or frames < 1:
        raise ValueError(f"Expected videos >= 1 and frames >= 1 but got videos={videos}, frames={frames}")
    if len(size) != 2 or size[0] < MIN_SIZE[0] or size[1] < MIN_SIZE[1]:
        raise ValueError(f"Expected size (width, height) of at least {MIN_SIZE} but got {size}")
    if not 0.0 <= test_fraction <= 1.0:
        raise ValueError(f"Expected test_fraction in [0, 1] but got {test_fraction}")


def _test_videos(seed_seq: np.random.SeedSequence, videos: int, test_fraction: float) -> set:
    """Indices of the test videos: a seeded choice of round(test_fraction * videos), both splits non-empty."""
    count = int(round(test_fraction * videos))
    if videos >= 2 and 0.0 < test_fraction < 1.0:
        count = min(max(count, 1), videos - 1)
    return set(np.random.default_rng(seed_seq).permutation(videos)[:count].tolist())


def _write_video(
    tmp: Path,
    index: int,
    split: str,
    frames: int,
    size: tuple[int, int],
    seed_seq: np.random.SeedSequence,
    person: dict[str, Any],
    objects: dict[str, Any],
) -> str:
    """Plan, render and store one video; fills ``person`` / ``objects`` by key and returns the scenario."""
    rng = np.random.default_rng(seed_seq)
    count = int(rng.integers(1, 3)) if rng.random() < SHORT_VIDEO_RATE else frames
    numbers = frame_numbers(rng, count)
    plan = make_plan(rng, count, size)
    video = video_name(index)
    (tmp / ag.FRAMES_DIR / video).mkdir(parents=True)
    span = max(1, numbers[-1] - numbers[0])
    for i, number in enumerate(numbers):
        score = float(rng.uniform(*PERSON_SCORE_RANGE))
        image, person_entry, object_entries = render_video_frame(
            plan, i, number, (number - numbers[0]) / span, video, split, score
        )
        image.save(tmp / ag.FRAMES_DIR / video / f"{number:06d}.png", format="PNG", compress_level=PNG_COMPRESS_LEVEL)
        key = f"{video}/{number:06d}.png"
        person[key], objects[key] = person_entry, object_entries
    return plan.scenario


def _write_annotations(
    tmp: Path, person: dict[str, Any], objects: dict[str, Any], key_seq: np.random.SeedSequence
) -> None:
    """Pickles (keys inserted in a shuffled order, as in the release), class files and the frame list."""
    annotations = tmp / ag.ANNOTATION_DIR
    annotations.mkdir()
    keys = sorted(person)
    order = np.random.default_rng(key_seq).permutation(len(keys))
    for name, data in ((ag.PERSON_FILE, person), (ag.OBJECT_FILE, objects)):
        shuffled = {keys[i]: data[keys[i]] for i in order}
        with (annotations / name).open("wb") as handle:
            pickle.dump(shuffled, handle, protocol=PICKLE_PROTOCOL)
    (annotations / ag.OBJECT_CLASSES_FILE).write_text(
        "".join(vocab.raw_spelling(n) + "\n" for n in vocab.OBJECT_CLASSES), encoding="utf-8"
    )
    (annotations / ag.RELATIONSHIP_CLASSES_FILE).write_text(
        "".join(vocab.raw_spelling(n) + "\n" for n in vocab.PREDICATES), encoding="utf-8"
    )
    (annotations / ag.FRAME_LIST_FILE).write_text("".join(k + "\n" for k in keys), encoding="utf-8")


#: Marks a root as written by :func:`generate`: ``overwrite`` replaces only such a root, never a real dataset.
MARKER_FILE = ".arn-lightning-synthetic"


def _move_into_place(tmp: Path, root: Path, overwrite: bool) -> None:
    """Rename the finished temporary folder onto ``root`` (an existing empty folder, or with ``overwrite`` an
    earlier synthetic root, is replaced; :func:`arn_lightning.atomic.replace_folder`)."""
    try:
        replace_folder(tmp, root, replace_existing=overwrite)
    except FileExistsError as exc:
        raise FileExistsError(f"{exc} (pass overwrite=True to replace it)") from exc


def generate(
    root: PathLike,
    videos: int = DEFAULT_VIDEOS,
    frames: int = DEFAULT_FRAMES,
    size: tuple[int, int] = DEFAULT_SIZE,
    seed: int = 0,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    overwrite: bool = False,
) -> SynthResult:
    """Write a synthetic Action Genome root.

    Everything is written into a temporary folder next to ``root`` and renamed at the end, so an interrupted run
    leaves nothing half-written.

    Args:
        root: output folder; must be absent or empty unless ``overwrite``.
        videos: number of videos.
        frames: annotated frames per video (a few videos get only 1-2 frames on purpose).
        size: frame ``(width, height)`` in pixels.
        seed: random seed; the output is bit-identical for the same arguments.
        test_fraction: fraction of the videos in the test split (the rest is train).
        overwrite: replace an existing ``root``.

    Returns:
        Counts of what was written.
    """
    _check_args(videos, frames, size, test_fraction)
    root = Path(root)
    if root.exists() and any(root.iterdir()):
        if not overwrite:
            raise FileExistsError(f"Expected {root} to be absent or empty (pass overwrite=True) but it is not")
        if not (root / MARKER_FILE).is_file():
            raise FileExistsError(
                f"Expected overwrite to replace an earlier synthetic root (holding {MARKER_FILE}) "
                f"but {root} is something else; it is left as it is"
            )
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    tmp.chmod(FOLDER_MODE)
    try:
        result = _write_dataset(tmp, videos, frames, tuple(size), seed, test_fraction)
        (tmp / MARKER_FILE).write_text("synthetic Action Genome written by arn-lightning synth\n", encoding="utf-8")
        _move_into_place(tmp, root, overwrite)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result.root = root
    return result


def _write_dataset(
    tmp: Path, videos: int, frames: int, size: tuple[int, int], seed: int, test_fraction: float
) -> SynthResult:
    """Write every video and the annotations into ``tmp``; independent random streams per video."""
    split_seq, key_seq, *video_seqs = np.random.SeedSequence(seed).spawn(2 + videos)
    test = _test_videos(split_seq, videos, test_fraction)
    result = SynthResult(root=tmp)
    person: dict[str, Any] = {}
    objects: dict[str, Any] = {}
    for index in range(videos):
        split = "test" if index in test else "train"
        before = len(person)
        scenario = _write_video(tmp, index, split, frames, size, video_seqs[index], person, objects)
        result.videos[split] = result.videos.get(split, 0) + 1
        result.frames[split] = result.frames.get(split, 0) + len(person) - before
        result.scenarios[scenario] = result.scenarios.get(scenario, 0) + 1
    _write_annotations(tmp, person, objects, key_seq)
    return result
