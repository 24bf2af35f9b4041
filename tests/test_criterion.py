"""Every loss term by hand, the aux suffixes, frames without ground truth and the single weighting point."""

import math

import pytest
import torch

from arn_lightning.criterion import LossConfig, SetCriterion, world_mean_count
from arn_lightning.models.outputs import ARNOutput
from arn_lightning.triplets import TripletVocabulary, triplet_targets

S = [0.5, 0.5, 0.2, 0.2]
TRIPLETS = TripletVocabulary.from_categories(
    {"attention": [[0, 11], [1, 11]], "spatial": [[5, 11]], "contacting": [[14, 11]]}
)
LN2 = math.log(2.0)


def frame_target(n=1, obj=(0.4, 0.3, 0.2, 0.2)):
    """n pairs (person, cup): looking_at, in_front_of, no contacting."""
    return {
        "obj_labels": torch.full((n,), 11, dtype=torch.long),
        "sub_boxes": torch.tensor([S] * n).reshape(n, 4),
        "obj_boxes": torch.tensor([list(obj)] * n).reshape(n, 4),
        "attention": torch.tensor([[1, 0, 0]] * n).reshape(n, 3),
        "spatial": torch.tensor([[0, 0, 1, 0, 0, 0]] * n).reshape(n, 6),
        "contacting": torch.zeros(n, 17, dtype=torch.long),
    }


def make_outputs(frames=1, queries=2, sizes=(2, 1, 1), **overrides):
    values = {
        "obj_logits": torch.zeros(frames, queries, 37),
        "sub_boxes": torch.tensor(S).repeat(frames, queries, 1),
        "obj_boxes": torch.tensor([0.3, 0.3, 0.2, 0.2]).repeat(frames, queries, 1),
        "attention_logits": torch.zeros(frames, queries, sizes[0]),
        "spatial_logits": torch.zeros(frames, queries, sizes[1]),
        "contacting_logits": torch.zeros(frames, queries, sizes[2]),
    }
    values.update(overrides)
    return ARNOutput(**values)


FIRST = [(torch.tensor([0]), torch.tensor([0]))]  # query 0 <-> GT pair 0


def test_loss_obj_ce_by_hand():
    logits = torch.zeros(1, 2, 37)
    logits[0, 0, 10] = 2.0  # query 0 favours AG 11 (class 10), its matched label
    out = make_outputs(obj_logits=logits)
    criterion = SetCriterion(LossConfig(eos_coef=0.1), TRIPLETS)
    matched = math.log(math.exp(2) + 36) - 2.0
    no_object = math.log(37.0)  # query 1 -> "no object", weight 0.1
    loss = criterion.loss_obj_ce(out, [frame_target()], FIRST)["loss_obj_ce"]
    assert loss.item() == pytest.approx((matched + 0.1 * no_object) / 1.1, rel=1e-5)
    masked = make_outputs(obj_logits=logits, query_mask=torch.tensor([[True, False]]))
    assert criterion.loss_obj_ce(masked, [frame_target()], FIRST)["loss_obj_ce"].item() == pytest.approx(matched)


def test_loss_boxes_by_hand():
    criterion = SetCriterion(LossConfig(), TRIPLETS)
    losses = criterion.loss_boxes(make_outputs(), [frame_target()], FIRST, num_pairs=2.0)
    # object: pred xyxy [.2,.2,.4,.4] vs GT [.3,.2,.5,.4]: L1 0.1, IoU = GIoU = 0.02 / 0.06 = 1/3
    expected = {"loss_sub_bbox": 0.0, "loss_obj_bbox": 0.1 / 2, "loss_sub_giou": 0.0, "loss_obj_giou": (2 / 3) / 2}
    assert {k: v.item() for k, v in losses.items()} == pytest.approx(expected, abs=1e-5)


def test_giou_loss_of_degenerate_boxes_is_finite_with_finite_gradients():
    """A zero-area box equal to its target costs 0 (torchvision's eps formula said 1); no NaN value or gradient."""
    point, line = [0.4, 0.3, 0.0, 0.0], [0.4, 0.3, 0.0, 0.2]
    criterion = SetCriterion(LossConfig(), TRIPLETS)
    for pred_box, gt_box, expected in (
        (point, point, 0.0),
        (line, line, 0.0),
        (point, line, 1.0),
        ([0.4, 0.8, 0.0, 0.2], line, 1.0),
    ):  # on one line, apart: hull area 0
        obj = torch.tensor([pred_box, [0.3, 0.3, 0.2, 0.2]])[None].requires_grad_(True)
        losses = criterion.loss_boxes(make_outputs(obj_boxes=obj), [frame_target(obj=gt_box)], FIRST, num_pairs=1.0)
        assert losses["loss_obj_giou"].item() == pytest.approx(expected, abs=1e-6), (pred_box, gt_box)
        (losses["loss_obj_giou"] + losses["loss_obj_bbox"]).backward()
        assert torch.isfinite(obj.grad).all()


def test_loss_predicate_focal_by_hand():
    criterion = SetCriterion(LossConfig(focal_alpha=0.25, focal_gamma=2.0), TRIPLETS)
    branch = [triplet_targets(frame_target(), TRIPLETS)]  # attention [1, 0], spatial [1], contacting [0]
    loss = criterion.loss_predicate(make_outputs(), branch, FIRST, num_pairs=1.0)["loss_predicate"]
    # logits 0 -> p = 0.5; 2 positives x 0.25 * 0.5^2 * ln2, 6 negatives (incl. query 1) x 0.75 * 0.5^2 * ln2
    assert loss.item() == pytest.approx((2 * 0.0625 + 6 * 0.1875) * LN2, rel=1e-5)
    halved = criterion.loss_predicate(make_outputs(), branch, FIRST, num_pairs=2.0)["loss_predicate"]
    assert halved.item() == pytest.approx(loss.item() / 2, rel=1e-6)


def test_loss_predicate_ce_baseline_by_hand():
    criterion = SetCriterion(LossConfig(predicate_loss="ce"), TRIPLETS)
    attention = torch.tensor([[[2.0, 0.0], [5.0, -5.0]]])  # query 1 is unmatched: no softmax term
    out = make_outputs(attention_logits=attention)
    branch = [triplet_targets(frame_target(), TRIPLETS)]
    loss = criterion.loss_predicate(out, branch, FIRST, num_pairs=1.0)["loss_predicate"]
    softmax_ce = math.log(1 + math.exp(-2.0))
    bce = 4 * LN2  # spatial and contacting: 2 queries x 1 column each, logits 0
    assert loss.item() == pytest.approx(softmax_ce + bce, rel=1e-5)


def test_focal_without_modulation_equals_the_bce_of_the_ce_variant():
    vocab = TripletVocabulary.from_categories(
        {"attention": [], "spatial": [[5, 11], [3, 11]], "contacting": [[14, 11]]}
    )
    out = make_outputs(sizes=(0, 2, 1), spatial_logits=torch.randn(1, 2, 2), contacting_logits=torch.randn(1, 2, 1))
    branch = [triplet_targets(frame_target(), vocab)]
    plain = SetCriterion(LossConfig(predicate_loss="focal", focal_gamma=0.0, focal_alpha=-1.0), vocab)
    ce = SetCriterion(LossConfig(predicate_loss="ce"), vocab)
    torch.testing.assert_close(
        plain.loss_predicate(out, branch, FIRST, 1.0)["loss_predicate"],
        ce.loss_predicate(out, branch, FIRST, 1.0)["loss_predicate"],
    )


def test_loss_distill_by_hand_and_skipped_without_inputs():
    criterion = SetCriterion(LossConfig(), TRIPLETS)
    out = make_outputs(predicate_embeds=torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    clip = torch.tensor([[0.5, 0.0], [0.0, 0.0]])
    assert criterion.loss_distill(out, clip)["loss_distill"].item() == pytest.approx(1.5 / 4)
    assert criterion.loss_distill(out, None) == {}
    assert criterion.loss_distill(make_outputs(), clip) == {}
    assert SetCriterion(LossConfig(), TRIPLETS, distill=False).loss_distill(out, clip) == {}
    with pytest.raises(ValueError, match="CLIP image embeddings of shape \\(2, 2\\)"):
        criterion.loss_distill(out, clip[:1])


def test_forward_with_aux_layers_and_a_frame_without_ground_truth():
    logits = torch.zeros(2, 3, 37, requires_grad=True)
    main = make_outputs(frames=2, queries=3, obj_logits=logits, predicate_embeds=torch.zeros(2, 4))
    aux = make_outputs(frames=2, queries=3)
    main.aux_outputs = [aux]
    empty = {k: v[:0] for k, v in frame_target().items()}
    criterion = SetCriterion(LossConfig(), TRIPLETS)
    losses = criterion(main, [frame_target(), empty], torch.full((2, 4), 0.5))
    names = ["loss_obj_ce", "loss_sub_bbox", "loss_obj_bbox", "loss_sub_giou", "loss_obj_giou", "loss_predicate"]
    assert set(losses) == {*names, "loss_distill", *(f"{n}_0" for n in names)}
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_distill"].item() == pytest.approx(0.5)
    assert losses["loss_obj_bbox"].item() == pytest.approx(0.1)  # one matched pair: num_pairs = 1
    criterion.weighted_total(losses).backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_batch_without_any_ground_truth_is_normalised_by_one():
    empty = {k: v[:0] for k, v in frame_target().items()}
    losses = SetCriterion(LossConfig(), TRIPLETS)(make_outputs(), [empty])
    assert losses["loss_obj_bbox"].item() == 0.0 and losses["loss_obj_giou"].item() == 0.0
    # all 2 x 4 columns negative at p = 0.5: 8 x 0.75 * 0.25 * ln2, divided by max(0 pairs, 1)
    assert losses["loss_predicate"].item() == pytest.approx(8 * 0.1875 * LN2, rel=1e-5)
    assert losses["loss_obj_ce"].item() == pytest.approx(math.log(37.0), rel=1e-5)


def test_weighted_total_applies_the_weights_in_one_place():
    criterion = SetCriterion(
        LossConfig(weight_obj_ce=1.0, weight_bbox=2.5, weight_predicate=2.0, weight_distill=20.0), TRIPLETS
    )
    losses = {
        "loss_obj_ce": torch.tensor(1.0),
        "loss_sub_bbox": torch.tensor(2.0),
        "loss_predicate_0": torch.tensor(3.0),
        "loss_distill": torch.tensor(0.5),
    }
    assert criterion.weighted_total(losses).item() == pytest.approx(1.0 + 5.0 + 6.0 + 10.0)
    with pytest.raises(ValueError, match="'loss_class_error'"):
        criterion.weighted_total({"loss_class_error": torch.tensor(1.0)})
    with pytest.raises(ValueError, match="empty dict"):
        criterion.weighted_total({})


def test_pair_count_without_distributed_and_config_validation():
    assert not torch.distributed.is_initialized()
    assert world_mean_count(0, torch.device("cpu")) == 1.0
    assert world_mean_count(5, torch.device("cpu")) == 5.0
    with pytest.raises(ValueError, match="predicate_loss"):
        LossConfig(predicate_loss="bce")
    with pytest.raises(ValueError, match="eos_coef"):
        LossConfig(eos_coef=2.0)


def test_vocabulary_buffers_follow_the_module_and_stay_out_of_the_state_dict():
    criterion = SetCriterion(LossConfig(), TRIPLETS)
    assert criterion.state_dict() == {}
    assert criterion.vocab.triplet_objects["attention"].tolist() == [11, 11]
    assert criterion.double().class_weight.dtype == torch.float64


def test_loss_on_key_frames_only_equals_the_loss_of_those_frames_alone():
    """loss.frames: key (OED's target frame with reference frames): the context frames of a training clip get no
    loss; the terms equal the criterion run on the key frames' outputs alone. Evaluation targets (no "key") all
    count."""
    torch.manual_seed(0)
    frames = 6  # 2 clips x 3 frames, key frames last (causal windows)
    out = make_outputs(
        frames=frames,
        obj_logits=torch.randn(frames, 2, 37),
        attention_logits=torch.randn(frames, 2, 2),
        obj_boxes=torch.rand(frames, 2, 4) * 0.3 + 0.2,
        aux_outputs=[make_outputs(frames=frames, obj_logits=torch.randn(frames, 2, 37))],
    )
    targets = [{**frame_target(n=1 + i % 2), "key": i % 3 == 2} for i in range(frames)]
    key = SetCriterion(LossConfig(frames="key"), TRIPLETS, distill=False)
    every = SetCriterion(LossConfig(frames="all"), TRIPLETS, distill=False)
    alone = every(out.select(torch.tensor([2, 5])), [targets[2], targets[5]])
    got = key(out, targets)
    assert set(got) == set(alone) and {k: v.item() for k, v in got.items()} == pytest.approx(
        {k: v.item() for k, v in alone.items()}
    )
    assert every(out, targets)["loss_obj_ce"].item() != pytest.approx(got["loss_obj_ce"].item())
    no_keys = [{k: v for k, v in t.items() if k != "key"} for t in targets]  # evaluation: every frame counts
    assert key(out, no_keys)["loss_obj_ce"].item() == pytest.approx(every(out, targets)["loss_obj_ce"].item())
    with pytest.raises(ValueError, match="loss frames"):
        LossConfig(frames="first")
