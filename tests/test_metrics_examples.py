"""The docstring examples of the metrics modules run, and the metrics benchmark reports its figures."""

from __future__ import annotations

import doctest
import importlib

import pytest

from arn_lightning.benchmarks import metrics as metrics_benchmark

MODULES = [
    "arn_lightning.metrics.batching",
    "arn_lightning.metrics.predictions",
    "arn_lightning.metrics.functional",
    "arn_lightning.metrics.recall",
    "arn_lightning.benchmarks.metrics",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_benchmark_reports_speed_and_memory(capsys) -> None:
    assert (
        metrics_benchmark.main(
            ["--frames", "96", "--pairs", "20", "--pool", "16", "--batch", "32", "--checkpoint", "32"]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "96 frames x 20 pairs" in out and "frames per CPU second" in out
    assert "MiB after 32 frames" in out and "MiB after 96" in out
    figures = metrics_benchmark.run(frames=64, pairs=20, batch=16, pool=8, checkpoint=32, validate=False)
    assert figures["frames"] == 64 and figures["frames_per_cpu_second"] > 0
    assert figures["peak_rss_end_mib"] >= figures["peak_rss_checkpoint_mib"] > 0
    assert 0.0 < figures["no_R@20"] < 1.0  # the synthetic predictions hit part of the ground truth
    with pytest.raises(SystemExit):
        metrics_benchmark.main(["--frames", "0"])
