"""Drawing a frame's scene graph with PIL: boxes with class names on the frame, the ranked triplets in a side panel.

Only the boxes that take part in the shown triplets are drawn (a frame has up to two boxes per query, most of them
low-scoring), each in a colour of its object class. The panel, to the right of the frame and as high as it, lists the
frame's time and its triplets best first, each marked with the colour of its predicate type; triplets that do not
fit are counted in a last ``+ n more`` line.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from typing import Any

from PIL import Image, ImageColor, ImageDraw, ImageFont

from arn_lightning.scene_graph import FrameGraph, Triplet, object_name, rank_triplets
from arn_lightning.vocab import NUM_PREDICATES

#: Colour of each predicate type (matplotlib's tab10 blue, green, red), shared with the timeline.
PREDICATE_TYPE_COLORS: dict[str, str] = {"attention": "#1f77b4", "spatial": "#2ca02c", "contacting": "#d62728"}
#: Font height as a fraction of the frame height, and its lower bound in pixels.
FONT_HEIGHT_FRACTION = 1 / 30
MIN_FONT_PX = 12
#: Panel width in font heights (fits ``person not_contacting cup/glass/bottle 0.63`` in the default font).
PANEL_WIDTH_EMS = 26
#: Line spacing in font heights.
LINE_SPACING = 1.35
#: Box outline width as a fraction of the frame height, and its lower bound in pixels.
BOX_WIDTH_FRACTION = 1 / 200
MIN_BOX_WIDTH_PX = 2
PANEL_BACKGROUND = (24, 24, 24)
PANEL_TEXT = (235, 235, 235)
#: Hue step between consecutive object classes (the golden ratio spreads neighbouring classes apart).
_HUE_STEP = 0.618033988749895


def class_color(label: int) -> tuple[int, int, int]:
    """A stable, saturated RGB colour for an AG object index."""
    hue = round((label * _HUE_STEP % 1.0) * 360)
    return ImageColor.getrgb(f"hsl({hue}, 85%, 55%)")


def font_size(frame_height: int) -> int:
    """Font height in pixels for a frame of this height."""
    return max(MIN_FONT_PX, round(frame_height * FONT_HEIGHT_FRACTION))


def panel_width(frame_height: int) -> int:
    """Width in pixels of the side panel next to a frame of this height."""
    return font_size(frame_height) * PANEL_WIDTH_EMS


@functools.lru_cache(maxsize=8)
def load_font(size: int) -> ImageFont.ImageFont:
    """PIL's built-in font at ``size`` pixels, loaded once per size (Pillow >= 10.1; older Pillow gives its fixed
    bitmap font)."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:
        return ImageFont.load_default()


def _shorten(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont, width: float) -> str:
    """``text``, cut with an ellipsis to fit ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."


def _shown_rows(triplets: Sequence[Triplet]) -> list[int]:
    rows: list[int] = []
    for triplet in triplets:
        rows += [row for row in (triplet.subject_row, triplet.object_row) if row not in rows]
    return rows


def draw_boxes(image: Image.Image, graph: FrameGraph) -> Image.Image:
    """A copy of ``image`` with the boxes of the graph's triplets and their class names and scores."""
    image = image.convert("RGB")
    draw = ImageDraw.Draw(image)
    font = load_font(font_size(image.height))
    line = max(MIN_BOX_WIDTH_PX, round(image.height * BOX_WIDTH_FRACTION))
    boxes, labels, scores = (graph.prediction[key].tolist() for key in ("boxes", "labels", "scores"))
    for row in _shown_rows(graph.triplets):
        color = class_color(labels[row])
        x1, y1, x2, y2 = boxes[row]
        draw.rectangle((x1, y1, x2, y2), outline=color, width=line)
        caption = f"{object_name(labels[row])} {scores[row]:.2f}"
        left, top, right, bottom = draw.textbbox((x1, y1), caption, font=font, anchor="lb")
        if top < 0:  # no room above the box: write inside it
            left, top, right, bottom = draw.textbbox((x1, y1), caption, font=font, anchor="lt")
        draw.rectangle((left - line, top - line, right + line, bottom + line), fill=color)
        draw.text((left, top), caption, font=font, fill=(0, 0, 0))
    return image


def panel_lines(graph: FrameGraph, height: int) -> list[tuple[str, str | None]]:
    """The panel's text lines with the colour of their marker (``None``: no marker), as many as fit ``height``."""
    capacity = max(0, (height - _margin(height)) // _line_step(height))
    head = f"frame {graph.source_index}"  # a dataset frame without a known time (NaN) shows its number alone
    if math.isfinite(graph.timestamp):
        head = f"t = {graph.timestamp:.2f} s   {head}"
    lines: list[tuple[str, str | None]] = [(head, None)]
    triplets = graph.triplets
    if not triplets:
        lines.append(("no triplet above the threshold", None))
    elif len(triplets) + 1 > capacity:
        shown = max(0, capacity - 2)
        lines += [(t.text(), PREDICATE_TYPE_COLORS[t.kind]) for t in triplets[:shown]]
        lines.append((f"+ {len(triplets) - shown} more", None))
    else:
        lines += [(t.text(), PREDICATE_TYPE_COLORS[t.kind]) for t in triplets]
    return lines[:capacity]


def _margin(height: int) -> int:
    return font_size(height) // 2


def _line_step(height: int) -> int:
    return round(font_size(height) * LINE_SPACING)


def draw_panel(height: int, graph: FrameGraph) -> Image.Image:
    """The side panel (``panel_width(height)`` x ``height``) with the lines of :func:`panel_lines`."""
    size, margin, step = font_size(height), _margin(height), _line_step(height)
    panel = Image.new("RGB", (panel_width(height), height), PANEL_BACKGROUND)
    draw = ImageDraw.Draw(panel)
    font = load_font(size)
    text_x = margin + size
    for i, (text, marker) in enumerate(panel_lines(graph, height)):
        y = margin + i * step
        if marker is None:
            draw.text((margin, y), _shorten(draw, text, font, panel.width - 2 * margin), font=font, fill=PANEL_TEXT)
            continue
        draw.rectangle((margin, y + size // 4, margin + size // 2, y + size * 3 // 4), fill=marker)
        draw.text((text_x, y), _shorten(draw, text, font, panel.width - margin - text_x), font=font, fill=PANEL_TEXT)
    return panel


def annotate_frame(image: Image.Image, graph: FrameGraph) -> Image.Image:
    """The frame with its boxes, and the triplet panel to its right: ``(width + panel_width(height), height)``."""
    framed = draw_boxes(image, graph)
    canvas = Image.new("RGB", (framed.width + panel_width(framed.height), framed.height))
    canvas.paste(framed, (0, 0))
    canvas.paste(draw_panel(framed.height, graph), (framed.width, 0))
    return canvas


def prediction_and_truth(
    image: Image.Image,
    number: int,
    prediction: Mapping[str, Any],
    truth: Mapping[str, Any],
    top_k: int,
    threshold: float,
) -> Image.Image:
    """One frame drawn twice, side by side: the prediction (left; its ``top_k`` best no-constraint triplets scoring
    at least ``threshold``) and the ground truth (right; every GT triplet), each with its boxes and triplet panel.

    Args:
        image: the frame at its original size.
        number: the frame's number (its key's ``NNNNNN``).
        prediction: the frame's prediction (ARCHITECTURE.md section 4).
        truth: the ground truth as a prediction with score 1
            (:func:`~arn_lightning.metrics.predictions.prediction_from_ground_truth`).
        top_k: predicted triplets drawn.
        threshold: lowest predicted triplet score drawn.

    Returns:
        An RGB image ``(2 * (width + panel), height)``.
    """
    every_truth = NUM_PREDICATES * max(1, len(truth["pairs"]))
    halves = [
        annotate_frame(image, FrameGraph(0, number, math.nan, dict(p), rank_triplets(p, top_k=k, threshold=t)))
        for p, k, t in ((prediction, top_k, threshold), (truth, every_truth, 0.5))
    ]
    canvas = Image.new("RGB", (halves[0].width + halves[1].width, max(h.height for h in halves)), "white")
    canvas.paste(halves[0], (0, 0))
    canvas.paste(halves[1], (halves[0].width, 0))
    return canvas
