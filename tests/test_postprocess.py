"""Postprocess: eq. 15, box scaling, rows / pairs layout, SGCls / PredCls, JSON conversion."""

import json
import math

import pytest
import torch

from arn_lightning.boxes import invalid_box_mask
from arn_lightning.metrics.predictions import encode_prediction, prediction_to_json, write_predictions
from arn_lightning.models.outputs import ARNOutput
from arn_lightning.postprocess import PostProcess, PostProcessConfig, predicate_scores, scale_boxes
from arn_lightning.triplets import TripletVocabulary
from output_fixtures import class_logits

TRIPLETS = TripletVocabulary.from_categories(
    {"attention": [[0, 11], [1, 11]], "spatial": [[5, 11]], "contacting": [[14, 11], [14, 8]]}
)


def logit(p):
    return math.log(p / (1 - p))


def sgdet_outputs():
    """q0: cup (0.8), looking_at 0.6 / not_looking_at 0.2, in_front_of 0.9, holding-cup 0.5 / holding-chair 0.1.
    q1: chair (0.3), every triplet 0.4, object box over the right edge."""
    obj_logits = class_logits([{10: 0.8, 36: 0.2}, {7: 0.3, 36: 0.7}])[None]
    sub = torch.tensor([[[0.5, 0.5, 0.2, 0.2], [0.5, 0.5, 0.2, 0.2]]])
    obj = torch.tensor([[[0.25, 0.25, 0.1, 0.1], [0.95, 0.5, 0.2, 0.2]]])
    att = torch.tensor([[[logit(0.6), logit(0.2)], [logit(0.4)] * 2]])
    spa = torch.tensor([[[logit(0.9)], [logit(0.4)]]])
    con = torch.tensor([[[logit(0.5), logit(0.1)], [logit(0.4)] * 2]])
    return ARNOutput(obj_logits, sub, obj, att, spa, con)


def frame(key="v.mp4/000001.png", evaluate=True, **extra):
    return {"frame": key, "orig_size": torch.tensor([100, 200]), "evaluate": evaluate, **extra}


def test_predicate_scores_take_the_max_over_the_predicates_triplets():
    probs = torch.tensor([[0.9, 0.3, 0.6]])
    predicates, objects = torch.tensor([0, 0, 1]), torch.tensor([11, 8, 11])
    assert predicate_scores(probs, predicates, objects, "attention").tolist() == [
        [pytest.approx(0.9), pytest.approx(0.6), 0.0]
    ]
    restricted = predicate_scores(probs, predicates, objects, "attention", labels=torch.tensor([8]))
    assert restricted.tolist() == [[pytest.approx(0.3), 0.0, 0.0]]
    assert predicate_scores(torch.zeros(2, 0), predicates[:0], objects[:0], "spatial").shape == (2, 6)


def test_sgdet_frame_layout_scores_and_boxes():
    [pred] = PostProcess(PostProcessConfig(), TRIPLETS)(sgdet_outputs(), [frame()])
    assert pred["frame"] == "v.mp4/000001.png"
    torch.testing.assert_close(
        pred["boxes"],
        torch.tensor(
            [[80.0, 40.0, 120.0, 60.0], [80.0, 40.0, 120.0, 60.0], [40.0, 20.0, 60.0, 30.0], [170.0, 40.0, 200.0, 60.0]]
        ),
    )
    assert pred["labels"].tolist() == [1, 1, 11, 8]
    torch.testing.assert_close(pred["scores"], torch.tensor([1.0, 1.0, 0.8, 0.3]))
    assert pred["pairs"].tolist() == [[0, 2], [1, 3]]
    torch.testing.assert_close(pred["attention"], torch.tensor([[0.75, 0.25, 0.0], [0.5, 0.5, 0.0]]))
    assert pred["spatial"][0].tolist() == pytest.approx([0, 0, 0.9, 0, 0, 0])
    assert pred["contacting"][0, 5].item() == pytest.approx(0.5)  # max(holding-cup 0.5, holding-chair 0.1)
    assert pred["contacting"].sum(dim=1).tolist() == pytest.approx([0.5, 0.4])


def test_pairs_are_ranked_and_truncated_by_their_best_triplet_score():
    out = sgdet_outputs()
    swapped = ARNOutput(
        *(
            getattr(out, f).flip(1)
            for f in ("obj_logits", "sub_boxes", "obj_boxes", "attention_logits", "spatial_logits", "contacting_logits")
        )
    )
    [pred] = PostProcess(PostProcessConfig(), TRIPLETS)(swapped, [frame()])
    assert pred["labels"].tolist() == [1, 1, 11, 8]  # cup pair (0.8 x 0.9) before chair pair (0.3 x 0.5)
    [top] = PostProcess(PostProcessConfig(top_k_pairs=1), TRIPLETS)(swapped, [frame()])
    assert top["labels"].tolist() == [1, 11] and top["pairs"].tolist() == [[0, 1]]
    assert top["scores"].tolist() == pytest.approx([1.0, 0.8])


def test_restriction_to_the_predicted_object_class():
    [pred] = PostProcess(PostProcessConfig(restrict_to_object_class=True), TRIPLETS)(sgdet_outputs(), [frame()])
    assert pred["attention"][1].tolist() == [0.0, 0.0, 0.0]  # chair: no attention triplet with a chair
    assert pred["contacting"][1, 5].item() == pytest.approx(0.4)  # holding-chair exists
    assert pred["spatial"][1].sum().item() == 0.0


def test_unclipped_boxes_and_unnormalised_attention():
    config = PostProcessConfig(clip_boxes=False, normalize_attention=False)
    [pred] = PostProcess(config, TRIPLETS)(sgdet_outputs(), [frame()])
    assert pred["boxes"][3].tolist() == pytest.approx([170.0, 40.0, 210.0, 60.0])
    assert pred["attention"][0].tolist() == pytest.approx([0.6, 0.2, 0.0])


def given_outputs():
    out = sgdet_outputs()
    pad = lambda t: torch.cat((t, t[:, :1]), dim=1)  # noqa: E731 - a third, padding query
    return ARNOutput(
        pad(out.obj_logits),
        pad(out.sub_boxes),
        pad(out.obj_boxes),
        pad(out.attention_logits),
        pad(out.spatial_logits),
        pad(out.contacting_logits),
        query_mask=torch.tensor([[True, True, False]]),
    )


GT = {
    "boxes": torch.tensor([[0.0, 0.0, 50.0, 90.0], [10.0, 10.0, 20.0, 20.0], [30.0, 30.0, 60.0, 70.0]]),
    "labels": torch.tensor([1, 11, 31]),
}


def test_predcls_uses_ground_truth_boxes_and_labels():
    post = PostProcess(PostProcessConfig(restrict_to_object_class=True), TRIPLETS, task="predcls")
    [pred] = post(given_outputs(), [frame(**GT)])
    assert torch.equal(pred["boxes"], GT["boxes"])
    assert pred["labels"].tolist() == [1, 11, 31] and pred["scores"].tolist() == [1.0, 1.0, 1.0]
    assert pred["pairs"].tolist() == [[0, 1], [0, 2]]
    assert pred["attention"][0].tolist() == pytest.approx([0.75, 0.25, 0.0])
    assert pred["contacting"][1].sum().item() == 0.0  # sofa: restricted to sofa triplets, there are none


def test_sgcls_predicts_the_object_classes_on_ground_truth_boxes():
    [pred] = PostProcess(PostProcessConfig(), TRIPLETS, task="sgcls")(given_outputs(), [frame(**GT)])
    assert pred["labels"].tolist() == [1, 11, 8]
    assert pred["scores"].tolist() == pytest.approx([1.0, 0.8, 0.3])
    assert pred["spatial"].shape == (2, 6)
    with pytest.raises(ValueError, match="sgcls or predcls"):
        PostProcess(PostProcessConfig(), TRIPLETS, task="sgdet")(given_outputs(), [frame(**GT)])


def test_only_evaluated_frames_and_json_conversion():
    out = sgdet_outputs()
    both = ARNOutput(
        *(
            torch.cat([getattr(out, f)] * 2)
            for f in ("obj_logits", "sub_boxes", "obj_boxes", "attention_logits", "spatial_logits", "contacting_logits")
        )
    )
    targets = [frame("a.mp4/000001.png", evaluate=False), frame("a.mp4/000002.png")]
    post = PostProcess(PostProcessConfig(), TRIPLETS)
    assert [p["frame"] for p in post(both, targets, only_evaluated=True)] == ["a.mp4/000002.png"]
    assert len(post(both, targets)) == 2
    line = json.loads(json.dumps(encode_prediction(post(both, targets)[1])))
    assert line["labels"] == [1, 1, 11, 8] and line["pairs"] == [[0, 2], [1, 3]]
    assert len(line["contacting"][0]) == 17 and line["frame"] == "a.mp4/000002.png"
    with pytest.raises(ValueError, match="one per frame"):
        post(both, targets[:1])


def test_config_validation():
    with pytest.raises(ValueError, match="top_k_pairs"):
        PostProcessConfig(top_k_pairs=0)
    with pytest.raises(ValueError, match="task"):
        PostProcess(PostProcessConfig(), TRIPLETS, task="detection")
    with pytest.raises(ValueError, match="TripletVocabulary"):
        PostProcess(PostProcessConfig(), None)


# ------------------------------------------------------------------------------- valid boxes, finite outputs
FIELDS = ("obj_logits", "sub_boxes", "obj_boxes", "attention_logits", "spatial_logits", "contacting_logits")


def two_frames(**changes):
    """``sgdet_outputs`` twice (frames a.mp4/000001 and 000002); ``changes``: field -> (frame, query, value)."""
    out = sgdet_outputs()
    values = {f: torch.cat([getattr(out, f)] * 2).clone() for f in FIELDS}
    for field, (frame_index, query, value) in changes.items():
        values[field][frame_index, query] = value
    return ARNOutput(*(values[f] for f in FIELDS)), [frame("a.mp4/000001.png"), frame("a.mp4/000002.png")]


def test_detect_takes_keys_and_sizes_and_gives_the_training_forwards_predictions():
    outputs, targets = two_frames()
    targets[1]["orig_size"] = torch.tensor([60, 90])  # frames of different sizes
    keys, sizes = [t["frame"] for t in targets], torch.stack([t["orig_size"] for t in targets])
    post = PostProcess(PostProcessConfig(top_k_pairs=1), TRIPLETS)
    trained = post(outputs, targets)
    for detected in (post.detect(outputs, keys, sizes), post.detect(outputs, keys, sizes, rows=[0, 1])):
        assert [p["frame"] for p in detected] == keys
        for got, expected in zip(detected, trained):
            assert all(torch.equal(got[k], expected[k]) for k in expected if k != "frame")  # bit for bit
    skipped = [{**targets[0], "evaluate": False}, targets[1]]
    [only] = post.detect(outputs, keys, sizes, rows=[1])
    [evaluated] = post(outputs, skipped, only_evaluated=True)
    assert only["frame"] == "a.mp4/000002.png" and torch.equal(only["boxes"], evaluated["boxes"])
    assert only["boxes"][:, 2].max().item() <= 90  # scaled by the second frame's own size
    assert encode_prediction(only) == prediction_to_json(only)  # the JSON line, without the metric's validation


def test_detect_refuses_what_it_cannot_predict():
    outputs, targets = two_frames(obj_logits=(1, 0, float("nan")))
    keys, sizes = [t["frame"] for t in targets], torch.stack([t["orig_size"] for t in targets])
    post = PostProcess(PostProcessConfig(), TRIPLETS)
    with pytest.raises(ValueError, match=r"Expected 2 frame keys and orig_sizes of shape \[2, 2\] \(h, w\) but got 1"):
        post.detect(outputs, keys[:1], sizes)
    with pytest.raises(ValueError, match=r"orig_sizes of shape \[2, 2\] .* shape \[2\]"):
        post.detect(outputs, keys, sizes[0])
    with pytest.raises(ValueError, match=r"Expected rows in 0..1 but got \[2\]"):
        post.detect(outputs, keys, sizes, rows=[2])
    with pytest.raises(ValueError, match="non-finite obj_logits"):
        post.detect(outputs, keys, sizes)  # frame 1 is predicted: its NaN is found, naming it
    assert [p["frame"] for p in post.detect(outputs, keys, sizes, rows=[0])] == ["a.mp4/000001.png"]
    with pytest.raises(ValueError, match="Expected an SGDet model's outputs without a query mask but got task 'sgcls'"):
        PostProcess(PostProcessConfig(), TRIPLETS, task="sgcls").detect(outputs, keys, sizes)


@pytest.mark.parametrize(
    "field, value, message",
    [
        (
            "sub_boxes",
            float("nan"),
            r"Expected sub_boxes of frame 'a.mp4/000002.png' to give an xyxy box .* but got "
            r"\[nan, .*\(a non-finite coordinate\) at query 1, from the model's normalised cxcywh",
        ),
        ("obj_boxes", float("inf"), r"Expected obj_boxes of frame 'a.mp4/000002.png' .*\(a non-finite coordinate\)"),
        (
            "obj_logits",
            float("nan"),
            r"Expected finite model outputs for frame 'a.mp4/000002.png' but got non-finite "
            r"obj_logits",
        ),
        ("spatial_logits", float("-inf"), r"frame 'a.mp4/000002.png' but got non-finite spatial_logits"),
    ],
)
def test_non_finite_model_outputs_raise_naming_the_frame(field, value, message, tmp_path):
    outputs, targets = two_frames(**{field: (1, 1, value)})
    post = PostProcess(PostProcessConfig(), TRIPLETS)
    with pytest.raises(ValueError, match=message):
        post(outputs, targets)
    path = tmp_path / "p.jsonl"
    with pytest.raises(ValueError):  # nothing reaches a prediction file
        write_predictions(path, post(outputs, targets))
    assert not path.exists()
    assert [
        p["frame"] for p in post(outputs, targets[:1] + [{**targets[1], "evaluate": False}], only_evaluated=True)
    ] == ["a.mp4/000001.png"]  # a skipped frame is not checked


def test_negative_box_size_from_the_model_raises():
    outputs, targets = two_frames(obj_boxes=(0, 0, torch.tensor([0.5, 0.5, -0.1, 0.2])))
    with pytest.raises(
        ValueError,
        match=r"obj_boxes of frame 'a.mp4/000001.png' .*\(x2 < x1\) at query 0, "
        r"from the model's normalised cxcywh \[0.5, 0.5, -0.1",
    ):
        PostProcess(PostProcessConfig(clip_boxes=False), TRIPLETS)(outputs, targets)


@pytest.mark.parametrize("clip", [True, False])
def test_sigmoid_boxes_always_obey_the_box_rule(clip):
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 50, 4, generator=generator) * 30  # many saturate to exactly 0 or 1
    boxes = scale_boxes(logits.sigmoid(), torch.tensor([[480, 640]] * 4), clip)  # [4, 50, 4] xyxy px
    assert not invalid_box_mask(boxes).any()
    assert ((boxes[..., 2] - boxes[..., 0]) == 0).any()  # degenerate (width 0) boxes occur, and are valid
    torch.testing.assert_close(boxes[1], scale_boxes(logits[1].sigmoid(), torch.tensor([480, 640]), clip))


def test_unused_padding_queries_are_not_checked_but_ground_truth_boxes_are():
    outputs = given_outputs()
    outputs.spatial_logits[0, 2] = float("nan")  # the padding query (query_mask False)
    [pred] = PostProcess(PostProcessConfig(), TRIPLETS, task="sgcls")(outputs, [frame(**GT)])
    assert torch.isfinite(pred["spatial"]).all()
    outputs.spatial_logits[0, 1] = float("nan")
    with pytest.raises(ValueError, match="non-finite spatial_logits"):
        PostProcess(PostProcessConfig(), TRIPLETS, task="sgcls")(outputs, [frame(**GT)])
    inverted = {**GT, "boxes": GT["boxes"].clone()}
    inverted["boxes"][2] = torch.tensor([60.0, 30.0, 30.0, 70.0])
    with pytest.raises(
        ValueError,
        match=r"ground-truth boxes of frame 'v.mp4/000001.png' .* but got row 2 "
        r"\[60.0, 30.0, 30.0, 70.0\] \(x2 < x1\)",
    ):
        PostProcess(PostProcessConfig(), TRIPLETS, task="predcls")(given_outputs(), [frame(**inverted)])
    one = given_outputs()
    two = ARNOutput(*(torch.cat([getattr(one, f)] * 2) for f in FIELDS), query_mask=one.query_mask.repeat(2, 1))
    nan_row = {**GT, "boxes": GT["boxes"].clone()}
    nan_row["boxes"][1, 0] = float("nan")
    targets = [frame("v.mp4/000001.png", **GT), frame("v.mp4/000002.png", **nan_row)]
    with pytest.raises(ValueError, match=r"frame 'v.mp4/000002.png' .* got row 1 \[nan, 10.0, 20.0, 20.0\]"):
        PostProcess(PostProcessConfig(), TRIPLETS, task="predcls")(two, targets)
    targets[1]["evaluate"] = False
    assert len(PostProcess(PostProcessConfig(), TRIPLETS, task="predcls")(two, targets, only_evaluated=True)) == 1


def test_inference_builds_no_training_target():
    """Inference predicts from keys and sizes (``PostProcess.detect``): no module of ``inference/`` names a batch's
    ``targets`` or a target's ``evaluate`` flag, and each predictor calls ``detect``."""
    from pathlib import Path

    import arn_lightning.inference as inference

    sources = {p.name: p.read_text() for p in Path(inference.__file__).parent.glob("*.py")}
    assert len(sources) >= 8  # the walk saw the package
    for name, text in sources.items():
        assert '"targets"' not in text and '"evaluate"' not in text and "only_evaluated" not in text, name
    for name in ("api.py", "streaming.py", "onnx_predictor.py"):
        assert "postprocess.detect(" in sources[name], name
