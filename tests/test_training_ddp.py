"""Two-process DDP on the CPU (gloo) through the command line: fit, then test, then the offline evaluator."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from arn_lightning.metrics.predictions import read_predictions
from arn_lightning.metrics.scoring import evaluate
from train_fixtures import tiny_config, write_config


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run(args, cwd: Path, expect: int = 0) -> subprocess.CompletedProcess:
    command = [str(Path(sys.executable).with_name("arn-lightning")), *args]
    env = {
        **os.environ,
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(_free_port()),
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "WANDB_MODE": "disabled",
    }
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == expect, (
        f"{' '.join(command)} gave {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    )
    return result


@pytest.mark.slow
def test_two_process_ddp_fit_and_test_score_every_frame_once(train_root: Path, tmp_path: Path) -> None:
    config = tiny_config(
        train_root,
        tmp_path,
        max_steps=-1,
        max_epochs=1,
        limit_train_batches=2,
        limit_val_batches=None,
        strategy="ddp",
        devices=2,
    )
    del config["trainer"]["limit_val_batches"]
    path = write_config(config, tmp_path / "ddp.yaml")
    _run(["fit", "--config", str(path)], tmp_path)
    checkpoint = tmp_path / "logs" / "tiny" / "version_0" / "checkpoints" / "last.ckpt"
    assert checkpoint.is_file()
    out = tmp_path / "predictions"
    result = _run(
        [
            "test",
            "--config",
            str(path),
            f"--ckpt_path={checkpoint}",
            f"--model.predictions_dir={out}",
            "--trainer.logger=false",
        ],
        tmp_path,
    )
    predictions = out / "predictions_test.jsonl"
    frames = [p["frame"] for p in read_predictions(predictions)]
    report = evaluate(str(train_root), str(predictions), split="test", task="sgdet")
    assert len(frames) == len(set(frames)) == report["frames"]  # the shards merged, no frame padded in twice
    assert report["missing_frames"]["count"] == 0
    assert not list(out.glob("*.rank*.jsonl"))
    # The metric reduced over both processes equals the offline score of the merged file.
    metrics = json.loads((out / "metrics_test.json").read_text())
    for constraint in ("with", "semi", "no"):
        for name in ("R@20", "mR@50", "R@100"):
            assert metrics[f"{constraint}/{name}"] == pytest.approx(report[constraint][name], abs=1e-12)
    assert "test/no/R@20" in result.stdout


@pytest.mark.slow
def test_two_processes_test_a_split_smaller_than_the_world_with_single_process_results(
    train_root: Path, tmp_path: Path
) -> None:
    """One evaluation frame on two processes: the process without a frame takes part with an unscored padding item
    (it used to get an empty loader, Lightning skipped its hooks and the other process died in the metric sync)."""
    outputs, val_losses = {}, {}
    for devices in (1, 2):
        config = tiny_config(train_root, tmp_path, strategy="ddp" if devices == 2 else "auto", devices=devices)
        config["data"]["max_eval_frames"] = 1
        path = write_config(config, tmp_path / f"one_frame_{devices}.yaml")
        out = tmp_path / f"predictions_{devices}"
        _run(["test", "--config", str(path), f"--model.predictions_dir={out}", "--trainer.logger=false"], tmp_path)
        outputs[devices] = out
        # validate too: the padding clip's loss is logged with weight 0, so val/loss is the single process's
        printed = _run(["validate", "--config", str(path), "--trainer.logger=false"], tmp_path).stdout
        val_losses[devices] = float(re.search(r"val/loss\s*\W\s*([-+0-9.eE]+)", printed).group(1))
    assert val_losses[2] == pytest.approx(val_losses[1], rel=1e-5)
    metrics = [json.loads((outputs[d] / "metrics_test.json").read_text()) for d in (1, 2)]
    assert metrics[0]["frames/predicted"] == metrics[1]["frames/predicted"] == 1.0
    for key in ("with/R@20", "semi/R@50", "no/mR@100"):
        assert metrics[1][key] == pytest.approx(metrics[0][key], abs=1e-12)
    single, double = (list(read_predictions(outputs[d] / "predictions_test.jsonl")) for d in (1, 2))
    assert [p["frame"] for p in double] == [p["frame"] for p in single] and len(single) == 1
    for key in ("scores", "labels", "boxes", "pairs"):
        torch.testing.assert_close(double[0][key], single[0][key], atol=1e-6, rtol=0)
    assert not list(outputs[2].glob("*.rank*.jsonl"))


@pytest.mark.slow
def test_causal_evaluation_on_two_processes_scores_as_one(train_root: Path, tmp_path: Path) -> None:
    """``data.eval_scheme: causal`` under DDP: each process plays every second video through the streaming step
    with its own caches; the merged prediction file holds every frame once, with one process's predictions."""
    predictions = {}
    for devices in (1, 2):
        config = tiny_config(train_root, tmp_path, strategy="ddp" if devices == 2 else "auto", devices=devices)
        config["data"].update(eval_scheme="causal", eval_batch_size=2)
        path = write_config(config, tmp_path / f"causal_{devices}.yaml")
        out = tmp_path / f"causal_{devices}"
        _run(["test", "--config", str(path), f"--model.predictions_dir={out}", "--trainer.logger=false"], tmp_path)
        predictions[devices] = {p["frame"]: p for p in read_predictions(out / "predictions_test.jsonl")}
        assert not list(out.glob("*.rank*.jsonl"))
    report = evaluate(str(train_root), str(tmp_path / "causal_2" / "predictions_test.jsonl"), split="test")
    assert sorted(predictions[2]) == sorted(predictions[1]) and report["missing_frames"]["count"] == 0
    for frame, single in predictions[1].items():
        for key in ("scores", "labels", "boxes", "pairs", "attention", "contacting"):
            torch.testing.assert_close(predictions[2][frame][key], single[key], atol=1e-5, rtol=1e-5)  # pixels: ulps


@pytest.mark.slow
def test_a_one_process_checkpoint_resumed_on_two_processes_is_refused(train_root: Path, tmp_path: Path) -> None:
    """The example: stopped mid-epoch on one process, resumed on two, the run skipped clips 6-11 of the epoch."""
    config = tiny_config(train_root, tmp_path, max_steps=2, max_epochs=3, limit_val_batches=0)
    path = write_config(config, tmp_path / "one.yaml")
    _run(["fit", "--config", str(path)], tmp_path)
    run = tmp_path / "logs" / "tiny" / "version_0"
    resume = ["fit", "--config", str(run / "config.yaml"), "--ckpt_path", "last", "--trainer.max_steps=4"]
    result = _run([*resume, "--trainer.devices=2", "--trainer.strategy=ddp"], tmp_path, expect=2)
    assert "Expected to resume epoch 0 on the checkpoint's 1 process(es) but this run has 2" in result.stderr
    assert "Traceback" not in result.stderr
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2  # untouched
