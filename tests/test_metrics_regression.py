"""The evaluator's numbers are frozen: fingerprints of every result (R, mR, mR_per_frame, hmean, per predicate) of
the implementation before the speed-up (issue 11), on 100-pair SGDet-like frames, with and without score ties,
ragged pair counts and both IoU conventions. Any change of any value to the last bit changes the fingerprint."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from arn_lightning import vocab
from arn_lightning.benchmarks.metrics import random_prediction, random_target
from arn_lightning.metrics.functional import RecallConfig, frame_hits, scene_graph_recall
from arn_lightning.metrics.recall import SceneGraphRecall


def frames(count: int, seed: int, pairs: tuple[int, int], ties: bool):
    """``count`` frames with ``pairs[0]..pairs[1]`` pairs; ``ties``: coarse scores (many exact ties)."""
    rng = np.random.default_rng(seed)
    preds, targets = [], []
    for index in range(count):
        target = random_target(rng, f"v{seed}.mp4/{index:06d}.png")
        pred = random_prediction(rng, target, int(rng.integers(pairs[0], pairs[1] + 1)))
        if ties:
            for kind in vocab.PREDICATE_TYPES:
                pred[kind] = (pred[kind] * 8).round() / 8
            pred["scores"] = (pred["scores"] * 2).round().clamp(min=1) / 2
        preds.append(pred)
        targets.append(target)
    return preds, targets


def fingerprint(results: dict[str, torch.Tensor]) -> str:
    keys = "\n".join(results).encode()
    values = np.array([value.item() for value in results.values()], dtype=np.float64).tobytes()
    return hashlib.sha256(keys + values).hexdigest()[:16]


CASES = {
    "default": ((64, 1, (100, 100), False), {}),
    "legacy": ((64, 2, (100, 100), False), {"iou_convention": "legacy"}),
    "ties": ((64, 3, (100, 100), True), {"k_values": (1, 5, 10, 20, 50, 100)}),
    "ragged": (
        (64, 4, (0, 120), False),
        {"constraints": ("no", "semi"), "no_constraint_top": 50, "k_values": (3, 20, 60), "semi_threshold": 0.8},
    ),
    "ragged_ties": ((64, 5, (0, 40), True), {"iou_convention": "legacy", "iou_threshold": 0.3}),
}
EXPECTED = {
    "default": "09aaf329a33ecbe7",
    "legacy": "102941b2f2ce62a7",
    "ties": "a0ae65517836a524",
    "ragged": "c39027e6073eaf87",
    "ragged_ties": "8473f39b264e0250",
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_results_equal_the_previous_implementation_bit_for_bit(case: str) -> None:
    (count, seed, pairs, ties), options = CASES[case]
    preds, targets = frames(count, seed, pairs, ties)
    config = RecallConfig(**options)
    results = scene_graph_recall(preds, targets, config)
    assert fingerprint(results) == EXPECTED[case]
    metric = SceneGraphRecall(**options)  # any batching: the same numbers
    for start in range(0, count, 23):
        metric.update(preds[start : start + 23], targets[start : start + 23])
    assert fingerprint(metric.compute()) == EXPECTED[case]
    assert frame_hits(preds, targets, config).hits.sum() > 0
