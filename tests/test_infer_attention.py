"""Entity attention maps (arn_lightning.inference.attention) and checkpoint scoring (inference.evaluation)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from matplotlib.figure import Figure

from arn_lightning.inference.api import SceneGraphPredictor
from arn_lightning.inference.attention import (
    EntityAttention,
    FrameAttention,
    attention_figure,
    entity_attention,
    overlay_attention,
    pair_queries,
)
from arn_lightning.inference.clips import ClipJob
from arn_lightning.postprocess import scale_boxes
from arn_lightning.training.evaluation import evaluate_module
from arn_lightning.video.files import open_frames
from arn_lightning.vocab import PREDICATES
from infer_fixtures import TEST_DATA_SETTINGS, InferAssets, torch_threads

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]  # a tiny model: seconds per test

NUM_QUERIES = 4
BACKBONE_STRIDE = 32


@pytest.fixture(scope="module")
def items(assets: InferAssets, predictor: SceneGraphPredictor) -> list[FrameAttention]:
    with torch_threads(1):
        return entity_attention(predictor, list(open_frames(assets.video, 4))[:3])


def test_maps_cover_the_feature_cells_and_sum_to_one(items: list[FrameAttention]) -> None:
    height = math.ceil(TEST_DATA_SETTINGS["resize_shorter"] / BACKBONE_STRIDE)
    width = math.ceil(TEST_DATA_SETTINGS["resize_longer"] / BACKBONE_STRIDE)
    assert [item.frame.index for item in items] == [0, 1, 2]
    for item in items:
        assert item.maps.shape == (2 * NUM_QUERIES, height, width)
        torch.testing.assert_close(item.maps.sum(dim=(1, 2)), torch.ones(2 * NUM_QUERIES))


def test_pairs_map_to_the_queries_whose_boxes_they_are(assets: InferAssets, predictor: SceneGraphPredictor) -> None:
    frames = list(open_frames(assets.video, 4))[:2]
    job = ClipJob(tuple(predictor.prepare(f) for f in frames), (0, 1))
    with EntityAttention(predictor.model) as recorder:
        predicted = predictor.predict_clips([job])
    assert len(predicted) == len(frames) == 2
    for i, (prepared, prediction) in enumerate(predicted):
        size = prepared.orig_size
        queries = pair_queries(recorder.outputs, i, prediction, size)
        assert sorted(queries.tolist()) == list(range(NUM_QUERIES))  # every query kept, each once
        for pair, query in enumerate(queries.tolist()):
            sub_row, obj_row = prediction["pairs"][pair].tolist()
            for row, boxes in ((sub_row, recorder.outputs.sub_boxes), (obj_row, recorder.outputs.obj_boxes)):
                expected = scale_boxes(boxes[i, query : query + 1].float(), size, True)[0]
                assert torch.equal(prediction["boxes"][row], expected)


def test_recording_changes_no_prediction_and_removes_its_hooks(
    assets: InferAssets, predictor: SceneGraphPredictor
) -> None:
    frames = list(open_frames(assets.video, 4))[:2]
    plain = [graph.prediction for _, graph in predictor.stream(frames)]
    recorded = [item.graph.prediction for item in entity_attention(predictor, frames)]
    assert len(plain) == len(recorded) == len(frames) == 2
    for a, b in zip(plain, recorded, strict=True):
        torch.testing.assert_close(a["contacting"], b["contacting"])
    attention = predictor.model.entity.decoder.layers[-1].multihead_attn
    assert not attention._forward_pre_hooks and not attention._forward_hooks
    assert not predictor.model._forward_hooks and not predictor.model.backbone._forward_hooks


def test_overlay_and_figure(items: list[FrameAttention]) -> None:
    item = items[0]
    subject_map, object_map = item.pair_maps(item.top_pair())
    overlay = overlay_attention(item.frame.image, subject_map)
    assert overlay.size == item.frame.image.size and overlay.mode == "RGB"
    assert overlay.tobytes() != item.frame.image.tobytes()
    figure = attention_figure(item)
    assert isinstance(figure, Figure) and len(figure.axes) == 3
    assert figure.axes[1].get_title() == "subject query attention"


def test_top_pair_is_the_pair_of_the_best_triplet(items: list[FrameAttention]) -> None:
    for item in items:
        best = item.graph.triplets[0]
        pair = item.graph.prediction["pairs"][item.top_pair()].tolist()
        assert set(pair) == {best.subject_row, best.object_row}


def test_evaluate_module_scores_the_test_split(
    assets: InferAssets, predictor: SceneGraphPredictor, tmp_path: Path
) -> None:
    metrics = evaluate_module(predictor.module, assets.data_root, tmp_path)
    assert 0.0 <= metrics["with/R@20"] <= 1.0 and 0.0 <= metrics["no/mR@50"] <= 1.0
    assert all(f"per_predicate/with/R@20/{name}" in metrics for name in PREDICATES)
    assert (tmp_path / "predictions_test.jsonl").is_file()
    assert predictor.module.hparams.get("predictions_dir") is None  # restored
