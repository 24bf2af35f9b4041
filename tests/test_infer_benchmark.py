"""``arn-lightning benchmark infer`` runs and reports frames per second (tiny sizes)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from arn_lightning.commands.benchmark import main as benchmark_main

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]  # a tiny model: seconds per test


def test_benchmark_reports_model_and_end_to_end_rates(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "bench.json"
    assert (
        benchmark_main(
            [
                "infer",
                "--sizes",
                "tiny",
                "--width",
                "96",
                "--height",
                "64",
                "--frames",
                "4",
                "--repeats",
                "1",
                "--threads",
                "1",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    report = json.loads(out.read_text())
    assert report["environment"]["input"] == "96x64" and report["environment"]["device"].startswith("CPU")
    [row] = report["results"]
    assert row["model"] == "tiny" and row["clip_length"] == 3
    assert row["model_fps"] > 0 and row["end_to_end_fps"] > 0
    assert row["end_to_end_fps"] < row["model_fps"]  # decoding, drawing and encoding come on top of the model
    assert "tiny" in capsys.readouterr().out
