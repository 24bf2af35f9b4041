"""The test-time triplet NMS (metrics/triplet_nms.py): hand-computed suppressions under each constraint, the greedy
order, the threshold edge, alpha / beta and the IoU convention, and its effect on R@K."""

from pathlib import Path

import pytest
import torch

from arn_lightning.commands.evaluate import main as evaluate_main
from arn_lightning.data.ag import load_annotations
from arn_lightning.metrics.functional import RecallConfig, scene_graph_recall
from arn_lightning.metrics.predictions import empty_prediction, write_predictions
from arn_lightning.metrics.scoring import evaluate, format_table
from arn_lightning.metrics.triplet_nms import triplet_nms
from arn_lightning.training.lit_module import EvalConfig


def nms_frame(cup_boxes=((50.0, 50.0, 150.0, 150.0), (50.0, 50.0, 150.0, 149.0)), cup_labels=(11, 11)):
    """Two persons (IoU 0.99), two cups (IoU 0.99 by default); pair n = (person n, cup n); object scores 0.9, 0.8.
    Attention argmax 0 in both pairs; spatial argmax 0 and 1 (different predicates); contacting argmax 4 in both."""
    spatial = torch.full((2, 6), 0.05)
    spatial[0, 0], spatial[1, 1], spatial[0, 2], spatial[1, 2] = 0.97, 0.96, 0.92, 0.91
    contacting = torch.full((2, 17), 0.01)
    contacting[0, 4], contacting[1, 4] = 0.5, 0.9
    return {
        "frame": "v.mp4/000001.png",
        "boxes": torch.tensor([[0.0, 0.0, 100.0, 100.0], [0.0, 0.0, 100.0, 99.0], *cup_boxes]),
        "labels": torch.tensor([1, 1, *cup_labels]),
        "scores": torch.tensor([1.0, 1.0, 0.9, 0.8]),
        "pairs": torch.tensor([[0, 2], [1, 3]]),
        "attention": torch.tensor([[0.7, 0.2, 0.1], [0.6, 0.3, 0.1]]),
        "spatial": spatial,
        "contacting": contacting,
    }


def test_triplet_nms_with_constraint_suppresses_the_lower_of_two_near_identical_triplets() -> None:
    pred = nms_frame()
    out = triplet_nms(pred, "with", 0.7)
    # attention: both argmax looking_at, 0.9 * 0.7 = 0.63 > 0.8 * 0.6 = 0.48: pair 1's candidate is suppressed
    assert out["attention"].tolist() == [pytest.approx([0.7, 0.2, 0.1]), [0.0, 0.0, 0.0]]
    # spatial: argmax above (pair 0) and beneath (pair 1), different predicates: both kept
    assert torch.equal(out["spatial"], pred["spatial"])
    # contacting: both argmax 4, 0.8 * 0.9 = 0.72 > 0.9 * 0.5 = 0.45: pair 0's candidate goes, pair 1's stays
    assert out["contacting"][0].tolist() == [0.0] * 17 and torch.equal(out["contacting"][1], pred["contacting"][1])
    assert all(out[key] is pred[key] for key in ("boxes", "labels", "scores", "pairs", "frame"))


def test_triplet_nms_no_constraint_works_cell_by_cell() -> None:
    out = triplet_nms(nms_frame(), "no", 0.7)
    # attention cells: 0.63 vs 0.48 (pair 1 goes), 0.18 vs 0.24 (pair 0 goes), 0.09 vs 0.08 (pair 1 goes)
    assert out["attention"].tolist() == [pytest.approx([0.7, 0.0, 0.1]), pytest.approx([0.0, 0.3, 0.0])]
    # spatial: one cell of each column goes; column 1: 0.9 * 0.05 = 0.045 < 0.8 * 0.96 = 0.768
    assert out["spatial"][0, 1] == 0.0 and out["spatial"][1, 1] == pytest.approx(0.96)
    assert out["spatial"][0, 2] == pytest.approx(0.92) and out["spatial"][1, 2] == 0.0  # 0.828 > 0.728
    assert int((out["spatial"] > 0).sum()) == 6 and int((out["contacting"] > 0).sum()) == 17


def test_triplet_nms_semi_constraint_filters_its_own_candidates_only() -> None:
    pred = nms_frame()
    out = triplet_nms(pred, "semi", 0.7)
    assert out["attention"][1].tolist() == [0.0, 0.0, 0.0]  # the argmax attention, as under "with"
    # spatial candidates: the cells above 0.9; in column 2 pair 0's 0.828 suppresses pair 1's 0.728; columns 0 and
    # 1 hold one candidate each; the other cells are no candidates and stay
    expected = pred["spatial"].clone()
    expected[1, 2] = 0.0
    assert torch.equal(out["spatial"], expected)
    assert torch.equal(out["contacting"], pred["contacting"])  # no contacting score above 0.9


def test_triplet_nms_keeps_both_for_another_object_class_or_a_low_iou() -> None:
    pred = nms_frame(cup_labels=(11, 12))
    for constraint in ("with", "semi", "no"):
        out = triplet_nms(pred, constraint, 0.7)
        assert all(torch.equal(out[kind], pred[kind]) for kind in ("attention", "spatial", "contacting"))
    far = nms_frame(cup_boxes=((50.0, 50.0, 150.0, 150.0), (60.0, 60.0, 160.0, 160.0)))  # cup IoU 0.68
    assert torch.equal(triplet_nms(far, "with", 0.7)["attention"], far["attention"])
    assert triplet_nms(far, "with", 0.6)["attention"][1].tolist() == [0.0, 0.0, 0.0]


def test_triplet_nms_threshold_is_strict_and_weighs_the_object_iou_by_beta() -> None:
    # identical persons (IoU 1), cups [0, 0, 10, 10] and [0, 0, 10, 5]: IoU exactly 0.5
    pred = nms_frame(cup_boxes=((0.0, 0.0, 10.0, 10.0), (0.0, 0.0, 10.0, 5.0)))
    pred["boxes"][1] = pred["boxes"][0]
    assert torch.equal(triplet_nms(pred, "with", 0.5)["attention"], pred["attention"])  # 0.5 is not > 0.5
    assert triplet_nms(pred, "with", 0.49)["attention"][1].tolist() == [0.0, 0.0, 0.0]
    # beta 0.5 (CDN's): overlap sqrt(0.5) = 0.7071
    assert triplet_nms(pred, "with", 0.7, beta=0.5)["attention"][1].tolist() == [0.0, 0.0, 0.0]
    assert torch.equal(triplet_nms(pred, "with", 0.71, beta=0.5)["attention"], pred["attention"])
    # legacy (+1 pixel) IoU: 11 * 6 / (11 * 11) = 0.545 > 0.5
    assert triplet_nms(pred, "with", 0.5, iou_convention="legacy")["attention"][1].tolist() == [0.0, 0.0, 0.0]


def test_triplet_nms_is_greedy_a_suppressed_triplet_suppresses_nothing() -> None:
    # three pairs of one person box; cups A [0,0,10,10], B [0,0,10,12], C [0,0,10,14.4]: IoU(A,B) = IoU(B,C) = 0.833,
    # IoU(A,C) = 0.694. Threshold 0.8: A suppresses B; B, suppressed, does not suppress C.
    pred = {
        "boxes": torch.tensor([[0.0, 0.0, 50.0, 50.0], [0, 0, 10, 10], [0, 0, 10, 12], [0, 0, 10, 14.4]]),
        "labels": torch.tensor([1, 11, 11, 11]),
        "scores": torch.tensor([1.0, 0.5, 0.9, 0.7]),  # B scores best on the object but lowest on the attention
        "pairs": torch.tensor([[0, 1], [0, 2], [0, 3]]),
        "attention": torch.tensor([[0.9, 0.05, 0.05], [0.3, 0.2, 0.1], [0.5, 0.2, 0.1]]),
        "spatial": torch.zeros(3, 6),
        "contacting": torch.zeros(3, 17),
    }  # looking_at: A 0.45 > C 0.35 > B 0.27
    out = triplet_nms(pred, "with", 0.8)
    assert out["attention"][:, 0].tolist() == [pytest.approx(0.9), 0.0, pytest.approx(0.5)]
    assert triplet_nms(pred, "no", 0.8)["attention"][:, 0].tolist() == [pytest.approx(0.9), 0.0, pytest.approx(0.5)]


def test_triplet_nms_changes_the_metric_as_the_filtered_ranking() -> None:
    # GT: the person looks at cup 1 and cup 2 (two objects of one class); predicted: a near-duplicate of the
    # cup-1 triplet ranks second, the cup-2 triplet third. R@2 under "no": 1/2 plain, 2/2 after the NMS.
    truth = {
        "boxes": torch.tensor([[0.0, 0.0, 100.0, 100.0], [10, 10, 30, 30], [60, 60, 90, 90]]),
        "labels": torch.tensor([1, 11, 11]),
        "attention": torch.tensor([[1, 0, 0], [1, 0, 0]]),
        "spatial": torch.zeros(2, 6, dtype=torch.long),
        "contacting": torch.zeros(2, 17, dtype=torch.long),
    }
    pred = {
        "boxes": torch.tensor([[0.0, 0, 100, 100], [10, 10, 30, 30], [10, 10, 30, 29.9], [60, 60, 90, 90]]),
        "labels": torch.tensor([1, 11, 11, 11]),
        "scores": torch.tensor([1.0, 0.9, 0.8, 0.7]),
        "pairs": torch.tensor([[0, 1], [0, 2], [0, 3]]),
        "attention": torch.tensor([[0.9, 0.0, 0.0], [0.9, 0.0, 0.0], [0.9, 0.0, 0.0]]),
        "spatial": torch.zeros(3, 6),
        "contacting": torch.zeros(3, 17),
    }
    config = RecallConfig(constraints=("no",), k_values=(2, 3))
    plain = scene_graph_recall([pred], [truth], config)
    filtered = scene_graph_recall([triplet_nms(pred, "no", 0.7)], [truth], config)
    assert plain["no/R@2"].item() == 0.5 and filtered["no/R@2"].item() == 1.0
    assert plain["no/R@3"].item() == filtered["no/R@3"].item() == 1.0


def test_triplet_nms_takes_file_lists_and_frames_without_pairs() -> None:
    pred = nms_frame()
    listed = {key: value.tolist() if isinstance(value, torch.Tensor) else value for key, value in pred.items()}
    out = triplet_nms(listed, "with", 0.7)
    assert torch.equal(out["attention"], triplet_nms(pred, "with", 0.7)["attention"])
    empty = empty_prediction("v.mp4/000002.png")
    assert triplet_nms(empty, "no", 0.7)["attention"].shape == (0, 3)


def test_triplet_nms_is_off_by_default_and_its_settings_are_checked() -> None:
    assert EvalConfig().triplet_nms is None
    for bad in (0.0, 1.5, float("nan"), "0.5"):
        with pytest.raises(ValueError, match=r"evaluation\.triplet_nms in \(0, 1\]"):
            EvalConfig(triplet_nms=bad)
    for name in ("triplet_nms_alpha", "triplet_nms_beta"):
        with pytest.raises(ValueError, match=rf"evaluation\.{name} to be a finite number > 0"):
            EvalConfig(triplet_nms=0.7, **{name: 0.0})
    with pytest.raises(ValueError, match="Expected a constraint in"):
        triplet_nms(nms_frame(), "any", 0.7)


def _duplicated_predictions(root: Path) -> tuple[list[dict], list[dict]]:
    """Per test frame of ``root``: the ground truth, and a prediction of its boxes in which every object is predicted
    twice (the copy 2 pixels lower, lower object score), random predicate scores (seeded)."""
    generator = torch.Generator().manual_seed(0)
    targets = [frame.eval_target() for frame in load_annotations(root, task="sgdet").frames("test")]
    preds = []
    for truth in targets:
        boxes, labels = torch.as_tensor(truth["boxes"]).float(), torch.as_tensor(truth["labels"])
        num = len(labels) - 1
        copies = boxes[1:] + torch.tensor([0.0, 0.0, 0.0, 2.0])
        objects = torch.arange(1, 2 * num + 1)
        preds.append(
            {
                "frame": truth["frame"],
                "boxes": torch.cat((boxes, copies)),
                "labels": torch.cat((labels, labels[1:])),
                "scores": torch.cat((torch.ones(1), torch.full((num,), 0.9), torch.full((num,), 0.8))),
                "pairs": torch.stack((torch.zeros_like(objects), objects), dim=1),
                **{
                    kind: torch.rand(2 * num, size, generator=generator)
                    for kind, size in (("attention", 3), ("spatial", 6), ("contacting", 17))
                },
            }
        )
    return preds, targets


def test_evaluate_scores_a_file_plain_and_after_the_triplet_nms(
    train_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    preds, targets = _duplicated_predictions(train_root)
    path = tmp_path / "predictions.jsonl"
    write_predictions(path, preds)
    plain = evaluate(str(train_root), str(path))
    report = evaluate(str(train_root), str(path), triplet_nms=0.7, triplet_nms_beta=0.5)
    assert report.pop("triplet_nms") is not None and report == plain  # the plain scores stay the headline
    nms = evaluate(str(train_root), str(path), triplet_nms=0.7, triplet_nms_beta=0.5)["triplet_nms"]
    assert (nms["threshold"], nms["alpha"], nms["beta"]) == (0.7, 1.0, 0.5)
    changed = False
    for constraint in ("with", "semi", "no"):
        filtered = [triplet_nms(pred, constraint, 0.7, beta=0.5) for pred in preds]
        expected = scene_graph_recall(filtered, targets, RecallConfig(constraints=(constraint,)))
        for k in (10, 20, 50, 100):
            for name in (f"R@{k}", f"mR@{k}", f"mR_per_frame@{k}"):
                assert nms[constraint][name] == pytest.approx(expected[f"{constraint}/{name}"].item(), abs=1e-12)
            changed |= nms[constraint][f"R@{k}"] != plain[constraint][f"R@{k}"]
    assert changed, "the duplicates changed no recall: the comparison above would be vacuous"
    assert "after the triplet NMS (threshold 0.7, alpha 1.0, beta 0.5)" in format_table({**plain, "triplet_nms": nms})
    assert evaluate_main(["--root", str(train_root), "--predictions", str(path), "--triplet-nms", "1.5"]) == 2
    assert "Expected --triplet-nms in (0, 1] or None (off) but got 1.5" in capsys.readouterr().err
