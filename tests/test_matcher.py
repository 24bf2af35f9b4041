"""Hungarian matcher and triplet targets on hand-made frames with hand-computed costs."""

import math

import pytest
import torch

from arn_lightning.matcher import HungarianMatcher, batched_multilabel_cost, giou_cost, identity_matching
from arn_lightning.models.outputs import ARNOutput
from arn_lightning.triplets import TripletVocabulary, triplet_targets
from output_fixtures import class_logits

S = [0.5, 0.5, 0.2, 0.2]  # person box, normalised cxcywh
A = [0.25, 0.25, 0.1, 0.1]
B = [0.75, 0.75, 0.1, 0.1]
PLAIN = TripletVocabulary.from_categories(None, clip_triplets=False)
TRIPLETS = TripletVocabulary.from_categories(
    {"attention": [[0, 11], [1, 11]], "spatial": [[5, 11]], "contacting": [[14, 11]]}
)


def target(labels, attention, spatial=None, contacting=None, sub=None, obj=None):
    n = len(labels)
    return {
        "obj_labels": torch.tensor(labels, dtype=torch.long),
        "sub_boxes": torch.tensor(sub or [S] * n).reshape(n, 4),
        "obj_boxes": torch.tensor(obj or [A] * n).reshape(n, 4),
        "attention": torch.tensor(attention, dtype=torch.long).reshape(n, 3),
        "spatial": torch.tensor(spatial or [[0] * 6] * n, dtype=torch.long).reshape(n, 6),
        "contacting": torch.tensor(contacting or [[0] * 17] * n, dtype=torch.long).reshape(n, 17),
    }


def outputs(obj_logits, sub, obj, branch_probs=None, sizes=(3, 6, 17), query_mask=None):
    q = obj_logits.shape[-2]
    obj_logits = obj_logits.reshape(-1, q, 37)
    frames = obj_logits.shape[0]
    if branch_probs is None:
        branch = [torch.zeros(frames, q, k) for k in sizes]
    else:
        branch = [torch.logit(torch.tensor(p)).reshape(frames, q, -1) for p in branch_probs]
    return ARNOutput(
        obj_logits,
        torch.tensor(sub).reshape(frames, q, 4),
        torch.tensor(obj).reshape(frames, q, 4),
        *branch,
        query_mask=query_mask,
    )


def test_triplet_targets_need_predicate_and_object_to_match():
    vocab = TripletVocabulary.from_categories(
        {"attention": [[0, 11], [1, 11], [0, 8]], "spatial": [[5, 8], [3, 11]], "contacting": [[14, 11], [19, 8]]}
    )
    gt = target(
        [11, 8],
        [[1, 0, 0], [0, 1, 0]],  # (not_looking_at, chair) is no category
        spatial=[[1, 0, 0, 0, 0, 0], [0, 0, 1, 0, 0, 0]],  # above cup, in_front_of chair
        contacting=[[0] * 5 + [2] + [0] * 11, [0] * 10 + [1] + [0] * 6],
    )  # holding (x2) cup, sitting_on chair
    result = triplet_targets(gt, vocab)
    assert result["attention"].tolist() == [[1, 0, 0], [0, 0, 0]]
    assert result["spatial"].tolist() == [[0, 1], [1, 0]]
    assert result["contacting"].tolist() == [[1, 0], [0, 1]]
    assert result["attention"].dtype == torch.float32


def test_triplet_targets_without_triplets_are_the_predicate_multi_hot():
    gt = target([11], [[0, 0, 1]], spatial=[[0, 1, 0, 0, 1, 0]])
    result = triplet_targets(gt, PLAIN)
    assert result["attention"].tolist() == [[0, 0, 1]]
    assert result["spatial"].tolist() == [[0, 1, 0, 0, 1, 0]]
    assert result["contacting"].sum() == 0
    with pytest.raises(ValueError, match="spatial counts of shape \\(1, 6\\)"):
        triplet_targets({**gt, "spatial": torch.zeros(1, 5)}, PLAIN)
    with pytest.raises(ValueError, match="obj_labels in \\[1, 36\\]"):
        triplet_targets({**gt, "obj_labels": torch.tensor([0])}, PLAIN)


def test_multilabel_cost_by_hand():
    probs = torch.tensor([[0.8, 0.2, 0.4]])
    targets = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    # pair 0: -(0.8 / 1 + (0.8 + 0.6) / 2) / 2; pair 1 (no positive): -(0 + (0.2 + 0.8 + 0.6) / 3) / 2
    expected = torch.tensor([[-(0.8 + 0.7) / 2, -(1.6 / 3) / 2]])
    torch.testing.assert_close(batched_multilabel_cost(probs[None], targets[None])[0], expected, atol=1e-3, rtol=0)


def two_by_two():
    gt = target([11, 8], [[1, 0, 0], [0, 1, 0]], obj=[A, B])
    out = outputs(class_logits([{7: 0.6, 10: 0.2, 36: 0.2}, {10: 0.7, 7: 0.1, 36: 0.2}]), [S, S], [B, A])
    return out, gt


def test_cost_matrix_2x2_by_hand_and_assignment():
    out, gt = two_by_two()
    matcher = HungarianMatcher()
    giou_far = 0.36 / 0.36 - 0.02 / 0.36  # -GIoU of two disjoint 0.1-boxes in a 0.6 x 0.6 hull
    pred = -1 / 3  # every pair: logits 0 -> attention -(0.5 + 0.5) / 2, empty branches -(0 + 0.5) / 2; mean
    expected = torch.tensor(
        [
            [-0.2 + 2.5 * 1.0 + giou_far + 2 * pred, -0.6 + 0.0 - 1.0 + 2 * pred],
            [-0.7 + 0.0 - 1.0 + 2 * pred, -0.1 + 2.5 * 1.0 + giou_far + 2 * pred],
        ]
    )
    cost = matcher.cost_matrices(out, [gt], [triplet_targets(gt, PLAIN)])[0]
    torch.testing.assert_close(cost, expected, atol=1e-3, rtol=0)
    [(queries, gts)] = matcher(out, [gt], [triplet_targets(gt, PLAIN)])
    assert queries.tolist() == [0, 1] and gts.tolist() == [1, 0]
    assert queries.dtype == torch.long


def test_predicate_cost_decides_a_3x2_matching():
    gt = target(
        [11, 11],
        [[1, 0, 0], [0, 1, 0]],
        spatial=[[0, 0, 1, 0, 0, 0], [0] * 6],
        contacting=[[0] * 5 + [1] + [0] * 11, [0] * 17],
    )
    probs = [[[0.9, 0.1], [0.5, 0.5], [0.1, 0.9]], [[0.9], [0.5], [0.1]], [[0.9], [0.5], [0.1]]]
    out = outputs(torch.zeros(3, 37), [S] * 3, [A] * 3, branch_probs=probs)
    matcher = HungarianMatcher(cost_class=0, cost_bbox=0, cost_giou=0, cost_predicate=1)
    branch = triplet_targets(gt, TRIPLETS)
    expected = torch.tensor([[-0.6, -0.2 / 3], [-1 / 3, -1 / 3], [-0.2 / 3, -0.6]])
    torch.testing.assert_close(matcher.cost_matrices(out, [gt], [branch])[0], expected, atol=1e-3, rtol=0)
    [(queries, gts)] = matcher(out, [gt], [branch])
    assert queries.tolist() == [0, 2] and gts.tolist() == [0, 1]


#: Degenerate normalised cxcywh boxes: a point, a vertical line, and a line on the same x as it but apart.
POINT, LINE, LINE_APART = [0.25, 0.25, 0.0, 0.0], [0.75, 0.5, 0.0, 0.2], [0.75, 0.9, 0.0, 0.1]


def test_giou_cost_of_degenerate_boxes_is_finite():
    """torchvision's GIoU is 0/0 = NaN for equal zero-area boxes (and for boxes on one line): the matcher stopped
    with "Expected finite matching costs" on such a ground-truth box."""
    pred = torch.tensor([POINT, LINE, LINE_APART, A])
    cost = giou_cost(pred, torch.tensor([POINT, LINE]))  # [4, 2]
    assert torch.isfinite(cost).all()
    assert cost[0, 0].item() == -1.0 and cost[1, 1].item() == -1.0  # equal boxes: GIoU 1
    assert cost[2, 1].item() == 0.0  # apart on one line: IoU 0, hull area 0
    assert cost[3, 0].item() == 0.0  # the point is A's centre: IoU 0 / 0.01, hull = A: GIoU 0
    hull = 0.55 * 0.4  # A = [0.2, 0.2, 0.3, 0.3] and LINE = [0.75, 0.4, 0.75, 0.6]: disjoint, IoU 0
    assert cost[3, 1].item() == pytest.approx((hull - 0.01) / hull)


def test_matching_succeeds_with_degenerate_ground_truth_and_predictions():
    gt = target([11, 8], [[1, 0, 0], [0, 1, 0]], sub=[S, S], obj=[POINT, LINE])
    out = outputs(class_logits([{10: 0.6, 36: 0.4}, {7: 0.6, 36: 0.4}]), [S, S], [LINE, POINT])
    [(queries, gts)] = HungarianMatcher()(out, [gt], [triplet_targets(gt, PLAIN)])
    assert queries.tolist() == [0, 1] and gts.tolist() == [1, 0]  # each degenerate box matched to its equal


def test_frames_without_ground_truth_get_empty_indices():
    out, gt = two_by_two()
    empty = target([], [])
    batch = ARNOutput(
        *(
            torch.cat([t, t])
            for t in (
                out.obj_logits,
                out.sub_boxes,
                out.obj_boxes,
                out.attention_logits,
                out.spatial_logits,
                out.contacting_logits,
            )
        )
    )
    indices = HungarianMatcher()(batch, [empty, gt], [triplet_targets(t, PLAIN) for t in (empty, gt)])
    assert [q.tolist() for q, _ in indices] == [[], [0, 1]]
    assert indices[0][1].numel() == 0 and indices[0][0].dtype == torch.long


def test_identity_matching_with_padding_queries():
    mask = torch.tensor([[True, True, False], [False, False, False]])
    gts = [target([11, 8], [[1, 0, 0], [0, 1, 0]]), target([], [])]
    indices = identity_matching(mask, gts)
    assert [(q.tolist(), g.tolist()) for q, g in indices] == [([0, 1], [0, 1]), ([], [])]
    out = outputs(torch.zeros(2, 3, 37), [S] * 6, [A] * 6, query_mask=mask)
    assert [q.tolist() for q, _ in HungarianMatcher()(out, gts, [{}, {}])] == [[0, 1], []]
    with pytest.raises(ValueError, match="first 1 real queries"):
        identity_matching(mask[:1], [target([11], [[1, 0, 0]])])


def test_matching_is_float32_under_autocast_and_rejects_nan():
    out, gt = two_by_two()
    branch = [triplet_targets(gt, PLAIN)]
    half = ARNOutput(
        *(
            t.to(torch.bfloat16)
            for t in (
                out.obj_logits,
                out.sub_boxes,
                out.obj_boxes,
                out.attention_logits,
                out.spatial_logits,
                out.contacting_logits,
            )
        )
    )
    reference = HungarianMatcher().cost_matrices(half, [gt], [branch[0]])[0]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        [(queries, gts)] = HungarianMatcher()(half, [gt], branch)
        cost = HungarianMatcher().cost_matrices(half, [gt], [branch[0]])[0]
    assert cost.dtype == torch.float32 and torch.equal(cost, reference)  # no bf16 arithmetic inside
    assert queries.tolist() == [0, 1] and gts.tolist() == [1, 0]
    out.obj_boxes[0, 0, 0] = math.nan
    with pytest.raises(ValueError, match="finite matching costs"):
        HungarianMatcher()(out, [gt], branch)


def test_matcher_validates_its_inputs():
    out, gt = two_by_two()
    with pytest.raises(ValueError, match="Expected 1 targets"):
        HungarianMatcher()(out, [gt, gt], [{}, {}])
    with pytest.raises(ValueError, match="non-negative matching weights"):
        HungarianMatcher(cost_class=-1)
    with pytest.raises(ValueError, match="not all zero"):
        HungarianMatcher(0, 0, 0, 0)
