"""The batched cost computation of :class:`arn_lightning.matcher.HungarianMatcher` against the per-frame one."""

from __future__ import annotations

import pytest
import torch

from arn_lightning.matcher import HungarianMatcher, assign
from arn_lightning.models.outputs import ARNOutput
from matcher_reference import cost_matrix

K = {"attention": 5, "spatial": 7, "contacting": 11}


def random_batch(seed: int, frames: int = 12, queries: int = 20, dtype: torch.dtype = torch.float32):
    """Random outputs ``[BT, Q, ...]`` and per-frame targets with 0..8 GT pairs (some empty frames, tied and
    degenerate boxes included)."""
    g = torch.Generator().manual_seed(seed)

    def boxes(n: int) -> torch.Tensor:  # normalised cxcywh, some zero-sized
        b = torch.rand(n, 4, generator=g) * 0.5 + 0.25
        b[torch.rand(n, generator=g) < 0.1, 2:] = 0.0
        return b

    out = ARNOutput(
        torch.randn(frames, queries, 37, generator=g).to(dtype),
        boxes(frames * queries).view(frames, queries, 4).to(dtype),
        boxes(frames * queries).view(frames, queries, 4).to(dtype),
        *(torch.randn(frames, queries, K[kind], generator=g).to(dtype) for kind in K),
    )
    targets, branch = [], []
    for _ in range(frames):
        n = int(torch.randint(0, 9, (1,), generator=g))
        targets.append(
            {"obj_labels": torch.randint(1, 37, (n,), generator=g), "sub_boxes": boxes(n), "obj_boxes": boxes(n)}
        )
        branch.append({kind: (torch.rand(n, k, generator=g) < 0.3).float() for kind, k in K.items()} if n else {})
    if frames > 1:  # a frame whose GT pairs are all the same: ties between columns
        targets[1] = {key: value[:1].repeat(4, *([1] * (value.dim() - 1))) for key, value in targets[0].items()}
        branch[1] = {kind: value[:1].repeat(4, 1) for kind, value in branch[0].items()} if branch[0] else {}
    return out, targets, branch


@pytest.mark.parametrize("seed", range(6))
def test_batched_costs_and_assignments_equal_the_per_frame_path(seed: int) -> None:
    out, targets, branch = random_batch(seed)
    matcher = HungarianMatcher()
    batched = matcher.cost_matrices(out, targets, branch)
    indices = matcher(out, targets, branch)
    assert len(batched) == len(indices) == len(targets)
    worst = 0.0
    for i, (target, cost) in enumerate(zip(targets, batched)):
        n = int(target["obj_labels"].numel())
        assert cost.shape == (out.obj_logits.shape[1], n) and cost.dtype == torch.float32
        if n == 0:
            assert indices[i][0].numel() == indices[i][1].numel() == 0
            continue
        reference = cost_matrix(matcher, out, i, target, branch[i])
        worst = max(worst, float((cost - reference).abs().max()))
        expected_rows, expected_cols = assign(reference)
        assert torch.equal(indices[i][0], expected_rows) and torch.equal(indices[i][1], expected_cols)
    assert worst <= 1e-6


def test_batched_matching_under_bf16_autocast_is_float32() -> None:
    out, targets, branch = random_batch(7, dtype=torch.bfloat16)
    matcher = HungarianMatcher()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        batched = matcher.cost_matrices(out, targets, branch)
        indices = matcher(out, targets, branch)
    for i, (target, cost) in enumerate(zip(targets, batched)):
        assert cost.dtype == torch.float32
        if target["obj_labels"].numel():
            reference = cost_matrix(matcher, out, i, target, branch[i])
            torch.testing.assert_close(cost, reference, atol=1e-6, rtol=0)
            assert torch.equal(indices[i][1], assign(reference)[1])


def test_all_frames_empty() -> None:
    out, targets, branch = random_batch(0, frames=3)
    empty = {
        "obj_labels": torch.zeros(0, dtype=torch.long),
        "sub_boxes": torch.zeros(0, 4),
        "obj_boxes": torch.zeros(0, 4),
    }
    indices = HungarianMatcher()(out, [empty] * 3, [{}] * 3)
    assert all(q.numel() == 0 and g.numel() == 0 for q, g in indices)
