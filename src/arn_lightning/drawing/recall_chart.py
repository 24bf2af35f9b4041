"""The per-predicate recall chart: one builder of its rows, one bar chart, one report writer (CSV + PNG).

Used by the training reports (:class:`~arn_lightning.training.callbacks.SceneGraphReport`, from the metric dict of
:class:`~arn_lightning.metrics.recall.SceneGraphRecall`), the web app's Compare tab (from an ``evaluate`` report) and
the notebook. Rows are ordered head to tail: by descending ground-truth count, then predicate index. Bars take the
colour of their predicate type from :data:`~arn_lightning.drawing.annotate.PREDICATE_TYPE_COLORS`, the palette of
every drawing of the project (boxes, timeline, scene graph). matplotlib's object API (no pyplot state).
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from arn_lightning.atomic import atomic_open, atomic_path
from arn_lightning.drawing.annotate import PREDICATE_TYPE_COLORS
from arn_lightning.vocab import PREDICATE_TYPES, PREDICATES, predicate_type

if TYPE_CHECKING:  # matplotlib is imported when a figure is drawn
    from matplotlib.figure import Figure

#: Figure size of the chart, inches, and its resolution.
CHART_FIGSIZE = (11.0, 4.6)
CHART_DPI = 100


def recall_rows(gt_counts: Mapping[str, float], recalls: Mapping[str, float]) -> list[dict[str, Any]]:
    """Per-predicate recall rows, head to tail: the one builder of the chart's rows.

    Args:
        gt_counts: predicate name -> ground-truth triplets (a missing predicate counts 0).
        recalls: predicate name -> recall in ``[0, 1]`` (a missing predicate: 0).

    Returns:
        ``[{"predicate", "type", "gt_count", "recall"}]`` for the 26 predicates, sorted by descending ``gt_count``,
        then predicate index.
    """
    rows = [
        {
            "predicate": name,
            "type": predicate_type(index),
            "gt_count": int(gt_counts.get(name, 0)),
            "recall": float(recalls.get(name, 0.0)),
        }
        for index, name in enumerate(PREDICATES)
    ]
    return sorted(rows, key=lambda r: (-r["gt_count"], PREDICATES.index(r["predicate"])))


def metric_recall_rows(metrics: Mapping[str, float], constraint: str, k: int) -> list[dict[str, Any]]:
    """:func:`recall_rows` of a flat metric dict (``ARNLitModule.last_metrics``, ``evaluate_module``'s result):
    ``per_predicate/count/<name>`` and ``per_predicate/<constraint>/R@<k>/<name>``."""
    counts = {name: metrics.get(f"per_predicate/count/{name}", 0) for name in PREDICATES}
    recalls = {name: metrics.get(f"per_predicate/{constraint}/R@{k}/{name}", 0.0) for name in PREDICATES}
    return recall_rows(counts, recalls)


def report_recall_rows(report: Mapping[str, Any], constraint: str, k: int) -> list[dict[str, Any]]:
    """:func:`recall_rows` of an ``evaluate`` report (``report["per_predicate"][name]["gt_triplets"]`` and
    ``[constraint]["R@k"]``)."""
    per_predicate = report["per_predicate"]
    counts = {name: per_predicate[name]["gt_triplets"] for name in PREDICATES}
    recalls = {name: per_predicate[name][constraint][f"R@{k}"] for name in PREDICATES}
    return recall_rows(counts, recalls)


def mean_recalls(values: Mapping[str, float], constraint: str, k: int) -> dict[str, float]:
    """Both mean recalls of ``constraint`` at ``k`` named for the chart's legend (``docs/metrics.md``), from a flat
    metric dict (``"<constraint>/mR@<k>"``) or an ``evaluate`` report's ``report[constraint]`` (``"mR@<k>"``);
    those absent are left out."""
    names = {f"mR@{k}": f"mR@{k} (aggregated)", f"mR_per_frame@{k}": f"mR_per_frame@{k}"}
    found = {}
    for key, label in names.items():
        for spelled in (key, f"{constraint}/{key}"):
            if spelled in values:
                found[label] = float(values[spelled])
    return found


def recall_figure(rows: Sequence[Mapping[str, Any]], title: str, means: Mapping[str, float] | None = None) -> Figure:
    """The per-predicate recall bar chart, head to tail as ``rows`` come, bars coloured by predicate type.

    Args:
        rows: ``{"predicate", "type", "gt_count", "recall"}`` dicts (:func:`recall_rows`), recall in ``[0, 1]``.
        title: the chart's title.
        means: named means drawn as horizontal lines and written in the legend, e.g. ``{"mR@20 (aggregated)": 0.31,
            "mR_per_frame@20": 0.28}`` (:func:`mean_recalls`).

    Returns:
        A figure of :data:`CHART_FIGSIZE` inches at :data:`CHART_DPI`.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    figure = Figure(figsize=CHART_FIGSIZE, dpi=CHART_DPI)
    FigureCanvasAgg(figure)
    axes = figure.add_axes((0.06, 0.38, 0.92, 0.54))  # room below for the longest rotated name
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


def save_recall_chart(figure: Figure, path: Path) -> Path:
    """Write the chart as a PNG at ``path`` (atomically); returns ``path``."""
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=CHART_DPI, format="png")
    return path


def save_recall_report(
    rows: Sequence[Mapping[str, Any]], directory: Path, title: str, means: Mapping[str, float] | None = None
) -> Path:
    """Write ``rows`` as ``<stem>.csv`` (columns ``predicate,type,gt_count,recall``) and the chart as
    ``<stem>.png`` into ``directory``, ``stem`` being ``title`` with ``/`` -> ``_`` and no ``@``
    (``val/per_predicate/no/R@20`` -> ``val_per_predicate_no_R20``); returns the PNG path.

    Raises:
        ValueError: no row.
    """
    if not rows:
        raise ValueError(f"Expected per-predicate recall rows for {title!r} but got none")
    directory.mkdir(parents=True, exist_ok=True)
    stem = title.replace("/", "_").replace("@", "")
    with atomic_open(directory / f"{stem}.csv", "w") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return save_recall_chart(recall_figure(rows, title, means), directory / f"{stem}.png")
