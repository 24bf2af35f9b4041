"""The synthetic Action Genome: determinism, the real format, awkward cases, labels consistent with the geometry."""

import hashlib
import math
import pickle
from collections import Counter

import numpy as np
import pytest

from arn_lightning import vocab
from arn_lightning.data.ag import load_annotations
from arn_lightning.data.synth import generate
from arn_lightning.data.synth_render import BACKGROUND, SHAPES, render_frame
from arn_lightning.data.synth_scene import KP, SHIRT, Thing, make_figure, relationship_labels

#: Seed of the shared root; with it every awkward case occurs at least once (the output is deterministic).
SEED = 0


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth") / "ag"
    generate(root, videos=40, frames=6, seed=SEED)
    return root


@pytest.fixture(scope="module")
def pickles(synth_root):
    with (synth_root / "annotations" / "person_bbox.pkl").open("rb") as handle:
        person = pickle.load(handle)
    with (synth_root / "annotations" / "object_bbox_and_relationship.pkl").open("rb") as handle:
        objects = pickle.load(handle)
    return person, objects


def _digest(root):
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_same_seed_bit_identical_other_seed_different(tmp_path):
    roots = [
        generate(tmp_path / name, videos=3, frames=3, size=(160, 120), seed=seed).root
        for name, seed in (("a", 7), ("b", 7), ("c", 8))
    ]
    first, second, other = (_digest(r) for r in roots)
    assert first == second and len(first) > 6
    assert first["annotations/person_bbox.pkl"] != other["annotations/person_bbox.pkl"]


def test_refuses_to_overwrite_unless_asked(tmp_path):
    generate(tmp_path / "r", videos=1, frames=1, size=(160, 120))
    with pytest.raises(FileExistsError, match="Expected .* to be absent or empty"):
        generate(tmp_path / "r", videos=1, frames=1, size=(160, 120))
    generate(tmp_path / "r", videos=2, frames=1, size=(160, 120), overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == ["r"]  # no temporary folder left behind
    real = tmp_path / "real_ag"  # a dataset the user made: overwrite never replaces it
    (real / "annotations").mkdir(parents=True)
    (real / "annotations" / "person_bbox.pkl").write_bytes(b"precious")
    with pytest.raises(FileExistsError, match=f"{real} is something else; it is left as it is"):
        generate(real, videos=1, frames=1, size=(160, 120), overwrite=True)
    assert (real / "annotations" / "person_bbox.pkl").read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r", "real_ag"]
    with pytest.raises(ValueError, match="Expected size"):
        generate(tmp_path / "s", size=(10, 10))


def test_real_format_fields(synth_root, pickles):
    person, objects = pickles
    assert set(person) == set(objects) == set((synth_root / "annotations" / "frame_list.txt").read_text().split())
    entry = next(e for e in person.values() if e["bbox"].shape[0] == 1)
    assert entry["bbox"].dtype == np.float32 and entry["bbox_score"].shape == (1,)
    assert entry["bbox_size"] == (320, 240) and entry["bbox_mode"] == "xyxy"
    assert entry["keypoints"].shape == (1, 17, 3) and entry["keypoints_logits"].shape == (1, 17)
    key, entries = next(iter(objects.items()))
    video, number = key[:-4].split("/")
    obj = entries[0]
    assert obj["metadata"]["tag"] == f"{video}/{obj['class'].replace('/', '_')}/{number}"
    assert obj["metadata"]["set"] in ("train", "test")
    lines = (synth_root / "annotations" / "object_classes.txt").read_text().split()
    assert lines[10] == "cupglassbottle" and len(lines) == 36
    assert (synth_root / "frames" / key).is_file()


def test_awkward_cases_present(pickles):
    person, objects = pickles
    keys = list(person)
    assert keys != sorted(keys)  # inserted out of order
    assert any(e["bbox"].shape == (0, 4) for e in person.values())  # no person box
    invisible = [o for entries in objects.values() for o in entries if not o["visible"]]
    assert invisible and all(o["bbox"] is None and o["attention_relationship"] is None for o in invisible)
    assert any(o["visible"] and min(o["bbox"][2:]) < 16 for entries in objects.values() for o in entries)
    frames_per_video = Counter(k.split("/")[0] for k in keys)
    assert min(frames_per_video.values()) < 3
    splits = {e[0]["metadata"]["set"] for e in objects.values() if e}
    assert splits == {"train", "test"}


def test_loader_reads_it_with_every_filter_exercised(synth_root):
    ann = load_annotations(synth_root, task="sgdet")
    dropped = ann.report.splits["train"].frames_dropped
    assert all(dropped[r] > 0 for r in ("no_person", "short_video", "no_visible_object"))
    assert ann.report.splits["train"].objects_small > 0
    categories = ann.triplet_categories()
    assert all(categories[kind] for kind in vocab.PREDICATE_TYPES)


def test_vocabulary_coverage(pickles):
    _, objects = pickles
    visible = [o for entries in objects.values() for o in entries if o["visible"]]
    classes = {o["class"] for o in visible}
    predicates = Counter(p for o in visible for kind in vocab.PREDICATE_TYPES for p in o[f"{kind}_relationship"])
    assert len(classes - {"light"}) >= 8
    assert len(predicates) >= 12
    for kind in vocab.PREDICATE_TYPES:
        assert set(vocab.TYPE_PREDICATES[kind]) & set(predicates)
    per_frame = Counter(sum(o["visible"] for o in entries) for entries in objects.values())
    assert per_frame[1] + per_frame[2] > 0.7 * sum(per_frame.values())


def _inside(box_xyxy, point, tolerance=0.02):
    return (
        box_xyxy[0] - tolerance <= point[0] <= box_xyxy[2] + tolerance
        and box_xyxy[1] - tolerance <= point[1] <= box_xyxy[3] + tolerance
    )


def _angle(gaze, direction):
    cosine = float(gaze @ direction) / (np.linalg.norm(gaze) * np.linalg.norm(direction))
    return math.degrees(math.acos(max(-1.0, min(1.0, cosine))))


def _check_object(obj, person_box, keypoints):
    x, y, w, h = obj["bbox"]
    box = (x, y, x + w, y + h)
    contacting, spatial = set(obj["contacting_relationship"]), set(obj["spatial_relationship"])
    hips = (keypoints[KP["left_hip"], :2] + keypoints[KP["right_hip"], :2]) / 2
    if "holding" in contacting:
        assert _inside(box, keypoints[KP["right_wrist"]])
    if contacting & {"drinking_from", "eating"}:
        assert _inside(box, keypoints[KP["nose"]])
    if contacting & {"sitting_on", "lying_on", "covered_by"}:
        assert _inside(box, hips)
    if "standing_on" in contacting:
        assert _inside(box, keypoints[KP["left_ankle"]]) and _inside(box, keypoints[KP["right_ankle"]])
    assert (obj["attention_relationship"] == ["unsure"]) == (keypoints[KP["nose"], 2] == 0)
    ears = (keypoints[KP["left_ear"], :2] + keypoints[KP["right_ear"], :2]) / 2
    centre = np.array([x + w / 2, y + h / 2])
    if obj["attention_relationship"] != ["unsure"] and not box[0] <= ears[0] <= box[2]:
        angle = _angle(keypoints[KP["nose"], :2] - ears, centre - ears)
        assert angle < 60 if obj["attention_relationship"] == ["looking_at"] else angle > 50
    if "above" in spatial:
        assert centre[1] < person_box[1]
    if "beneath" in spatial:
        assert centre[1] > (person_box[1] + person_box[3]) / 2
    if spatial & {"in_front_of", "behind"}:
        assert box[0] < person_box[2] and person_box[0] < box[2] and box[1] < person_box[3] and person_box[1] < box[3]
    if "on_the_side_of" in spatial:
        assert spatial == {"on_the_side_of"}


def test_labels_consistent_with_geometry(pickles):
    person, objects = pickles
    checked = Counter()
    for key, entries in objects.items():
        if person[key]["bbox"].shape[0] == 0:
            continue
        for obj in entries:
            if obj["visible"]:
                _check_object(obj, person[key]["bbox"][0], person[key]["keypoints"][0])
                checked.update(obj["contacting_relationship"])
    assert checked["holding"] and checked["sitting_on"] and checked["standing_on"]


@pytest.mark.parametrize("drawn_after, label", [(True, "in_front_of"), (False, "behind")])
def test_drawing_order_decides_front_or_behind(drawn_after, label):
    figure = make_figure("standing", "down", anchor=(80.0, 110.0), scale=80.0, facing=1, face_visible=True)
    torso = (figure.point("left_shoulder") + figure.point("left_hip")) / 2
    box = np.array([torso[0] - 12, torso[1] - 12, torso[0] + 12, torso[1] + 12])
    thing = Thing(vocab.OBJECT_INDEX["book"], box, drawn_after)
    labels = relationship_labels(figure, figure.box_xyxy, thing)
    assert label in labels["spatial"]
    image = np.asarray(render_frame((160, 120), figure, [thing]))
    pixel = tuple(int(v) for v in image[int(torso[1]), int(torso[0])])
    book_colour = SHAPES["book"][0][2]
    assert pixel == (book_colour if drawn_after else SHIRT)
    assert tuple(image[2, 2]) == BACKGROUND
