"""Prediction files: lossless atomic writes, validated reads with line numbers."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from arn_lightning.benchmarks.metrics import random_frames
from arn_lightning.metrics.predictions import (
    PREDICTION_KEYS,
    PredictionFileError,
    empty_prediction,
    iter_predictions,
    prediction_from_json,
    prediction_to_json,
    read_predictions,
    shortest_float32,
    stack_predictions,
    write_predictions,
)


def small_prediction(frame: str = "A.mp4/000001.png") -> dict:
    return {
        "frame": frame,
        "boxes": [[0, 0, 10, 20], [2, 2, 6, 6]],
        "labels": [1, 11],
        "scores": [1.0, 0.5],
        "pairs": [[0, 1]],
        "attention": [[0.1, 0.8, 0.1]],
        "spatial": [[0.0] * 6],
        "contacting": [[0.5] * 17],
    }


def test_round_trip_is_lossless(tmp_path: Path) -> None:
    preds, _ = random_frames(5, num_pairs=7, seed=1)
    preds.append(empty_prediction("empty.mp4/000001.png"))
    path = tmp_path / "out" / "preds.jsonl"
    assert write_predictions(path, preds) == 6
    back = list(read_predictions(path))
    assert [p["frame"] for p in back] == [p["frame"] for p in preds]
    for original, read in zip(preds, back, strict=True):
        for key in PREDICTION_KEYS[1:]:
            assert read[key].dtype == (torch.long if key in ("labels", "pairs") else torch.float32)
            assert torch.equal(read[key], original[key].to(read[key].dtype)), key
    lines = path.read_text().splitlines()
    assert len(lines) == 6 and list(json.loads(lines[0])) == list(PREDICTION_KEYS)
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_floats_are_written_as_short_float32_decimals(tmp_path: Path) -> None:
    pred = {**small_prediction(), "scores": torch.tensor([0.1, 1 / 3]), "attention": torch.tensor([[0.9, 0.05, 0.05]])}
    path = tmp_path / "p.jsonl"
    write_predictions(path, [pred])
    line = json.loads(path.read_text())
    assert line["scores"] == [0.1, 0.33333334] and line["attention"] == [[0.9, 0.05, 0.05]]
    assert line["boxes"] == [[0, 0, 10, 20], [2, 2, 6, 6]] and line["labels"] == [1, 11]
    values = np.random.default_rng(0).random(20_000).astype(np.float32) * np.float32(1000)
    assert (np.asarray(json.loads(json.dumps(shortest_float32(values).tolist())), np.float32) == values).all()
    assert shortest_float32(np.float32([0.0, 1.0, 1234.5, 65504.0])).tolist() == [0.0, 1.0, 1234.5, 65504.0]


def test_write_is_atomic_and_validates(tmp_path: Path) -> None:
    path = tmp_path / "preds.jsonl"
    write_predictions(path, [small_prediction()])
    before = path.read_bytes()
    bad = dict(small_prediction("B.mp4/000001.png"), scores=[1.0, 1.5])
    with pytest.raises(ValueError, match=r"preds\[1\]\['scores'\] in \[0, 1\] but got 1.5"):
        write_predictions(path, [small_prediction(), bad])
    with pytest.raises(ValueError, match=r"preds\[1\] repeats 'A.mp4/000001.png'"):
        write_predictions(path, [small_prediction(), small_prediction()])
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["preds.jsonl"]


def write_lines(path: Path, lines) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def good_line(frame: str = "A.mp4/000001.png", **changes) -> str:
    return json.dumps({**small_prediction(frame), **changes})


@pytest.mark.parametrize(
    "bad_line, message",
    [
        ("{not json", "Expecting property name"),
        ("[1, 2]", "Expected a JSON object but got list"),
        (json.dumps({k: v for k, v in small_prediction().items() if k != "pairs"}), "'pairs' is missing"),
        (json.dumps({**small_prediction(), "frame": 3}), "Expected the line\\['frame'\\] to be a frame key"),
        (good_line(labels=[1, 11, 8]), "'labels'\\] of shape \\[2\\] but got \\[3\\]"),
        (good_line(spatial=[[0.0] * 5]), "'spatial'\\] of shape \\[1, 6\\] but got \\[1, 5\\]"),
        (good_line(attention=[[0.1, 0.8, 0.1], [0.1, 0.8, 0.1]]), "'attention'\\] of shape \\[1, 3\\]"),
        (good_line(pairs=[[0, 2]]), "'pairs'\\] in \\[0, 1\\] but got 2"),
        (good_line(pairs=[[-1, 1]]), "'pairs'\\] in \\[0, 1\\] but got -1"),
        (good_line(pairs=[[0.0, 1.0]]), "'pairs'\\] to hold integers"),
        (good_line(contacting=[[1.5] + [0.5] * 16]), "'contacting'\\] in \\[0, 1\\] but got 1.5"),
        (good_line(attention=[[float("nan"), 0.8, 0.1]]), "'attention'\\] in \\[0, 1\\] but got nan"),
        (
            good_line(boxes=[[0, 0, 10, float("inf")], [2, 2, 6, 6]]),
            "Expected the line\\['boxes'\\]\\[0\\] to be an xyxy box .* but got \\[0.0, 0.0, 10.0, inf\\] "
            "\\(a non-finite coordinate\\)",
        ),
        (
            good_line(boxes=[[0, 0, 10, 20], [6, 2, 2, 6]]),
            "'boxes'\\]\\[1\\] .* got \\[6.0, 2.0, 2.0, 6.0\\] \\(x2 < x1\\)",
        ),
        (good_line(boxes=[[0, 20, 10, 0], [2, 2, 6, 6]]), "'boxes'\\]\\[0\\] .* \\(y2 < y1\\)"),
        (good_line(boxes=[[10, 20, 0, 0], [2, 2, 6, 6]]), "'boxes'\\]\\[0\\] .* \\(x2 < x1 and y2 < y1\\)"),
        (good_line(labels=[1, 37]), "'labels'\\] in \\[1, 36\\] but got 37"),
        (good_line(scores=["high", 0.5]), "'scores'\\] to hold real numbers"),
        (good_line(boxes=[[0, 0, 10], [2, 2, 6, 6]]), "'boxes'\\] to be a rectangular array"),
    ],
)
def test_malformed_line_names_its_number(tmp_path: Path, bad_line: str, message: str) -> None:
    path = write_lines(tmp_path / "p.jsonl", [good_line(), "", good_line("A.mp4/000002.png"), bad_line])
    reader = iter_predictions(path)
    assert [next(reader)[0], next(reader)[0]] == [1, 3]  # the blank line 2 is skipped
    with pytest.raises(PredictionFileError, match=message) as error:
        next(reader)
    assert error.value.line == 4 and str(error.value).startswith(f"{path} line 4: ")


def test_duplicate_frame_names_both_lines(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "p.jsonl", [good_line(), good_line("A.mp4/000002.png"), good_line()])
    with pytest.raises(PredictionFileError, match="line 3: .*'A.mp4/000001.png' already appeared on line 1"):
        list(read_predictions(path))


def test_json_conversions_and_batches() -> None:
    pred = prediction_from_json(json.loads(good_line()))
    assert pred["boxes"].dtype == torch.float32 and pred["pairs"].tolist() == [[0, 1]]
    assert prediction_to_json(pred)["labels"] == [1, 11]
    with pytest.raises(ValueError, match="JSON object"):
        prediction_from_json([])
    batch = stack_predictions([pred, empty_prediction("x.mp4/000001.png"), pred])
    assert batch.num_rows.tolist() == [2, 0, 2] and batch.num_pairs.tolist() == [1, 0, 1]
    assert batch.boxes.dtype == np.float32 and batch.pairs.tolist() == [[0, 1], [0, 1]]  # float32 kept
    assert stack_predictions([json.loads(good_line())]).scores.dtype == np.float64  # JSON numbers


def test_a_value_beyond_float32_range_names_the_file_and_line(tmp_path) -> None:
    import json

    from arn_lightning.metrics.predictions import PredictionFileError, read_predictions

    line = {
        "frame": "a.mp4/000001.png",
        "boxes": [[0, 0, 4, 4], [0, 0, 1e300, 3]],
        "labels": [1, 2],
        "scores": [1, 1],
        "pairs": [[0, 1]],
        "attention": [[1, 0, 0]],
        "spatial": [[0] * 6],
        "contacting": [[0] * 17],
    }
    path = tmp_path / "preds.jsonl"
    path.write_text("\n" + json.dumps(line) + "\n")
    with pytest.raises(PredictionFileError, match=rf"{path} line 2: Expected boxes within float32's range .* 1e\+300"):
        list(read_predictions(path))
