"""Scenario plans of the synthetic Action Genome: what happens in one video, and the scene of each of its frames.

A :class:`VideoPlan` fixes, for one video, the person's pose, front-arm pose, facing side and path, and its objects
with where they sit (in a hand, on the back, under the hips, on the wall, ...). :func:`frame_scene` turns a plan and
a time ``u`` in [0, 1] into the person figure and the object boxes of one frame. The scenarios mix the predicates:

====================  =====================================================================================
scenario              objects (optional ones in brackets)
====================  =====================================================================================
``hold``              cup / book / phone in the front hand [television, floor]
``drink``             cup at the mouth, standing or sitting [chair when sitting, floor when standing]
``eat``               food at the mouth, sitting on a chair
``sit``               chair or sofa [television ahead, table with a laptop under the hand, a book or phone held]
``lie``               bed [blanket over the body]
``walk``              a bag carried or on the back [floor]
``wear``              a jacket (clothes) [floor or television]
``touch``             the hand on a door [floor]
====================  =====================================================================================

Sizes are in units of the standing person height ("ph"); the person is ``PERSON_HEIGHT`` of the frame height.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from arn_lightning import vocab
from arn_lightning.data.synth_scene import Figure, Thing, clip_box, make_figure, union_box

#: What a scenario builder returns: (pose, front-arm pose, objects).
Scenario = tuple[str, str, list["ObjectPlan"]]

#: Person height and ground line as fractions of the frame height.
PERSON_HEIGHT = 0.6
GROUND_Y = 0.93
#: Free border kept on both sides of the scene, as a fraction of the frame width.
SIDE_MARGIN = 0.02
#: Objects are scaled by a factor drawn from this range per video.
SIZE_JITTER = (0.9, 1.1)
#: Rates of the awkward cases of the real data.
FACE_HIDDEN_VIDEO_RATE = 0.05
FACE_HIDDEN_SEGMENT_RATE = 0.15
HIDDEN_OBJECT_RATE = 0.12
MISSED_PERSON_RATE = 0.03
TINY_OBJECT_RATE = 0.08
#: Camera pan over a whole video, as a fraction of the frame width (uniform in +-).
MAX_PAN = 0.08

#: (width, height) in ph of each object class.
OBJECT_SIZES: dict[str, tuple[float, float]] = {
    "cup/glass/bottle": (0.17, 0.30),
    "book": (0.30, 0.22),
    "phone/camera": (0.24, 0.17),
    "food": (0.22, 0.20),
    "television": (0.58, 0.42),
    "chair": (0.32, 0.62),
    "sofa/couch": (0.62, 0.52),
    "table": (0.48, 0.36),
    "laptop": (0.36, 0.22),
    "bed": (1.24, 0.50),
    "blanket": (0.70, 0.15),
    "bag": (0.28, 0.30),
    "clothes": (0.24, 0.40),
    "door": (0.36, 1.25),
    "light": (0.07, 0.07),
    "floor": (0.0, 0.08),
}
#: Forward offset (ph, from the feet) of the near edge of furniture placed relative to the person.
SEAT_OFFSETS: dict[str, float] = {"chair": -0.12, "sofa/couch": -0.17, "table": 0.32, "laptop": 0.28}
#: A hand-held object's centre sits this fraction of its width beyond the wrist (at the mouth: on the wrist).
HOLD_SHIFT = 0.15
#: A carried bag hangs this far forward of, and its top this far above, the wrist (ph).
HANG_FORWARD, HANG_ABOVE = 0.04, 0.05
#: A backpack's centre is this far behind the torso (ph).
BACKPACK_BEHIND = 0.08
#: The door's near edge is this far behind the wrist (ph).
DOOR_BEHIND_WRIST = 0.05
#: Bed: its extent along the body beyond the feet and the mattress top below the bed top (ph); the hips sink
#: ``HIP_SINK`` into the mattress.
BED_BEYOND_FEET, MATTRESS_DROP, HIP_SINK = 0.12, 0.10, 0.02
#: Blanket: along the body from ``BLANKET_FROM`` (feet side, in body units); vertically from ``BLANKET_UP``
#: above the hips to ``BLANKET_DOWN`` below (ph).
BLANKET_FROM, BLANKET_UP, BLANKET_DOWN = -0.06, 0.12, 0.05
#: Wall placements (forward distance, height above the ground) ranges in ph.
WALL_PLACES: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {
    "ahead": ((0.85, 1.1), (0.8, 0.95)),
    "behind": ((-1.0, -0.75), (0.8, 0.95)),
    "above": ((0.45, 0.55), (1.15, 1.25)),
}
LAMP_HEIGHT = (1.15, 1.35)
#: Height above the ground (ph) of a television watched by a sitting person: below the top of their head.
SEATED_TV_HEIGHT = (0.55, 0.68)
SEATED_TV_DISTANCE = (0.95, 1.15)
#: Placements that move with the person (or the floor): only scenes made of these let the person walk, so that
#: the geometry between the person and static furniture stays fixed during a video.
BODY_PLACES = frozenset({"hand", "hang", "back", "torso", "ground"})
#: Walking distance over a video, a fraction of the frame width towards the facing side (negative: backwards).
WALK_RANGE = (-0.15, 0.35)


@dataclass
class ObjectPlan:
    """One object of a video.

    Attributes:
        name: AG class in pickle spelling.
        place: placement rule (``hand``, ``hang``, ``back``, ``torso``, ``seat``, ``ground``, ``wall``, ``bed``,
            ``blanket``, ``door``, ``lamp``).
        drawn_after: drawn over the person.
        size: ``(width, height)`` in ph.
        where: ``(forward, up)`` in ph for ``wall`` / ``lamp`` placements (``lamp``: forward is a frame fraction).
        hidden: frame indices where the object is out of view (invisible, not drawn).
    """

    name: str
    place: str
    drawn_after: bool
    size: tuple[float, float]
    where: tuple[float, float] = (0.0, 0.0)
    hidden: frozenset[int] = frozenset()


@dataclass
class VideoPlan:
    """Everything that stays fixed during one video (pixels unless noted)."""

    scenario: str
    pose: str
    arm: str
    facing: int
    objects: list[ObjectPlan]
    size: tuple[int, int]
    walk: float = 0.0
    pan: float = 0.0
    start_x: float = 0.0
    face_hidden: frozenset[int] = frozenset()
    missed_person: frozenset[int] = frozenset()

    @property
    def scale(self) -> float:
        """Pixels per ph."""
        return PERSON_HEIGHT * self.size[1]

    @property
    def ground(self) -> float:
        """y of the ground line."""
        return GROUND_Y * self.size[1]


def _obj(
    rng: np.random.Generator, name: str, place: str, drawn_after: bool, where: tuple[float, float] = (0.0, 0.0)
) -> ObjectPlan:
    """An object plan with its size jittered."""
    jitter = float(rng.uniform(*SIZE_JITTER))
    w, h = OBJECT_SIZES[name]
    return ObjectPlan(name=name, place=place, drawn_after=drawn_after, size=(w * jitter, h * jitter), where=where)


def _wall(rng: np.random.Generator, name: str = "television") -> ObjectPlan:
    """A wall object ahead of, behind or above the person."""
    place = ("ahead", "behind", "above")[int(rng.integers(3))]
    (f0, f1), (h0, h1) = WALL_PLACES[place]
    return _obj(rng, name, "wall", False, where=(float(rng.uniform(f0, f1)), float(rng.uniform(h0, h1))))


def _scenario_hold(rng: np.random.Generator) -> Scenario:
    held = ("cup/glass/bottle", "book", "phone/camera")[int(rng.integers(3))]
    objects = [_obj(rng, held, "hand", True)]
    if rng.random() < 0.35:
        objects.append(_wall(rng))
    if rng.random() < 0.25:
        objects.insert(0, _obj(rng, "floor", "ground", False))
    return "standing", "forward", objects


def _scenario_drink(rng: np.random.Generator) -> Scenario:
    sitting = rng.random() < 0.4
    objects = [_obj(rng, "cup/glass/bottle", "hand", True)]
    if sitting:
        objects.insert(0, _obj(rng, "chair", "seat", False))
    elif rng.random() < 0.3:
        objects.insert(0, _obj(rng, "floor", "ground", False))
    return ("sitting" if sitting else "standing"), "mouth", objects


def _scenario_eat(rng: np.random.Generator) -> Scenario:
    return "sitting", "mouth", [_obj(rng, "chair", "seat", False), _obj(rng, "food", "hand", True)]


def _scenario_sit(rng: np.random.Generator) -> Scenario:
    objects = [_obj(rng, "chair" if rng.random() < 0.5 else "sofa/couch", "seat", False)]
    extra, arm = rng.random(), "down"
    if extra < 0.35:
        objects.append(
            _obj(
                rng,
                "television",
                "wall",
                False,
                where=(float(rng.uniform(*SEATED_TV_DISTANCE)), float(rng.uniform(*SEATED_TV_HEIGHT))),
            )
        )
    elif extra < 0.7:
        objects += [_obj(rng, "table", "seat", False), _obj(rng, "laptop", "laptop", False)]
        arm = "reach"
    elif extra < 0.85:
        objects.append(_obj(rng, ("book", "phone/camera")[int(rng.integers(2))], "hand", True))
        arm = "forward"
    return "sitting", arm, objects


def _scenario_lie(rng: np.random.Generator) -> Scenario:
    objects = [_obj(rng, "bed", "bed", False)]
    if rng.random() < 0.5:
        objects.append(_obj(rng, "blanket", "blanket", True))
    return "lying", "down", objects


def _scenario_walk(rng: np.random.Generator) -> Scenario:
    carry = rng.random() < 0.6
    objects = [_obj(rng, "bag", "hang", True) if carry else _obj(rng, "bag", "back", False)]
    if rng.random() < 0.6:
        objects.insert(0, _obj(rng, "floor", "ground", False))
    return "standing", "down", objects


def _scenario_wear(rng: np.random.Generator) -> Scenario:
    objects = [_obj(rng, "clothes", "torso", True)]
    extra = rng.random()
    if extra < 0.2:
        objects.insert(0, _obj(rng, "floor", "ground", False))
    elif extra < 0.4:
        objects.append(_wall(rng))
    return "standing", "down", objects


def _scenario_touch(rng: np.random.Generator) -> Scenario:
    objects = [_obj(rng, "door", "door", False)]
    if rng.random() < 0.3:
        objects.insert(0, _obj(rng, "floor", "ground", False))
    return "standing", "forward", objects


#: scenario -> (builder returning (pose, front-arm pose, objects), weight)
SCENARIOS: dict[str, tuple[Callable, float]] = {
    "hold": (_scenario_hold, 0.18),
    "drink": (_scenario_drink, 0.10),
    "eat": (_scenario_eat, 0.07),
    "sit": (_scenario_sit, 0.17),
    "lie": (_scenario_lie, 0.12),
    "walk": (_scenario_walk, 0.14),
    "wear": (_scenario_wear, 0.10),
    "touch": (_scenario_touch, 0.12),
}


def _segment(rng: np.random.Generator, num_frames: int, max_fraction: float) -> frozenset[int]:
    """A random contiguous run of frame indices, at most ``max_fraction`` of the video (at least 1 frame)."""
    length = int(rng.integers(1, max(1, int(num_frames * max_fraction)) + 1))
    start = int(rng.integers(0, num_frames - length + 1))
    return frozenset(range(start, start + length))


def _awkward_cases(rng: np.random.Generator, plan: VideoPlan, num_frames: int) -> None:
    """Hidden faces, out-of-view objects, missed person detections and a tiny lamp, at small rates."""
    if rng.random() < FACE_HIDDEN_VIDEO_RATE:
        plan.face_hidden = frozenset(range(num_frames))
    elif rng.random() < FACE_HIDDEN_SEGMENT_RATE:
        plan.face_hidden = _segment(rng, num_frames, 0.5)
    if rng.random() < HIDDEN_OBJECT_RATE:
        target = plan.objects[int(rng.integers(len(plan.objects)))]
        target.hidden = _segment(rng, num_frames, 0.34)
    plan.missed_person = frozenset(i for i in range(num_frames) if rng.random() < MISSED_PERSON_RATE)
    if rng.random() < TINY_OBJECT_RATE:
        plan.objects.append(
            _obj(rng, "light", "lamp", False, where=(float(rng.uniform(0.1, 0.9)), float(rng.uniform(*LAMP_HEIGHT))))
        )


def make_plan(rng: np.random.Generator, num_frames: int, size: tuple[int, int]) -> VideoPlan:
    """Draw the plan of one video.

    Args:
        rng: the video's random generator.
        num_frames: annotated frames of the video.
        size: ``(width, height)`` of the frames.
    """
    names = list(SCENARIOS)
    weights = np.array([SCENARIOS[n][1] for n in names])
    scenario = names[int(rng.choice(len(names), p=weights / weights.sum()))]
    pose, arm, objects = SCENARIOS[scenario][0](rng)
    plan = VideoPlan(
        scenario=scenario, pose=pose, arm=arm, facing=1 if rng.random() < 0.5 else -1, objects=objects, size=size
    )
    width = size[0]
    if all(obj.place in BODY_PLACES for obj in objects):
        plan.walk = plan.facing * float(rng.uniform(*WALK_RANGE)) * width
    plan.pan = float(rng.uniform(-MAX_PAN, MAX_PAN)) * width
    _awkward_cases(rng, plan, num_frames)
    _place_start(rng, plan)
    return plan


def _scene_extent(plan: VideoPlan) -> tuple[float, float]:
    """Horizontal extent (relative to ``start_x``) of everything but floor and lamp over the whole video."""
    boxes = []
    for u in (0.0, 1.0):
        figure, things = frame_scene(plan, index=-1, u=u, clip=False)
        boxes.append(figure.box_xyxy)
        boxes += [t.box_xyxy for plan_obj, t in things if t is not None and plan_obj.place not in ("ground", "lamp")]
    extent = union_box(boxes)
    assert extent is not None
    return float(extent[0] - plan.start_x), float(extent[2] - plan.start_x)


def _place_start(rng: np.random.Generator, plan: VideoPlan) -> None:
    """Choose where the person starts so that the scene stays inside the frame (motion dropped if needed)."""
    width = plan.size[0]
    margin = SIDE_MARGIN * width
    for _ in range(2):
        lo, hi = _scene_extent(plan)
        first, last = margin - lo, width - margin - hi
        if first <= last:
            plan.start_x = float(rng.uniform(first, last))
            return
        plan.walk = plan.pan = 0.0
    plan.start_x = (width - (lo + hi)) / 2


def _place_box(plan: VideoPlan, obj: ObjectPlan, figure: Figure, anchor_x: float, world_x: float) -> np.ndarray:
    """Box ``xyxy`` in pixels of one object given the figure of the frame."""
    s, f, ground = plan.scale, plan.facing, plan.ground
    w, h = obj.size[0] * s, obj.size[1] * s
    wrist = figure.point("right_wrist")
    if obj.place == "hand":
        cx, cy = wrist[0] + (0.0 if plan.arm == "mouth" else f * HOLD_SHIFT * w), wrist[1]
    elif obj.place == "hang":
        cx, cy = wrist[0] + f * HANG_FORWARD * s, wrist[1] - HANG_ABOVE * s + h / 2
    elif obj.place == "back":
        torso = (figure.mid("left_shoulder", "right_shoulder") + figure.mid("left_hip", "right_hip")) / 2
        cx, cy = torso[0] - f * BACKPACK_BEHIND * s, torso[1]
    elif obj.place == "torso":
        cx, cy = (figure.mid("left_shoulder", "right_shoulder") + figure.mid("left_hip", "right_hip")) / 2
    elif obj.place in ("seat", "laptop"):
        near = anchor_x + f * SEAT_OFFSETS[obj.name] * s
        bottom = ground - (_table_height(plan) * s if obj.place == "laptop" else 0.0)
        cx, cy = near + f * w / 2, bottom - h / 2
    elif obj.place == "ground":
        return np.array([0.0, ground - h, plan.size[0], plan.size[1]])
    elif obj.place == "wall":
        cx, cy = world_x + f * obj.where[0] * s, ground - obj.where[1] * s
    elif obj.place == "lamp":
        cx, cy = obj.where[0] * plan.size[0], ground - obj.where[1] * s
    elif obj.place == "door":
        near = wrist[0] - f * DOOR_BEHIND_WRIST * s
        cx, cy = near + f * w / 2, ground - h / 2
    else:
        return _place_lying(plan, obj, anchor_x)
    return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])


def _table_height(plan: VideoPlan) -> float:
    """Height (ph) of the video's table, on which a laptop rests."""
    return next((o.size[1] for o in plan.objects if o.name == "table"), OBJECT_SIZES["table"][1])


def _place_lying(plan: VideoPlan, obj: ObjectPlan, anchor_x: float) -> np.ndarray:
    """Bed and blanket boxes of a lying person whose feet are at ``anchor_x``."""
    s, f = plan.scale, plan.facing
    hips_y = _lying_anchor_y(plan)
    if obj.place == "bed":
        a, b = anchor_x - f * BED_BEYOND_FEET * s, anchor_x + f * (obj.size[0] - BED_BEYOND_FEET) * s
        return np.array([min(a, b), plan.ground - obj.size[1] * s, max(a, b), plan.ground])
    if obj.place == "blanket":
        a, b = anchor_x + f * BLANKET_FROM * s, anchor_x + f * (BLANKET_FROM + obj.size[0]) * s
        return np.array([min(a, b), hips_y - BLANKET_UP * s, max(a, b), hips_y + BLANKET_DOWN * s])
    raise AssertionError(f"unknown placement {obj.place}")


def _lying_anchor_y(plan: VideoPlan) -> float:
    """y of the body axis of a lying person: just inside the bed's mattress."""
    bed_h = next((o.size[1] for o in plan.objects if o.place == "bed"), OBJECT_SIZES["bed"][1])
    return plan.ground - (bed_h - MATTRESS_DROP - HIP_SINK) * plan.scale


def frame_scene(
    plan: VideoPlan, index: int, u: float, clip: bool = True
) -> tuple[Figure, list[tuple[ObjectPlan, Thing | None]]]:
    """The person and the objects of frame ``index`` at time ``u`` in [0, 1].

    Returns:
        The figure and, per object plan, its :class:`Thing` or None when it is out of view in this frame.
    """
    anchor_x = plan.start_x + plan.walk * u + plan.pan * u
    world_x = plan.start_x + plan.pan * u
    anchor_y = _lying_anchor_y(plan) if plan.pose == "lying" else plan.ground
    figure = make_figure(
        plan.pose, plan.arm, (anchor_x, anchor_y), plan.scale, plan.facing, face_visible=index not in plan.face_hidden
    )
    things: list[tuple[ObjectPlan, Thing | None]] = []
    for obj in plan.objects:
        box = _place_box(plan, obj, figure, anchor_x, world_x)
        if clip:
            box = clip_box(box, *plan.size)
        visible = index not in obj.hidden and box[2] > box[0] and box[3] > box[1]
        thing = Thing(vocab.OBJECT_INDEX[obj.name], box, obj.drawn_after, plan.facing) if visible else None
        things.append((obj, thing))
    return figure, things
