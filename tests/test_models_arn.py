"""The ARN model: output contract, ablation switches, tasks, gradients, text initialisation, parameter groups."""

import dataclasses
import math

import pytest
import torch

from arn_lightning.models.arn import ARN
from arn_lightning.models.config import ARNConfig
from arn_lightning.models.heads import LOGIT_SCALE_INIT, CosineClassifier
from arn_lightning.models.outputs import BRANCHES, ARNOutput

CATEGORIES = {
    "attention": [[0, 2], [1, 2], [2, 11]],
    "spatial": [[3, 2], [5, 11]],
    "contacting": [[9, 2], [14, 11], [17, 8], [19, 8]],
}
E = 16


def tiny_config(**overrides) -> ARNConfig:
    base = dict(
        backbone="resnet18",
        hidden_dim=32,
        nheads=2,
        ffn_dim=64,
        enc_layers=1,
        entity_layers=2,
        predicate_layers=2,
        num_queries=4,
        num_frames=3,
        clip_embed_dim=E,
    )
    return ARNConfig(**{**base, **overrides})


def clip_batch(b=2, t=3, size=64):
    pixel_values = torch.randn(b, t, 3, size, size)
    pixel_mask = torch.ones(b, t, size, size, dtype=torch.bool)
    pixel_mask[-1, :, :, size // 2 :] = False  # the last clip is padded on the right
    return pixel_values, pixel_mask


def gt_targets(counts):
    """One target per frame with ``counts[i]`` person-object pairs (contract section 2 training fields)."""
    targets = []
    for n in counts:
        person = torch.tensor([0.3, 0.5, 0.4, 0.8])
        targets.append(
            {
                "sub_boxes": person.repeat(n, 1),
                "obj_boxes": torch.rand(n, 4) * 0.5 + 0.25,
                "obj_labels": torch.randint(2, 37, (n,)),
            }
        )
    return targets


def all_outputs(out: ARNOutput):
    return [out, *out.aux_outputs]


def backward_all(model: ARN, out: ARNOutput) -> None:
    """Backward of a random-weighted sum over every differentiable output tensor of every layer."""
    gen = torch.Generator().manual_seed(0)
    total = 0.0
    for layer in all_outputs(out):
        for value in vars(layer).values():
            if torch.is_tensor(value) and value.requires_grad:
                total = total + (value * torch.randn(value.shape, generator=gen)).sum()
    model.zero_grad()
    total.backward()


def assert_gradients_reach_trainable_only(model: ARN) -> None:
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())]
    assert no_grad == []
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert frozen and all(n.startswith(("backbone.body.conv1", "backbone.body.layer1")) for n in frozen)
    assert all(p.grad is None for p in model.parameters() if not p.requires_grad)


# ---------------------------------------------------------------- output contract
@pytest.mark.parametrize("frames", [1, 3])
def test_output_shapes(frames):
    model = ARN(tiny_config(), CATEGORIES)
    out = model(*clip_batch(t=frames))
    bt = 2 * frames
    assert out.obj_logits.shape == (bt, 4, 37)
    assert out.sub_boxes.shape == out.obj_boxes.shape == (bt, 4, 4)
    assert ((out.sub_boxes > 0) & (out.sub_boxes < 1)).all()
    assert {k: tuple(v.shape) for k, v in out.predicate_logits().items()} == {
        "attention": (bt, 4, 3),
        "spatial": (bt, 4, 2),
        "contacting": (bt, 4, 4),
    }
    assert out.predicate_embeds.shape == (bt, E)
    assert out.query_mask is None
    assert len(out.aux_outputs) == 1 and out.aux_outputs[0].aux_outputs == []
    assert out.aux_outputs[0].attention_logits.shape == (bt, 4, 3)


def test_aux_outputs_pair_layers_from_the_end():
    model = ARN(tiny_config(entity_layers=1, predicate_layers=3), CATEGORIES).eval()
    out = model(*clip_batch(b=1, t=2))
    assert len(out.aux_outputs) == 2
    assert all(aux.obj_logits is out.obj_logits for aux in out.aux_outputs)  # entity layer 0, clamped
    assert not torch.allclose(out.aux_outputs[0].attention_logits, out.attention_logits)
    assert ARN(tiny_config(aux_loss=False), CATEGORIES)(*clip_batch(b=1, t=1)).aux_outputs == []


def test_input_validation():
    model = ARN(tiny_config(), CATEGORIES)
    values, mask = clip_batch()
    with pytest.raises(ValueError, match=r"pixel_values \[B, T, 3, H, W\]"):
        model(values[0], mask)
    with pytest.raises(ValueError, match="bool pixel_mask"):
        model(values, mask.float())
    with pytest.raises(ValueError, match="at most num_frames=3"):
        model(torch.randn(1, 4, 3, 64, 64), torch.ones(1, 4, 64, 64, dtype=torch.bool))


# ---------------------------------------------------------------- switches
@pytest.mark.parametrize(
    "overrides",
    [
        dict(),
        dict(pap=False, ha=False),
        dict(ha=False),
        dict(entity_fusion="add"),
        dict(entity_fusion="mlp"),
        dict(clip_triplets=False, distill_features="projection"),
        dict(distill_features="projection"),
        dict(temporal_causal=True),
        dict(backbone_stride=16),
        dict(distill=False),
        dict(temporal_layers=0, enc_layers=0),
    ],
    ids=[
        "default",
        "no-pap",
        "no-ha",
        "fusion-add",
        "fusion-mlp",
        "no-clip",
        "distill-projection",
        "causal",
        "stride16",
        "no-distill",
        "no-temporal-no-encoder",
    ],
)
def test_switch_forward_backward_reaches_every_trainable_parameter(overrides):
    model = ARN(tiny_config(**overrides), CATEGORIES)
    out = model(*clip_batch())
    assert out.obj_logits.shape == (6, 4, 37)
    backward_all(model, out)
    assert_gradients_reach_trainable_only(model)


def test_switches_build_the_documented_modules():
    assert ARN(tiny_config(pap=False, ha=False), CATEGORIES).predicate.association is None
    assert len(ARN(tiny_config(pap=False, ha=False), CATEGORIES).predicate.decoders["spatial"].layers) == 2
    pap = ARN(tiny_config(), CATEGORIES).predicate
    assert len(pap.decoders["spatial"].layers) == 1 and pap.association["spatial"].hierarchical
    assert not ARN(tiny_config(ha=False), CATEGORIES).predicate.association["attention"].hierarchical
    assert ARN(tiny_config(entity_fusion="add"), CATEGORIES).predicate.association["attention"].fusion.mlp is None
    assert (
        not ARN(tiny_config(entity_fusion="mlp"), CATEGORIES)
        .predicate.association["attention"]
        .cue_attention.conditional
    )


def test_clip_triplets_off_gives_linear_predicate_classifiers():
    model = ARN(tiny_config(clip_triplets=False, distill=False), None)
    out = model(*clip_batch(b=1, t=1))
    assert [out.predicate_logits()[k].shape[-1] for k in BRANCHES] == [3, 6, 17]
    assert model.triplet_objects["spatial"].tolist() == [-1] * 6
    assert model.triplet_predicates["contacting"].tolist() == list(range(9, 26))
    assert not any(isinstance(m, CosineClassifier) for m in model.modules())
    assert model.param_groups()["text"] == []
    with pytest.raises(ValueError, match="clip_triplets=True"):
        model.init_text_classifiers({})


def test_temporal_causal_model_keeps_earlier_frames_fixed():
    for causal in (True, False):
        model = ARN(tiny_config(temporal_causal=causal), CATEGORIES).eval()
        values, mask = clip_batch(b=1, t=3)
        out = model(values, mask)
        values[0, 2] += 1.0
        moved = model(values, mask)
        assert torch.allclose(out.attention_logits[:2], moved.attention_logits[:2], atol=1e-5) == causal
        assert torch.allclose(out.obj_logits[:2], moved.obj_logits[:2], atol=1e-5)  # entities are per frame


# ---------------------------------------------------------------- tasks
@pytest.mark.parametrize("task", ["sgcls", "predcls"])
def test_ground_truth_tasks(task):
    model = ARN(tiny_config(task=task), CATEGORIES)
    targets = gt_targets([2, 3, 0, 1, 3, 2])
    out = model(*clip_batch(), targets=targets)
    assert out.query_mask.tolist()[:3] == [[True, True, False], [True, True, True], [False, False, False]]
    assert out.obj_boxes.shape == (6, 3, 4) and out.attention_logits.shape == (6, 3, 3)
    assert torch.equal(out.obj_boxes[1], targets[1]["obj_boxes"])
    assert torch.equal(out.sub_boxes[0, :2], targets[0]["sub_boxes"])
    assert out.obj_boxes[2].tolist() == [[0.5, 0.5, 1.0, 1.0]] * 3  # padding: the whole image
    labels = out.obj_logits.argmax(-1)
    if task == "predcls":
        assert torch.equal(labels[1], targets[1]["obj_labels"] - 1)
        assert (labels[2] == 36).all() and torch.equal(out.obj_logits.softmax(-1).max(-1).values, torch.ones(6, 3))
    assert all(torch.isfinite(t).all() for t in out.predicate_logits().values())
    backward_all(model, out)
    assert_gradients_reach_trainable_only(model)


def test_ground_truth_tasks_build_only_what_they_use():
    sgcls = ARN(tiny_config(task="sgcls"), CATEGORIES)
    assert not hasattr(sgcls.entity, "sub_box_head") and sgcls.entity.classifier is not None
    predcls = ARN(tiny_config(task="predcls", pap=False, ha=False), CATEGORIES)
    assert predcls.entity.decoder is None and predcls.entity.classifier is None
    out = predcls(*clip_batch(b=1, t=2), targets=gt_targets([1, 2]))
    backward_all(predcls, out)
    assert_gradients_reach_trainable_only(predcls)


def test_ground_truth_tasks_validate_targets():
    model = ARN(tiny_config(task="sgcls"), CATEGORIES)
    values, mask = clip_batch(b=1, t=2)
    with pytest.raises(ValueError, match="Expected targets"):
        model(values, mask)
    with pytest.raises(ValueError, match="at most num_queries=4"):
        model(values, mask, targets=gt_targets([5, 1]))
    with pytest.raises(ValueError, match="one target per frame"):
        model(values, mask, targets=gt_targets([1]))
    bad = gt_targets([1, 1])
    bad[1]["obj_labels"] = torch.tensor([37])
    with pytest.raises(ValueError, match=r"targets\[1\]\['obj_labels'\] in \[1, 36\]"):
        model(values, mask, targets=bad)
    out = model(values, mask, targets=gt_targets([0, 0]))  # frames without pairs still run
    assert out.query_mask.shape == (2, 1) and not out.query_mask.any()
    assert torch.isfinite(out.attention_logits).all()


# ---------------------------------------------------------------- config
@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(ha=True, pap=False), "pap=True with ha=True"),
        (dict(task="detect"), "task in"),
        (dict(entity_fusion="sum"), "entity_fusion in"),
        (dict(backbone="resnet101"), "backbone in"),
        (dict(hidden_dim=20, nheads=4), "multiple of 4 and of 8"),
        (dict(dropout=1.0), "dropout"),
        (dict(num_queries=0), "num_queries"),
        (dict(backbone_stride=8), "backbone_stride"),
        (dict(distill_features="image"), "distill_features in"),
        (dict(clip_triplets=False), "clip_triplets=True with distill=True and distill_features='classifier'"),
    ],
)
def test_config_validation(overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**overrides)


def test_paper_defaults():
    cfg = ARNConfig()
    assert (
        cfg.backbone,
        cfg.hidden_dim,
        cfg.nheads,
        cfg.ffn_dim,
        cfg.enc_layers,
        cfg.entity_layers,
        cfg.predicate_layers,
        cfg.num_queries,
        cfg.num_frames,
    ) == ("resnet50", 256, 8, 2048, 6, 3, 3, 100, 3)
    assert cfg.pap and cfg.ha and cfg.clip_triplets and cfg.entity_fusion == "conditional"
    assert math.isclose(LOGIT_SCALE_INIT, math.log(1 / 0.07))
    assert all(isinstance(v, (int, float, str, bool, type(None))) for v in dataclasses.asdict(cfg).values())


# ---------------------------------------------------------------- triplets, text, optimiser groups
def test_triplet_buffers_follow_categories():
    model = ARN(tiny_config(), CATEGORIES)
    preds, objs = model.triplet_index("contacting")
    assert preds.tolist() == [9, 14, 17, 19] and objs.tolist() == [2, 11, 8, 8]
    assert "triplet_objects_spatial" in model.state_dict()
    with pytest.raises(ValueError, match="branch in"):
        model.triplet_index("verbs")


@pytest.mark.parametrize(
    "categories",
    [
        {**CATEGORIES, "spatial": [[2, 2]]},  # attention predicate in the spatial branch
        {**CATEGORIES, "attention": [[0, 37]]},
        {**CATEGORIES, "attention": [[0, 2], [0, 2]]},
        {**CATEGORIES, "contacting": []},
        {"attention": CATEGORIES["attention"]},
    ],
)
def test_invalid_triplet_categories(categories):
    with pytest.raises(ValueError, match="Expected"):
        ARN(tiny_config(), categories)


def test_init_text_classifiers_copies_and_validates():
    model = ARN(tiny_config(), CATEGORIES)
    embeds = {
        "objects": torch.randn(36, E),
        "attention": torch.randn(3, E),
        "spatial": torch.randn(2, E),
        "contacting": torch.randn(4, E),
    }
    model.init_text_classifiers(embeds)
    assert torch.equal(model.entity.classifier.class_embeds, embeds["objects"])
    assert torch.equal(model.classifiers["contacting"].class_embeds, embeds["contacting"])
    with pytest.raises(ValueError, match=r"spatial text embeddings of shape \(2, 16\)"):
        model.init_text_classifiers({**embeds, "spatial": torch.randn(3, E)})
    with pytest.raises(ValueError, match="exactly"):
        model.init_text_classifiers({k: v for k, v in embeds.items() if k != "objects"})
    predcls = ARN(tiny_config(task="predcls"), CATEGORIES)
    predcls.init_text_classifiers(embeds)  # no object classifier: objects only checked
    with pytest.raises(ValueError, match=r"objects text embeddings of shape \(36, 16\)"):
        predcls.init_text_classifiers({**embeds, "objects": torch.randn(35, E)})


def test_param_groups_partition_trainable_parameters():
    model = ARN(tiny_config(), CATEGORIES)
    groups = model.param_groups()
    assert set(groups) == {"backbone", "text", "rest"}
    ids = [id(p) for params in groups.values() for p in params]
    assert len(ids) == len(set(ids))
    assert set(ids) == {id(p) for p in model.parameters() if p.requires_grad}
    assert len(groups["text"]) == 4  # objects + three branches
    assert all(p.requires_grad for p in groups["backbone"])
    assert {id(p) for p in groups["backbone"]} <= {id(p) for p in model.backbone.parameters()}
    assert id(model.entity.classifier.extra_embeds) in {id(p) for p in groups["rest"]}


# ---------------------------------------------------------------- distillation
def capture_classifier_inputs(model: ARN) -> dict[str, list[torch.Tensor]]:
    """Per branch, the features ``[BT, Q, D]`` each classifier call gets (output sets in order, the last one last)."""
    captured: dict[str, list[torch.Tensor]] = {kind: [] for kind in BRANCHES}
    for kind in BRANCHES:
        model.classifiers[kind].register_forward_hook(lambda m, args, out, kind=kind: captured[kind].append(args[0]))
    return captured


def real_query_mean(x: torch.Tensor, query_mask: torch.Tensor | None) -> torch.Tensor:
    """``[BT, Q, C]`` -> ``[BT, C]``: per frame the mean over its real queries (zeros for none), by hand."""
    rows = []
    for i in range(x.shape[0]):
        real = x[i] if query_mask is None else x[i][query_mask[i]]
        rows.append(real.mean(dim=0) if len(real) else torch.zeros(x.shape[-1]))
    return torch.stack(rows)


@pytest.mark.parametrize("task", ["sgdet", "sgcls", "predcls"])
def test_distill_classifier_form_is_the_mean_of_the_classifiers_own_projections(task):
    model = ARN(tiny_config(task=task), CATEGORIES).eval()
    assert model.config.distill_features == "classifier" and model.distill_proj is None
    assert not [name for name, _ in model.named_parameters() if "distill" in name]
    captured = capture_classifier_inputs(model)
    targets = None if task == "sgdet" else gt_targets([2, 0, 3, 1])
    out = model(*clip_batch(b=2, t=2), targets=targets)
    assert (out.query_mask is None) == (task == "sgdet")
    for layer, got in zip([*out.aux_outputs, out], range(len(out.aux_outputs) + 1)):
        projected = []
        for kind in BRANCHES:
            linear, norm = model.classifiers[kind].proj
            x = captured[kind][got] @ linear.weight.t() + linear.bias
            projected.append(torch.nn.functional.layer_norm(x, (E,), norm.weight, norm.bias, norm.eps))
        expected = real_query_mean(sum(projected) / 3, out.query_mask)  # [BT, E]
        assert layer.predicate_embeds.shape == (4, E)
        torch.testing.assert_close(layer.predicate_embeds, expected, rtol=1e-5, atol=1e-5)
    if task != "sgdet":  # the frame without pairs distils nothing but zeros
        assert not out.predicate_embeds[1].any()


def test_distill_loss_reaches_the_classifiers_projections_and_nothing_of_the_text():
    from arn_lightning.criterion import LossConfig, SetCriterion

    model = ARN(tiny_config(), CATEGORIES)
    out = model(*clip_batch(b=1, t=2))
    criterion = SetCriterion(LossConfig(), model.vocabulary, distill=True)
    clip = torch.nn.functional.normalize(torch.randn(2, E), dim=-1)
    loss = sum(criterion.loss_distill(layer, clip)["loss_distill"] for layer in all_outputs(out))
    model.zero_grad()
    loss.backward()
    for kind in BRANCHES:
        classifier = model.classifiers[kind]
        assert classifier.proj[0].weight.grad.abs().sum() > 0 and classifier.proj[1].weight.grad.abs().sum() > 0
        assert classifier.class_embeds.grad is None and classifier.logit_scale.grad is None
    assert (
        model.distill_proj is None
        and model.predicate.decoders["attention"].layers[0].linear1.weight.grad.abs().sum() > 0
    )


def test_distill_projection_form_draws_and_computes_as_before():
    torch.manual_seed(0)
    projection = ARN(tiny_config(distill_features="projection"), CATEGORIES).eval()
    torch.manual_seed(0)
    plain = ARN(tiny_config(distill=False), CATEGORIES).eval()
    later = torch.nn.Linear(32, E)  # distill_proj is built last, as it always was: the next draws
    torch.manual_seed(0)
    classifier = ARN(tiny_config(), CATEGORIES)
    kept = {k: v for k, v in projection.state_dict().items() if not k.startswith("distill_proj.")}
    assert kept.keys() == plain.state_dict().keys() == classifier.state_dict().keys()
    assert all(torch.equal(v, plain.state_dict()[k]) for k, v in kept.items())
    assert all(torch.equal(v, classifier.state_dict()[k]) for k, v in kept.items())
    assert torch.equal(projection.distill_proj.weight, later.weight)
    assert plain(*clip_batch(b=1, t=1)).predicate_embeds is None
    captured = capture_classifier_inputs(projection)
    out = projection(*clip_batch(b=1, t=2))
    mean = real_query_mean(sum(captured[kind][-1] for kind in BRANCHES) / 3, None)  # [BT, D]
    torch.testing.assert_close(out.predicate_embeds, projection.distill_proj(mean), rtol=1e-5, atol=1e-5)


def test_a_checkpoint_stored_before_distill_features_loads_with_its_projection(tmp_path):
    from arn_lightning.build import InferenceModule, as_config, load_inference_module
    from arn_lightning.training.lit_module import ARNLitModule

    arch = dataclasses.asdict(tiny_config(distill_features="projection"))
    # What a checkpoint stores from before distill_features, and from before content_queries too.
    old = {k: v for k, v in arch.items() if k != "distill_features"}
    older = {k: v for k, v in old.items() if k != "content_queries"}
    trained = InferenceModule({"arch": arch, "triplet_categories": CATEGORIES})
    checkpoint = {
        "state_dict": {
            k: v + 0.01 * torch.randn_like(v) if v.is_floating_point() else v for k, v in trained.state_dict().items()
        },
        "pytorch-lightning_version": "2.5.0",
        "arn_lightning": {"format": 1},
        "hyper_parameters": {"arch": old, "triplet_categories": CATEGORIES},
    }
    path = tmp_path / "old.ckpt"
    torch.save(checkpoint, path)
    loaded = load_inference_module(path)
    assert loaded.arch_config.distill_features == "projection"
    assert torch.equal(loaded.model.distill_proj.weight, checkpoint["state_dict"]["model.distill_proj.weight"])
    # Lightning's load_from_checkpoint hands the stored mapping to the module, whose as_config reads it alike.
    lit = ARNLitModule.load_from_checkpoint(path)
    assert lit.arch_config.distill_features == "projection"
    assert torch.equal(lit.model.distill_proj.weight, loaded.model.distill_proj.weight)
    assert as_config(ARNConfig, old, "arch").distill_features == "projection"
    assert as_config(ARNConfig, older, "arch") == as_config(ARNConfig, arch, "arch")
    assert as_config(ARNConfig, {**old, "clip_triplets": False}, "arch").distill_features == "projection"
    assert as_config(ARNConfig, {"distill": True}, "arch").distill_features == "classifier"  # partial: defaults
    assert as_config(ARNConfig, {**arch, "distill_features": "classifier"}, "arch").distill_features == "classifier"
    with pytest.raises(ValueError, match="model.arch: Expected distill_features in"):
        as_config(ARNConfig, {**arch, "distill_features": "mean"}, "arch")
