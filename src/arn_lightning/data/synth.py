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

**Association structure** (ARN's premise, paper Fig. 1: objects imply predicates, predicates imply each other).
``association`` (object -> predicate) and ``predicate_association`` (predicate -> predicate across types) are
probabilities in [0, 1]. Each object class has a preferred contacting predicate (:data:`PREFERRED_CONTACTING`: a cup
is drunk from, a bag carried) and each contacting predicate a preferred attention and spatial predicate
(:data:`PREFERRED_ATTENTION`, :data:`PREFERRED_SPATIAL`: what is held is looked at and in front of the person). Per
video, the object rule is switched on with probability ``association`` and the predicate rule with probability
``predicate_association``; with a rule on, the video's plan is redrawn (from a separate random stream) until every
visible object of every frame follows it (:func:`follows_preferences`), keeping the best of
:data:`ASSOCIATION_ATTEMPTS` plans. The labels are still computed from the drawn geometry, so what the model must
predict stays visible in the pixels; only which scenes occur changes. At 0 (the default) no extra random number is
drawn and the output is bit-identical to the generator without this option. ``arn-lightning stats`` measures the
strength back (``docs/stats.md``).
"""

from __future__ import annotations

import json
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

#: Association structure: the preferred contacting predicate of each object class the scenarios draw (the mode of
#: the class at association 0, so every preference is a scene the plans can produce).
PREFERRED_CONTACTING: dict[str, str] = {
    "cup/glass/bottle": "drinking_from",
    "book": "holding",
    "phone/camera": "holding",
    "food": "eating",
    "television": "not_contacting",
    "chair": "sitting_on",
    "sofa/couch": "sitting_on",
    "table": "not_contacting",
    "laptop": "touching",
    "bed": "lying_on",
    "blanket": "covered_by",
    "bag": "carrying",
    "clothes": "wearing",
    "door": "touching",
    "light": "not_contacting",
    "floor": "standing_on",
}
#: Preferred attention and spatial predicate of each contacting predicate the scenarios produce (paper Fig. 1:
#: holding -> in front of, lying on -> beneath).
PREFERRED_ATTENTION: dict[str, str] = {
    "holding": "looking_at",
    "drinking_from": "looking_at",
    "eating": "looking_at",
    "touching": "looking_at",
    "not_contacting": "looking_at",
    "sitting_on": "not_looking_at",
    "lying_on": "not_looking_at",
    "covered_by": "not_looking_at",
    "standing_on": "not_looking_at",
    "carrying": "not_looking_at",
    "have_it_on_the_back": "not_looking_at",
    "wearing": "not_looking_at",
}
PREFERRED_SPATIAL: dict[str, str] = {
    "holding": "in_front_of",
    "drinking_from": "in_front_of",
    "eating": "in_front_of",
    "touching": "on_the_side_of",
    "not_contacting": "on_the_side_of",
    "sitting_on": "beneath",
    "lying_on": "beneath",
    "covered_by": "in_front_of",
    "standing_on": "beneath",
    "carrying": "in_front_of",
    "have_it_on_the_back": "behind",
    "wearing": "in_front_of",
}
#: Contacting predicates that name the relation more precisely than the others of the same object
#: (``holding`` + ``drinking_from``: the key is ``drinking_from``).
SPECIFIC_CONTACTING = ("drinking_from", "eating")
#: Plans drawn per video, at most, to find one that follows the switched-on rules.
ASSOCIATION_ATTEMPTS = 64
#: Spawn key of the association's random stream (independent of the streams of the videos and the splits).
ASSOCIATION_STREAM = 0xA550C
#: Prefix of the line of the marker file that records a non-zero association (absent: both strengths are 0).
ASSOCIATION_LINE = "association: "


@dataclass
class SynthResult:
    """What :func:`generate` wrote.

    Attributes:
        root: the dataset root.
        videos: ``split -> number of videos``.
        frames: ``split -> number of frame keys`` (before any filtering).
        scenarios: ``scenario -> number of videos``.
        association: ``{"object": s, "predicate": s}``, the strengths the root was generated with.
    """

    root: Path
    videos: dict[str, int] = field(default_factory=dict)
    frames: dict[str, int] = field(default_factory=dict)
    scenarios: dict[str, int] = field(default_factory=dict)
    association: dict[str, float] = field(default_factory=lambda: {"object": 0.0, "predicate": 0.0})


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


def _check_args(
    videos: int, frames: int, size: tuple[int, int], test_fraction: float, strengths: tuple[float, float] = (0.0, 0.0)
) -> None:
    """Validate the arguments of :func:`generate`."""
    for name, value in zip(("association", "predicate_association"), strengths):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"Expected {name} in [0, 1] but got {value}")
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


def contacting_key(contacting: list[str]) -> str:
    """The contacting predicate that names an object's relation: a specific one (``drinking_from``, ``eating``)
    over ``holding``, else the first label.

    Args:
        contacting: the object's contacting labels (at least one).
    """
    return next((name for name in SPECIFIC_CONTACTING if name in contacting), contacting[0])


def follows_preferences(name: str, labels: dict[str, list[str]], object_rule: bool, predicate_rule: bool) -> bool:
    """Whether one visible object's labels follow the switched-on association rules.

    Args:
        name: AG object class (pickle spelling).
        labels: ``{"attention": [...], "spatial": [...], "contacting": [...]}`` of the object.
        object_rule: the class's preferred contacting predicate (:data:`PREFERRED_CONTACTING`) must be among its
            contacting labels.
        predicate_rule: its attention label must be the preferred one of its contacting predicate
            (:func:`contacting_key`, :data:`PREFERRED_ATTENTION`) and that predicate's preferred spatial predicate
            (:data:`PREFERRED_SPATIAL`) must be among its spatial labels.

    Classes and predicates without a preference are unconstrained.
    """
    if object_rule and name in PREFERRED_CONTACTING and PREFERRED_CONTACTING[name] not in labels["contacting"]:
        return False
    if predicate_rule:
        key = contacting_key(labels["contacting"])
        if key in PREFERRED_ATTENTION and labels["attention"] != [PREFERRED_ATTENTION[key]]:
            return False
        if key in PREFERRED_SPATIAL and PREFERRED_SPATIAL[key] not in labels["spatial"]:
            return False
    return True


def plan_agreement(plan: VideoPlan, times: list[float], object_rule: bool, predicate_rule: bool) -> float:
    """Fraction of the (frame, visible object) labels of a plan that follow the rules (1.0 with none visible).

    Args:
        plan: the video's plan.
        times: the time ``u`` in [0, 1] of each annotated frame.
        object_rule: see :func:`follows_preferences`.
        predicate_rule: see :func:`follows_preferences`.
    """
    total = agree = 0
    for index, u in enumerate(times):
        figure, things = frame_scene(plan, index, u)
        person_xyxy = clip_box(figure.box_xyxy, *plan.size)
        for obj, thing in things:
            if thing is None:
                continue
            total += 1
            labels = relationship_labels(figure, person_xyxy, thing)
            agree += follows_preferences(obj.name, labels, object_rule, predicate_rule)
    return 1.0 if total == 0 else agree / total


def _associated_plan(
    plan: VideoPlan, times: list[float], size: tuple[int, int], rng: np.random.Generator, strengths: tuple[float, float]
) -> VideoPlan:
    """The plan of a video under the association rules (:func:`follows_preferences`).

    Each rule is switched on with its probability; with one on, plans are drawn from ``rng`` (the video's
    association stream, never its main stream) until one follows the rules everywhere, keeping the best of
    :data:`ASSOCIATION_ATTEMPTS` (the video's own plan counts as the first).
    """
    object_rule, predicate_rule = (bool(rng.random() < strength) for strength in strengths)
    if not (object_rule or predicate_rule):
        return plan
    best, best_score = plan, plan_agreement(plan, times, object_rule, predicate_rule)
    for _ in range(ASSOCIATION_ATTEMPTS - 1):
        if best_score == 1.0:
            break
        candidate = make_plan(rng, len(times), size)
        score = plan_agreement(candidate, times, object_rule, predicate_rule)
        if score > best_score:
            best, best_score = candidate, score
    return best


def _write_video(
    tmp: Path,
    index: int,
    split: str,
    frames: int,
    size: tuple[int, int],
    seed_seq: np.random.SeedSequence,
    person: dict[str, Any],
    objects: dict[str, Any],
    association: tuple[np.random.SeedSequence, float, float] | None = None,
) -> str:
    """Plan, render and store one video; fills ``person`` / ``objects`` by key and returns the scenario.

    ``association`` is ``(the video's association stream, object strength, predicate strength)``, or None when both
    strengths are 0 (then nothing else is drawn: the output of the generator without association).
    """
    rng = np.random.default_rng(seed_seq)
    count = int(rng.integers(1, 3)) if rng.random() < SHORT_VIDEO_RATE else frames
    numbers = frame_numbers(rng, count)
    plan = make_plan(rng, count, size)
    span = max(1, numbers[-1] - numbers[0])
    if association is not None:
        stream, *strengths = association
        times = [(number - numbers[0]) / span for number in numbers]
        plan = _associated_plan(plan, times, size, np.random.default_rng(stream), (strengths[0], strengths[1]))
    video = video_name(index)
    (tmp / ag.FRAMES_DIR / video).mkdir(parents=True)
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


def _check_root(root: Path, overwrite: bool) -> None:
    """Refuse a non-empty ``root`` (``FileExistsError``) unless ``overwrite`` and it is an earlier synthetic root."""
    if root.exists() and any(root.iterdir()):
        if not overwrite:
            raise FileExistsError(f"Expected {root} to be absent or empty (pass overwrite=True) but it is not")
        if not (root / MARKER_FILE).is_file():
            raise FileExistsError(
                f"Expected overwrite to replace an earlier synthetic root (holding {MARKER_FILE}) "
                f"but {root} is something else; it is left as it is"
            )


def _write_marker(tmp: Path, strengths: tuple[float, float], result: SynthResult) -> None:
    """Write :data:`MARKER_FILE` into ``tmp``, with the measured association when a strength is set."""
    marker = "synthetic Action Genome written by arn-lightning synth\n"
    if any(strengths):  # recorded only when set: at 0 the root stays bit-identical to the plain generator's
        marker += ASSOCIATION_LINE + json.dumps(result.association) + "\n"
    (tmp / MARKER_FILE).write_text(marker, encoding="utf-8")


def generate(
    root: PathLike,
    videos: int = DEFAULT_VIDEOS,
    frames: int = DEFAULT_FRAMES,
    size: tuple[int, int] = DEFAULT_SIZE,
    seed: int = 0,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    overwrite: bool = False,
    association: float = 0.0,
    predicate_association: float | None = None,
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
        association: probability in [0, 1] that a video follows the object -> predicate rule (module docstring);
            0 draws nothing extra: the output is bit-identical to the generator without association.
        predicate_association: probability in [0, 1] of the predicate -> predicate rule; None: ``association``.

    Returns:
        Counts of what was written.

    Raises:
        ValueError: a count, the size, the test fraction or a strength out of range.
        FileExistsError: ``root`` is not empty (and not an earlier synthetic root with ``overwrite``).
    """
    strengths = (float(association), float(association if predicate_association is None else predicate_association))
    _check_args(videos, frames, size, test_fraction, strengths)
    root = Path(root)
    _check_root(root, overwrite)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    tmp.chmod(FOLDER_MODE)
    try:
        result = _write_dataset(tmp, videos, frames, tuple(size), seed, test_fraction, strengths)
        _write_marker(tmp, strengths, result)
        _move_into_place(tmp, root, overwrite)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result.root = root
    return result


def _write_dataset(
    tmp: Path,
    videos: int,
    frames: int,
    size: tuple[int, int],
    seed: int,
    test_fraction: float,
    strengths: tuple[float, float] = (0.0, 0.0),
) -> SynthResult:
    """Write every video and the annotations into ``tmp``; independent random streams per video."""
    split_seq, key_seq, *video_seqs = np.random.SeedSequence(seed).spawn(2 + videos)
    test = _test_videos(split_seq, videos, test_fraction)
    result = SynthResult(root=tmp, association={"object": strengths[0], "predicate": strengths[1]})
    person: dict[str, Any] = {}
    objects: dict[str, Any] = {}
    for index in range(videos):
        split = "test" if index in test else "train"
        before = len(person)
        association = None
        if any(strengths):
            stream = np.random.SeedSequence(seed, spawn_key=(ASSOCIATION_STREAM, index))
            association = (stream, *strengths)
        scenario = _write_video(tmp, index, split, frames, size, video_seqs[index], person, objects, association)
        result.videos[split] = result.videos.get(split, 0) + 1
        result.frames[split] = result.frames.get(split, 0) + len(person) - before
        result.scenarios[scenario] = result.scenarios.get(scenario, 0) + 1
    _write_annotations(tmp, person, objects, key_seq)
    return result


def read_association(root: PathLike) -> dict[str, float] | None:
    """The association strengths a synthetic root was generated with (:func:`generate`).

    Args:
        root: a dataset root.

    Returns:
        ``{"object": s, "predicate": s}`` for a root written by :func:`generate` (both 0 when its marker file holds
        no association line), None for any other root (the real AG has no marker file).

    Raises:
        ValueError: the marker's association line is not the JSON object :func:`generate` writes.
    """
    marker = Path(root) / MARKER_FILE
    if not marker.is_file():
        return None
    for line in marker.read_text(encoding="utf-8").splitlines():
        if line.startswith(ASSOCIATION_LINE):
            text = line[len(ASSOCIATION_LINE) :]
            try:
                value = json.loads(text)
                return {"object": float(value["object"]), "predicate": float(value["predicate"])}
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(
                    f"{marker}: Expected an association line like "
                    f'{ASSOCIATION_LINE}{{"object": 0.9, "predicate": 0.9}} but got {line!r}'
                ) from exc
    return {"object": 0.0, "predicate": 0.0}
