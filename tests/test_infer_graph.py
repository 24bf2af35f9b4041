"""Ranked readable triplets and the JSON record of a frame (arn_lightning.scene_graph)."""

from __future__ import annotations

import json

import pytest
import torch

from arn_lightning.metrics.predictions import read_predictions
from arn_lightning.scene_graph import FrameGraph, Triplet, object_name, rank_triplets
from infer_fixtures import prediction

LOOKING_AT, BENEATH, IN_FRONT_OF, HOLDING, SITTING_ON = 0, 4, 5, 14, 19


@pytest.fixture
def frame() -> dict:
    """Person (1.0), cup (0.8), chair (0.5); hand-picked predicate scores, all others 0."""
    return prediction(
        "v.mp4/000004.png",
        boxes=[[0, 0, 50, 90], [40, 40, 60, 60], [10, 50, 80, 95]],
        labels=[1, 11, 8],
        scores=[1.0, 0.8, 0.5],
        pairs=[[0, 1], [0, 2]],
        predicate_scores={LOOKING_AT: 0.9, IN_FRONT_OF: 0.5, HOLDING: 0.75, 26 + SITTING_ON: 0.6, 26 + BENEATH: 0.8},
    )


def test_triplets_sorted_by_score_with_spatial_reversed(frame: dict) -> None:
    triplets = rank_triplets(frame, top_k=10, threshold=0.35)
    assert [t.as_list() for t in triplets] == [
        ["person", "looking_at", "cup/glass/bottle", pytest.approx(0.72)],
        ["person", "holding", "cup/glass/bottle", pytest.approx(0.6)],
        ["cup/glass/bottle", "in_front_of", "person", pytest.approx(0.4)],  # tie: pair 0 before pair 1
        ["chair", "beneath", "person", pytest.approx(0.4)],
    ]
    assert (triplets[2].subject_row, triplets[2].object_row) == (1, 0)
    assert (triplets[0].subject_row, triplets[0].object_row) == (0, 1)
    assert [t.kind for t in triplets] == ["attention", "contacting", "spatial", "spatial"]


def test_threshold_is_inclusive_and_top_k_cuts(frame: dict) -> None:
    assert len(rank_triplets(frame, top_k=10, threshold=0.4)) == 4
    assert len(rank_triplets(frame, top_k=10, threshold=0.41)) == 2
    assert [t.predicate for t in rank_triplets(frame, top_k=1, threshold=0.0)] == [LOOKING_AT]
    assert len(rank_triplets(frame, top_k=100, threshold=0.0)) == 2 * 26
    assert rank_triplets(frame, top_k=0, threshold=0.0) == []


def test_frame_without_pairs_has_no_triplet() -> None:
    empty = prediction("v.mp4/000001.png", boxes=[], labels=[], scores=[], pairs=[])
    assert rank_triplets(empty, top_k=5, threshold=0.0) == []


def test_malformed_predictions_are_rejected(frame: dict) -> None:
    with pytest.raises(ValueError, match=r"'pairs'.* missing \(frame 'v.mp4/000004.png'\)"):
        rank_triplets({k: v for k, v in frame.items() if k != "pairs"})
    frame["spatial"] = torch.zeros(2, 5)
    message = r"\['spatial'\] of shape \[2, 6\] but got \[2, 5\] \(frame 'v.mp4/000004.png'\)"
    with pytest.raises(ValueError, match=message):
        rank_triplets(frame)
    with pytest.raises(ValueError, match="top_k >= 0"):
        rank_triplets(frame, top_k=-1)


def test_object_names() -> None:
    assert object_name(1) == "person" and object_name(36) == "window" and object_name(0) == "object_0"


def test_json_record_has_names_triplets_and_raw_fields(frame: dict) -> None:
    graph = FrameGraph(2, 4, 1.0000001, frame, rank_triplets(frame, top_k=3, threshold=0.0))
    record = json.loads(json.dumps(graph.to_json()))
    assert record["index"] == 2 and record["frame_index"] == 4 and record["timestamp"] == 1.0
    assert record["frame"] == graph.frame == "v.mp4/000004.png"
    assert record["label_names"] == ["person", "cup/glass/bottle", "chair"]
    assert record["triplets"] == [
        ["person", "looking_at", "cup/glass/bottle", 0.72],
        ["person", "holding", "cup/glass/bottle", 0.6],
        ["cup/glass/bottle", "in_front_of", "person", 0.4],
    ]
    assert record["triplet_rows"] == [[0, LOOKING_AT, 1], [0, HOLDING, 1], [1, IN_FRONT_OF, 0]]
    assert record["pairs"] == [[0, 1], [0, 2]] and record["labels"] == [1, 11, 8]
    assert record["scores"] == pytest.approx([1.0, 0.8, 0.5])
    assert len(record["contacting"][0]) == 17 and record["boxes"][1] == [40.0, 40.0, 60.0, 60.0]


def test_json_record_reads_back_as_a_prediction(frame: dict, tmp_path) -> None:
    graph = FrameGraph(0, 4, 0.0, frame, rank_triplets(frame))
    path = tmp_path / "scene_graphs.jsonl"
    path.write_text(json.dumps(graph.to_json()) + "\n")
    [back] = read_predictions(path)
    assert back["frame"] == frame["frame"]
    for key in ("boxes", "labels", "scores", "pairs", "attention", "spatial", "contacting"):
        assert torch.equal(back[key], frame[key]), key


def test_triplet_text() -> None:
    triplet = Triplet(0, HOLDING, 1, 0.625, "person", "cup/glass/bottle")
    assert triplet.text() == "person holding cup/glass/bottle 0.62"
    assert triplet.predicate_name == "holding"
