"""Reading and filtering the Action Genome format (arn_lightning.data.ag) on hand-written fixtures."""

import copy
import json
import os
import pickle
import warnings

import numpy as np
import pytest

from ag_fixtures import (
    DEGENERATE_KEYS,
    EXPECTED,
    EXPECTED_SGDET_TRAIN_KEYS,
    EXPECTED_SGDET_TRIPLETS,
    object_entry,
    person_entry,
    standard_entries,
    write_degenerate_root,
    write_root,
)
from arn_lightning import vocab
from arn_lightning.commands import stats as stats_command
from arn_lightning.data.ag import AnnotationError, load_annotations, load_pickle, read_class_file

NO_INVALID_BOXES = {"invalid_ignored": 0}


def expected_splits(task, **invalid_ignored):
    """``EXPECTED[task]`` with the report's ``boxes`` section (``invalid_ignored`` per split, default 0)."""
    return {
        name: {**copy.deepcopy(split), "boxes": {"invalid_ignored": invalid_ignored.get(name, 0)}}
        for name, split in EXPECTED[task].items()
    }  # a copy: EXPECTED is shared with other test modules


@pytest.mark.parametrize("task", ["sgdet", "predcls"])
def test_filter_counts_match_hand_counts(standard_root, task):
    ann = load_annotations(standard_root, task=task)
    assert ann.report.to_dict()["splits"] == expected_splits(task)
    assert ann.report.filter_small == (16.0 if task == "sgdet" else 0.0)


def test_sgcls_uses_the_small_box_filter(standard_root):
    assert load_annotations(standard_root, task="sgcls").report.to_dict()["splits"] == expected_splits("sgdet")


def test_frames_sorted_by_number_not_key_order(standard_root):
    ann = load_annotations(standard_root)
    assert [f.key for f in ann.frames("train")] == EXPECTED_SGDET_TRAIN_KEYS
    assert [f.number for f in ann.frames("test")] == [100, 200, 300, 1, 2, 4]
    assert list(ann.videos("test")) == ["C0003.mp4", "D0004.mp4"]


def test_boxes_converted_xywh_to_xyxy_and_labels(standard_root):
    frame = load_annotations(standard_root).frames("train")[1]  # A0001 000004: cup (20, 10, 20, 20) xywh
    np.testing.assert_array_equal(frame.boxes_xyxy, [[10, 5, 40, 45], [20, 10, 40, 30]])
    assert frame.boxes_xyxy.dtype == np.float32
    np.testing.assert_array_equal(frame.labels, [1, 11])
    assert (frame.width, frame.height, frame.split, frame.video, frame.number) == (64, 48, "train", "A0001.mp4", 4)


def test_predicate_counts_per_object(standard_root):
    ann = load_annotations(standard_root)
    a4 = ann.frames("train")[1]
    np.testing.assert_array_equal(a4.attention, [[1, 0, 0]])
    np.testing.assert_array_equal(a4.spatial, [[0, 1, 1, 0, 0, 0]])  # beneath, in_front_of
    expected_contacting = np.zeros((1, 17), dtype=np.int64)
    expected_contacting[0, [14 - 9, 21 - 9]] = 1  # holding, touching
    np.testing.assert_array_equal(a4.contacting, expected_contacting)
    d2 = ann.videos("test")["D0004.mp4"][1]
    assert d2.number == 2 and d2.contacting[0, 14 - 9] == 2  # duplicates are kept as counts


def test_small_filter_and_min_frames_options(standard_root):
    sgdet = load_annotations(standard_root).frames("train")[2]  # A0001 000050: the 10 px cup is dropped
    np.testing.assert_array_equal(sgdet.labels, [1, 8])
    kept_small = load_annotations(standard_root, filter_small=0).frames("train")[2]
    np.testing.assert_array_equal(kept_small.labels, [1, 11, 8])
    assert len(load_annotations(standard_root, min_frames=2).frames("train")) == 5  # B0002 (2 frames) now kept
    assert load_annotations(standard_root, min_frames=4).report.splits["train"].videos_dropped["short"] == 2


def test_triplet_categories(standard_root):
    assert load_annotations(standard_root).triplet_categories() == EXPECTED_SGDET_TRIPLETS


def test_eval_target(standard_root):
    target = load_annotations(standard_root).frames("train")[0].eval_target()
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


def test_missing_annotation_file(standard_root):
    (standard_root / "annotations" / "object_bbox_and_relationship.pkl").unlink()
    with pytest.raises(AnnotationError, match="object_bbox_and_relationship.pkl but it does not exist"):
        load_annotations(standard_root)


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
    with pytest.raises(
        AnnotationError,
        match=r"object_bbox_and_relationship.pkl\['C0003.mp4/000100.png'\]: "
        r"Expected a list",
    ):
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


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("class", "spoon", r"\['class'\]: Expected an AG object class but got 'spoon'"),
        ("spatial_relationship", ["holding"], r"\['spatial_relationship'\]: Expected one of .* but got 'holding'"),
        ("attention_relationship", None, r"\['attention_relationship'\]: Expected a list"),
        ("metadata", {"tag": "x", "set": "val"}, r"\['metadata'\]\['set'\]: Expected one of \['train', 'test'\]"),
    ],
)
def test_bad_object_fields(tmp_path, field, value, message):
    key = "D0004.mp4/000001.png"
    entry = object_entry("book", (5, 5, 20, 20), key, "test")
    entry[field] = value
    with pytest.raises(
        AnnotationError, match=r"object_bbox_and_relationship.pkl\['D0004.mp4/000001.png'\]\[0\]" + message
    ):
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


def test_unreadable_pickle(standard_root):
    (standard_root / "annotations" / "person_bbox.pkl").write_bytes(b"not a pickle")
    with pytest.raises(AnnotationError, match=r"person_bbox.pkl: Expected a pickled dict"):
        load_annotations(standard_root)
    with (standard_root / "annotations" / "person_bbox.pkl").open("wb") as handle:
        pickle.dump([1, 2], handle)
    with pytest.raises(AnnotationError, match=r"person_bbox.pkl: Expected a dict keyed by frame key but got list"):
        load_annotations(standard_root)


def test_bad_options(standard_root):
    with pytest.raises(ValueError, match="Expected task in"):
        load_annotations(standard_root, task="detect")
    with pytest.raises(ValueError, match="Expected min_frames >= 1"):
        load_annotations(standard_root, min_frames=0)


# ------------------------------------------------------------------------------------------- the box rule
KEPT_KEY, NO_OBJECT_KEY, NO_PERSON_KEY = "A0001.mp4/000002.png", "A0001.mp4/000010.png", "A0001.mp4/000030.png"


@pytest.mark.parametrize(
    "box, shown, reason",
    [
        ((np.nan, 5, 40, 45), r"\[nan, 5.0, 40.0, 45.0\]", "a non-finite coordinate"),
        ((10, 5, np.inf, 45), r"\[10.0, 5.0, inf, 45.0\]", "a non-finite coordinate"),
        ((40, 5, 10, 45), r"\[40.0, 5.0, 10.0, 45.0\]", "x2 < x1"),
        ((10, 45, 40, 5), r"\[10.0, 45.0, 40.0, 5.0\]", "y2 < y1"),
    ],
)
def test_invalid_person_box_names_the_file_and_the_key(tmp_path, box, shown, reason):
    """A NaN person box used to load and stop `fit` at the first batch blaming the model; the loader names it."""
    root = _broken_root(tmp_path, person={KEPT_KEY: person_entry(box)})
    for task in ("sgdet", "predcls"):
        with pytest.raises(
            AnnotationError,
            match=rf"person_bbox.pkl\['{KEPT_KEY}'\]\['bbox'\]: Expected an xyxy box "
            rf"with finite coordinates, x2 >= x1 and y2 >= y1 .* but got "
            rf"{shown} \({reason}\)",
        ):
            load_annotations(root, task=task)


@pytest.mark.parametrize(
    "box_xywh, reason",
    [
        ((np.nan, 5, 20, 20), "a non-finite coordinate"),
        ((5, 5, np.inf, 20), "a non-finite coordinate"),
        ((5, 5, 1e39, 20), "a non-finite coordinate"),  # finite in float64, inf as the float32 the loader keeps
        ((5, 5, -3, 20), "x2 < x1"),
        ((5, 5, 20, -0.5), "y2 < y1"),
    ],
)
def test_invalid_object_box_names_the_file_key_and_index(tmp_path, box_xywh, reason):
    key = "C0003.mp4/000200.png"
    entries = [object_entry("chair", None, key, "test"), object_entry("book", box_xywh, key, "test")]
    with pytest.raises(
        AnnotationError,
        match=rf"object_bbox_and_relationship.pkl\['{key}'\]\[1\]\['bbox'\]: "
        rf"Expected \(x, y, w, h\) with finite values and w, h >= 0.* "
        rf"but got xyxy .*{reason}",
    ):
        load_annotations(_broken_root(tmp_path, objects={key: entries}), task="predcls")


def test_invalid_boxes_of_frames_dropped_anyway_are_counted_not_raised(tmp_path, capsys):
    """Rule 2 drops a frame without visible object (its person box is unused) and a frame without person box (its
    objects are unused): a box breaking the rule there is counted under boxes.invalid_ignored."""
    no_person_objects = [
        object_entry("cup/glass/bottle", (np.nan, 10, 20, 20), NO_PERSON_KEY),
        object_entry("chair", (30, 20, -1, 28), NO_PERSON_KEY),
    ]
    root = _broken_root(
        tmp_path, person={NO_OBJECT_KEY: person_entry((np.inf, 5, 40, 45))}, objects={NO_PERSON_KEY: no_person_objects}
    )
    for task in ("sgdet", "predcls"):
        report = load_annotations(root, task=task).report
        expected = expected_splits(task, train=3)
        expected["train"]["objects"]["total"] += 1  # the extra chair entry
        assert report.to_dict()["splits"] == expected
    assert stats_command.main(["--root", str(root), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["splits"]["train"]["boxes"] == {"invalid_ignored": 3}
    assert stats["splits"]["test"]["boxes"] == NO_INVALID_BOXES
    assert stats_command.main(["--root", str(root)]) == 0
    assert "3 invalid boxes in dropped frames (ignored)" in capsys.readouterr().out


def test_degenerate_boxes_are_valid_kept_by_predcls_and_small_for_sgdet(tmp_path):
    root = write_degenerate_root(tmp_path / "ag")
    frames = load_annotations(root, task="predcls").frames("test")
    assert [f.key for f in frames] == DEGENERATE_KEYS
    assert [f.boxes_xyxy[1].tolist() for f in frames] == [[5, 5, 25, 25], [5, 5, 5, 25], [12, 8, 12, 8]]
    report = load_annotations(root, task="sgdet").report.splits["test"]
    assert report.frames_dropped == {"no_visible_object": 0, "no_person": 0, "all_objects_small": 2, "short_video": 1}
    assert report.objects_small == 2 and report.boxes_invalid_ignored == 0


def test_degenerate_person_box_is_valid(tmp_path):
    key = "C0003.mp4/000200.png"
    frame = load_annotations(_broken_root(tmp_path, person={key: person_entry((10, 5, 10, 5))})).videos("test")
    assert frame["C0003.mp4"][1].boxes_xyxy[0].tolist() == [10, 5, 10, 5]


def test_boxes_beyond_the_frame_are_kept_unclipped(tmp_path):
    """Coordinates are not bounded by the frame (64 x 48): the release's boxes are scored as they are."""
    key = "C0003.mp4/000200.png"
    root = _broken_root(
        tmp_path,
        person={key: person_entry((-4, -2, 70, 50))},
        objects={key: [object_entry("book", (50, 30, 30, 40), key, "test")]},
    )
    frame = load_annotations(root).videos("test")["C0003.mp4"][1]
    assert frame.boxes_xyxy.tolist() == [[-4, -2, 70, 50], [50, 30, 80, 70]]


# --------------------------------------------------------------------------------- the restricted unpickler
class _Payload:
    """Unpickling this runs ``function(*args)``: what a crafted annotation file would do."""

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


@pytest.mark.parametrize(
    "make_payload, refused",
    [
        (lambda marker: _Payload(os.system, f"touch {marker}"), r"'(posix|nt|os)\.system'"),
        (lambda marker: _Payload(open, str(marker), "w"), r"'io\.open'"),
        (lambda marker: _Payload(eval, f"open({str(marker)!r}, 'w')"), r"'builtins\.eval'"),
        (lambda marker: _Payload(np.save, str(marker), np.zeros(1)), r"'numpy[\w.]*\.save'"),  # numpy, not an array
    ],
)
def test_a_pickle_that_would_run_code_is_refused(standard_root, tmp_path, make_payload, refused):
    marker = tmp_path / "marker"
    person, _ = standard_entries()
    person[KEPT_KEY] = {**person[KEPT_KEY], "bbox_mode": make_payload(marker)}
    with (standard_root / "annotations" / "person_bbox.pkl").open("wb") as handle:
        pickle.dump(person, handle)
    with pytest.raises(
        AnnotationError,
        match=r"person_bbox.pkl: Expected only plain data .* but got a reference to "
        r"the global " + refused,
    ):
        load_annotations(standard_root)
    assert not marker.exists()


def test_a_pickle_with_any_other_class_is_refused(tmp_path):
    import collections

    path = tmp_path / "x.pkl"
    path.write_bytes(pickle.dumps({"a": collections.OrderedDict(b=1)}))
    with pytest.raises(AnnotationError, match=r"x.pkl: .*the global 'collections.OrderedDict'"):
        load_pickle(path)


def _numpy_payload():
    return {
        "bbox": np.array([[1.5, 2.0, 3.25, 4.0]], dtype=np.float32),
        "score": np.float32(0.75),
        "size": (640, 480),
        "count": np.int64(3),
        "mode": "xyxy",
        "flags": [True, None],
        "ids": {1, 2},
        "empty": np.zeros((0, 4), dtype=np.float32),
        "doubles": np.arange(3.0),
    }


def _assert_numpy_payload(data):
    expected = _numpy_payload()
    assert set(data) == set(expected)
    for key in ("bbox", "empty", "doubles"):
        assert data[key].dtype == expected[key].dtype and np.array_equal(data[key], expected[key])
    assert data["score"] == np.float32(0.75) and data["score"].dtype == np.float32
    assert data["count"] == 3 and isinstance(data["count"], np.int64)
    assert (data["size"], data["mode"], data["flags"], data["ids"]) == ((640, 480), "xyxy", [True, None], {1, 2})


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_numpy_arrays_and_scalars_load_with_every_protocol(tmp_path, protocol):
    path = tmp_path / "p.pkl"
    path.write_bytes(pickle.dumps(_numpy_payload(), protocol=protocol))
    _assert_numpy_payload(load_pickle(path))


@pytest.mark.parametrize("protocol", [0, 2])
def test_numpy_1_module_paths_load(tmp_path, protocol):
    """The release pickles were written by numpy 1.x: they name numpy.core.multiarray, not numpy._core."""
    data = pickle.dumps(_numpy_payload(), protocol=protocol)
    old = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert b"numpy.core.multiarray\n_reconstruct" in old and b"numpy.core.multiarray\nscalar" in old
    path = tmp_path / "old.pkl"
    path.write_bytes(old)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy.core deprecation warning either
        _assert_numpy_payload(load_pickle(path))


def test_numpy_1_frombuffer_path_loads(tmp_path):
    """Protocol 5 pickles rebuild arrays with numeric._frombuffer; hand-craft the numpy 1.x path of it."""
    array = np.array([[1.5, 2.0, 3.25, 4.0]], dtype=np.float32)
    args = pickle.dumps((array.tobytes(), array.dtype, array.shape, "C"), protocol=3)
    assert args[:2] == b"\x80\x03" and args[-1:] == b"."
    path = tmp_path / "frombuffer.pkl"
    path.write_bytes(b"\x80\x03cnumpy.core.numeric\n_frombuffer\n" + args[2:-1] + b"R.")
    with pytest.raises(AnnotationError, match="Expected a dict keyed by frame key but got ndarray"):
        load_pickle(path)  # it loads (an array, not a dict)
    path.write_bytes(b"\x80\x03}X\x01\x00\x00\x00acnumpy.core.numeric\n_frombuffer\n" + args[2:-1] + b"Rs.")
    loaded = load_pickle(path)["a"]
    assert loaded.dtype == np.float32 and np.array_equal(loaded, array)


def test_standard_root_pickles_load_through_the_restricted_unpickler(standard_root):
    person = load_pickle(standard_root / "annotations" / "person_bbox.pkl")
    assert person[KEPT_KEY]["bbox"].dtype == np.float32 and person[KEPT_KEY]["bbox_size"] == (64, 48)
