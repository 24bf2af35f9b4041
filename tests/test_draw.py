"""Drawing boxes and the triplet panel (arn_lightning.drawing.annotate)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from arn_lightning.drawing.annotate import (
    PANEL_BACKGROUND,
    PREDICATE_TYPE_COLORS,
    annotate_frame,
    class_color,
    draw_panel,
    font_size,
    panel_lines,
    panel_width,
)
from arn_lightning.scene_graph import FrameGraph, rank_triplets
from infer_fixtures import prediction

WIDTH, HEIGHT = 160, 120
BACKGROUND = (90, 120, 90)


def _graph(top_k: int = 10, holding: float = 0.9) -> FrameGraph:
    pred = prediction(
        "v.mp4/000003.png",
        boxes=[[10, 30, 60, 110], [100, 60, 140, 100], [5, 5, 15, 15]],
        labels=[1, 11, 8],
        scores=[1.0, 0.9, 0.05],
        pairs=[[0, 1], [0, 2]],
        predicate_scores={14: holding, 0: 0.8, 26 + 19: 0.9},
    )
    return FrameGraph(1, 3, 1.5, pred, rank_triplets(pred, top_k=top_k, threshold=0.5))


def test_annotated_frame_size_and_boxes_in_class_colours() -> None:
    image = Image.new("RGB", (WIDTH, HEIGHT), BACKGROUND)
    annotated = np.asarray(annotate_frame(image, _graph()))
    assert annotated.shape == (HEIGHT, WIDTH + panel_width(HEIGHT), 3)
    assert tuple(annotated[110, 35]) == class_color(1)  # bottom edge of the person box
    assert tuple(annotated[80, 140]) == class_color(11)  # right edge of the cup box
    # The chair's pair scores 0.05 x 0.9 < 0.5: no triplet, so its box is not drawn.
    assert tuple(annotated[10, 15]) == BACKGROUND
    assert tuple(annotated[HEIGHT - 1, WIDTH + panel_width(HEIGHT) - 1]) == PANEL_BACKGROUND


def test_annotating_leaves_the_input_untouched() -> None:
    image = Image.new("RGB", (WIDTH, HEIGHT), BACKGROUND)
    annotate_frame(image, _graph())
    assert (np.asarray(image) == BACKGROUND).all()


def test_panel_lines_list_time_and_triplets_with_type_colours() -> None:
    lines = panel_lines(_graph(), HEIGHT)
    assert lines == [
        ("t = 1.50 s   frame 3", None),
        ("person holding cup/glass/bottle 0.81", PREDICATE_TYPE_COLORS["contacting"]),
        ("person looking_at cup/glass/bottle 0.72", PREDICATE_TYPE_COLORS["attention"]),
    ]


def test_panel_counts_the_triplets_that_do_not_fit() -> None:
    pred = prediction(
        "v.mp4/000001.png",
        boxes=[[0, 0, 5, 5], [1, 1, 4, 4]],
        labels=[1, 2],
        scores=[1, 1],
        pairs=[[0, 1]],
        predicate_scores={j: 1.0 - j / 100 for j in range(26)},
    )
    graph = FrameGraph(0, 0, 0.0, pred, rank_triplets(pred, top_k=26, threshold=0.0))
    lines = panel_lines(graph, HEIGHT)
    capacity = (HEIGHT - font_size(HEIGHT) // 2) // round(font_size(HEIGHT) * 1.35)
    assert len(lines) == capacity
    shown = capacity - 2
    assert lines[-1] == (f"+ {26 - shown} more", None)
    assert lines[1][0].startswith("person looking_at bag")


def test_panel_of_a_frame_without_triplets() -> None:
    graph = _graph(top_k=0)
    assert panel_lines(graph, HEIGHT)[1] == ("no triplet above the threshold", None)
    panel = np.asarray(draw_panel(HEIGHT, graph))
    assert panel.shape == (HEIGHT, panel_width(HEIGHT), 3)
    assert (panel != PANEL_BACKGROUND).any()  # the text was drawn


@pytest.mark.parametrize("height, expected", [(120, 12), (270, 12), (1080, 36)])
def test_font_scales_with_the_frame(height: int, expected: int) -> None:
    assert font_size(height) == expected


def test_a_dataset_frame_without_a_time_shows_its_number_alone() -> None:
    import dataclasses
    import math

    graph = _graph()
    untimed = dataclasses.replace(graph, timestamp=math.nan)
    assert panel_lines(untimed, HEIGHT)[0] == ("frame 3", None)
