"""Hand-written Action Genome fixtures in the release format, with their hand-counted expectations.

Other tests import this module: :func:`write_standard_root` writes a tiny AG root whose filtering outcome is
spelled out in :data:`EXPECTED` (the ``standard_root`` fixtures of ``conftest.py`` write it per test); the lower-level
writers build any variant (a broken pickle entry, a class file with a wrong line, ...).

The standard root (frames 64x48, person box ``[10, 5, 40, 45]`` xyxy; keys inserted out of frame order):

=====================  =====  ====================================================  ================================
frame                  split  objects                                               SGDet / PredCls outcome
=====================  =====  ====================================================  ================================
A0001.mp4/000030.png   train  cup, but no person box                                dropped: no_person
A0001.mp4/000002.png   train  cup (20,10,20,20)                                     kept
A0001.mp4/000010.png   train  cup invisible                                         dropped: no_visible_object
A0001.mp4/000004.png   train  cup (20,10,20,20) 2 spatial, 2 contacting; chair inv. kept (1 object)
A0001.mp4/000050.png   train  cup (5,5,10,30) small; chair (30,20,30,28)            kept: 1 object / 2 objects
A0001.mp4/000070.png   train  phone (1,1,8,8) small only                            dropped: all_objects_small / kept
B0002.mp4/000001,5     train  cup                                                   dropped: short_video (2 frames)
C0003.mp4/000100..300  test   book (5,5,20,20)                                      kept (3 frames)
D0004.mp4/000001..4    test   book; 000003 has no person box; 000002 "holding" x2   kept 3, dropped no_person 1
=====================  =====  ====================================================  ================================
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from arn_lightning import vocab

FRAME_SIZE = (64, 48)  # (width, height)
PERSON_XYXY = (10.0, 5.0, 40.0, 45.0)


def person_entry(box_xyxy: Sequence[float] | None = PERSON_XYXY, size: tuple[int, int] = FRAME_SIZE) -> dict[str, Any]:
    """A ``person_bbox.pkl`` entry with every field of the release; ``box_xyxy`` None: no person detected."""
    n = 0 if box_xyxy is None else 1
    return {
        "bbox": np.array([box_xyxy] if n else np.zeros((0, 4)), dtype=np.float32),
        "bbox_score": np.ones((n,), dtype=np.float32),
        "bbox_size": size,
        "bbox_mode": "xyxy",
        "keypoints": np.zeros((n, 17, 3), dtype=np.float32),
        "keypoints_logits": np.zeros((n, 17), dtype=np.float32),
    }


def object_entry(
    name: str,
    box_xywh: Sequence[float] | None,
    key: str,
    split: str = "train",
    attention: Sequence[str] = ("looking_at",),
    spatial: Sequence[str] = ("in_front_of",),
    contacting: Sequence[str] = ("holding",),
) -> dict[str, Any]:
    """An ``object_bbox_and_relationship.pkl`` entry; ``box_xywh`` None writes an invisible object."""
    video, frame = key.split("/")
    visible = box_xywh is not None
    return {
        "class": name,
        "bbox": tuple(box_xywh) if visible else None,
        "attention_relationship": list(attention) if visible else None,
        "spatial_relationship": list(spatial) if visible else None,
        "contacting_relationship": list(contacting) if visible else None,
        "metadata": {"tag": f"{video}/{name.replace('/', '_')}/{frame[:-4]}", "set": split},
        "visible": visible,
    }


def write_class_files(
    annotations: Path, object_lines: list[str] | None = None, relationship_lines: list[str] | None = None
) -> None:
    """The two class files, raw spelling by default (``cupglassbottle``, ``lookingat``)."""
    objects = object_lines if object_lines is not None else [vocab.raw_spelling(n) for n in vocab.OBJECT_CLASSES]
    predicates = (
        relationship_lines if relationship_lines is not None else [vocab.raw_spelling(n) for n in vocab.PREDICATES]
    )
    (annotations / "object_classes.txt").write_text("\n".join(objects) + "\n", encoding="utf-8")
    (annotations / "relationship_classes.txt").write_text("\n".join(predicates) + "\n", encoding="utf-8")


def write_root(
    root: Path, person: dict[str, Any], objects: dict[str, Any], frames: bool = True, **class_lines: Any
) -> Path:
    """Write both pickles (in the given key order), the class files and, if ``frames``, one PNG per key.

    Each PNG is filled with a colour that encodes its frame number (red = number % 256) so reads can be checked.
    """
    annotations = root / "annotations"
    annotations.mkdir(parents=True, exist_ok=True)
    for name, data in (("person_bbox.pkl", person), ("object_bbox_and_relationship.pkl", objects)):
        with (annotations / name).open("wb") as handle:
            pickle.dump(data, handle)
    write_class_files(annotations, **class_lines)
    if frames:
        for key, entry in person.items():
            write_frame(root, key, tuple(entry["bbox_size"]))
    return root


def write_frame(root: Path, key: str, size: tuple[int, int] = FRAME_SIZE) -> Path:
    """A solid PNG for ``key`` whose red channel is the frame number modulo 256."""
    path = root / "frames" / key
    path.parent.mkdir(parents=True, exist_ok=True)
    number = int(key.split("/")[1][:-4])
    Image.new("RGB", size, (number % 256, 100, 200)).save(path)
    return path


def standard_entries() -> tuple[dict[str, Any], dict[str, Any]]:
    """The two pickle dicts of the standard root (see the module docstring), keys out of frame order."""
    person: dict[str, Any] = {}
    objects: dict[str, Any] = {}

    def add(key: str, has_person: bool, entries: list[dict[str, Any]]) -> None:
        person[key] = person_entry(PERSON_XYXY if has_person else None)
        objects[key] = entries

    cup = "cup/glass/bottle"
    for number, has_person, visible in ((30, False, True), (2, True, True), (10, True, False)):
        key = f"A0001.mp4/{number:06d}.png"
        add(key, has_person, [object_entry(cup, (20, 10, 20, 20) if visible else None, key)])
    key = "A0001.mp4/000004.png"
    add(
        key,
        True,
        [
            object_entry(
                cup, (20, 10, 20, 20), key, spatial=("in_front_of", "beneath"), contacting=("holding", "touching")
            ),
            object_entry("chair", None, key),
        ],
    )
    key = "A0001.mp4/000050.png"
    add(
        key,
        True,
        [
            object_entry(cup, (5, 5, 10, 30), key),
            object_entry(
                "chair",
                (30, 20, 30, 28),
                key,
                attention=("not_looking_at",),
                spatial=("beneath", "behind"),
                contacting=("sitting_on",),
            ),
        ],
    )
    key = "A0001.mp4/000070.png"
    add(key, True, [object_entry("phone/camera", (1, 1, 8, 8), key)])
    for number in (5, 1):
        key = f"B0002.mp4/{number:06d}.png"
        add(key, True, [object_entry(cup, (20, 10, 20, 20), key)])
    for number in (300, 100, 200):
        key = f"C0003.mp4/{number:06d}.png"
        add(
            key, True, [object_entry("book", (5, 5, 20, 20), key, "test", ("unsure",), ("above",), ("not_contacting",))]
        )
    for number in (4, 3, 2, 1):
        key = f"D0004.mp4/{number:06d}.png"
        contacting = ("holding", "holding") if number == 2 else ("holding",)
        add(key, number != 3, [object_entry("book", (5, 5, 20, 20), key, "test", contacting=contacting)])
    return person, objects


def write_standard_root(root: Path, frames: bool = True) -> Path:
    """Write the standard root (see the module docstring) and return it."""
    person, objects = standard_entries()
    return write_root(root, person, objects, frames=frames)


def _split(
    videos: tuple[int, int, int, int], frames: tuple[int, int, dict[str, int]], objects: tuple[int, int, int, int]
) -> dict[str, Any]:
    """An expected ``SplitReport.to_dict()``."""
    reasons = {"no_visible_object": 0, "no_person": 0, "all_objects_small": 0, "short_video": 0}
    reasons.update(frames[2])
    return {
        "videos": {"total": videos[0], "kept": videos[1], "dropped": {"no_frames": videos[2], "short": videos[3]}},
        "frames": {"total": frames[0], "kept": frames[1], "dropped": reasons},
        "objects": {"total": objects[0], "invisible": objects[1], "small": objects[2], "kept": objects[3]},
    }


#: Hand-counted ``FilterReport.to_dict()["splits"]`` of the standard root, per task.
EXPECTED: dict[str, dict[str, Any]] = {
    "sgdet": {
        "train": _split(
            (2, 1, 0, 1),
            (8, 3, {"no_visible_object": 1, "no_person": 1, "all_objects_small": 1, "short_video": 2}),
            (10, 2, 2, 3),
        ),
        "test": _split((2, 2, 0, 0), (7, 6, {"no_person": 1}), (7, 0, 0, 6)),
    },
    "predcls": {
        "train": _split(
            (2, 1, 0, 1), (8, 4, {"no_visible_object": 1, "no_person": 1, "short_video": 2}), (10, 2, 0, 5)
        ),
        "test": _split((2, 2, 0, 0), (7, 6, {"no_person": 1}), (7, 0, 0, 6)),
    },
}
#: Kept train frame keys of the standard root in SGDet, in order.
EXPECTED_SGDET_TRAIN_KEYS = ["A0001.mp4/000002.png", "A0001.mp4/000004.png", "A0001.mp4/000050.png"]
#: Triplet categories of the standard root in SGDet (train split), by hand: cup 11, chair 8.
EXPECTED_SGDET_TRIPLETS = {
    "attention": [[0, 11], [1, 8]],
    "spatial": [[4, 8], [4, 11], [5, 11], [6, 8]],
    "contacting": [[14, 11], [19, 8], [21, 11]],
}


#: The test video of :func:`write_degenerate_root`: a book with an ordinary box, a book of width 0 and a book of width
#: and height 0 (both valid under the box rule of ``docs/boxes.md``), one frame each. Scoring the ground truth as the
#: prediction gave R@K = 1/3 before degenerate boxes had IoU 1 with themselves (0/0 was NaN, which never hits).
DEGENERATE_KEYS = ["E0005.mp4/000001.png", "E0005.mp4/000002.png", "E0005.mp4/000003.png"]
#: Object boxes (x, y, w, h) of :data:`DEGENERATE_KEYS`, in order; the person box is :data:`PERSON_XYXY`.
DEGENERATE_OBJECTS = [(5.0, 5.0, 20.0, 20.0), (5.0, 5.0, 0.0, 20.0), (12.0, 8.0, 0.0, 0.0)]


def degenerate_entries() -> tuple[dict[str, Any], dict[str, Any]]:
    """The two pickle dicts of :func:`write_degenerate_root`: one test video of 3 frames, one book each
    (looking_at, in_front_of, holding: 3 GT triplets a frame)."""
    person = {key: person_entry() for key in DEGENERATE_KEYS}
    objects = {key: [object_entry("book", box, key, "test")] for key, box in zip(DEGENERATE_KEYS, DEGENERATE_OBJECTS)}
    return person, objects


def write_degenerate_root(root: Path, frames: bool = False) -> Path:
    """An AG root whose only frames are :data:`DEGENERATE_KEYS` (test split); PredCls keeps all three, SGDet drops
    the two degenerate ones ("filter small") and then the video (one frame left, ``short_video``)."""
    person, objects = degenerate_entries()
    return write_root(root, person, objects, frames=frames)
