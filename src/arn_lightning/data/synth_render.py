"""Drawing of the synthetic Action Genome scenes: object shapes and the frame renderer (PIL).

Every object class has its own shape and colours, defined in box-normalised coordinates (``u`` towards the way
the object faces, ``v`` down); each shape touches all four sides of its box, so the annotated box is the tight
extent of what is drawn.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from arn_lightning import vocab
from arn_lightning.data.synth_scene import Figure, Primitive, Thing

BACKGROUND = (236, 236, 228)
#: Stroke width of the bag handle, as a fraction of the box's short side.
HANDLE_WIDTH = 0.1

Color = tuple[int, int, int]
#: (kind, coordinates, colour); kinds: "rect" / "ellipse" (u0, v0, u1, v1), "arc" (the upper half of an
#: ellipse's outline), "polygon" ((u, v), ...).
Part = tuple[str, tuple, Color]

_DARK = (40, 40, 40)
SHAPES: dict[str, list[Part]] = {
    "cup/glass/bottle": [
        ("rect", (0.32, 0.0, 0.68, 0.32), (150, 10, 20)),
        ("rect", (0.0, 0.25, 1.0, 1.0), (215, 25, 35)),
        ("rect", (0.0, 0.55, 1.0, 0.72), (250, 250, 250)),
    ],
    "book": [
        ("rect", (0.0, 0.0, 1.0, 1.0), (0, 150, 150)),
        ("rect", (0.0, 0.0, 0.14, 1.0), (0, 90, 90)),
        ("rect", (0.88, 0.08, 1.0, 0.92), (250, 250, 250)),
    ],
    "phone/camera": [
        ("rect", (0.0, 0.0, 1.0, 1.0), (20, 20, 20)),
        ("ellipse", (0.3, 0.2, 0.7, 0.8), (150, 150, 160)),
        ("rect", (0.78, 0.12, 0.92, 0.3), (250, 250, 250)),
    ],
    "television": [
        ("rect", (0.0, 0.0, 1.0, 0.85), _DARK),
        ("rect", (0.07, 0.08, 0.93, 0.77), (60, 200, 230)),
        ("rect", (0.35, 0.85, 0.65, 1.0), _DARK),
    ],
    "floor": [
        ("rect", (0.0, 0.0, 1.0, 1.0), (190, 150, 100)),
        ("rect", (0.0, 0.35, 1.0, 0.42), (150, 110, 70)),
        ("rect", (0.0, 0.7, 1.0, 0.77), (150, 110, 70)),
    ],
    "chair": [
        ("rect", (0.0, 0.0, 0.18, 0.6), (120, 70, 30)),
        ("rect", (0.0, 0.5, 1.0, 0.62), (120, 70, 30)),
        ("rect", (0.0, 0.62, 0.1, 1.0), (120, 70, 30)),
        ("rect", (0.9, 0.62, 1.0, 1.0), (120, 70, 30)),
    ],
    "sofa/couch": [
        ("rect", (0.0, 0.45, 1.0, 0.85), (40, 150, 60)),
        ("rect", (0.0, 0.0, 0.2, 0.6), (30, 110, 45)),
        ("rect", (0.86, 0.3, 1.0, 0.85), (30, 110, 45)),
        ("rect", (0.05, 0.85, 0.13, 1.0), _DARK),
        ("rect", (0.87, 0.85, 0.95, 1.0), _DARK),
    ],
    "table": [
        ("rect", (0.0, 0.0, 1.0, 0.15), (110, 110, 20)),
        ("rect", (0.05, 0.15, 0.14, 1.0), (110, 110, 20)),
        ("rect", (0.86, 0.15, 0.95, 1.0), (110, 110, 20)),
    ],
    "laptop": [
        ("rect", (0.0, 0.82, 1.0, 1.0), (170, 170, 180)),
        ("polygon", ((0.78, 0.82), (0.9, 0.0), (1.0, 0.0), (0.9, 0.82)), (30, 30, 70)),
    ],
    "bed": [
        ("rect", (0.0, 0.4, 1.0, 0.85), (120, 50, 140)),
        ("rect", (0.0, 0.2, 0.93, 0.42), (245, 245, 245)),
        ("rect", (0.93, 0.0, 1.0, 1.0), (120, 50, 140)),
        ("rect", (0.0, 0.85, 0.06, 1.0), (120, 50, 140)),
    ],
    "blanket": [
        ("rect", (0.0, 0.0, 1.0, 1.0), (240, 120, 170)),
        ("rect", (0.2, 0.0, 0.27, 1.0), (250, 200, 220)),
        ("rect", (0.5, 0.0, 0.57, 1.0), (250, 200, 220)),
        ("rect", (0.8, 0.0, 0.87, 1.0), (250, 200, 220)),
    ],
    "bag": [
        ("polygon", ((0.0, 1.0), (0.1, 0.35), (0.9, 0.35), (1.0, 1.0)), (130, 20, 60)),
        ("arc", (0.25, 0.0, 0.75, 0.7), (90, 10, 40)),
    ],
    "clothes": [
        ("rect", (0.0, 0.08, 1.0, 1.0), (250, 210, 20)),
        ("polygon", ((0.3, 0.0), (0.7, 0.0), (0.5, 0.3)), (200, 160, 0)),
        ("rect", (0.47, 0.3, 0.53, 1.0), (120, 90, 0)),
    ],
    "door": [
        ("rect", (0.0, 0.0, 1.0, 1.0), (90, 100, 130)),
        ("rect", (0.15, 0.06, 0.85, 0.45), (120, 130, 160)),
        ("rect", (0.15, 0.55, 0.85, 0.94), (120, 130, 160)),
        ("ellipse", (0.06, 0.5, 0.16, 0.56), (240, 200, 40)),
    ],
    "food": [
        ("ellipse", (0.0, 0.0, 1.0, 0.5), (235, 150, 40)),
        ("rect", (0.05, 0.4, 0.95, 0.55), (60, 180, 60)),
        ("rect", (0.05, 0.55, 0.95, 0.72), (110, 50, 20)),
        ("ellipse", (0.0, 0.65, 1.0, 1.0), (235, 150, 40)),
    ],
    "light": [
        ("ellipse", (0.0, 0.0, 1.0, 1.0), (255, 225, 40)),
        ("ellipse", (0.25, 0.25, 0.75, 0.75), (255, 255, 230)),
    ],
}


def _map(u: float, v: float, box: np.ndarray, facing: int) -> tuple[float, float]:
    """Box-normalised ``(u, v)`` to pixels; ``facing`` -1 mirrors the shape."""
    u = u if facing >= 0 else 1.0 - u
    return float(box[0] + u * (box[2] - box[0])), float(box[1] + v * (box[3] - box[1]))


def thing_primitives(thing: Thing) -> list[Primitive]:
    """The shapes that draw ``thing`` inside its box."""
    name = vocab.OBJECT_CLASSES[thing.label - 1]
    if name not in SHAPES:
        raise ValueError(f"Expected an object class with a synthetic shape ({sorted(SHAPES)}) but got {name!r}")
    box = thing.box_xyxy
    prims = []
    for kind, coords, color in SHAPES[name]:
        if kind == "polygon":
            prims.append(Primitive("polygon", [_map(u, v, box, thing.facing) for u, v in coords], color))
            continue
        corners = [_map(coords[0], coords[1], box, thing.facing), _map(coords[2], coords[3], box, thing.facing)]
        xs, ys = sorted(p[0] for p in corners), sorted(p[1] for p in corners)
        width = HANDLE_WIDTH * min(box[2] - box[0], box[3] - box[1]) if kind == "arc" else 0.0
        prims.append(Primitive(kind, [(xs[0], ys[0]), (xs[1], ys[1])], color, width))
    return prims


def _draw(draw: ImageDraw.ImageDraw, prim: Primitive) -> None:
    """Draw one primitive."""
    if prim.kind == "circle":
        (x, y), r = prim.points[0], prim.size
        draw.ellipse([x - r, y - r, x + r, y + r], fill=prim.color)
    elif prim.kind == "line":
        draw.line(prim.points, fill=prim.color, width=max(1, int(round(prim.size))))
    elif prim.kind == "rect":
        draw.rectangle(prim.points, fill=prim.color)
    elif prim.kind == "ellipse":
        draw.ellipse(prim.points, fill=prim.color)
    elif prim.kind == "arc":
        draw.arc(prim.points, 180, 360, fill=prim.color, width=max(1, int(round(prim.size))))
    elif prim.kind == "polygon":
        draw.polygon(prim.points, fill=prim.color)
    else:
        raise AssertionError(f"unknown primitive {prim.kind}")


def render_frame(size: tuple[int, int], figure: Figure, things: Sequence[Thing]) -> Image.Image:
    """Draw a frame: plain background, objects behind the person, the person, objects in front.

    Args:
        size: ``(width, height)`` in pixels.
        figure: the person.
        things: visible objects in drawing order (those with ``drawn_after`` go over the person).
    """
    image = Image.new("RGB", size, BACKGROUND)
    draw = ImageDraw.Draw(image)
    for thing in things:
        if not thing.drawn_after:
            for prim in thing_primitives(thing):
                _draw(draw, prim)
    for prim in figure.primitives:
        _draw(draw, prim)
    for thing in things:
        if thing.drawn_after:
            for prim in thing_primitives(thing):
                _draw(draw, prim)
    return image
