"""The parsed-annotation cache and the columnar frames of ``arn_lightning.data.ag``: what a cached load returns equals
a fresh parse, every input of the key (each pickle, each filtering setting) invalidates it, a broken cache file is
rebuilt, and the data module's items are bit-identical whether its frames are arrays or plain objects."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from ag_fixtures import standard_entries, write_root
from arn_lightning.data import ag
from arn_lightning.data.ag import FrameList, load_annotations


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv(ag.CACHE_ENV, str(folder))
    return folder


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return write_root(tmp_path / "ag", *standard_entries(), frames=False)


def _same(a: ag.AGAnnotations, b: ag.AGAnnotations) -> None:
    assert a.report.to_dict() == b.report.to_dict() and a.splits == b.splits
    for split in ("train", "test", "unknown"):
        assert a.triplet_categories(split) == b.triplet_categories(split)
        assert list(a.videos(split)) == list(b.videos(split))
        for fa, fb in zip(a.frames(split), b.frames(split), strict=True):
            for name in ("key", "video", "number", "split", "width", "height"):
                assert getattr(fa, name) == getattr(fb, name)
            for name in ("boxes_xyxy", "labels", "attention", "spatial", "contacting"):
                x, y = getattr(fa, name), getattr(fb, name)
                assert x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y)


def _parses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Count the slow-path parses from now on."""
    calls: list[str] = []
    real = ag._parse_and_filter
    monkeypatch.setattr(ag, "_parse_and_filter", lambda *args: calls.append("parse") or real(*args))
    return calls


@pytest.mark.parametrize("task", ["sgdet", "predcls"])
def test_cached_load_equals_a_fresh_parse(root: Path, cache: Path, monkeypatch, task: str) -> None:
    fresh = load_annotations(root, task, cache=False)
    assert not cache.exists()
    calls = _parses(monkeypatch)
    first = load_annotations(root, task)
    again = load_annotations(root, task)
    assert calls == ["parse"] and len(list(cache.glob("*.npz"))) == 1
    _same(fresh, first)
    _same(fresh, again)
    assert again.frames("test")[0].boxes_xyxy.flags.writeable  # a copy, not a view of the shared arrays


def test_each_input_of_the_key_invalidates_the_cache(root: Path, cache: Path, monkeypatch) -> None:
    load_annotations(root)
    calls = _parses(monkeypatch)
    person_file = root / "annotations" / ag.PERSON_FILE
    object_file = root / "annotations" / ag.OBJECT_FILE
    person, objects = (pickle.loads(path.read_bytes()) for path in (person_file, object_file))
    key = "C0003.mp4/000200.png"
    person[key]["bbox"] = np.array([[11.0, 5.0, 40.0, 45.0]], dtype=np.float32)  # same size, same mtime second
    person_file.write_bytes(pickle.dumps(person))
    changed = load_annotations(root)
    assert changed.videos("test")["C0003.mp4"][1].boxes_xyxy[0].tolist() == [11.0, 5.0, 40.0, 45.0]
    objects[key][0]["contacting_relationship"] = ["touching"]
    object_file.write_bytes(pickle.dumps(objects))
    assert load_annotations(root).videos("test")["C0003.mp4"][1].contacting[0].nonzero()[0].tolist() == [
        ag._COLUMNS["contacting"]["touching"]
    ]
    for options in ({"task": "predcls"}, {"min_frames": 4}, {"filter_small": 1.0}):
        _same(load_annotations(root, **options), load_annotations(root, **options, cache=False))
    assert len(calls) == 2 + 3 * 2 and len(list(cache.glob("*.npz"))) == 6  # each change parsed (and once uncached)


def test_a_broken_cache_file_is_rebuilt(root: Path, cache: Path, monkeypatch) -> None:
    load_annotations(root)
    [path] = cache.glob("*.npz")
    path.write_bytes(b"not a zip")
    fresh = load_annotations(root, cache=False)
    calls = _parses(monkeypatch)
    _same(load_annotations(root), fresh)
    assert calls == ["parse"] and path.stat().st_size > 100
    load_annotations(root)
    assert calls == ["parse"]


def test_a_broken_root_is_not_cached(tmp_path: Path, cache: Path) -> None:
    person, objects = standard_entries()
    objects["C0003.mp4/000100.png"][0]["bbox"] = [5.0, 5.0, -3.0, 10.0]  # w < 0 in a kept frame
    broken = write_root(tmp_path / "broken", person, objects, frames=False)
    with pytest.raises(ag.AnnotationError, match="C0003.mp4/000100.png"):
        load_annotations(broken)
    assert not list(cache.glob("*.npz")) if cache.exists() else True


def test_the_cache_can_be_turned_off(root: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(ag.CACHE_ENV, "off")
    assert ag.annotation_cache_dir() is None
    load_annotations(root)
    assert not (tmp_path / "cache").exists()


def test_frame_lists_slice_take_and_concatenate(root: Path, cache: Path) -> None:
    frames = load_annotations(root).frames("test")
    assert isinstance(frames, FrameList) and len(frames) == 6
    keys = frames.keys
    assert (
        [f.key for f in frames] == keys
        and frames[1:3].keys == keys[1:3]
        and frames.take([5, 0]).keys
        == [
            keys[5],
            keys[0],
        ]
    )
    assert FrameList.concat([frames[4:], frames[:1]]).keys == keys[4:] + keys[:1]
    assert FrameList.concat([]) == []
    with pytest.raises(ValueError, match="one split"):
        FrameList.concat([frames, load_annotations(root).frames("train")])
    assert frames[-1].key == keys[-1]


def test_dataset_items_are_identical_with_columnar_frames(tmp_path: Path, cache: Path) -> None:
    from arn_lightning.data.clips import evaluation_clips
    from arn_lightning.data.dataset import AGClipDataset
    from arn_lightning.data.transforms import ClipTransform

    root = write_root(tmp_path / "framed", *standard_entries(), frames=True)
    frames = load_annotations(root).frames("test")
    clips = evaluation_clips([list(range(3)), list(range(3, 6))], 2, "causal", "tiled")
    items = []
    for seq in (frames, list(frames)):  # arrays built on access / plain objects (the former storage)
        dataset = AGClipDataset(seq, clips, root / "frames", ClipTransform(32, 64, 0.0), "error", train=False)
        items.append([dataset[i] for i in range(len(dataset))])
    for a, b in zip(*items, strict=True):
        _equal(a, b)


def _equal(a, b) -> None:
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            _equal(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _equal(x, y)
    else:
        assert a == b
