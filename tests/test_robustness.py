"""The corruption robustness benchmark: deterministic corruptions, the data-module hook, the command's parse-time
errors, the runner's files and resumability, and a 2-process DDP run equal to a single-process one."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from arn_lightning.data.corruptions import (
    CORRUPTIONS,
    IMAGE_CORRUPTIONS,
    ClipCorruption,
    ImageCorruption,
    check_corruption,
    codec_round_trip,
    delivered_slots,
    frame_seed,
)
from arn_lightning.experiments import robustness
from arn_lightning.experiments.robustness import RobustnessError, parse_corruptions, parse_severities
from train_fixtures import run_cli, tiny_config, write_config

pytest.importorskip("albumentations")


def _image(height: int = 60, width: int = 80, seed: int = 0) -> np.ndarray:
    """A smooth gradient with a checkerboard (``uint8 [H, W, 3]``): every corruption changes it visibly."""
    yy, xx = np.mgrid[0:height, 0:width]
    checks = ((xx // 8 + yy // 8) % 2) * 120.0
    image = np.stack([xx / width * 200 + 20, yy / height * 200 + 20, checks + seed], axis=-1)
    return image.clip(0, 255).astype(np.uint8)


def _clip(frames: int = 3) -> tuple[list[torch.Tensor], list[str]]:
    images = [torch.from_numpy(_image(seed=10 * i)).permute(2, 0, 1) for i in range(frames)]
    return images, [f"v.mp4/{i + 1:06d}.png" for i in range(frames)]


# ----------------------------------------------------------------------------------------------- determinism
@pytest.mark.parametrize("name", list(IMAGE_CORRUPTIONS))
def test_image_corruption_depends_on_seed_key_and_severity_only(name: str) -> None:
    image = _image()
    first = ImageCorruption(name, 3, seed=0)(image, "a.mp4/000001.png")
    again = pickle.loads(pickle.dumps(ImageCorruption(name, 3, seed=0)))(image.copy(), "a.mp4/000001.png")
    assert first.dtype == np.uint8 and first.shape == image.shape
    assert np.array_equal(first, again)  # another object (a loader worker's copy): the same pixels
    assert not np.array_equal(first, image)
    assert not np.array_equal(first, ImageCorruption(name, 5, seed=0)(image, "a.mp4/000001.png"))


@pytest.mark.parametrize("name", ["gaussian_noise", "shot_noise", "impulse_noise", "snow", "rain", "glass_blur"])
def test_noise_differs_between_frame_keys_and_seeds(name: str) -> None:
    image = _image()
    corruption = ImageCorruption(name, 3, seed=0)
    one = corruption(image, "a.mp4/000001.png")
    assert not np.array_equal(one, corruption(image, "a.mp4/000002.png"))
    assert not np.array_equal(one, ImageCorruption(name, 3, seed=1)(image, "a.mp4/000001.png"))
    assert np.array_equal(one, corruption(image, "a.mp4/000001.png"))  # the order of calls does not matter


def test_frame_seed_is_a_stable_hash() -> None:
    assert frame_seed(0, "a.mp4/000001.png", "fog", 3) == frame_seed(0, "a.mp4/000001.png", "fog", 3)
    seeds = {frame_seed(s, k, n, v) for s in (0, 1) for k in ("a", "b") for n in ("fog", "snow") for v in (1, 2)}
    assert len(seeds) == 16
    # Fixed across processes and platforms (SHA-256, not Python's randomised hash).
    assert frame_seed(0, "a.mp4/000001.png", "fog", 3) == int.from_bytes(
        __import__("hashlib").sha256(b"0|a.mp4/000001.png|fog|3").digest()[:8], "little"
    )


def test_frame_drop_repeats_the_last_delivered_frame() -> None:
    keys = [f"v.mp4/{i:06d}.png" for i in range(1, 201)]
    slots = delivered_slots("frame_drop", 5, 0, keys)
    assert slots[0] == 0
    dropped = [i for i, s in enumerate(slots) if s != i]
    assert all(slots[i] == slots[i - 1] for i in dropped)
    assert 0.35 < len(dropped) / 199 < 0.65  # severity 5 drops half the frames
    assert slots == delivered_slots("frame_drop", 5, 0, keys)
    # A frame's fate depends on its own key: a clip of its first 50 frames drops the same ones.
    assert [s != i for i, s in enumerate(delivered_slots("frame_drop", 5, 0, keys[:50]))] == [
        s != i for i, s in enumerate(slots[:50])
    ]


def test_frozen_frame_holds_one_frame_to_the_end_of_the_clip() -> None:
    frozen = 0
    for clip in range(100):
        keys = [f"v{clip}.mp4/{i:06d}.png" for i in range(1, 5)]
        slots = delivered_slots("frozen_frame", 5, 0, keys)
        if slots != list(range(4)):
            frozen += 1
            start = next(i for i, s in enumerate(slots) if s != i) - 1
            assert slots == list(range(start + 1)) + [start] * (3 - start)
    assert 55 <= frozen <= 85  # severity 5 freezes 70% of the clips


def test_clip_corruptions_keep_the_frames_and_are_deterministic() -> None:
    images, keys = _clip(3)
    for name in CORRUPTIONS:
        out = ClipCorruption(name, 4, seed=0)(images, keys)
        again = ClipCorruption(name, 4, seed=0)(images, keys)
        assert [o.shape for o in out] == [i.shape for i in images] and all(o.dtype == torch.uint8 for o in out)
        assert all(torch.equal(a, b) for a, b in zip(out, again)), name
    assert torch.equal(images[0], torch.from_numpy(_image(seed=0)).permute(2, 0, 1))  # the input is not changed


def test_low_bitrate_round_trip_loses_detail_with_severity_and_keeps_odd_sizes() -> None:
    frames = [_image(61, 81, seed=s) for s in (0, 5, 10)]
    low = codec_round_trip(frames, 20_000)
    high = codec_round_trip(frames, 2_000_000)
    assert [f.shape for f in low] == [(61, 81, 3)] * 3
    error = [np.abs(f.astype(int) - g.astype(int)).mean() for f, g in zip(low + high, frames + frames)]
    assert np.mean(error[:3]) > np.mean(error[3:]) > 0


# ----------------------------------------------------------------------------------------------- parse-time errors
def test_unknown_names_and_severities_are_refused() -> None:
    with pytest.raises(ValueError, match="Expected a corruption in gaussian_noise, .* but got 'fogg'"):
        check_corruption("fogg", 3)
    for severity in (0, 6, True):
        with pytest.raises(ValueError, match="Expected a corruption severity in \\[1, 2, 3, 4, 5\\]"):
            check_corruption("fog", severity)
    assert parse_corruptions("all") == list(CORRUPTIONS)
    assert parse_corruptions("fog, frame_drop") == ["fog", "frame_drop"]
    assert parse_severities("1-2,5") == [1, 2, 5] and parse_severities("1,3,5") == [1, 3, 5]
    for bad in ("fogg", "fog,fog", ""):
        with pytest.raises(RobustnessError, match="--corruptions"):
            parse_corruptions(bad)
    for bad in ("0", "6", "3-1", "x", "1-6", ""):
        with pytest.raises(RobustnessError, match="--severities"):
            parse_severities(bad)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--corruptions", "fog,blizzard"], "argument --corruptions: --corruptions: Expected 'all' or distinct"),
        (["--severities", "0-3"], "argument --severities: --severities: Expected severities in 1..5"),
    ],
)
def test_command_refuses_a_bad_name_or_severity_before_reading_anything(args, message, tmp_path, capsys) -> None:
    from arn_lightning.cli import main

    missing = tmp_path / "nothing"
    with pytest.raises(SystemExit) as exit_info:
        main(["robustness", "--config", str(missing / "c.yaml"), "--ckpt_path", str(missing / "m.ckpt"), *args])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_data_module_refuses_a_bad_corruption_at_construction(train_root: Path) -> None:
    from arn_lightning.data.datamodule import AGDataModule

    with pytest.raises(ValueError, match="Expected a corruption in"):
        AGDataModule(root=str(train_root), corruption="haze")
    with pytest.raises(ValueError, match="Expected a corruption severity"):
        AGDataModule(root=str(train_root), corruption="fog", corruption_severity=7)


def test_data_module_corrupts_evaluation_clips_only(train_root: Path) -> None:
    from arn_lightning.data.datamodule import AGDataModule

    settings = dict(root=str(train_root), clip_len=2, resize_shorter=48, resize_longer=64, flip_prob=0.0)
    clean, corrupted = AGDataModule(**settings), AGDataModule(**settings, corruption="brightness")
    for module in (clean, corrupted):
        module.setup("fit")
    assert clean.datasets["val"].corrupt is None and corrupted.datasets["train"].corrupt is None
    assert torch.equal(clean.datasets["train"][0][0]["image"], corrupted.datasets["train"][0][0]["image"])
    clean_val, corrupted_val = clean.datasets["val"][0], corrupted.datasets["val"][0]
    assert clean_val[0]["target"]["frame"] == corrupted_val[0]["target"]["frame"]
    assert corrupted_val[0]["image"].float().mean() > clean_val[0]["image"].float().mean() + 10  # brighter
    assert torch.equal(clean_val[0]["target"]["obj_boxes"], corrupted_val[0]["target"]["obj_boxes"])


# ----------------------------------------------------------------------------------------------- the benchmark
@pytest.fixture(scope="module")
def tiny_run(train_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny fitted run: its saved ``config.yaml`` and ``last.ckpt``."""
    workdir = tmp_path_factory.mktemp("robustness_run")
    config = tiny_config(train_root, workdir, max_steps=2, limit_val_batches=1)
    run_cli(["fit", "--config", str(write_config(config, workdir / "tiny.yaml"))])
    run = workdir / "logs" / "tiny" / "version_0"
    return run / "config.yaml", run / "checkpoints" / "last.ckpt"


@pytest.mark.slow
def test_benchmark_writes_its_files_rescoreable_and_resumes(tiny_run, train_root, monkeypatch) -> None:
    from arn_lightning.commands.evaluate import evaluate

    config, ckpt = tiny_run
    out = config.parent / "robustness"
    report = robustness.run_robustness(config, ckpt, ["brightness", "frame_drop"], [1, 5], num_workers=0)
    tags = ["clean", "brightness_s1", "brightness_s5", "frame_drop_s1", "frame_drop_s5"]
    for tag in tags:
        assert (out / f"predictions_test_{tag}.jsonl").is_file() and (out / f"metrics_test_{tag}.json").is_file()
    for name in ("robustness.md", "robustness.csv", "robustness.json", "robustness.png", "settings.json"):
        assert (out / name).stat().st_size > 0
    assert (out / "examples" / "brightness.png").is_file() and (out / "examples" / "frame_drop.png").is_file()
    assert not (out / "work").exists()
    # `evaluate` rescores a corrupted prediction file to the metric of the same test.
    metrics = json.loads((out / "metrics_test_brightness_s5.json").read_text())
    offline = evaluate(str(train_root), str(out / "predictions_test_brightness_s5.jsonl"), split="test", task="sgdet")
    for constraint in ("with", "semi", "no"):
        assert metrics[f"{constraint}/R@20"] == pytest.approx(offline[constraint]["R@20"], abs=1e-9)
        assert metrics[f"{constraint}/mR@50"] == pytest.approx(offline[constraint]["mR@50"], abs=1e-9)
    # The table: 4 entries, then a mean per severity and over all; drops relative to clean.
    rows = report["rows"]
    assert [(r["corruption"], r["severity"]) for r in rows][-3:] == [("mean", 1), ("mean", 5), ("mean", "all")]
    clean = report["clean"]["no/R@20"]
    entry = next(r for r in rows if (r["corruption"], r["severity"]) == ("brightness", 5))
    assert entry["values"]["no/R@20"] == metrics["no/R@20"]
    if clean > 0:
        assert entry["drop"]["no/R@20"] == pytest.approx((clean - metrics["no/R@20"]) / clean)
    mean_s5 = next(r for r in rows if (r["corruption"], r["severity"]) == ("mean", 5))
    expected = np.mean([r["values"]["no/mR@20"] for r in rows if r["severity"] == 5 and r["corruption"] != "mean"])
    assert mean_s5["values"]["no/mR@20"] == pytest.approx(expected)
    assert "| brightness | 5 |" in (out / "robustness.md").read_text()
    assert (out / "robustness.csv").read_text().splitlines()[0] == "corruption,severity,metric,value,relative_drop"
    # Resumable: a rerun tests only the entry whose result is gone.
    (out / "metrics_test_frame_drop_s5.json").unlink()
    tested = []
    real = robustness.score_entry
    monkeypatch.setattr(robustness, "score_entry", lambda *a: tested.append(a[4:6]) or real(*a))
    robustness.run_robustness(config, ckpt, ["brightness", "frame_drop"], [1, 5], num_workers=0)
    assert tested == [("frame_drop", 5)]
    assert json.loads((out / "metrics_test_frame_drop_s5.json").read_text())["no/R@20"] == pytest.approx(
        next(r for r in rows if (r["corruption"], r["severity"]) == ("frame_drop", 5))["values"]["no/R@20"]
    )
    # Another checkpoint in the same folder is refused.
    other = ckpt.with_name("other.ckpt")
    shutil.copyfile(ckpt, other)
    with open(other, "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(RobustnessError, match="checkpoint"):
        robustness.run_robustness(config, other, ["brightness"], [1])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_process_ddp_run_equals_one_process(tiny_run, tmp_path: Path) -> None:
    config, ckpt = tiny_run
    saved = yaml.safe_load(config.read_text())
    saved["trainer"].update(strategy="ddp", devices=2)
    ddp_config = write_config(saved, tmp_path / "ddp" / "config.yaml")
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "OMP_NUM_THREADS": "1"}
    args = ["--ckpt_path", str(ckpt), "--corruptions", "gaussian_noise,frozen_frame", "--severities", "4"]
    command = [str(Path(sys.executable).with_name("arn-lightning")), "robustness", "--config", str(ddp_config), *args]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    single = robustness.run_robustness(
        config, ckpt, ["gaussian_noise", "frozen_frame"], [4], out=tmp_path / "single", num_workers=0
    )
    ddp = json.loads((tmp_path / "ddp" / "robustness" / "robustness.json").read_text())
    assert ddp["rows"] == single["rows"] and ddp["clean"] == single["clean"]
    # The tiny model's recall may be 0: the prediction files (every score and box of every frame) are compared too.
    for tag in ("clean", "gaussian_noise_s4", "frozen_frame_s4"):
        a = (tmp_path / "ddp" / "robustness" / f"predictions_test_{tag}.jsonl").read_text()
        assert a == (tmp_path / "single" / f"predictions_test_{tag}.jsonl").read_text(), tag
    corrupted = (tmp_path / "single" / "predictions_test_gaussian_noise_s4.jsonl").read_text()
    assert corrupted != (tmp_path / "single" / "predictions_test_clean.jsonl").read_text()
