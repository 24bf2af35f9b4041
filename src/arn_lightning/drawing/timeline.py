"""The relation timeline of a video: for each relation row, the time spans in which it holds.

A row is a readable relation without its score (``person holding cup/glass/bottle``; two cups of a frame share the
row). The relation holds at a sampled frame when it is among the frame's ranked triplets (score at or above the
threshold, within the top k) and then covers the time until the next sampled frame (``frame_duration`` after the
last one); touching spans merge. Rows are grouped by
predicate type (attention, spatial, contacting, each in its colour), then ordered by predicate and object; when
there are more than ``max_rows``, the rows held longest are kept.

The figure is drawn with matplotlib's object API (no pyplot state) at a fixed size per row count, see
:func:`timeline_size`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from arn_lightning.drawing.annotate import PREDICATE_TYPE_COLORS
from arn_lightning.scene_graph import FrameGraph
from arn_lightning.vocab import PREDICATE_TYPES, predicate_type

if TYPE_CHECKING:  # matplotlib is imported when a timeline is drawn, not before the first frame is predicted
    from matplotlib.figure import Figure

#: Most rows drawn.
MAX_ROWS = 40
#: Figure geometry in inches: width, height of the axes' frame (title, axis labels, legend), height per row.
FIGURE_WIDTH_IN = 12.0
FIGURE_BASE_HEIGHT_IN = 1.6
ROW_HEIGHT_IN = 0.28
#: Left margin as a fraction of the width, for the row labels.
LEFT_MARGIN = 0.3
DPI = 100
#: Bar height as a fraction of the row pitch.
BAR_HEIGHT = 0.7
#: Spans closer than this (seconds) merge.
_TOUCH_SLACK_S = 1e-9


@dataclass
class TimelineRow:
    """One relation row: its label, predicate (global index), and merged spans ``(start, length)`` in seconds."""

    label: str
    predicate: int
    object: str
    spans: list[tuple[float, float]] = field(default_factory=list)

    @property
    def total(self) -> float:
        """Seconds in which the relation holds."""
        return sum(length for _, length in self.spans)

    def add(self, start: float, end: float) -> None:
        """Cover ``[start, end)``, merging with the last span when they touch or overlap."""
        if self.spans:
            last_start, last_length = self.spans[-1]
            if start <= last_start + last_length + _TOUCH_SLACK_S:
                self.spans[-1] = (last_start, max(last_start + last_length, end) - last_start)
                return
        self.spans.append((start, end - start))


def timeline_rows(graphs: Sequence[FrameGraph], frame_duration: float, max_rows: int = MAX_ROWS) -> list[TimelineRow]:
    """The timeline's rows in drawing order, top first (see the module docstring).

    Args:
        graphs: the frames' scene graphs in time order.
        frame_duration: seconds the last sampled frame stands for (``1 / fps``); the others last until the next.
        max_rows: most rows kept (those held longest).
    """
    if frame_duration <= 0:
        raise ValueError(f"Expected a positive frame duration in seconds but got {frame_duration}")
    rows: dict[str, TimelineRow] = {}
    ends = [graph.timestamp for graph in graphs[1:]] + [graph.timestamp + frame_duration for graph in graphs[-1:]]
    for graph, end in zip(graphs, ends):
        for triplet in graph.triplets:
            label = f"{triplet.subject} {triplet.predicate_name} {triplet.object}"
            other = triplet.object if predicate_type(triplet.predicate) != "spatial" else triplet.subject
            row = rows.setdefault(label, TimelineRow(label, triplet.predicate, other))
            row.add(graph.timestamp, end)
    kept = sorted(rows.values(), key=lambda r: -r.total)[:max_rows]
    return sorted(kept, key=lambda r: (r.predicate, r.object))


def timeline_size(num_rows: int) -> tuple[int, int]:
    """Pixel size ``(width, height)`` of the saved timeline with ``num_rows`` rows (an empty one counts 1)."""
    height_in = FIGURE_BASE_HEIGHT_IN + ROW_HEIGHT_IN * max(1, num_rows)
    return round(FIGURE_WIDTH_IN * DPI), round(height_in * DPI)


def render_timeline(rows: Sequence[TimelineRow], duration: float, title: str = "") -> Figure:
    """A matplotlib figure of ``rows`` (from :func:`timeline_rows`) over ``[0, duration]`` seconds."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    width_px, height_px = timeline_size(len(rows))
    figure = Figure(figsize=(width_px / DPI, height_px / DPI), dpi=DPI)
    FigureCanvasAgg(figure)
    bottom = 0.6 / (height_px / DPI)
    top = 1 - 0.5 / (height_px / DPI)
    axes = figure.add_axes((LEFT_MARGIN, bottom, 0.98 - LEFT_MARGIN, top - bottom))
    for y, row in enumerate(rows):
        color = PREDICATE_TYPE_COLORS[predicate_type(row.predicate)]
        axes.broken_barh(row.spans, (y - BAR_HEIGHT / 2, BAR_HEIGHT), facecolors=color)
    axes.set_yticks(range(len(rows)), [row.label for row in rows])
    axes.set_ylim(max(1, len(rows)) - 0.5, -0.5)
    axes.set_xlim(0, max(duration, 1e-6))
    axes.set_xlabel("time (s)")
    axes.grid(axis="x", alpha=0.3)
    if not rows:
        axes.text(0.5, 0.5, "no relation above the threshold", transform=axes.transAxes, ha="center", va="center")
    handles = [Patch(color=PREDICATE_TYPE_COLORS[kind], label=kind) for kind in PREDICATE_TYPES]
    axes.legend(handles=handles, loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=3, frameon=False)
    axes.set_title(title, loc="left")
    return figure


def save_timeline(
    graphs: Sequence[FrameGraph],
    path: str | Path,
    frame_duration: float,
    max_rows: int = MAX_ROWS,
    title: str = "",
) -> Path:
    """Draw the relation timeline of ``graphs`` and save it as a PNG of size :func:`timeline_size`."""
    rows = timeline_rows(graphs, frame_duration, max_rows)
    end = max((graph.timestamp for graph in graphs), default=0.0) + frame_duration
    figure = render_timeline(rows, end, title)
    path = Path(path)
    figure.savefig(path, format="png", dpi=DPI)
    return path
