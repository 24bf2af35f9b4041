"""Geometry of the synthetic Action Genome scenes and the predicates it implies.

A scene is one person figure (COCO keypoints, a head whose face shows the gaze direction) and a few objects
(an AG class, a box, and whether it is drawn after the person). Every predicate label is a deterministic
function of this geometry, so a model can learn it from the pixels:

* attention: ``unsure`` when the face is hidden (the head is drawn as the back of the head); otherwise
  ``looking_at`` when the object's reference point (:func:`gaze_angle`) lies inside the gaze cone
  (``GAZE_HALF_ANGLE_DEG`` around the direction the nose points to, seen from the head centre), else
  ``not_looking_at``;
* spatial ("the object is <predicate> the person", multi-label): ``above`` when the object's centre is above the
  person's box; ``beneath`` when its centre is below the person's centre, its bottom reaches the person's bottom and
  the two overlap horizontally; ``in_front_of`` / ``behind`` when the two boxes overlap over enough of the smaller
  one (occlusion), by drawing order; ``on_the_side_of`` when none of these holds;
* contacting: from which body keypoints lie inside the object's box, the pose and the drawing order (a hand in a
  hand-held object is ``holding``, the hips in a seat while sitting are ``sitting_on``, ...); ``not_contacting``
  when nothing touches.

Coordinates are image pixels, y down, boxes ``xyxy``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from arn_lightning import vocab

#: COCO keypoint order, as in the release's ``keypoints`` arrays.
KEYPOINT_NAMES: tuple[str, ...] = (
    "nose",
    "left_eye",
    "right_eye",
    "left_ear",
    "right_ear",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
)
KP: dict[str, int] = {name: i for i, name in enumerate(KEYPOINT_NAMES)}
FACE_KEYPOINTS = ("nose", "left_eye", "right_eye")
POSES = ("standing", "sitting", "lying")

# Figure proportions in units of the standing person height ("ph"); local axes: x forward (towards the gaze),
# y up, origin between the feet. The right arm is the "front" arm that holds and touches things.
HEAD_CENTRE: tuple[float, float] = (0.0, 0.915)
HEAD_RADIUS = 0.085
FACE_RADIUS = 0.068
FACE_SHIFT = 0.022
NOSE_RADIUS = 0.022
EYE_RADIUS = 0.014
LIMB_WIDTH = 0.055
TORSO_WIDTH = 0.15
HAND_RADIUS = 0.035
#: The upper body of a sitting figure is this much lower than a standing one.
SIT_DROP = 0.21

_STANDING: dict[str, tuple[float, float]] = {
    "nose": (0.075, 0.905),
    "left_eye": (0.045, 0.93),
    "right_eye": (0.045, 0.93),
    "left_ear": (-0.01, 0.91),
    "right_ear": (-0.01, 0.91),
    "left_shoulder": (-0.01, 0.80),
    "right_shoulder": (0.01, 0.80),
    "left_elbow": (-0.03, 0.65),
    "left_wrist": (-0.03, 0.50),
    "left_hip": (-0.01, 0.50),
    "right_hip": (0.01, 0.50),
    "left_knee": (-0.03, 0.26),
    "right_knee": (0.03, 0.26),
    "left_ankle": (-0.05, 0.02),
    "right_ankle": (0.05, 0.02),
}
#: Front-arm poses: (elbow, wrist) of a standing figure.
ARM_POSES: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {
    "down": ((0.02, 0.65), (0.03, 0.50)),
    "forward": ((0.13, 0.74), (0.26, 0.72)),
    "mouth": ((0.10, 0.68), (0.11, 0.86)),
    "reach": ((0.17, 0.71), (0.34, 0.66)),
}
_SITTING_LEGS: dict[str, tuple[float, float]] = {
    "left_knee": (0.20, 0.30),
    "right_knee": (0.22, 0.30),
    "left_ankle": (0.20, 0.02),
    "right_ankle": (0.24, 0.02),
}
_LIMBS: tuple[tuple[str, str], ...] = (
    ("left_hip", "left_knee"),
    ("left_knee", "left_ankle"),
    ("right_hip", "right_knee"),
    ("right_knee", "right_ankle"),
)
_ARMS: tuple[tuple[str, str], ...] = (
    ("left_shoulder", "left_elbow"),
    ("left_elbow", "left_wrist"),
    ("right_shoulder", "right_elbow"),
    ("right_elbow", "right_wrist"),
)

# Label rules.
GAZE_HALF_ANGLE_DEG = 55.0
#: in_front_of / behind need the intersection of the two boxes to cover this fraction of the smaller one.
OCCLUSION_MIN_FRACTION = 0.35
#: beneath needs this horizontal overlap, as a fraction of the narrower of the two boxes.
BENEATH_MIN_X_OVERLAP = 0.5
#: beneath needs the object's bottom at most this fraction of the person's height above the person's bottom.
BENEATH_BOTTOM_TOLERANCE = 0.05
#: Classes a hand holds (``holding``) rather than touches.
HANDHELD_CLASSES = frozenset(
    vocab.OBJECT_INDEX[n] for n in ("cup/glass/bottle", "book", "phone/camera", "food", "dish")
)
_CUP, _FOOD, _BAG, _CLOTHES = (vocab.OBJECT_INDEX[n] for n in ("cup/glass/bottle", "food", "bag", "clothes"))

# Colours (RGB) of the figure.
SKIN = (224, 172, 105)
HAIR = (60, 35, 20)
SHIRT = (30, 60, 170)
TROUSERS = (50, 50, 50)
EYE = (10, 10, 10)

Point = tuple[float, float]


@dataclass
class Primitive:
    """One drawable shape in image pixels: ``kind`` is "circle" (``points`` = [centre], ``size`` = radius),
    "line" (two points, ``size`` = width), "rect" (two corners), "ellipse" (two corners), "arc" (two corners of
    the ellipse, ``size`` = stroke width) or "polygon" (its points)."""

    kind: str
    points: list[Point]
    color: tuple[int, int, int]
    size: float = 0.0

    def bounds(self) -> np.ndarray:
        """``xyxy`` extent of the drawn shape."""
        pts = np.asarray(self.points, dtype=np.float64)  # [K, 2]
        pad = self.size if self.kind == "circle" else self.size / 2 if self.kind == "line" else 0.0
        return np.concatenate([pts.min(axis=0) - pad, pts.max(axis=0) + pad])


@dataclass
class Figure:
    """The person of a frame.

    Attributes:
        keypoints: ``float64 [17, 2]`` COCO keypoints in image pixels.
        head: head centre in pixels.
        scale: pixels per unit of the standing person height.
        gaze: unit vector the face points to (image axes).
        pose: one of ``POSES``.
        face_visible: False when the head is turned away (the back of the head is drawn).
    """

    keypoints: np.ndarray
    head: np.ndarray
    scale: float
    gaze: np.ndarray
    pose: str
    face_visible: bool
    primitives: list[Primitive] = field(default_factory=list)

    def point(self, name: str) -> np.ndarray:
        """A keypoint by COCO name."""
        return self.keypoints[KP[name]]

    def mid(self, left: str, right: str) -> np.ndarray:
        """Midpoint of two keypoints, e.g. ``mid("left_hip", "right_hip")``."""
        return (self.point(left) + self.point(right)) / 2

    @property
    def box_xyxy(self) -> np.ndarray:
        """Union of the drawn shapes' extents (not clipped to the frame)."""
        bounds = np.stack([p.bounds() for p in self.primitives])  # [K, 4]
        return np.concatenate([bounds[:, :2].min(axis=0), bounds[:, 2:].max(axis=0)])

    @property
    def back_point(self) -> np.ndarray:
        """A point just behind the torso (where a backpack sits)."""
        torso = (self.mid("left_shoulder", "right_shoulder") + self.mid("left_hip", "right_hip")) / 2
        return torso - self.gaze * (TORSO_WIDTH * 0.6 * self.scale)


@dataclass
class Thing:
    """An object of a frame: AG object index, box ``xyxy`` in pixels, and whether it is drawn over the person."""

    label: int
    box_xyxy: np.ndarray
    drawn_after: bool
    facing: int = 1


def local_pose(pose: str, arm: str) -> dict[str, Point]:
    """Keypoints of a pose in local figure units (x forward, y up).

    Args:
        pose: ``"standing"``, ``"sitting"`` or ``"lying"`` (lying uses the standing layout, rotated when placed).
        arm: the front-arm pose, a key of ``ARM_POSES``.
    """
    if pose not in POSES or arm not in ARM_POSES:
        raise ValueError(f"Expected pose in {POSES} and arm in {list(ARM_POSES)} but got {pose!r}, {arm!r}")
    points = dict(_STANDING)
    points["right_elbow"], points["right_wrist"] = ARM_POSES[arm]
    if pose == "sitting":
        points = {name: (x, y - SIT_DROP) for name, (x, y) in points.items()}
        points.update(_SITTING_LEGS)
    return points


def _to_image(point: Point, anchor: Point, scale: float, facing: int, lying: bool) -> np.ndarray:
    """Map a local point to pixels; a lying figure has its up axis along ``facing`` and its face up."""
    x, y = point
    if lying:
        return np.array([anchor[0] + facing * y * scale, anchor[1] - x * scale])
    return np.array([anchor[0] + facing * x * scale, anchor[1] - y * scale])


def make_figure(pose: str, arm: str, anchor: Point, scale: float, facing: int, face_visible: bool) -> Figure:
    """Build the person figure and its drawing primitives.

    Args:
        pose: see :func:`local_pose`.
        arm: front-arm pose.
        anchor: pixel position of the local origin (between the feet).
        scale: pixels per unit of the standing person height.
        facing: +1 facing right, -1 facing left; for a lying figure, the side its head lies on.
        face_visible: draw the face (eye, nose) or the back of the head.
    """
    lying = pose == "lying"
    local = local_pose(pose, arm)
    head_local = (HEAD_CENTRE[0], HEAD_CENTRE[1] - (SIT_DROP if pose == "sitting" else 0.0))
    keypoints = np.stack([_to_image(local[name], anchor, scale, facing, lying) for name in KEYPOINT_NAMES])
    head = _to_image(head_local, anchor, scale, facing, lying)
    gaze = np.array([0.0, -1.0]) if lying else np.array([float(facing), 0.0])
    figure = Figure(keypoints=keypoints, head=head, scale=scale, gaze=gaze, pose=pose, face_visible=face_visible)
    figure.primitives = _figure_primitives(figure)
    return figure


def _figure_primitives(fig: Figure) -> list[Primitive]:
    """Legs, torso, back arm, head, front arm, in drawing order; joints are rounded with circles."""
    s = fig.scale
    prims: list[Primitive] = []

    def limb(a: str, b: str, color: tuple[int, int, int], width: float) -> None:
        pa, pb = tuple(fig.point(a)), tuple(fig.point(b))
        prims.extend(
            [
                Primitive("line", [pa, pb], color, width),
                Primitive("circle", [pa], color, width / 2),
                Primitive("circle", [pb], color, width / 2),
            ]
        )

    for a, b in _LIMBS:
        limb(a, b, TROUSERS, LIMB_WIDTH * s)
    shoulders, hips = fig.mid("left_shoulder", "right_shoulder"), fig.mid("left_hip", "right_hip")
    prims += [
        Primitive("line", [tuple(shoulders), tuple(hips)], SHIRT, TORSO_WIDTH * s),
        Primitive("circle", [tuple(shoulders)], SHIRT, TORSO_WIDTH * s / 2),
        Primitive("circle", [tuple(hips)], SHIRT, TORSO_WIDTH * s / 2),
    ]
    for a, b in _ARMS[:2]:
        limb(a, b, SHIRT, LIMB_WIDTH * s)
    prims.append(Primitive("circle", [tuple(fig.point("left_wrist"))], SKIN, HAND_RADIUS * s))
    prims += _head_primitives(fig)
    for a, b in _ARMS[2:]:
        limb(a, b, SHIRT, LIMB_WIDTH * s)
    prims.append(Primitive("circle", [tuple(fig.point("right_wrist"))], SKIN, HAND_RADIUS * s))
    return prims


def _head_primitives(fig: Figure) -> list[Primitive]:
    """Hair-coloured head; with a visible face, a skin disc shifted towards the gaze, an eye and a nose."""
    s = fig.scale
    prims = [Primitive("circle", [tuple(fig.head)], HAIR, HEAD_RADIUS * s)]
    if fig.face_visible:
        face = fig.head + fig.gaze * FACE_SHIFT * s
        prims += [
            Primitive("circle", [tuple(face)], SKIN, FACE_RADIUS * s),
            Primitive("circle", [tuple(fig.point("nose"))], SKIN, NOSE_RADIUS * s),
            Primitive("circle", [tuple(fig.point("left_eye"))], EYE, EYE_RADIUS * s),
        ]
    return prims


def keypoint_visibility(figure: Figure) -> np.ndarray:
    """``float32 [17]``: 1 for drawn keypoints, 0 for the face keypoints of a head turned away."""
    visible = np.ones(len(KEYPOINT_NAMES), dtype=np.float32)
    if not figure.face_visible:
        visible[[KP[name] for name in FACE_KEYPOINTS]] = 0.0
    return visible


def contains(box_xyxy: np.ndarray, point: np.ndarray) -> bool:
    """Whether ``point`` lies inside (or on the border of) ``box_xyxy``."""
    return bool(box_xyxy[0] <= point[0] <= box_xyxy[2] and box_xyxy[1] <= point[1] <= box_xyxy[3])


def attention_label(figure: Figure, box_xyxy: np.ndarray) -> str:
    """``unsure`` (face hidden), ``looking_at`` (object centre inside the gaze cone) or ``not_looking_at``."""
    if not figure.face_visible:
        return "unsure"
    return "looking_at" if gaze_angle(figure, box_xyxy) <= GAZE_HALF_ANGLE_DEG else "not_looking_at"


def gaze_angle(figure: Figure, box_xyxy: np.ndarray) -> float:
    """Angle in degrees between the gaze and the direction from the head centre to the object.

    The object's reference point is its centre, except that an object spanning the head horizontally while its
    centre lies above or below the head (floor, the seat under a sitting person, a jacket) is taken straight below
    or above the head at its centre height: its centre would otherwise depend on how far the person stands from
    the frame's middle.
    """
    centre = (box_xyxy[:2] + box_xyxy[2:]) / 2
    off_head = abs(centre[1] - figure.head[1]) > HEAD_RADIUS * figure.scale
    if off_head and box_xyxy[0] <= figure.head[0] <= box_xyxy[2]:
        centre[0] = figure.head[0]
    direction = centre - figure.head
    norm = float(np.linalg.norm(direction))
    if norm == 0.0:
        return 0.0
    return math.degrees(math.acos(max(-1.0, min(1.0, float(direction @ figure.gaze) / norm))))


def _overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    """Length of the overlap of two intervals (0 if disjoint)."""
    return max(0.0, min(a1, b1) - max(a0, b0))


def spatial_labels(person_xyxy: np.ndarray, thing: Thing) -> list[str]:
    """Spatial predicates of ``thing`` relative to the person's box (see the module docstring)."""
    obj = thing.box_xyxy
    labels = []
    person_h = person_xyxy[3] - person_xyxy[1]
    obj_cy = (obj[1] + obj[3]) / 2
    if obj_cy < person_xyxy[1]:
        labels.append("above")
    x_overlap = _overlap(obj[0], obj[2], person_xyxy[0], person_xyxy[2])
    narrower = min(obj[2] - obj[0], person_xyxy[2] - person_xyxy[0])
    if (
        obj_cy > (person_xyxy[1] + person_xyxy[3]) / 2
        and obj[3] >= person_xyxy[3] - BENEATH_BOTTOM_TOLERANCE * person_h
        and narrower > 0
        and x_overlap >= BENEATH_MIN_X_OVERLAP * narrower
    ):
        labels.append("beneath")
    area = min((obj[2] - obj[0]) * (obj[3] - obj[1]), (person_xyxy[2] - person_xyxy[0]) * person_h)
    inter = x_overlap * _overlap(obj[1], obj[3], person_xyxy[1], person_xyxy[3])
    if area > 0 and inter >= OCCLUSION_MIN_FRACTION * area:
        labels.append("in_front_of" if thing.drawn_after else "behind")
    return labels or ["on_the_side_of"]


def contacting_labels(figure: Figure, thing: Thing) -> list[str]:
    """Contacting predicates of ``thing`` from the keypoints inside its box, the pose and the drawing order."""
    box = thing.box_xyxy
    front_hand = contains(box, figure.point("right_wrist"))
    any_hand = front_hand or contains(box, figure.point("left_wrist"))
    hips_in = contains(box, figure.mid("left_hip", "right_hip"))
    if thing.label in HANDHELD_CLASSES and front_hand:
        at_mouth = contains(box, figure.point("nose"))
        return (
            ["holding"]
            + (["drinking_from"] if at_mouth and thing.label == _CUP else [])
            + (["eating"] if at_mouth and thing.label == _FOOD else [])
        )
    if thing.label == _BAG and thing.drawn_after and any_hand:
        return ["carrying"]
    if thing.label == _BAG and not thing.drawn_after and contains(box, figure.back_point):
        return ["have_it_on_the_back"]
    if thing.label == _CLOTHES and hips_in and contains(box, figure.mid("left_shoulder", "right_shoulder")):
        return ["wearing"]
    if hips_in and figure.pose == "sitting":
        return ["sitting_on"]
    if hips_in and figure.pose == "lying":
        return ["covered_by" if thing.drawn_after else "lying_on"]
    if (
        figure.pose == "standing"
        and contains(box, figure.point("left_ankle"))
        and contains(box, figure.point("right_ankle"))
    ):
        return ["standing_on"]
    return ["touching"] if any_hand else ["not_contacting"]


def relationship_labels(figure: Figure, person_xyxy: np.ndarray, thing: Thing) -> dict[str, list[str]]:
    """``{"attention": [1 name], "spatial": [names], "contacting": [names]}`` of one object."""
    return {
        "attention": [attention_label(figure, thing.box_xyxy)],
        "spatial": spatial_labels(person_xyxy, thing),
        "contacting": contacting_labels(figure, thing),
    }


def clip_box(box_xyxy: Sequence[float], width: int, height: int) -> np.ndarray:
    """``box_xyxy`` clipped to the frame ``[0, width] x [0, height]``."""
    box = np.asarray(box_xyxy, dtype=np.float64).copy()
    box[[0, 2]] = box[[0, 2]].clip(0, width)
    box[[1, 3]] = box[[1, 3]].clip(0, height)
    return box


def union_box(boxes: Sequence[np.ndarray]) -> np.ndarray | None:
    """Smallest ``xyxy`` box containing all ``boxes`` (None for no boxes)."""
    if not boxes:
        return None
    stacked = np.stack(boxes)  # [K, 4]
    return np.concatenate([stacked[:, :2].min(axis=0), stacked[:, 2:].max(axis=0)])
