"""Reading and filtering the Action Genome format (arn_lightning.data.ag) on hand-written fixtures."""

import pickle

import numpy as np
import pytest

from arn_lightning import vocab
from arn_lightning.data.ag import AnnotationError, load_annotations, read_class_file
from fixtures_ag import (EXPECTED, EXPECTED_SGDET_TRAIN_KEYS, EXPECTED_SGDET_TRIPLETS, object_entry,
                               person_entry, standard_entries, write_root, write_standard_root)


@pytest.fixture()
def root(tmp_path):
    return write_standard_root(tmp_path / "ag", frames=False)


@pytest.mark.parametrize("task", ["sgdet", "predcls"])
def test_filter_counts_match_hand_counts(root, task):
    ann = load_annotations(root, task=task)
    assert ann.report.to_dict()["splits"] == EXPECTED[task]
    assert ann.report.filter_small == (16.0 if task == "sgdet" else 0.0)


def test_sgcls_uses_the_small_box_filter(root):
    assert load_annotations(root, task="sgcls").report.to_dict()["splits"] == EXPECTED["sgdet"]


def test_frames_sorted_by_number_not_key_order(root):
    ann = load_annotations(root)
    assert [f.key for f in ann.frames("train")] == EXPECTED_SGDET_TRAIN_KEYS
    assert [f.number for f in ann.frames("test")] == [100, 200, 300, 1, 2, 4]
    assert list(ann.videos("test")) == ["C0003.mp4", "D0004.mp4"]


def test_boxes_converted_xywh_to_xyxy_and_labels(root):
    frame = load_annotations(root).frames("train")[1]  # A0001 000004: cup (20, 10, 20, 20) xywh
    np.testing.assert_array_equal(frame.boxes_xyxy, [[10, 5, 40, 45], [20, 10, 40, 30]])
    assert frame.boxes_xyxy.dtype == np.float32
    np.testing.assert_array_equal(frame.labels, [1, 11])
    assert (frame.width, frame.height, frame.split, frame.video, frame.number) == (64, 48, "train", "A0001.mp4", 4)


def test_predicate_counts_per_object(root):
    ann = load_annotations(root)
    a4 = ann.frames("train")[1]
    np.testing.assert_array_equal(a4.attention, [[1, 0, 0]])
    np.testing.assert_array_equal(a4.spatial, [[0, 1, 1, 0, 0, 0]])  # beneath, in_front_of
    expected_contacting = np.zeros((1, 17), dtype=np.int64)
    expected_contacting[0, [14 - 9, 21 - 9]] = 1  # holding, touching
    np.testing.assert_array_equal(a4.contacting, expected_contacting)
    d2 = ann.videos("test")["D0004.mp4"][1]
    assert d2.number == 2 and d2.contacting[0, 14 - 9] == 2  # duplicates are kept as counts


def test_small_filter_and_min_frames_options(root):
    sgdet = load_annotations(root).frames("train")[2]  # A0001 000050: the 10 px cup is dropped
    np.testing.assert_array_equal(sgdet.labels, [1, 8])
    kept_small = load_annotations(root, filter_small=0).frames("train")[2]
    np.testing.assert_array_equal(kept_small.labels, [1, 11, 8])
    assert len(load_annotations(root, min_frames=2).frames("train")) == 5  # B0002 (2 frames) now kept
    assert load_annotations(root, min_frames=4).report.splits["train"].videos_dropped["short"] == 2


def test_triplet_categories(root):
    assert load_annotations(root).triplet_categories() == EXPECTED_SGDET_TRIPLETS


def test_eval_target(root):
    target = load_annotations(root).frames("train")[0].eval_target()
    assert target["frame"] == "A0001.mp4/000002.png"
    assert target["boxes"].tolist() == [[10, 5, 40, 45], [20, 10, 40, 30]]
    assert target["labels"].tolist() == [1, 11]
    assert [tuple(target[k].shape) for k in ("attention", "spatial", "contacting")] == [(1, 3), (1, 6), (1, 17)]


def test_class_file_raw_spelling_mapped(tmp_path):
    path = tmp_path / "object_classes.txt"
    path.write_text("\n".join(vocab.raw_spelling(n) for n in vocab.OBJECT_CLASSES) + "\n")
    names = read_class_file(path, vocab.OBJECT_CLASSES, vocab.RAW_OBJECT_NAMES)
    assert names[10] == "cup/glass/bottle" and names[8] == "closet/cabinet" and names[30] == "sofa/couch"
    path.write_text("\n".join(vocab.raw_spelling(n) for n in vocab.PREDICATES))
    names = read_class_file(path, vocab.PREDICATES, vocab.RAW_PREDICATE_NAMES)
    assert names[5] == "in_front_of" and names[13] == "have_it_on_the_back"


# ------------------------------------------------------------------------------------------------- bad input
def _broken_root(tmp_path, person=None, objects=None, **class_lines):
    p, o = standard_entries()
    p.update(person or {})
    o.update(objects or {})
    return write_root(tmp_path / "bad", p, o, frames=False, **class_lines)


def test_missing_annotation_file(root):
    (root / "annotations" / "object_bbox_and_relationship.pkl").unlink()
    with pytest.raises(AnnotationError, match="object_bbox_and_relationship.pkl but it does not exist"):
        load_annotations(root)


def test_class_file_wrong_line_count(tmp_path):
    lines = [vocab.raw_spelling(n) for n in vocab.OBJECT_CLASSES][:-1]
    with pytest.raises(AnnotationError, match=r"object_classes.txt: Expected 36 non-empty lines but got 35"):
        load_annotations(_broken_root(tmp_path, object_lines=lines))


def test_class_file_unknown_name(tmp_path):
    lines = [vocab.raw_spelling(n) for n in vocab.PREDICATES]
    lines[4] = "underneath"
    with pytest.raises(AnnotationError, match=r"relationship_classes.txt line 5: .* got 'underneath'"):
        load_annotations(_broken_root(tmp_path, relationship_lines=lines))


def test_class_file_wrong_order(tmp_path):
    lines = [vocab.raw_spelling(n) for n in vocab.OBJECT_CLASSES]
    lines[1], lines[2] = lines[2], lines[1]
    with pytest.raises(AnnotationError, match=r"object_classes.txt line 2: Expected 'bag'"):
        load_annotations(_broken_root(tmp_path, object_lines=lines))


def test_person_entry_of_wrong_shape(tmp_path):
    bad = person_entry()
    bad["bbox"] = np.zeros((2, 4), dtype=np.float32)
    with pytest.raises(AnnotationError, match=r"person_bbox.pkl\['A0001.mp4/000002.png'\]\['bbox'\]: .*\(2, 4\)"):
        load_annotations(_broken_root(tmp_path, person={"A0001.mp4/000002.png": bad}))


def test_object_entry_not_a_list(tmp_path):
    with pytest.raises(AnnotationError, match=r"object_bbox_and_relationship.pkl\['C0003.mp4/000100.png'\]: "
                                              r"Expected a list"):
        load_annotations(_broken_root(tmp_path, objects={"C0003.mp4/000100.png": {"class": "book"}}))


def test_visible_object_without_box(tmp_path):
    key = "C0003.mp4/000200.png"
    entry = object_entry("book", (5, 5, 20, 20), key, "test")
    entry["bbox"] = None
    with pytest.raises(AnnotationError, match=r"\['C0003.mp4/000200.png'\]\[0\]: Expected a 'bbox' for a visible"):
        load_annotations(_broken_root(tmp_path, objects={key: [entry]}))


def test_box_with_wrong_length(tmp_path):
    key = "C0003.mp4/000200.png"
    entry = object_entry("book", (5, 5, 20, 20), key, "test")
    entry["bbox"] = (5, 5, 20)
    with pytest.raises(AnnotationError, match=r"\[0\]\['bbox'\]: Expected 4 numbers"):
        load_annotations(_broken_root(tmp_path, objects={key: [entry]}))


@pytest.mark.parametrize("field, value, message", [
    ("class", "spoon", r"\['class'\]: Expected an AG object class but got 'spoon'"),
    ("spatial_relationship", ["holding"], r"\['spatial_relationship'\]: Expected one of .* but got 'holding'"),
    ("attention_relationship", None, r"\['attention_relationship'\]: Expected a list"),
    ("metadata", {"tag": "x", "set": "val"}, r"\['metadata'\]\['set'\]: Expected one of \['train', 'test'\]"),
])
def test_bad_object_fields(tmp_path, field, value, message):
    key = "D0004.mp4/000001.png"
    entry = object_entry("book", (5, 5, 20, 20), key, "test")
    entry[field] = value
    with pytest.raises(AnnotationError, match=r"object_bbox_and_relationship.pkl\['D0004.mp4/000001.png'\]\[0\]"
                                              + message):
        load_annotations(_broken_root(tmp_path, objects={key: [entry]}))


def test_key_sets_must_match(tmp_path):
    p, o = standard_entries()
    del o["C0003.mp4/000100.png"]
    with pytest.raises(AnnotationError, match=r"1 key\(s\) are only in person_bbox.pkl .*C0003.mp4/000100.png"):
        load_annotations(write_root(tmp_path / "bad", p, o, frames=False))


def test_malformed_key(tmp_path):
    p, o = standard_entries()
    p["A0001.mp4/2.jpg"], o["A0001.mp4/2.jpg"] = person_entry(), []
    with pytest.raises(AnnotationError, match=r"person_bbox.pkl: Expected a frame key like .* got 'A0001.mp4/2.jpg'"):
        load_annotations(write_root(tmp_path / "bad", p, o, frames=False))


def test_unreadable_pickle(root):
    (root / "annotations" / "person_bbox.pkl").write_bytes(b"not a pickle")
    with pytest.raises(AnnotationError, match=r"person_bbox.pkl: Expected a pickled dict"):
        load_annotations(root)
    with (root / "annotations" / "person_bbox.pkl").open("wb") as handle:
        pickle.dump([1, 2], handle)
    with pytest.raises(AnnotationError, match=r"person_bbox.pkl: Expected a dict keyed by frame key but got list"):
        load_annotations(root)


def test_bad_options(root):
    with pytest.raises(ValueError, match="Expected task in"):
        load_annotations(root, task="detect")
    with pytest.raises(ValueError, match="Expected min_frames >= 1"):
        load_annotations(root, min_frames=0)
