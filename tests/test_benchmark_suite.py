"""``arn-lightning benchmark suite --quick``: every figure in one process, suite.json / suite.md, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from arn_lightning.benchmarks import suite
from arn_lightning.benchmarks.detector import detector_forward
from arn_lightning.cli import main as cli_main

#: Every figure the quick suite must report, in table order (compiled rows last, present with a reason).
EXPECTED = [
    "ARN frames/s, fp32, batch 1",
    "ARN / detector path, fp32, batch 1",
    "ARN latency p50, fp32, batch 1",
    "ARN latency p95, fp32, batch 1",
    "ARN frames/s, fp32, batch 32",
    "ARN / detector path, fp32, batch 32",
    "ARN frames/s, bf16, batch 1",
    "ARN / detector path, bf16, batch 1",
    "ARN latency p50, bf16, batch 1",
    "ARN latency p95, bf16, batch 1",
    "ARN frames/s, bf16, batch 32",
    "ARN / detector path, bf16, batch 32",
    "training step frames/s, 32-true, 2 clips x 2 frames",
    "training step ARN / detector path, 32-true, 2 clips x 2 frames",
    "peak GPU memory of a training step",
    "projected AG training epoch",
    "projected AG test pass",
    "data pipeline frames/s per core, 600/1000",
    "evaluation pipeline frames/s per core, gaussian_noise s3",
    "evaluator frames/s (one core)",
    "evaluate at 0.1 of AG",
    "infer time to first frame graph",
    "infer --stream time to first frame graph",
    "streaming latency p50",
    "streaming / one-frame forward",
    "--causal / streaming",
    "causal evaluation / one-frame forward",
    "causal / tiled evaluation",
    "infer end-to-end frames/s",
    "ARN frames/s, fp32, batch 1, compiled",
    "ARN frames/s, fp32, batch 32, compiled",
    "ARN frames/s, bf16, batch 1, compiled",
    "ARN frames/s, bf16, batch 32, compiled",
]


@pytest.mark.slow
def test_quick_suite_writes_every_figure(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "suite"
    assert cli_main(["benchmark", "suite", "--quick", "--threads", "1", "--out", str(out)]) == 0
    report = json.loads((out / "suite.json").read_text())
    assert [row["figure"] for row in report["figures"]] == EXPECTED
    for row in report["figures"]:
        assert row["unit"], row
        assert (row["value"] is None) == bool(row["note"].startswith(("skipped", "n/a", "compile failed"))), row
    rows = {row["figure"]: row for row in report["figures"]}
    assert rows["peak GPU memory of a training step"]["note"] == "n/a (no CUDA)"
    assert all(
        rows[f"ARN frames/s, {p}, compiled"]["note"].startswith("skipped: --quick")
        for p in ("fp32, batch 1", "fp32, batch 32", "bf16, batch 1", "bf16, batch 32")
    )
    for name in ("ARN frames/s, fp32, batch 32", "evaluator frames/s (one core)", "infer end-to-end frames/s"):
        assert rows[name]["value"] > 0
    ratio = rows["ARN / detector path, fp32, batch 1"]
    assert ratio["unit"] == "ratio" and 0 < ratio["value"] < 5
    p50, p95 = rows["ARN latency p50, fp32, batch 1"]["value"], rows["ARN latency p95, fp32, batch 1"]["value"]
    assert 0 < p50 <= p95
    streaming = report["raw"]["streaming"]  # the streaming figures are the ratios of the same interleaved run
    assert rows["streaming latency p50"]["value"] == streaming["stream_p50_ms"] > 0
    assert rows["streaming / one-frame forward"]["value"] == pytest.approx(
        streaming["stream_p50_ms"] / streaming["one_frame_p50_ms"]
    )
    assert streaming["window"] == 2 and len(streaming["stream_ms"]) == streaming["frames"] == 3
    evaluation = report["raw"]["causal_evaluation"]  # likewise one interleaved run of the three evaluations
    assert evaluation["lanes"] == suite.EVAL_LANES and len(evaluation["causal_ms"]) == evaluation["steps"]
    assert rows["causal evaluation / one-frame forward"]["value"] == pytest.approx(
        evaluation["causal_p50_ms"] / evaluation["one_frame_p50_ms"]
    )
    assert rows["causal / tiled evaluation"]["value"] == pytest.approx(
        evaluation["causal_p50_ms"] / evaluation["tiled_p50_ms"]
    )
    assert rows["infer --stream time to first frame graph"]["value"] > 0
    assert rows["projected AG test pass"]["value"] == pytest.approx(
        suite.AG_TEST_FRAMES / 60 / (64 / sorted(report["raw"]["model"]["fp32, batch 32"]["arn_s"])[0])
    )
    # goals: CPU-only figures get yes / NO, GPU goals stay open on a CPU
    assert rows["evaluator frames/s (one core)"]["met"] in (True, False)
    assert rows["ARN / detector path, bf16, batch 32"]["met"] is None
    machine = report["machine"]
    assert machine["torch"] == torch.__version__ and machine["cpu_cores"] >= 1 and "gpu" not in machine
    assert report["settings"]["name"] == "quick" and report["ag_frames"] == {"train": 166_785, "test": 54_371}
    markdown = (out / "suite.md").read_text()
    table = [line for line in markdown.splitlines() if line.startswith("| ")]
    assert table[0] == "| figure | value | unit | goal | met? | notes |" and len(table) == 1 + len(EXPECTED)
    assert "n/a (no CUDA)" in markdown and "--quick" in markdown
    assert "| figure | value |" in capsys.readouterr().out


def test_cuda_without_a_gpu_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as raised:
        suite.main(["--device", "cuda", "--quick"])
    assert raised.value.code == 2 and "--device cuda" in capsys.readouterr().err


def test_detector_path_is_the_first_stages_of_the_model(one_thread: None) -> None:
    torch.manual_seed(0)
    settings = suite.settings_for(True, torch.device("cpu"))
    model = suite.benchmark_model(settings, torch.device("cpu"))
    pixels, mask = torch.randn(1, 2, 3, 64, 64), torch.ones(1, 2, 64, 64, dtype=torch.bool)
    with torch.no_grad():
        full, entity = model(pixels, mask), detector_forward(model, pixels, mask)
    assert torch.equal(full.obj_logits, entity.obj_logits[-1]) and torch.equal(full.sub_boxes, entity.sub_boxes[-1])
    assert torch.equal(full.obj_boxes, entity.obj_boxes[-1])


@pytest.mark.slow
def test_streaming_benchmark_times_three_ways_per_frame(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "streaming.json"
    argv = ["benchmark", "streaming", "--size", "tiny", "--frames", "5", "--width", "64", "--height", "48"]
    assert cli_main([*argv, "--threads", "1", "--lanes", "3", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    evaluation = result["evaluation"]
    assert evaluation["lanes"] == 3 and evaluation["window"] == result["window"]
    for way in ("causal", "one_frame", "tiled"):
        assert len(evaluation[f"{way}_ms"]) == evaluation["steps"] and evaluation[f"{way}_p50_ms"] > 0
    assert result["frames"] == 3 and result["window"] >= 1  # 5 frames, 2 of them warm-up
    for way in ("stream", "causal", "one_frame"):
        assert len(result[f"{way}_ms"]) == 3 and 0 < result[f"{way}_p50_ms"] <= result[f"{way}_p95_ms"]
    assert result["causal_over_stream"] == pytest.approx(result["causal_p50_ms"] / result["stream_p50_ms"])
    printed = capsys.readouterr().out
    assert "streaming / one frame" in printed and "causal / streaming" in printed and "causal / tiled" in printed
    with pytest.raises(SystemExit):
        cli_main(["benchmark", "streaming", "--frames", "2"])  # no frame left after the warm-up
