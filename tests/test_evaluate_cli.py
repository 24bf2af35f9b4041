"""``arn-lightning evaluate`` on the hand-written AG root of ``tests/ag_fixtures.py``.

Its SGDet test split has 6 frames: C0003 000100/200/300 (book: unsure, above, not_contacting) and D0004
000001/2/4 (book: looking_at, in_front_of, holding; 000002 has holding twice): 21 GT triplets.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from ag_fixtures import DEGENERATE_KEYS, write_degenerate_root, write_standard_root
from arn_lightning import vocab
from arn_lightning.cli import main as cli_main
from arn_lightning.data.ag import load_annotations
from arn_lightning.metrics.predictions import prediction_from_ground_truth, prediction_to_json, write_predictions
from arn_lightning.metrics.recall import SceneGraphRecall

TEST_KEYS = [
    "C0003.mp4/000100.png",
    "C0003.mp4/000200.png",
    "C0003.mp4/000300.png",
    "D0004.mp4/000001.png",
    "D0004.mp4/000002.png",
    "D0004.mp4/000004.png",
]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return write_standard_root(tmp_path_factory.mktemp("ag") / "root", frames=False)


def oracle_predictions(root: Path, split: str = "test") -> list[dict]:
    return [
        prediction_from_ground_truth(frame.eval_target())
        for frame in load_annotations(root, task="sgdet").frames(split)
    ]


def run(capsys, *args: str) -> tuple:
    code = cli_main(["evaluate", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_json(capsys, root: Path, predictions: Path, *args: str) -> dict:
    code, out, err = run(capsys, "--root", str(root), "--predictions", str(predictions), "--json", *args)
    assert code == 0, err
    return json.loads(out)


def test_perfect_predictions_recall_everything(root: Path, tmp_path: Path, capsys) -> None:
    preds = oracle_predictions(root)
    assert [p["frame"] for p in preds] == TEST_KEYS
    path = tmp_path / "perfect.jsonl"
    write_predictions(path, preds)
    report = run_json(capsys, root, path)
    assert report["frames"] == 6 and report["missing_frames"] == {"count": 0, "first": []}
    assert (report["task"], report["split"], report["iou"]) == ("sgdet", "test", "continuous")
    for constraint in ("with", "semi", "no"):
        assert set(report[constraint]) == {
            f"{name}@{k}" for name in ("R", "mR", "mR_per_frame", "hmean") for k in (10, 20, 50, 100)
        }
    assert report["no"]["R@10"] == 1.0 and report["with"]["R@10"] == 1.0  # one label per type, holding x2 once
    assert report["semi"]["R@10"] == 1.0  # predicate score 1 > 0.9
    assert report["no"]["mR@10"] == pytest.approx(6 / 26) and report["no"]["mR_per_frame@10"] == pytest.approx(6 / 26)
    assert report["per_predicate"]["holding"]["gt_triplets"] == 4
    assert report["per_predicate"]["holding"]["no"]["R@50"] == 1.0
    assert report["per_predicate"]["carrying"] == {
        "gt_triplets": 0,
        **{c: {f"R@{k}": 0.0 for k in (10, 20, 50, 100)} for c in ("with", "semi", "no")},
    }
    assert sum(entry["gt_triplets"] for entry in report["per_predicate"].values()) == 19
    assert list(report["per_predicate"]) == list(vocab.PREDICATES)


def test_missing_frames_score_zero_and_are_reported(root: Path, tmp_path: Path, capsys) -> None:
    preds = [p for p in oracle_predictions(root) if p["frame"] not in (TEST_KEYS[1], TEST_KEYS[4])]
    path = tmp_path / "partial.jsonl"
    write_predictions(path, preds[::-1])  # any line order
    report = run_json(capsys, root, path)
    assert report["missing_frames"] == {"count": 2, "first": [TEST_KEYS[1], TEST_KEYS[4]]}
    assert report["frames"] == 6 and report["no"]["R@10"] == pytest.approx(4 / 6)
    assert report["per_predicate"]["holding"]["no"]["R@10"] == pytest.approx(2 / 4)  # 000002 had holding x2
    assert report["per_predicate"]["unsure"]["no"]["R@10"] == pytest.approx(2 / 3)
    # per-frame mR: holding over frames 000001, 000002, 000004 = (1 + 0 + 1) / 3
    assert report["no"]["mR_per_frame@10"] == pytest.approx((3 * 2 / 3 + 3 * 2 / 3) / 26)
    assert report["no"]["mR@10"] == pytest.approx((2 / 3 + 2 / 3 + 2 / 3 + 2 / 3 + 2 / 3 + 2 / 4) / 26)


def test_file_scores_equal_in_memory_scores(root: Path, tmp_path: Path, capsys) -> None:
    generator = torch.Generator().manual_seed(5)
    preds = oracle_predictions(root)
    for pred in preds:  # noisy scores, boxes off by up to 4 px: a partial recall
        pred["boxes"] = pred["boxes"] + 4 * torch.rand(pred["boxes"].shape, generator=generator)
        for kind in vocab.PREDICATE_TYPES:
            pred[kind] = torch.rand(pred[kind].shape, generator=generator)
    metric = SceneGraphRecall()
    metric.update(preds, [frame.eval_target() for frame in load_annotations(root, task="sgdet").frames("test")])
    expected = metric.compute()
    path = tmp_path / "noisy.jsonl"
    write_predictions(path, preds)
    report = run_json(capsys, root, path)
    assert 0.0 < report["with"]["R@10"] < 1.0
    for key, value in expected.items():
        parts = key.split("/")
        got = (
            report["per_predicate"][parts[3]][parts[1]][parts[2]]
            if parts[0] == "per_predicate"
            else report[parts[0]][parts[1]]
        )
        assert got == value.item(), key  # exactly: the file keeps the float32 values


def test_table_output(root: Path, tmp_path: Path, capsys) -> None:
    path = tmp_path / "two.jsonl"
    write_predictions(path, oracle_predictions(root)[:4])
    code, out, _ = run(capsys, "--root", str(root), "--predictions", str(path))
    assert code == 0
    assert "6 frames, 2 without prediction" in out and "D0004.mp4/000002.png" in out
    tables = out.split("\n\n")[1:]  # R@K + mR@K, then mR per frame
    rows = [{line.split()[0]: line.split()[1:] for line in table.splitlines()[2:]} for table in tables]
    assert list(rows[0]) == ["with", "semi", "no"] and len(rows[0]["no"]) == 8 and len(rows[1]["no"]) == 4
    assert rows[0]["no"][:4] == ["66.67"] * 4  # R@K in percent
    assert "R@10" in out and "mR@100" in out and "per-frame definition" in out


def test_iou_option(root: Path, tmp_path: Path, capsys) -> None:
    preds = oracle_predictions(root)
    preds[0]["boxes"][1] = preds[0]["boxes"][1].new_tensor([5.0, 5.0, 25.0, 14.5])  # book 20x20 at (5, 5)
    path = tmp_path / "shrunk.jsonl"
    write_predictions(path, preds)  # continuous IoU 20*9.5/400 = 0.475, legacy 21*10.5/(21*21) = 0.5
    assert run_json(capsys, root, path)["no"]["R@10"] == pytest.approx(5 / 6)
    assert run_json(capsys, root, path, "--iou", "legacy")["no"]["R@10"] == 1.0


def lines_of(root: Path) -> list[str]:
    return [json.dumps(prediction_to_json(p)) for p in oracle_predictions(root)]


def _bad_pairs(line: str) -> str:
    return json.dumps({**json.loads(line), "pairs": [[0, 5]]})


def _nan(line: str) -> str:
    return json.dumps({**json.loads(line), "scores": [float("nan"), 1.0]})  # json writes the NaN token


@pytest.mark.parametrize(
    "make_bad, message",
    [
        (lambda line: line[:-3], "line 3: "),
        (
            lambda line: json.dumps({**json.loads(line), "frame": "A0001.mp4/000002.png"}),
            "line 3: Expected a frame of the test split \\(sgdet filtering\\) but got 'A0001.mp4/000002.png'",
        ),
        (
            lambda line: json.dumps({**json.loads(line), "frame": "C0003.mp4/000100.png"}),
            "line 3: Expected one line per frame but 'C0003.mp4/000100.png' already appeared on line 1",
        ),
        (_bad_pairs, "line 3: Expected the line\\['pairs'\\] in \\[0, 1\\] but got 5"),
        (_nan, "line 3: Expected the line\\['scores'\\] in \\[0, 1\\] but got nan"),
        (
            lambda line: json.dumps({k: v for k, v in json.loads(line).items() if k != "contacting"}),
            "line 3: .*'contacting' is missing",
        ),
        (lambda line: json.dumps({**json.loads(line), "labels": [1]}), "line 3: .*'labels'\\] of shape \\[2\\]"),
        (lambda line: json.dumps({**json.loads(line), "spatial": [[2.0] * 6]}), "line 3: .*'spatial'\\] in \\[0, 1\\]"),
        (
            lambda line: json.dumps({**json.loads(line), "boxes": [[40.0, 5.0, 10.0, 45.0], [5.0, 5.0, 25.0, 25.0]]}),
            "line 3: Expected the line\\['boxes'\\]\\[0\\] to be an xyxy box with finite coordinates, x2 >= x1 and "
            "y2 >= y1 but got \\[40.0, 5.0, 10.0, 45.0\\] \\(x2 < x1\\)",
        ),
        (
            lambda line: json.dumps({**json.loads(line), "boxes": [[10.0, 5.0, 40.0, 45.0], [5.0, 5.0, 25.0, None]]}),
            "line 3: Expected the line\\['boxes'\\] to hold real numbers",
        ),
    ],
)
def test_malformed_line_exits_2_naming_the_line(root: Path, tmp_path: Path, capsys, make_bad, message) -> None:
    lines = lines_of(root)
    lines[2] = make_bad(lines[2])
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    code, out, err = run(capsys, "--root", str(root), "--predictions", str(path), "--json")
    assert code == 2 and out == ""
    assert err.startswith("arn-lightning evaluate: error: ") and str(path) in err
    assert re.search(message, err), err


def test_missing_files_exit_2(root: Path, tmp_path: Path, capsys) -> None:
    code, _, err = run(capsys, "--root", str(root), "--predictions", str(tmp_path / "absent.jsonl"))
    assert code == 2 and "absent.jsonl" in err
    path = tmp_path / "p.jsonl"
    write_predictions(path, oracle_predictions(root))
    code, _, err = run(capsys, "--root", str(tmp_path / "no_root"), "--predictions", str(path))
    assert code == 2 and "error" in err


def test_train_split(root: Path, tmp_path: Path, capsys) -> None:
    path = tmp_path / "train.jsonl"
    write_predictions(path, oracle_predictions(root, "train"))
    report = run_json(capsys, root, path, "--split", "train")
    # 3 frames: 000002 cup (3 triplets); 000004 cup with two spatial and two contacting labels ("with" keeps one
    # of each: 3/5); 000050 chair (beneath + behind: 3/4), its small cup dropped by the SGDet filtering
    assert report["frames"] == 3 and report["no"]["R@10"] == 1.0
    assert report["with"]["R@10"] == pytest.approx((1 + 3 / 5 + 3 / 4) / 3)


def test_min_frames_and_task_options_reach_the_filtering(root: Path, tmp_path: Path, capsys) -> None:
    path = tmp_path / "p.jsonl"
    write_predictions(path, oracle_predictions(root))
    # with at least 4 kept frames per video the test split is empty: the first line is outside it
    code, _, err = run(capsys, "--root", str(root), "--predictions", str(path), "--min-frames", "4")
    assert code == 2 and "line 1: Expected a frame of the test split (sgdet filtering)" in err
    report = run_json(capsys, root, path, "--task", "predcls")
    assert report["task"] == "predcls" and report["frames"] == 6 and report["no"]["R@10"] == 1.0


@pytest.mark.parametrize("iou", ["continuous", "legacy"])
def test_ground_truth_with_degenerate_boxes_scores_one(tmp_path: Path, capsys, iou: str) -> None:
    """PredCls keeps object boxes of width 0, and of width and height 0: the ground truth scored as the prediction
    recalls everything (it scored 1/3 under the continuous IoU when 0/0 was NaN)."""
    root = write_degenerate_root(tmp_path / "degenerate")
    frames = load_annotations(root, task="predcls").frames("test")
    assert [frame.key for frame in frames] == DEGENERATE_KEYS
    assert [frame.boxes_xyxy[1].tolist() for frame in frames] == [[5, 5, 25, 25], [5, 5, 5, 25], [12, 8, 12, 8]]
    path = tmp_path / "oracle.jsonl"
    write_predictions(path, [prediction_from_ground_truth(frame.eval_target()) for frame in frames])
    report = run_json(capsys, root, path, "--task", "predcls", "--iou", iou)
    assert report["frames"] == 3 and report["missing_frames"]["count"] == 0
    for constraint in ("with", "semi", "no"):
        assert {k: report[constraint][f"R@{k}"] for k in (10, 20, 50, 100)} == {10: 1.0, 20: 1.0, 50: 1.0, 100: 1.0}
