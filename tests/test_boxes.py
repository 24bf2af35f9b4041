"""The box rule and the NaN-free IoU / GIoU of arn_lightning.boxes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.ops import box_iou
from torchvision.ops import generalized_box_iou as torchvision_giou

from arn_lightning.boxes import (
    InvalidBoxError,
    box_violation,
    check_boxes_xyxy,
    first_invalid_box,
    generalized_box_iou,
    invalid_box_mask,
    paired_generalized_box_iou,
    paired_iou,
)

NAN, INF = float("nan"), float("inf")
#: (box, valid?) covering each clause of the rule.
CASES = [
    ([0.0, 0.0, 10.0, 20.0], True),
    ([5.0, 5.0, 5.0, 30.0], True),  # width 0
    ([5.0, 5.0, 5.0, 5.0], True),  # a point
    ([-20.0, -5.0, 1e4, 1e4], True),  # beyond any frame: allowed
    ([NAN, 0.0, 1.0, 1.0], False),
    ([0.0, 0.0, INF, 1.0], False),
    ([-INF, 0.0, 1.0, 1.0], False),
    ([4.0, 0.0, 3.0, 1.0], False),  # x2 < x1
    ([0.0, 4.0, 1.0, 3.0], False),  # y2 < y1
]


def random_boxes(generator: torch.Generator, count: int, scale: float = 100.0) -> torch.Tensor:
    """float64 ``[count, 4]`` valid boxes with positive area."""
    corners = torch.rand(count, 2, 2, generator=generator, dtype=torch.float64) * scale
    return torch.cat([corners.min(dim=1).values, corners.max(dim=1).values + 0.5], dim=1)


def test_invalid_box_mask_numpy_lists_and_tensors_agree():
    boxes = [box for box, _ in CASES]
    expected = [not valid for _, valid in CASES]
    assert invalid_box_mask(np.array(boxes)).tolist() == expected
    assert invalid_box_mask(np.array(boxes, dtype=np.float32)).tolist() == expected
    assert invalid_box_mask(boxes).tolist() == expected
    mask = invalid_box_mask(torch.tensor(boxes))
    assert mask.dtype == torch.bool and mask.tolist() == expected
    assert invalid_box_mask(torch.tensor(boxes).reshape(3, 3, 4)).shape == (3, 3)
    assert invalid_box_mask(np.zeros((0, 4))).shape == (0,)
    with pytest.raises(ValueError, match=r"Expected boxes of shape \[..., 4\] but got \[2, 3\]"):
        invalid_box_mask(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"shape \[..., 4\] but got \[5\]"):
        invalid_box_mask(torch.zeros(5))


def test_violation_text_and_first_invalid_row():
    assert [box_violation(box) for box, _ in CASES] == (
        ["valid"] * 4 + ["a non-finite coordinate"] * 3 + ["x2 < x1", "y2 < y1"]
    )
    assert box_violation([3.0, 3.0, 1.0, 1.0]) == "x2 < x1 and y2 < y1"
    assert first_invalid_box(np.array([box for box, _ in CASES])) == 4
    assert first_invalid_box(torch.tensor([box for box, _ in CASES][:4])) == -1
    assert first_invalid_box(torch.tensor([CASES[0][0], CASES[7][0]])) == 1


def test_check_boxes_names_the_row():
    check_boxes_xyxy(torch.tensor([box for box, valid in CASES if valid]), "preds[0]['boxes']")
    with pytest.raises(
        InvalidBoxError,
        match=r"^Expected preds\[0\]\['boxes'\]\[2\] to be an xyxy box with finite "
        r"coordinates, x2 >= x1 and y2 >= y1 but got \[0.0, 4.0, 1.0, 3.0\] "
        r"\(y2 < y1\)$",
    ) as error:
        check_boxes_xyxy(np.array([CASES[0][0], CASES[1][0], CASES[8][0]]), "preds[0]['boxes']")
    assert isinstance(error.value, ValueError) and error.value.where == "preds[0]['boxes'][2]"
    assert error.value.box == [0.0, 4.0, 1.0, 3.0]
    with pytest.raises(InvalidBoxError, match=r"Expected frame 7, row 0 to be .* got \[nan, 0.0, 1.0, 1.0\]"):
        check_boxes_xyxy([CASES[4][0]], lambda row: f"frame 7, row {row}")


def test_paired_iou_equals_torchvision_bit_for_bit_on_ordinary_boxes():
    generator = torch.Generator().manual_seed(0)
    first, second = random_boxes(generator, 500), random_boxes(generator, 500)
    second[:100] = first[:100]  # identical pairs
    second[100:200, 2:] = second[100:200, :2] + 0.0001  # tiny boxes
    expected = torch.vmap(box_iou)(first[:, None], second[:, None])[:, 0, 0].numpy()
    got = paired_iou(first.numpy(), second.numpy())
    assert got.dtype == np.float64 and np.array_equal(got, expected)
    assert (got[:100] == 1.0).all()


def test_degenerate_boxes_iou_is_one_when_equal_and_never_nan():
    point, line = [5.0, 5.0, 5.0, 5.0], [5.0, 5.0, 5.0, 30.0]
    pairs = [
        (point, point, 1.0),
        (line, line, 1.0),  # equal degenerate boxes: 0/0 -> 1
        (point, [6.0, 5.0, 6.0, 5.0], 0.0),
        (line, [5.0, 10.0, 5.0, 40.0], 0.0),  # different, empty union: 0
        (line, [0.0, 0.0, 10.0, 40.0], 0.0),
        (point, [0.0, 0.0, 10.0, 10.0], 0.0),  # inside a box: area 0 / area
        ([0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0], 1.0),
    ]
    got = paired_iou(np.array([a for a, _, _ in pairs]), np.array([b for _, b, _ in pairs]))
    assert got.tolist() == [value for _, _, value in pairs]
    # torchvision gives NaN on the first four: the reason for the rule
    assert torch.isnan(box_iou(torch.tensor([point]), torch.tensor([point]))).all()


def test_paired_iou_is_finite_in_0_1_on_a_grid_of_degenerate_boxes():
    values = np.array([0.0, 1.0, 2.5])
    grid = np.array(np.meshgrid(values, values, values, values)).reshape(4, -1).T  # every corner combination
    boxes = grid[~invalid_box_mask(grid)]  # the valid ones: many degenerate
    first, second = np.repeat(boxes, len(boxes), axis=0), np.tile(boxes, (len(boxes), 1))
    iou = paired_iou(first, second)
    assert np.isfinite(iou).all() and (iou >= 0).all() and (iou <= 1).all()
    assert (iou[(first == second).all(axis=1)] == 1.0).all()


def test_generalized_iou_equals_torchvision_on_ordinary_boxes():
    generator = torch.Generator().manual_seed(1)
    first, second = random_boxes(generator, 40, 1.0).float(), random_boxes(generator, 30, 1.0).float()
    torch.testing.assert_close(generalized_box_iou(first, second), torchvision_giou(first, second), rtol=0, atol=0)
    torch.testing.assert_close(
        paired_generalized_box_iou(first[:30], second), torchvision_giou(first[:30], second).diagonal(), rtol=0, atol=0
    )


def test_generalized_iou_of_degenerate_boxes_is_finite_with_finite_gradients():
    boxes1 = torch.tensor(
        [
            [0.5, 0.5, 0.5, 0.5],  # a point, equal to its partner: GIoU 1
            [0.2, 0.1, 0.2, 0.6],  # a vertical line, equal: 1
            [0.2, 0.1, 0.2, 0.3],  # on one line with its partner, apart: hull area 0 -> IoU 0
            [0.1, 0.1, 0.1, 0.1],  # a point and a box around it
            [0.0, 0.0, 0.0, 0.0],
        ],
        requires_grad=True,
    )  # two points: hull 0.2 x 0.2, GIoU -1
    boxes2 = torch.tensor(
        [[0.5, 0.5, 0.5, 0.5], [0.2, 0.1, 0.2, 0.6], [0.2, 0.5, 0.2, 0.7], [0.0, 0.0, 0.4, 0.4], [0.2, 0.2, 0.2, 0.2]],
        requires_grad=True,
    )
    paired = paired_generalized_box_iou(boxes1, boxes2)
    torch.testing.assert_close(paired, torch.tensor([1.0, 1.0, 0.0, 0.0, -1.0]))
    (1 - paired).sum().backward()
    assert torch.isfinite(boxes1.grad).all() and torch.isfinite(boxes2.grad).all()
    pairwise = generalized_box_iou(boxes1.detach(), boxes2.detach())  # [5, 5]
    assert torch.isfinite(pairwise).all() and (pairwise.abs() <= 1).all()
    torch.testing.assert_close(pairwise.diagonal(), paired.detach())
    assert torch.isnan(torchvision_giou(boxes1[:1].detach(), boxes2[:1].detach())).all()  # what it replaces
