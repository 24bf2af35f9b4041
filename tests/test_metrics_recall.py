"""The torchmetrics class against the functional core: same numbers, any batching, resets, input forms."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torchmetrics.utilities.data import dim_zero_sum

from arn_lightning import vocab
from arn_lightning.benchmarks.metrics import random_frames
from arn_lightning.metrics.functional import FIXED_POINT_BITS, RecallConfig, scene_graph_recall, state_shapes
from arn_lightning.metrics.predictions import prediction_from_ground_truth, prediction_to_json
from arn_lightning.metrics.recall import SceneGraphRecall


@pytest.fixture(scope="module")
def frames():
    return random_frames(48, num_pairs=20, seed=3)


def assert_same(left, right) -> None:
    assert list(left) == list(right)
    for key in left:
        assert torch.equal(left[key], right[key]), key


def test_metric_equals_functional_whatever_the_batching(frames) -> None:
    preds, targets = frames
    expected = scene_graph_recall(preds, targets)
    metric = SceneGraphRecall()
    for start, stop in ((0, 1), (1, 17), (17, 17), (17, 48)):  # uneven batches, one of them empty
        metric.update(preds[start:stop], targets[start:stop])
    results = metric.compute()
    assert_same(results, expected)
    assert 0.0 < results["no/R@20"].item() < 1.0 and results["no/R@100"] >= results["no/R@20"]
    assert len(results) == len(metric.result_names) == 3 * 4 * (4 + vocab.NUM_PREDICATES)
    assert metric.frames.item() == 48


def test_states_are_fixed_size_int64_sums(frames) -> None:
    preds, targets = frames
    metric = SceneGraphRecall(constraints=("with", "no"), k_values=(5, 50))
    shapes = {name: tuple(getattr(metric, name).shape) for name in state_shapes(metric.config)}
    metric.update(preds, targets)
    for name, shape in shapes.items():
        state = getattr(metric, name)
        assert state.dtype == torch.int64 and tuple(state.shape) == shape
        assert metric._reductions[name] is dim_zero_sum  # dist_reduce_fx="sum"
    # R@K from the fixed-point state: within 2**-33 per frame of the float mean
    exact = np.mean(
        [
            scene_graph_recall([p], [t], RecallConfig(("with", "no"), (5, 50)))["with/R@5"].item()
            for p, t in zip(preds, targets, strict=True)
        ]
    )
    assert abs(metric.compute()["with/R@5"].item() - exact) <= 2.0 ** -(FIXED_POINT_BITS + 1)


def test_reset_and_forward(frames) -> None:
    preds, targets = frames
    metric = SceneGraphRecall(per_predicate=False)
    metric.update(preds[:10], targets[:10])
    metric.reset()
    batch_value = metric(preds[10:20], targets[10:20])  # forward: this batch's value, also accumulated
    assert_same(batch_value, scene_graph_recall(preds[10:20], targets[10:20], per_predicate=False))
    metric.update(preds[20:30], targets[20:30])
    assert_same(metric.compute(), scene_graph_recall(preds[10:30], targets[10:30], per_predicate=False))


def test_accepts_json_lists_and_numpy(frames) -> None:
    preds, targets = frames
    as_json = [json.loads(json.dumps(prediction_to_json(p))) for p in preds[:8]]
    as_numpy = [{k: v.numpy() if isinstance(v, torch.Tensor) else v for k, v in t.items()} for t in targets[:8]]
    assert_same(scene_graph_recall(as_json, as_numpy), scene_graph_recall(preds[:8], targets[:8]))


def test_oracle_predictions(frames) -> None:
    _, targets = frames
    metric = SceneGraphRecall(k_values=(100,))
    metric.update([prediction_from_ground_truth(t) for t in targets], targets)
    results = metric.compute()
    assert results["no/R@100"].item() == 1.0 and results["no/mR@100"].item() == pytest.approx(
        (metric.gt_counts > 0).sum().item() / vocab.NUM_PREDICATES
    )
    assert results["with/R@100"].item() < 1.0  # several spatial / contacting labels per object


def test_update_errors_name_the_frame(frames) -> None:
    preds, targets = frames
    metric = SceneGraphRecall()
    bad = dict(preds[2], attention=preds[2]["attention"] + 1.0)
    with pytest.raises(ValueError, match=r"Expected preds\[2\]\['attention'\] in \[0, 1\] but got"):
        metric.update(preds[:2] + [bad], targets[:3])
    metric = SceneGraphRecall(validate_args=False)  # values are not checked, shapes still are
    metric.update(preds[:2] + [bad], targets[:3])
    with pytest.raises(ValueError, match=r"targets\[0\] to have the keys"):
        metric.update(preds[:1], [{"boxes": targets[0]["boxes"]}])
