"""Prediction files at scale: streaming reading (orjson, batches, gzip), sorted spooled writing, k-way merging,
random access, and the file written before the streaming change (``tests/fixtures/predictions_v1.jsonl``).

The fixture was written by ``write_predictions`` of commit 262a37c (the code before the streaming reader and writer)
from seeded random predictions of the standard root's test frames (``ag_fixtures.write_standard_root``), the last
test frame left out; ``predictions_v1_reports.json`` holds what ``evaluate`` of that commit reported for it under
both IoU conventions.
"""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from ag_fixtures import write_standard_root
from arn_lightning.metrics.prediction_files import PredictionIndex, SortedPredictionSpool, merge_prediction_files
from arn_lightning.metrics.predictions import (
    PredictionFileError,
    iter_prediction_batches,
    iter_predictions,
    read_predictions,
    write_predictions,
)
from arn_lightning.metrics.scoring import evaluate

FIXTURES = Path(__file__).parent / "fixtures"
V1 = FIXTURES / "predictions_v1.jsonl"


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return write_standard_root(tmp_path_factory.mktemp("ag") / "root", frames=False)


def test_file_written_before_scores_identically(root: Path, tmp_path: Path) -> None:
    reports = json.loads((FIXTURES / "predictions_v1_reports.json").read_text())
    for iou, expected in reports.items():
        assert evaluate(str(root), str(V1), iou=iou) == expected
    packed = tmp_path / "v1.jsonl.gz"
    packed.write_bytes(gzip.compress(V1.read_bytes()))
    assert evaluate(str(root), str(packed)) == reports["continuous"]


def test_file_written_before_is_rewritten_byte_identically(tmp_path: Path) -> None:
    preds = list(read_predictions(V1))
    assert len(preds) == 5 and preds[0]["pairs"].shape == (20, 2)
    assert write_predictions(tmp_path / "again.jsonl", preds) == 5
    assert (tmp_path / "again.jsonl").read_bytes() == V1.read_bytes()
    write_predictions(tmp_path / "again.jsonl.gz", preds)
    assert gzip.decompress((tmp_path / "again.jsonl.gz").read_bytes()) == V1.read_bytes()
    assert [p["frame"] for p in read_predictions(tmp_path / "again.jsonl.gz")] == [p["frame"] for p in preds]


def test_gzip_output_is_deterministic(tmp_path: Path) -> None:
    preds = list(read_predictions(V1))
    write_predictions(tmp_path / "a.jsonl.gz", preds)
    write_predictions(tmp_path / "b.jsonl.gz", preds)
    assert (tmp_path / "a.jsonl.gz").read_bytes() == (tmp_path / "b.jsonl.gz").read_bytes()


@pytest.mark.parametrize("max_bytes", [1, 20_000, 10**9])  # a run per line, a few runs, all in memory
def test_spool_sorts_in_bounded_memory_byte_identically(tmp_path: Path, max_bytes: int) -> None:
    preds = list(read_predictions(V1))
    shuffled = preds[:]
    random.Random(3).shuffle(shuffled)
    spool = SortedPredictionSpool(max_bytes=max_bytes, folder=tmp_path)
    for pred in shuffled:
        spool.add(pred)
    assert spool.write(tmp_path / "out.jsonl") == 5
    assert (tmp_path / "out.jsonl").read_bytes() == V1.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]  # the runs are gone


def test_spool_rejects_a_repeated_frame_and_leaves_no_file(tmp_path: Path) -> None:
    preds = list(read_predictions(V1))
    spool = SortedPredictionSpool(max_bytes=1, folder=tmp_path)
    for pred in [*preds, preds[2]]:
        spool.add(pred)
    with pytest.raises(ValueError, match=f"{preds[2]['frame']!r} appears twice"):
        spool.write(tmp_path / "out.jsonl")
    assert list(tmp_path.iterdir()) == []


def test_shards_merge_by_streaming_byte_identically(tmp_path: Path) -> None:
    preds = list(read_predictions(V1))
    shards = [tmp_path / "s0.jsonl", tmp_path / "s1.jsonl.gz", tmp_path / "s2.jsonl"]
    for index, shard in enumerate(shards):
        write_predictions(shard, preds[index::3])
    assert merge_prediction_files(tmp_path / "merged.jsonl", shards) == 5
    assert (tmp_path / "merged.jsonl").read_bytes() == V1.read_bytes()
    with pytest.raises(ValueError, match="appears twice"):
        merge_prediction_files(tmp_path / "twice.jsonl", [shards[0], shards[0]])
    write_predictions(tmp_path / "unsorted.jsonl", preds[::-1])
    with pytest.raises(PredictionFileError, match="unsorted.jsonl line 2: Expected frames sorted by key"):
        merge_prediction_files(tmp_path / "bad.jsonl", [tmp_path / "unsorted.jsonl"])
    assert not (tmp_path / "twice.jsonl").exists() and not (tmp_path / "bad.jsonl").exists()


@pytest.mark.parametrize("name", ["v1.jsonl", "v1.jsonl.gz"])
def test_index_reads_each_frame_on_access(tmp_path: Path, name: str) -> None:
    preds = list(read_predictions(V1))
    write_predictions(tmp_path / name, preds)
    index = PredictionIndex(tmp_path / name)
    assert list(index) == [p["frame"] for p in preds] and len(index) == 5 and "x.mp4/000001.png" not in index
    for pred in reversed(preds):
        back = index[pred["frame"]]
        assert all(torch.equal(back[key], pred[key]) for key in pred if key != "frame")


def test_index_names_a_bad_line_on_access(tmp_path: Path) -> None:
    lines = V1.read_text().splitlines(keepends=True)
    lines[3] = lines[3].replace('"scores":[', '"scores":[7,', 1)
    (tmp_path / "bad.jsonl").write_text("".join(lines))
    index = PredictionIndex(tmp_path / "bad.jsonl")
    index[json.loads(lines[2])["frame"]]  # a good line reads
    with pytest.raises(PredictionFileError, match="bad.jsonl line 4: Expected the line\\['scores'\\]"):
        index[json.loads(lines[3])["frame"]]


@pytest.mark.parametrize("batch_frames", [1, 2, 256])
def test_batches_hold_the_frames_of_the_lines(batch_frames: int) -> None:
    batches = list(iter_prediction_batches(V1, batch_frames))
    assert [len(frames) for _, frames, _ in batches][0] == min(batch_frames, 5)
    singles = list(iter_predictions(V1))
    rows = np.concatenate([batch.boxes for _, _, batch in batches])
    assert np.array_equal(rows, np.concatenate([arrays.boxes for _, _, arrays in singles]))
    assert [n for numbers, _, _ in batches for n in numbers] == [1, 2, 3, 4, 5]


def test_lines_before_a_bad_one_in_the_same_batch_are_yielded(tmp_path: Path) -> None:
    lines = V1.read_text().splitlines(keepends=True)
    lines[3] = lines[3].replace('"labels":[', '"labels":[99,', 1)
    (tmp_path / "bad.jsonl").write_text("".join(lines))
    reader = iter_prediction_batches(tmp_path / "bad.jsonl")
    numbers, _, batch = next(reader)
    assert numbers == [1, 2, 3] and batch.num_rows.tolist() == [12, 12, 12]
    with pytest.raises(PredictionFileError, match="line 4: Expected the line\\['labels'\\] of shape"):
        next(reader)
