"""``arn-lightning benchmark train`` runs real training steps and reports throughput."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from arn_lightning.benchmarks import train


def test_train_benchmark_times_real_steps_and_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "train.json"
    assert (
        train.main(["--preset", "demo", "--batch-size", "2", "--steps", "2", "--warmup", "1", "--out", str(out)]) == 0
    )
    result = json.loads(out.read_text())
    assert result["steps_timed"] == 2 and result["batch_clips"] == 2 and result["frames_per_clip"] == 2
    assert result["step_s_median"] > 0
    assert result["clips_per_s"] == pytest.approx(2 / result["step_s_median"])
    assert result["frames_per_s"] == pytest.approx(4 / result["step_s_median"])
    assert "clips/s" in capsys.readouterr().out


def test_train_benchmark_rejects_no_timed_steps() -> None:
    with pytest.raises(SystemExit, match="--steps >= 1"):
        train.main(["--steps", "0"])
