"""The relation timeline (arn_lightning.drawing.timeline)."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from arn_lightning.drawing.timeline import save_timeline, timeline_rows, timeline_size
from arn_lightning.scene_graph import FrameGraph, rank_triplets
from infer_fixtures import prediction

LOOKING_AT, IN_FRONT_OF, HOLDING = 0, 5, 14


def _graph(index: int, timestamp: float, cells: dict[int, float]) -> FrameGraph:
    """Person + cup (pair 0) + chair (pair 1); ``cells`` maps pair * 26 + predicate to a score."""
    pred = prediction(
        f"v.mp4/{index:06d}.png",
        boxes=[[0, 0, 9, 9]] * 3,
        labels=[1, 11, 8],
        scores=[1, 1, 1],
        pairs=[[0, 1], [0, 2]],
        predicate_scores=cells,
    )
    return FrameGraph(index, index, timestamp, pred, rank_triplets(pred, top_k=10, threshold=0.5))


def _spans(graphs: list[FrameGraph], duration: float = 0.5) -> dict[str, list]:
    return {row.label: row.spans for row in timeline_rows(graphs, duration)}


def test_spans_last_until_the_next_frame_and_merge() -> None:
    graphs = [
        _graph(0, 0.0, {HOLDING: 0.9, LOOKING_AT: 0.9}),
        _graph(1, 0.5, {HOLDING: 0.9}),
        _graph(2, 1.25, {HOLDING: 0.9, LOOKING_AT: 0.9}),  # the video's sampling left a gap: spans still touch
        _graph(3, 1.75, {IN_FRONT_OF: 0.9}),
    ]
    assert _spans(graphs) == {
        "person looking_at cup/glass/bottle": [(0.0, 0.5), (1.25, 0.5)],
        "cup/glass/bottle in_front_of person": [(1.75, 0.5)],
        "person holding cup/glass/bottle": [(0.0, 1.75)],
    }


def test_rows_ordered_by_predicate_then_object() -> None:
    graphs = [_graph(0, 0.0, {HOLDING: 0.9, 26 + LOOKING_AT: 0.9, LOOKING_AT: 0.9, 26 + IN_FRONT_OF: 0.9})]
    assert list(_spans(graphs)) == [
        "person looking_at chair",
        "person looking_at cup/glass/bottle",
        "chair in_front_of person",
        "person holding cup/glass/bottle",
    ]


def test_below_threshold_is_not_a_span_and_max_rows_keeps_the_longest() -> None:
    graphs = [_graph(0, 0.0, {HOLDING: 0.9, LOOKING_AT: 0.4}), _graph(1, 1.0, {HOLDING: 0.9, LOOKING_AT: 0.9})]
    assert _spans(graphs)["person looking_at cup/glass/bottle"] == [(1.0, 0.5)]
    rows = timeline_rows(graphs, 0.5, max_rows=1)
    assert [row.label for row in rows] == ["person holding cup/glass/bottle"] and rows[0].total == 1.5


def test_bad_frame_duration() -> None:
    with pytest.raises(ValueError, match="positive frame duration in seconds but got 0"):
        timeline_rows([], 0)


@pytest.mark.parametrize("num_frames", [0, 3])
def test_saved_png_has_the_documented_size(tmp_path: Path, num_frames: int) -> None:
    graphs = [_graph(i, i * 0.5, {HOLDING: 0.9, 26 + IN_FRONT_OF: 0.8}) for i in range(num_frames)]
    path = save_timeline(graphs, tmp_path / "timeline.png", frame_duration=0.5, title="v.mp4")
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size == timeline_size(len(timeline_rows(graphs, 0.5)))
    assert timeline_size(2) == (1200, 216) and timeline_size(0) == timeline_size(1)
