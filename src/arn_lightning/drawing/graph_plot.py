"""Scene graphs drawn as graphs, and the per-predicate recall chart: networkx for the graph and its layout,
matplotlib's object API (no pyplot state) for the figures.

Used by the web app (:mod:`arn_lightning.app`), the notebook and anything else that wants a picture of a frame's
graph; this module imports neither gradio nor torch.

Nodes are the boxes that take part in a frame's triplets: ``person`` and the object classes (a second box of the same
class in a frame is ``cup/glass/bottle #2``, numbered in the order the frame's ranked triplets first name them).
Edges are the triplets in reading order (spatial triplets point from the object to the person, as
:mod:`arn_lightning.scene_graph` reads them), coloured by predicate type with the colours of
:mod:`arn_lightning.drawing.annotate`.

**A layout that holds still.** :func:`video_layout` places every node of a whole video once: each node starts at the
mean centre of its boxes in the image (so the drawing resembles the frame: a cup to the right of the person is drawn
to its right), then a few iterations of networkx's spring layout, seeded, push apart nodes that would overlap. Every
frame is drawn with these positions, so a node keeps its place from frame to frame and the eye can follow it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import networkx as nx
import numpy as np

from arn_lightning.drawing.annotate import PREDICATE_TYPE_COLORS
from arn_lightning.scene_graph import FrameGraph, Triplet
from arn_lightning.vocab import PREDICATE_TYPES

if TYPE_CHECKING:  # matplotlib is imported when a figure is drawn
    from matplotlib.figure import Figure
    from PIL import Image

#: Node positions: node name -> (x, y) in layout units, y up (``[-1, 1]`` after :func:`video_layout`).
Positions = dict[str, tuple[float, float]]

#: Spring-layout iterations that separate overlapping nodes without moving the others far from their boxes.
SPRING_ITERATIONS = 30
#: Ideal node distance of the spring layout, in layout units (the image spans 2).
SPRING_DISTANCE = 0.6
#: Seed of the spring layout (the same video gives the same layout).
LAYOUT_SEED = 0
PERSON_COLOR = "#f2c14e"
OBJECT_COLOR = "#dddddd"
NODE_SIZE = 1600
DPI = 100
#: Figure size of a frame's graph, inches.
GRAPH_FIGSIZE = (6.0, 4.5)
#: Bend between parallel edges of one node pair (matplotlib ``arc3`` radius step).
EDGE_BEND_STEP = 0.18


@dataclass(frozen=True)
class GraphEdge:
    """One drawn edge: a triplet between two named nodes.

    Attributes:
        source: node name of the triplet's subject (reading order).
        target: node name of the triplet's object.
        predicate: predicate name (``holding``).
        kind: predicate type (``attention``, ``spatial``, ``contacting``).
        color: the type's colour (:data:`~arn_lightning.drawing.annotate.PREDICATE_TYPE_COLORS`).
        score: the triplet's score.
    """

    source: str
    target: str
    predicate: str
    kind: str
    color: str
    score: float


def node_names(triplets: Sequence[Triplet]) -> dict[int, str]:
    """Box row -> node name for the rows the triplets use (``person``, ``cup/glass/bottle``, ``... #2``).

    A class's first row (in the order the triplets name rows) gets the plain class name, the next ones ``#2``,
    ``#3``, so names are stable for a video whose boxes keep their ranking.
    """
    names: dict[int, str] = {}
    per_class: dict[str, int] = {}
    for triplet in triplets:
        for row, name in ((triplet.subject_row, triplet.subject), (triplet.object_row, triplet.object)):
            if row in names:
                continue
            per_class[name] = per_class.get(name, 0) + 1
            names[row] = name if per_class[name] == 1 else f"{name} #{per_class[name]}"
    return names


def frame_edges(triplets: Sequence[Triplet]) -> list[GraphEdge]:
    """The edges of one frame, one per triplet, in the triplets' order (best first)."""
    names = node_names(triplets)
    return [
        GraphEdge(
            names[t.subject_row], names[t.object_row], t.predicate_name, t.kind, PREDICATE_TYPE_COLORS[t.kind], t.score
        )
        for t in triplets
    ]


def frame_graph(triplets: Sequence[Triplet]) -> nx.MultiDiGraph:
    """The frame's scene graph as a networkx multigraph: nodes with ``person: bool``, edges with the fields of
    :class:`GraphEdge`."""
    graph = nx.MultiDiGraph()
    for name in node_names(triplets).values():
        graph.add_node(name, person=name.split(" #")[0] == "person")
    for edge in frame_edges(triplets):
        graph.add_edge(
            edge.source, edge.target, predicate=edge.predicate, kind=edge.kind, color=edge.color, score=edge.score
        )
    return graph


def _box_centres(graph: FrameGraph) -> dict[str, tuple[float, float, float, float]]:
    """Node name -> (centre x, centre y, image width, image height) from the frame's boxes (pixels)."""
    boxes = graph.prediction.get("boxes")
    if boxes is None:
        return {}
    rows = np.asarray(boxes.tolist() if hasattr(boxes, "tolist") else boxes, dtype=np.float64).reshape(-1, 4)
    if rows.size == 0:
        return {}
    width, height = max(1.0, float(rows[:, 2].max())), max(1.0, float(rows[:, 3].max()))
    centres = {}
    for row, name in node_names(graph.triplets).items():
        if row < len(rows):
            x1, y1, x2, y2 = rows[row]
            centres[name] = ((x1 + x2) / 2, (y1 + y2) / 2, width, height)
    return centres


def video_layout(
    graphs: Iterable[FrameGraph], image_size: tuple[int, int] | None = None, iterations: int = SPRING_ITERATIONS
) -> Positions:
    """One position per node over a whole video (module docstring): box centres, then a seeded spring layout.

    Args:
        graphs: the frames' graphs; a graph without boxes (``prediction`` holding only ``frame``) contributes its
            nodes without a position hint.
        image_size: ``(width, height)`` of the frames in pixels; default: the extent of the boxes.
        iterations: spring-layout iterations (0: box centres only, overlaps kept).

    Returns:
        Node name -> ``(x, y)``, x right and y up, the image mapped to ``[-1, 1]`` on both axes (nodes without a box
        start on a circle and are placed by the spring layout).
    """
    union = nx.Graph()
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for graph in graphs:
        for edge in frame_edges(graph.triplets):
            union.add_edge(edge.source, edge.target)
        for name, (x, y, width, height) in _box_centres(graph).items():
            if image_size is not None:
                width, height = image_size
            point = np.array([2 * x / width - 1, 1 - 2 * y / height])
            sums[name] = sums.get(name, np.zeros(2)) + point
            counts[name] = counts.get(name, 0) + 1
    if union.number_of_nodes() == 0:
        return {}
    fallback = nx.circular_layout(union, scale=0.5)  # nodes without a box: apart on a circle, then the springs
    start = {name: sums[name] / counts[name] if name in counts else fallback[name] for name in union.nodes}
    if iterations > 0 and union.number_of_nodes() > 1:
        placed = nx.spring_layout(
            union, pos=start, k=SPRING_DISTANCE, iterations=iterations, seed=LAYOUT_SEED, center=(0, 0)
        )
    else:
        placed = start
    return {name: (float(x), float(y)) for name, (x, y) in sorted(placed.items())}


def frame_layout(graph: FrameGraph, layout: Mapping[str, tuple[float, float]] | None = None) -> Positions:
    """Positions of one frame's nodes: those of ``layout`` (a video layout), the frame's own layout for the rest."""
    own = video_layout([graph])
    layout = layout or {}
    return {name: tuple(layout.get(name, own[name])) for name in own}  # type: ignore[misc]


def scene_graph_figure(
    graph: FrameGraph, layout: Mapping[str, tuple[float, float]] | None = None, title: str | None = None
) -> Figure:
    """A matplotlib figure of one frame's scene graph (module docstring).

    Args:
        graph: the frame's graph; its ``triplets`` are drawn (0 triplets: an empty graph with a note).
        layout: node positions, e.g. :func:`video_layout` of the whole video (nodes it lacks are placed by the
            frame's own layout).
        title: the figure's title; default the frame key and time.

    Returns:
        A figure of :data:`GRAPH_FIGSIZE` inches at :data:`DPI` (save it, or :func:`figure_image`).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    figure = Figure(figsize=GRAPH_FIGSIZE, dpi=DPI)
    FigureCanvasAgg(figure)
    axes = figure.add_axes((0.02, 0.1, 0.96, 0.8))
    axes.set_axis_off()
    if title is None:
        time = f"t = {graph.timestamp:.2f} s, " if np.isfinite(graph.timestamp) else ""
        title = f"{time}{graph.frame}"
    axes.set_title(title, fontsize=9, loc="left")
    network = frame_graph(graph.triplets)
    positions = frame_layout(graph, layout)
    if network.number_of_nodes() == 0:
        axes.text(0.5, 0.5, "no triplet above the threshold", ha="center", va="center", transform=axes.transAxes)
    else:
        colors = [PERSON_COLOR if network.nodes[n]["person"] else OBJECT_COLOR for n in network.nodes]
        nx.draw_networkx_nodes(network, positions, ax=axes, node_size=NODE_SIZE, node_color=colors, edgecolors="#555")
        nx.draw_networkx_labels(network, positions, ax=axes, font_size=7)
        seen: dict[tuple[str, str], int] = {}
        for source, target, data in network.edges(data=True):
            pair = (source, target) if source <= target else (target, source)
            order = seen.get(pair, 0)
            seen[pair] = order + 1
            bend = EDGE_BEND_STEP * (order + 1) * (1 if (source, target) == pair else -1)
            style = f"arc3,rad={bend:.3f}"
            nx.draw_networkx_edges(
                network,
                positions,
                edgelist=[(source, target)],
                ax=axes,
                edge_color=data["color"],
                width=1.5 + 2.5 * data["score"],
                arrows=True,
                arrowsize=14,
                node_size=NODE_SIZE,
                connectionstyle=style,
            )
            nx.draw_networkx_edge_labels(
                nx.DiGraph([(source, target)]),
                positions,
                edge_labels={(source, target): f"{data['predicate']} {data['score']:.2f}"},
                ax=axes,
                font_size=6,
                font_color=data["color"],
                connectionstyle=style,
                bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8},
            )
        xs, ys = zip(*positions.values())
        margin = 0.35
        axes.set_xlim(min(min(xs), -1) - margin, max(max(xs), 1) + margin)
        axes.set_ylim(min(min(ys), -1) - margin, max(max(ys), 1) + margin)
    handles = [Line2D([0], [0], color=PREDICATE_TYPE_COLORS[kind], lw=3, label=kind) for kind in PREDICATE_TYPES]
    figure.legend(handles=handles, loc="lower center", ncol=3, frameon=False, fontsize=8)
    return figure


def figure_image(figure: Figure) -> Image.Image:
    """A matplotlib figure rendered as an RGB PIL image (its size in pixels: inches x dpi)."""
    from PIL import Image

    figure.canvas.draw()
    return Image.fromarray(np.asarray(figure.canvas.buffer_rgba())[..., :3].copy())


def recall_rows(report: Mapping[str, Any], constraint: str, k: int) -> list[dict[str, Any]]:
    """Per-predicate rows of an ``evaluate`` report (:func:`arn_lightning.metrics.scoring.evaluate`), head to tail.

    Returns:
        ``[{"predicate", "type", "gt_count", "recall"}]`` sorted by descending ground-truth count, then predicate
        index (the order of ``callbacks.per_predicate_rows``).
    """
    from arn_lightning.vocab import PREDICATES, predicate_type

    rows = [
        {
            "predicate": name,
            "type": predicate_type(index),
            "gt_count": int(report["per_predicate"][name]["gt_triplets"]),
            "recall": float(report["per_predicate"][name][constraint][f"R@{k}"]),
        }
        for index, name in enumerate(PREDICATES)
    ]
    return sorted(rows, key=lambda r: (-r["gt_count"], PREDICATES.index(r["predicate"])))


def recall_figure(rows: Sequence[Mapping[str, Any]], title: str, means: Mapping[str, float] | None = None) -> Figure:
    """The per-predicate recall bar chart, head to tail as ``rows`` come, bars coloured by predicate type.

    Args:
        rows: ``{"predicate", "type", "gt_count", "recall"}`` dicts (:func:`recall_rows`), recall in ``[0, 1]``.
        title: the chart's title.
        means: named means drawn as horizontal lines and written in the legend, e.g. ``{"mR@20 (aggregated)": 0.31,
            "mR_per_frame@20": 0.28}``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    figure = Figure(figsize=(11, 4), dpi=DPI)
    FigureCanvasAgg(figure)
    axes = figure.add_axes((0.06, 0.32, 0.92, 0.58))
    names = [f"{r['predicate']} ({r['gt_count']})" for r in rows]
    axes.bar(range(len(rows)), [r["recall"] for r in rows], color=[PREDICATE_TYPE_COLORS[r["type"]] for r in rows])
    axes.set_xticks(range(len(rows)), names, rotation=75, fontsize=7)
    axes.set_xlim(-0.6, max(len(rows), 1) - 0.4)
    axes.set_ylim(0, 1)
    axes.set_ylabel("recall")
    axes.set_title(f"{title} (head to tail; GT triplets in brackets)", fontsize=9, loc="left")
    handles: list[Any] = [Patch(color=PREDICATE_TYPE_COLORS[kind], label=kind) for kind in PREDICATE_TYPES]
    for (label, value), style in zip((means or {}).items(), ("--", ":", "-.")):
        handles.append(axes.axhline(value, color="black", linestyle=style, lw=1, label=f"{label} = {value:.3f}"))
    axes.legend(handles=handles, loc="upper right", fontsize=7, frameon=False)
    return figure
