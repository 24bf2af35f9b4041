"""``arn-lightning benchmark scale`` at a tiny fraction: the generated annotations load, the written prediction file is
paper-shaped and scores, the compare loading reads it lazily, and each step's process is measured."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from arn_lightning.benchmarks import scale
from arn_lightning.data import ag


@pytest.fixture
def generated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    monkeypatch.setenv(ag.CACHE_ENV, str(tmp_path / "cache"))
    root = tmp_path / "ag"
    counts = scale.generate_annotations(root, 0.001)
    assert counts == {"test": 54, "train": 167}
    return root, tmp_path / "predictions_test.jsonl"


def test_steps_run_on_generated_annotations(generated: tuple[Path, Path]) -> None:
    root, predictions = generated
    annotations = ag.load_annotations(root)
    assert annotations.splits == ["test", "train"]
    kept = len(annotations.frames("test"))
    assert 40 <= kept <= 54  # frames whose objects are all invisible or small are dropped
    scale.run_step("write", root, predictions)
    lines = predictions.read_text().splitlines()
    first = json.loads(lines[0])
    assert len(lines) == kept and len(first["boxes"]) == scale.ROWS and len(first["pairs"]) == scale.PAIRS
    assert [json.loads(line)["frame"] for line in lines] == sorted(f.key for f in annotations.frames("test"))
    from arn_lightning.metrics.scoring import evaluate

    report = evaluate(str(root), str(predictions))
    assert report["missing_frames"]["count"] == 0 and 0 < report["no"]["R@50"] <= 1  # GT boxes are among the rows
    from arn_lightning.app.logic import load_comparison

    comparison = load_comparison(root, predictions)
    assert comparison.report == report and len(comparison.frames) == kept
    assert comparison.predictions[comparison.frames[-1]]["boxes"].shape == (scale.ROWS, 4)
    with pytest.raises(ValueError, match="Expected a step"):
        scale.run_step("fly", root, predictions)


def test_measure_reports_the_child_alone(tmp_path: Path) -> None:
    grow = "import time; block = bytearray(200 * 2**20); time.sleep(0.2)"
    big = scale.measure([sys.executable, "-c", grow], {})
    small = scale.measure([sys.executable, "-c", "pass"], {})
    assert big["peak_mb"] > 200 > small["peak_mb"] and big["seconds"] >= 0.2 and small["cpu_seconds"] >= 0
    with pytest.raises(RuntimeError, match="exited 3: .*boom"):
        scale.measure([sys.executable, "-c", "import sys; sys.stderr.write('boom'); sys.exit(3)"], {})


def test_markdown_table_has_a_row_per_fraction() -> None:
    step = {"seconds": 2.0, "cpu_seconds": 1.5, "peak_mb": 1234.0}
    rows = [
        {"fraction": f, "test_frames": 10, "prediction_file_mb": 3.0, "steps": dict.fromkeys(scale.STEPS, step)}
        for f in (0.1, 0.33)
    ]
    text = scale.markdown({"rows": rows, "machine": {"cpus": 2, "platform": "Linux"}, "date": "2026-12-07"})
    assert text.count("| 0.1 |") == 1 and text.count("| 0.33 |") == 1
    assert "2.0 s (1.5 CPU s), 1,234 MB" in text and "2 CPU cores" in text


def test_fractions_are_checked() -> None:
    with pytest.raises(SystemExit):
        scale.main(["--fractions", "0"])


def test_suite_row_reads_the_evaluate_step(monkeypatch: pytest.MonkeyPatch) -> None:
    from arn_lightning.benchmarks import suite

    steps = {name: {"seconds": 3.0, "cpu_seconds": 2.0, "peak_mb": 700.0} for name in scale.STEPS}
    steps["evaluate"] = {"seconds": 9.0, "cpu_seconds": 5.5, "peak_mb": 690.0}
    row = {"fraction": 0.1, "test_frames": 5223, "prediction_file_mb": 211.0, "steps": steps}
    monkeypatch.setattr(suite.scale_bench, "run", lambda fractions: {"rows": [row]} if fractions == [0.1] else None)
    figures, raw = suite.Figures(), {}
    suite.scale_figures(figures, raw)
    [figure] = figures.rows
    assert figure["figure"] == "evaluate at 0.1 of AG" and figure["value"] == 5.5 and figure["met"] is True
    assert "5,223 frames x 100 pairs" in figure["note"] and "peak 690 MB" in figure["note"] and raw["scale"] is row
    steps["evaluate"]["peak_mb"] = 1200.0
    suite.scale_figures(figures, raw)
    assert figures.rows[-1]["met"] is False
