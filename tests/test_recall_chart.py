"""The one per-predicate recall chart: rows from the metric dict and from an ``evaluate`` report agree, bars take
the project's palette, and the report files keep their names and columns."""

from __future__ import annotations

import csv
from pathlib import Path

from arn_lightning.drawing.annotate import PREDICATE_TYPE_COLORS
from arn_lightning.drawing.recall_chart import (
    mean_recalls,
    metric_recall_rows,
    recall_figure,
    recall_rows,
    report_recall_rows,
    save_recall_report,
)
from arn_lightning.vocab import PREDICATES, predicate_type

COUNTS = {"holding": 7, "looking_at": 7, "in_front_of": 3}
RECALLS = {"holding": 0.5, "looking_at": 0.25, "in_front_of": 1.0}


def test_rows_are_ordered_head_to_tail_then_by_predicate_index() -> None:
    rows = recall_rows(COUNTS, RECALLS)
    assert len(rows) == len(PREDICATES) == 26
    # looking_at (index 0) before holding (same count), then in_front_of, then the unseen ones in index order
    assert [r["predicate"] for r in rows[:3]] == ["looking_at", "holding", "in_front_of"]
    assert rows[0] == {"predicate": "looking_at", "type": "attention", "gt_count": 7, "recall": 0.25}
    assert rows[3]["gt_count"] == 0 and rows[3]["recall"] == 0.0
    assert [r["predicate"] for r in rows[3:]] == [p for p in PREDICATES if p not in COUNTS]


def test_the_metric_dict_and_the_evaluate_report_give_the_same_rows_and_means() -> None:
    metrics = {f"per_predicate/count/{n}": float(c) for n, c in COUNTS.items()}
    metrics.update({f"per_predicate/with/R@20/{n}": r for n, r in RECALLS.items()})
    metrics.update({"with/mR@20": 0.3, "with/mR_per_frame@20": 0.2, "no/mR@20": 0.9})
    report = {
        "with": {"R@20": 0.6, "mR@20": 0.3, "mR_per_frame@20": 0.2},
        "per_predicate": {
            n: {"gt_triplets": COUNTS.get(n, 0), "with": {"R@20": RECALLS.get(n, 0.0)}} for n in PREDICATES
        },
    }
    assert metric_recall_rows(metrics, "with", 20) == report_recall_rows(report, "with", 20)
    expected = {"mR@20 (aggregated)": 0.3, "mR_per_frame@20": 0.2}
    assert mean_recalls(metrics, "with", 20) == mean_recalls(report["with"], "with", 20) == expected


def test_bars_take_the_palette_of_their_predicate_type() -> None:
    rows = recall_rows(COUNTS, RECALLS)
    figure = recall_figure(rows, "with R@20")
    bars = figure.axes[0].patches
    assert len(bars) == 26
    for bar, row in zip(bars, rows):
        hex_color = PREDICATE_TYPE_COLORS[predicate_type(PREDICATES.index(row["predicate"]))]
        expected = tuple(int(hex_color[i : i + 2], 16) / 255 for i in (1, 3, 5))
        assert tuple(round(c, 4) for c in bar.get_facecolor()[:3]) == tuple(round(c, 4) for c in expected)
        assert bar.get_height() == row["recall"]


def test_the_report_writes_the_csv_and_the_chart_under_the_title_stem(tmp_path: Path) -> None:
    rows = recall_rows(COUNTS, RECALLS)
    png = save_recall_report(rows, tmp_path, "val/per_predicate/no/R@20", {"mR@20 (aggregated)": 0.3})
    assert png == tmp_path / "val_per_predicate_no_R20.png" and png.read_bytes()[:4] == b"\x89PNG"
    with (tmp_path / "val_per_predicate_no_R20.csv").open() as handle:
        read = list(csv.DictReader(handle))
    assert list(read[0]) == ["predicate", "type", "gt_count", "recall"]
    assert read[0] == {"predicate": "looking_at", "type": "attention", "gt_count": "7", "recall": "0.25"}
    assert len(read) == 26 and sorted(p.name for p in tmp_path.iterdir()) == [
        "val_per_predicate_no_R20.csv",
        png.name,
    ]


def test_the_rows_and_the_chart_have_one_home() -> None:
    """No module but ``drawing/recall_chart.py`` draws a bar chart or orders per-predicate rows head to tail."""
    import ast

    import arn_lightning

    package = Path(arn_lightning.__file__).parent
    homes = set()
    for path in package.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            bar = isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "bar"
            if bar and "wandb" not in ast.unparse(node.func):
                homes.add(path.relative_to(package).as_posix())
            if isinstance(node, ast.FunctionDef) and node.name.endswith(("recall_rows", "per_predicate_rows")):
                homes.add(path.relative_to(package).as_posix())
    assert homes == {"drawing/recall_chart.py"}
