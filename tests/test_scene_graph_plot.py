"""The scene-graph drawing module: stable node positions across frames, edge colours by predicate type, 0 triplets."""

from __future__ import annotations

import math

import torch

from arn_lightning.drawing.annotate import PREDICATE_TYPE_COLORS
from arn_lightning.drawing.graph_plot import (
    figure_image,
    frame_edges,
    frame_graph,
    frame_layout,
    graph_boxes,
    node_names,
    scene_graph_figure,
    video_layout,
)
from arn_lightning.drawing.recall_chart import recall_figure
from arn_lightning.scene_graph import FrameGraph, Triplet
from arn_lightning.vocab import PREDICATES


def _graph(index: int, boxes: list[list[float]], triplets: list[Triplet]) -> FrameGraph:
    prediction = {"frame": f"v.mp4/{index + 1:06d}.png", "boxes": torch.tensor(boxes)}
    return FrameGraph(index, index + 1, index / 2, prediction, triplets)


def _triplet(subject: int, predicate: str, obj: int, names: tuple[str, str], score: float = 0.5) -> Triplet:
    return Triplet(subject, PREDICATES.index(predicate), obj, score, *names)


BOXES = [[0.0, 0.0, 40.0, 100.0], [150.0, 60.0, 190.0, 100.0], [100.0, 0.0, 120.0, 20.0]]


def test_a_node_keeps_its_place_from_frame_to_frame() -> None:
    first = _graph(0, BOXES, [_triplet(0, "holding", 1, ("person", "cup/glass/bottle"))])
    moved = [[5.0, 0.0, 45.0, 100.0], [140.0, 60.0, 180.0, 100.0], [100.0, 0.0, 120.0, 20.0]]
    second = _graph(
        1,
        moved,
        [
            _triplet(0, "looking_at", 2, ("person", "book")),
            _triplet(1, "in_front_of", 0, ("cup/glass/bottle", "person")),
        ],
    )
    layout = video_layout([first, second], image_size=(200, 100))
    assert set(layout) == {"person", "cup/glass/bottle", "book"}
    assert frame_layout(first, layout)["person"] == frame_layout(second, layout)["person"] == layout["person"]
    assert layout == video_layout([first, second], image_size=(200, 100))  # seeded: the same every time
    # box centres guide the layout: the cup (right of the person in the image) is drawn to its right
    assert layout["cup/glass/bottle"][0] > layout["person"][0]


def test_edges_are_coloured_by_predicate_type_in_reading_order() -> None:
    triplets = [
        _triplet(0, "looking_at", 1, ("person", "cup/glass/bottle")),
        _triplet(1, "in_front_of", 0, ("cup/glass/bottle", "person")),
        _triplet(0, "holding", 2, ("person", "cup/glass/bottle")),
    ]
    edges = frame_edges(triplets)
    assert [e.color for e in edges] == [PREDICATE_TYPE_COLORS[k] for k in ("attention", "spatial", "contacting")]
    assert (edges[1].source, edges[1].target) == ("cup/glass/bottle", "person")  # spatial reads object -> person
    assert node_names(triplets) == {0: "person", 1: "cup/glass/bottle", 2: "cup/glass/bottle #2"}
    assert edges[2].target == "cup/glass/bottle #2"
    figure = scene_graph_figure(_graph(0, BOXES, triplets))
    drawn = {tuple(round(c, 3) for c in patch.get_edgecolor()[:3]) for patch in figure.axes[0].patches}
    expected = {tuple(round(int(c[i : i + 2], 16) / 255, 3) for i in (1, 3, 5)) for c in PREDICATE_TYPE_COLORS.values()}
    assert expected <= drawn


def test_a_frame_without_triplets_draws_an_empty_graph() -> None:
    empty = _graph(0, BOXES, [])
    assert video_layout([empty]) == {} and frame_edges([]) == []
    figure = scene_graph_figure(empty)
    assert any("no triplet" in text.get_text() for text in figure.axes[0].texts)
    image = figure_image(figure)
    assert image.size == (600, 450) and image.mode == "RGB"


def test_a_graph_without_boxes_is_placed_by_the_spring_layout() -> None:
    light = FrameGraph(0, 1, math.nan, {"frame": "v.mp4/000001.png"}, [_triplet(0, "holding", 1, ("person", "cup"))])
    layout = video_layout([light])
    assert set(layout) == {"person", "cup"} and layout["person"] != layout["cup"]
    figure_image(scene_graph_figure(light, layout))


def test_recall_chart_names_both_mean_recalls() -> None:
    rows = [{"predicate": "holding", "type": "contacting", "gt_count": 3, "recall": 0.5}]
    figure = recall_figure(rows, "with R@20", {"mR@20 (aggregated)": 0.25, "mR_per_frame@20": 0.2})
    labels = [t.get_text() for t in figure.axes[0].get_legend().get_texts()]
    assert "mR@20 (aggregated) = 0.250" in labels and "mR_per_frame@20 = 0.200" in labels


def test_boxes_of_one_entity_are_one_node() -> None:
    # two pair queries whose person boxes overlap at IoU 0.8: [0, 0, 100, 100] and [0, 0, 100, 80]
    boxes = [[0.0, 0.0, 100.0, 100.0], [0.0, 0.0, 100.0, 80.0], [120.0, 40.0, 160.0, 80.0], [200.0, 0.0, 240.0, 40.0]]
    triplets = [
        _triplet(0, "holding", 2, ("person", "cup/glass/bottle"), 0.9),
        _triplet(1, "holding", 3, ("person", "cup/glass/bottle"), 0.8),
        _triplet(1, "looking_at", 2, ("person", "cup/glass/bottle"), 0.7),
        _triplet(0, "holding", 2, ("person", "cup/glass/bottle"), 0.6),  # the same edge again: drawn once
    ]
    graph = _graph(0, boxes, triplets)
    network = frame_graph(triplets, graph_boxes(graph))
    assert sorted(network.nodes) == ["cup/glass/bottle", "cup/glass/bottle #2", "person"]
    assert node_names(triplets, graph_boxes(graph)) == {
        0: "person",
        2: "cup/glass/bottle",
        1: "person",
        3: "cup/glass/bottle #2",
    }
    edges = frame_edges(triplets, graph_boxes(graph))
    assert [(e.source, e.predicate, e.target, e.score) for e in edges] == [
        ("person", "holding", "cup/glass/bottle", 0.9),
        ("person", "holding", "cup/glass/bottle #2", 0.8),
        ("person", "looking_at", "cup/glass/bottle", 0.7),
    ]
    assert set(video_layout([graph], image_size=(240, 100))) == {"person", "cup/glass/bottle", "cup/glass/bottle #2"}
    labels = {t.get_text() for t in scene_graph_figure(graph).axes[0].texts}
    assert {"person", "cup/glass/bottle", "cup/glass/bottle #2"} <= labels and "person #2" not in labels


def test_boxes_below_the_matching_overlap_stay_two_nodes() -> None:
    # IoU 0.4 < 0.5: [0, 0, 100, 100] and [0, 0, 100, 40]; and an equal box of another class is another entity
    boxes = [[0.0, 0.0, 100.0, 100.0], [0.0, 0.0, 100.0, 40.0], [120.0, 40.0, 160.0, 80.0], [120.0, 40.0, 160.0, 80.0]]
    triplets = [
        _triplet(0, "holding", 2, ("person", "cup/glass/bottle")),
        _triplet(1, "holding", 3, ("person", "book")),
    ]
    names = node_names(triplets, graph_boxes(_graph(0, boxes, triplets)))
    assert names == {0: "person", 2: "cup/glass/bottle", 1: "person #2", 3: "book"}
