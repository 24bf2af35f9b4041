"""Loading an official-layout DETR-R50 checkpoint into ARN."""

import argparse

import pytest
import torch

from arn_lightning.models.arn import ARN, ARNConfig
from arn_lightning.weights.detr import (
    MAPPED_PREFIXES,
    detr_target_keys,
    load_detr_checkpoint,
    read_detr_state_dict,
)

CATEGORIES = {"attention": [[0, 2]], "spatial": [[3, 2]], "contacting": [[9, 2]]}
#: Official DETR-R50 key names and shapes (detr-r50-e632da11.pth), written out independently of our mapping.
OFFICIAL_SHAPES = {
    "transformer.encoder.layers.0.self_attn.in_proj_weight": (768, 256),
    "transformer.encoder.layers.0.linear1.weight": (2048, 256),
    "transformer.encoder.layers.5.norm2.bias": (256,),
    "transformer.decoder.layers.0.multihead_attn.out_proj.weight": (256, 256),
    "transformer.decoder.layers.0.norm3.weight": (256,),
    "transformer.decoder.norm.weight": (256,),
    "backbone.0.body.conv1.weight": (64, 3, 7, 7),
    "backbone.0.body.bn1.running_mean": (64,),
    "backbone.0.body.layer1.0.conv1.weight": (64, 64, 1, 1),
    "backbone.0.body.layer1.0.downsample.0.weight": (256, 64, 1, 1),
    "backbone.0.body.layer4.2.conv3.weight": (2048, 512, 1, 1),
    "input_proj.weight": (256, 2048, 1, 1),
    "query_embed.weight": (100, 256),
    "bbox_embed.layers.2.weight": (4, 256),
}
#: Our inverse of the mapping (ARN prefix -> DETR prefix), kept separate from the code under test.
INVERSE_PREFIXES = {
    "backbone.body.": "backbone.0.body.",
    "input_proj.": "input_proj.",
    "encoder.layers.": "transformer.encoder.layers.",
    "entity.decoder.layers.": "transformer.decoder.layers.",
    "entity.decoder.norm.": "transformer.decoder.norm.",
    "entity.subject_pos.weight": "query_embed.weight",
    "entity.sub_box_head.": "bbox_embed.",
}
DETR_DECODER_LAYERS = 6


def r50_config(**overrides) -> ARNConfig:
    """DETR-R50 widths with the paper's 6 encoder / 3 entity layers; small predicate side to stay fast."""
    base = dict(predicate_layers=1, pap=False, ha=False, ffn_dim=2048, clip_embed_dim=16, temporal_layers=0)
    return ARNConfig(**{**base, **overrides})


def detr_layout(model: ARN) -> dict:
    """An official-layout DETR state dict built from ``model`` by the inverse mapping, plus DETR-only keys."""
    state = {}
    for key, value in model.state_dict().items():
        for ours, theirs in INVERSE_PREFIXES.items():
            if key.startswith(ours):
                state[theirs + key[len(ours) :]] = value.clone() + 1.0  # distinguishable from the model's values
    layer0 = {k: v for k, v in state.items() if k.startswith("transformer.decoder.layers.0.")}
    for i in range(model.config.entity_layers, DETR_DECODER_LAYERS):  # DETR has 6 decoder layers
        state.update({k.replace("layers.0.", f"layers.{i}."): v for k, v in layer0.items()})
    state["class_embed.weight"], state["class_embed.bias"] = torch.randn(92, 256), torch.randn(92)
    return state


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    state = detr_layout(ARN(r50_config(), CATEGORIES))
    path = tmp_path_factory.mktemp("detr") / "detr-r50.pth"
    torch.save({"model": state, "args": argparse.Namespace(lr=1e-4, backbone="resnet50")}, path)
    return path, state


def test_our_names_are_detr_names(checkpoint):
    _, state = checkpoint
    for key, shape in OFFICIAL_SHAPES.items():
        assert key in state and tuple(state[key].shape) == shape, key
    assert detr_target_keys("query_embed.weight") == ["entity.subject_pos.weight", "entity.object_pos.weight"]
    assert detr_target_keys("transformer.decoder.layers.4.linear2.bias") == ["entity.decoder.layers.4.linear2.bias"]
    assert detr_target_keys("class_embed.weight") == []


def test_load_reports_and_copies(checkpoint):
    path, state = checkpoint
    torch.manual_seed(1)
    model = ARN(r50_config(), CATEGORIES)
    report = load_detr_checkpoint(model, path)
    own = model.state_dict()
    assert report.missing == [] and report.mismatched == []
    assert report.loaded == sorted(k for k in own if k.startswith(MAPPED_PREFIXES))
    assert sorted(report.unexpected) == sorted(
        ["class_embed.weight", "class_embed.bias"]
        + [k for k in state if k.startswith(tuple(f"transformer.decoder.layers.{i}." for i in range(3, 6)))]
    )
    assert torch.equal(
        own["encoder.layers.5.self_attn.in_proj_weight"], state["transformer.encoder.layers.5.self_attn.in_proj_weight"]
    )
    assert torch.equal(own["entity.object_pos.weight"], state["query_embed.weight"])
    assert torch.equal(own["entity.obj_box_head.layers.1.bias"], state["bbox_embed.layers.1.bias"])
    assert torch.equal(own["backbone.body.layer2.0.bn2.running_var"], state["backbone.0.body.layer2.0.bn2.running_var"])
    assert str(report).startswith(
        f"DETR checkpoint: {len(report.loaded)} tensors loaded, 0 missing, "
        f"{len(report.unexpected)} unexpected, 0 shape-mismatched"
    )


def test_mismatches_are_skipped_and_reported(checkpoint):
    path, _ = checkpoint
    model = ARN(r50_config(backbone_stride=16, enc_layers=2, num_queries=50, task="sgdet"), CATEGORIES)
    before = model.input_proj.weight.clone()
    report = load_detr_checkpoint(model, path)
    mismatched = {detr for detr, *_ in report.mismatched}
    assert mismatched == {"input_proj.weight", "query_embed.weight"}
    assert torch.equal(model.input_proj.weight, before)
    assert "input_proj.weight" in report.missing and "entity.subject_pos.weight" in report.missing
    assert "backbone.0.body.layer4.0.conv1.weight" in report.unexpected  # stride 16 drops layer4
    assert "transformer.encoder.layers.2.linear1.weight" in report.unexpected
    assert "shape mismatch: input_proj.weight (256, 2048, 1, 1) -> input_proj.weight (256, 1024, 1, 1)" in str(report)


def test_ground_truth_task_skips_detection_heads(checkpoint):
    path, _ = checkpoint
    report = load_detr_checkpoint(ARN(r50_config(task="sgcls"), CATEGORIES), path)
    assert {"query_embed.weight", "bbox_embed.layers.0.weight"} <= set(report.unexpected)
    assert report.missing == [] and report.mismatched == []


def test_rejects_files_that_are_not_detr(tmp_path):
    torch.save({"model": {"conv.weight": torch.zeros(1)}}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="Expected a DETR checkpoint"):
        read_detr_state_dict(tmp_path / "other.pth")
    with pytest.raises(FileNotFoundError, match="absent.pth") as info:
        read_detr_state_dict(tmp_path / "absent.pth")
    # no download is attempted: the message says which file to fetch by hand and from where
    assert "detr-r50-e632da11.pth" in str(info.value)
    assert "https://dl.fbaipublicfiles.com/detr/detr-r50-e632da11.pth" in str(info.value)
