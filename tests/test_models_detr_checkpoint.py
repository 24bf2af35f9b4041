"""Loading an official-layout DETR-R50 checkpoint into ARN."""

import argparse
import logging

import pytest
import torch
import yaml

from arn_lightning import build
from arn_lightning.configs import packaged_config
from arn_lightning.models.arn import ARN, ARNConfig
from arn_lightning.models.outputs import BRANCHES
from arn_lightning.weights.detr import (
    MAPPED_PREFIXES,
    detr_target_keys,
    format_detr_report,
    load_detr_checkpoint,
    map_detr_state_dict,
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
    assert detr_target_keys("transformer.decoder.layers.2.linear2.bias") == ["entity.decoder.layers.2.linear2.bias"]
    # the paper's 3 entity / 3 predicate layers: DETR layer j -> entity layer j and standard layer j of every predicate
    # branch (j < 2), by the same index as GEN-VLKT's conversion; DETR layers 3-5 have no place
    assert detr_target_keys("transformer.decoder.layers.1.linear2.bias") == ["entity.decoder.layers.1.linear2.bias"] + [
        f"predicate.decoders.{kind}.layers.1.linear2.bias" for kind in BRANCHES
    ]
    assert detr_target_keys("transformer.decoder.layers.4.linear2.bias") == []
    assert detr_target_keys("transformer.decoder.layers.5.linear2.bias") == []
    deeper = ARNConfig(entity_layers=2, predicate_layers=5)  # 4 standard predicate layers, 2 entity layers
    assert detr_target_keys("transformer.decoder.layers.3.norm1.weight", deeper) == [
        f"predicate.decoders.{kind}.layers.3.norm1.weight" for kind in BRANCHES
    ]
    assert detr_target_keys("transformer.decoder.layers.4.norm1.weight", deeper) == []
    assert detr_target_keys("class_embed.weight") == []


def test_load_reports_and_copies(checkpoint):
    path, state = checkpoint
    torch.manual_seed(1)
    model = ARN(r50_config(), CATEGORIES)
    report = load_detr_checkpoint(model, path)
    own = model.state_dict()
    assert report.missing == [] and report.mismatched == []
    assert report.loaded == sorted(k for k in own if k.startswith(MAPPED_PREFIXES))
    # predicate_layers 1 without PAP: one standard layer per branch, DETR layer 0; layers 3-5 have no target
    assert sorted(report.unexpected) == sorted(
        ["class_embed.weight", "class_embed.bias"]
        + [k for k in state if k.startswith(tuple(f"transformer.decoder.layers.{i}." for i in range(3, 6)))]
    )
    for kind in BRANCHES:
        layer = f"predicate.decoders.{kind}.layers.0.linear1.weight"
        assert torch.equal(own[layer], state["transformer.decoder.layers.0.linear1.weight"])
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


# ----------------------------------------------------------------------------- the paper-size model, official keys
#: ResNet-50 (torchvision, as DETR uses it): blocks per stage and bottleneck widths; output width = 4 x width.
RESNET50_STAGES = ((3, 64), (4, 128), (6, 256), (3, 512))
#: DETR-R50's transformer: width, feed-forward width, encoder / decoder layers, object queries, COCO classes + 1.
DETR_D, DETR_FFN, DETR_ENC, DETR_DEC, DETR_QUERIES, DETR_CLASSES = 256, 2048, 6, 6, 100, 92
#: Tensors the paper config receives: backbone, input_proj, encoder, entity decoder (3 layers + norm), the two
#: positions, the two box heads, and per predicate branch 2 standard layers of 18 tensors + the norm's 2.
PAPER_LOADED = 265 + 2 + 6 * 12 + (3 * 18 + 2) + 2 + 2 * 6 + 3 * (2 * 18 + 2)


def _frozen_bn(prefix: str, channels: int) -> dict[str, tuple[int, ...]]:
    """DETR's FrozenBatchNorm2d: weight, bias and the running statistics, no ``num_batches_tracked``."""
    return {f"{prefix}.{name}": (channels,) for name in ("weight", "bias", "running_mean", "running_var")}


def _resnet50_shapes() -> dict[str, tuple[int, ...]]:
    """``backbone.0.body.*`` of the official checkpoint: ResNet-50 without ``fc``, with frozen-BN buffers."""
    body = "backbone.0.body"
    shapes = {f"{body}.conv1.weight": (64, 3, 7, 7), **_frozen_bn(f"{body}.bn1", 64)}
    channels = 64
    for stage, (blocks, width) in enumerate(RESNET50_STAGES, start=1):
        for block in range(blocks):
            name = f"{body}.layer{stage}.{block}"
            convs = ((width, channels, 1, 1), (width, width, 3, 3), (4 * width, width, 1, 1))
            for i, shape in enumerate(convs, start=1):
                shapes[f"{name}.conv{i}.weight"] = shape
                shapes.update(_frozen_bn(f"{name}.bn{i}", shape[0]))
            if block == 0:
                shapes[f"{name}.downsample.0.weight"] = (4 * width, channels, 1, 1)
                shapes.update(_frozen_bn(f"{name}.downsample.1", 4 * width))
            channels = 4 * width
    return shapes


def _transformer_layer_shapes(prefix: str, cross: bool) -> dict[str, tuple[int, ...]]:
    """One layer of DETR's transformer (``nn.MultiheadAttention`` + FFN + post-norms)."""
    attentions = ("self_attn", "multihead_attn") if cross else ("self_attn",)
    shapes: dict[str, tuple[int, ...]] = {}
    for attn in attentions:
        shapes[f"{prefix}.{attn}.in_proj_weight"] = (3 * DETR_D, DETR_D)
        shapes[f"{prefix}.{attn}.in_proj_bias"] = (3 * DETR_D,)
        shapes[f"{prefix}.{attn}.out_proj.weight"] = (DETR_D, DETR_D)
        shapes[f"{prefix}.{attn}.out_proj.bias"] = (DETR_D,)
    shapes.update({f"{prefix}.linear1.weight": (DETR_FFN, DETR_D), f"{prefix}.linear1.bias": (DETR_FFN,)})
    shapes.update({f"{prefix}.linear2.weight": (DETR_D, DETR_FFN), f"{prefix}.linear2.bias": (DETR_D,)})
    for i in range(1, len(attentions) + 2):
        shapes.update({f"{prefix}.norm{i}.weight": (DETR_D,), f"{prefix}.norm{i}.bias": (DETR_D,)})
    return shapes


def official_detr_r50_shapes() -> dict[str, tuple[int, ...]]:
    """Every key of ``detr-r50-e632da11.pth``'s ``model`` with its shape, from DETR's architecture (458 keys)."""
    shapes = _resnet50_shapes()
    shapes.update({"input_proj.weight": (DETR_D, 2048, 1, 1), "input_proj.bias": (DETR_D,)})
    for i in range(DETR_ENC):
        shapes.update(_transformer_layer_shapes(f"transformer.encoder.layers.{i}", cross=False))
    for i in range(DETR_DEC):
        shapes.update(_transformer_layer_shapes(f"transformer.decoder.layers.{i}", cross=True))
    shapes.update({"transformer.decoder.norm.weight": (DETR_D,), "transformer.decoder.norm.bias": (DETR_D,)})
    shapes["query_embed.weight"] = (DETR_QUERIES, DETR_D)
    shapes.update({"class_embed.weight": (DETR_CLASSES, DETR_D), "class_embed.bias": (DETR_CLASSES,)})
    for i, (out, inp) in enumerate(((DETR_D, DETR_D), (DETR_D, DETR_D), (4, DETR_D))):
        shapes.update({f"bbox_embed.layers.{i}.weight": (out, inp), f"bbox_embed.layers.{i}.bias": (out,)})
    return shapes


def paper_arch() -> dict:
    """The ``model.arch`` of the shipped SGDet paper config."""
    return yaml.safe_load(packaged_config("ag_sgdet").read_text(encoding="utf-8"))["model"]["arch"]


@pytest.fixture(scope="module")
def paper_load(tmp_path_factory):
    """The paper-size model built by the builder, an official-layout DETR file of random values loaded into it (the
    ImageNet backbone weights, which DETR's overwrite, are left out: tests download nothing)."""
    torch.manual_seed(0)
    model = build.build_model({**paper_arch(), "backbone_weights": None}, CATEGORIES).model
    generator = torch.Generator().manual_seed(1)
    state = {key: torch.randn(shape, generator=generator) for key, shape in official_detr_r50_shapes().items()}
    path = tmp_path_factory.mktemp("detr-official") / "detr-r50-e632da11.pth"
    torch.save({"model": state}, path)
    report = build.load_pretrained(model, str(path))
    path.unlink()  # 160 MB of random values, read once
    return model, state, report


def test_the_official_layout_has_the_released_keys():
    shapes = official_detr_r50_shapes()
    assert len(shapes) == 458
    assert sum(k.startswith("backbone.0.body.") for k in shapes) == 265
    for key, shape in OFFICIAL_SHAPES.items():
        assert shapes[key] == shape, key


def test_paper_config_loads_the_whole_detr_prior(paper_load):
    model, state, report = paper_load
    config = model.config
    assert (config.entity_layers, config.standard_predicate_layers) == (3, 2)
    assert len(report.loaded) == PAPER_LOADED == 523
    assert report.missing == [] and report.mismatched == []
    assert sorted(report.unexpected) == sorted(
        ["class_embed.weight", "class_embed.bias"]
        + [k for k in state if k.startswith(tuple(f"transformer.decoder.layers.{i}." for i in (3, 4, 5)))]
    )
    assert len(report.unexpected) == 56  # class_embed and DETR decoder layers 3-5 (GEN-VLKT's same-index copy)
    own = model.state_dict()
    for key, value in state.items():
        for i in range(config.entity_layers):  # the entity decoder keeps DETR layers 0-2
            if key.startswith(f"transformer.decoder.layers.{i}."):
                assert torch.equal(own[key.replace("transformer.decoder.", "entity.decoder.")], value), key
        for j in range(config.standard_predicate_layers):  # and each branch DETR layers 0-1, by the same index
            prefix = f"transformer.decoder.layers.{j}."
            if key.startswith(prefix):
                for kind in BRANCHES:
                    target = f"predicate.decoders.{kind}.layers.{j}.{key[len(prefix) :]}"
                    assert torch.equal(own[target], value), target
        if key.startswith("transformer.decoder.norm."):
            for target in ["entity.decoder.norm."] + [f"predicate.decoders.{kind}.norm." for kind in BRANCHES]:
                assert torch.equal(own[target + key.rsplit(".", 1)[1]], value), target
    fresh = ("predicate.association.", "predicate.queries.", "predicate.assoc_embeds.", "entity.subject_queries.")
    fresh += ("entity.object_queries.", "entity.classifier.", "classifiers.", "temporal.", "distill_proj.")
    assert not [k for k in report.loaded if k.startswith(fresh)]
    assert any(k.startswith("predicate.association.") for k in own) and any(k.startswith("temporal.") for k in own)


@pytest.mark.parametrize("task", ["sgcls", "predcls"])
def test_ground_truth_paper_configs_load_all_but_the_detection_heads(paper_load, task):
    """SGCls / PredCls (the paper configs with PAP: both have the entity decoder) lack the positions and box heads."""
    _, state, _ = paper_load
    config = yaml.safe_load(packaged_config(f"ag_{task}").read_text(encoding="utf-8"))
    arch = {**config["model"]["arch"], "backbone_weights": None, "task": config["data"]["task"]}
    mapped, report = map_detr_state_dict(build.build_model(arch, CATEGORIES).model, state)
    assert len(report.loaded) == PAPER_LOADED - 2 - 12 == 509 and len(mapped) == 509
    assert report.missing == [] and report.mismatched == [] and len(report.unexpected) == 63
    assert sum(k.startswith("predicate.decoders.") for k in report.loaded) == 114


def test_fit_start_report_gives_the_new_counts(paper_load):
    _, _, report = paper_load
    first, skipped, kept, mismatched = format_detr_report(report).splitlines()
    assert first.endswith(
        "523 tensors loaded (backbone.body 265, encoder 72, entity.decoder 56, entity.obj_box_head 6, "
        "entity.object_pos 1, entity.sub_box_head 6, entity.subject_pos 1, input_proj 2, predicate.decoders 114)"
    )
    assert skipped == "  not in this model, skipped (56): transformer.decoder.layers.3-5.* (54), class_embed.* (2)"
    assert kept == "  kept their own initialisation (0): none"
    assert mismatched == "  shape mismatch, skipped (0): none"


def test_paper_config_starts_the_content_queries_at_zero(paper_load):
    model, _, _ = paper_load
    assert model.config.content_queries == "zeros"
    queries = [model.entity.subject_queries, model.entity.object_queries, *model.predicate.queries.values()]
    assert len(queries) == 5
    for embedding in queries:
        assert embedding.weight.requires_grad and not embedding.weight.any()
    for positions in [*model.predicate.assoc_embeds.values()]:  # e^{pred_i} keep their random draws
        assert positions.weight.abs().min() > 0


# ----------------------------------------------------------------------------- content queries
SMALL_ARCH = dict(
    backbone="resnet18",
    backbone_stride=16,
    backbone_norm="batch",
    hidden_dim=16,
    nheads=2,
    ffn_dim=32,
    enc_layers=1,
    entity_layers=1,
    predicate_layers=2,
    num_queries=4,
    clip_embed_dim=8,
)
CONTENT_KEYS = ["entity.subject_queries.weight", "entity.object_queries.weight"] + [
    f"predicate.queries.{kind}.weight" for kind in BRANCHES
]


def _state(arch: dict, seed: int = 3) -> dict:
    torch.manual_seed(seed)
    return build.build_model(arch, CATEGORIES).model.state_dict()


def test_default_content_queries_are_the_normal_draws_bit_for_bit():
    default = _state(SMALL_ARCH)
    normal = _state({**SMALL_ARCH, "content_queries": "normal"})
    zeros = _state({**SMALL_ARCH, "content_queries": "zeros"})
    assert ARNConfig().content_queries == "normal"
    assert default.keys() == normal.keys() == zeros.keys()
    assert all(torch.equal(default[k], normal[k]) for k in default)
    # zeroing draws the same numbers first: every other tensor is the same, the content queries alone are zero
    assert all(torch.equal(default[k], zeros[k]) for k in default if k not in CONTENT_KEYS)
    for key in CONTENT_KEYS:
        assert default[key].std() > 0.5 and not zeros[key].any(), key


def test_content_query_draws_are_nn_embedding_draws():
    from arn_lightning.models.transformer import content_query_embedding

    torch.manual_seed(7)
    reference, after_reference = torch.nn.Embedding(4, 16).weight.detach(), torch.randn(2)
    torch.manual_seed(7)
    normal, after_normal = content_query_embedding(4, 16, "normal").weight.detach(), torch.randn(2)
    torch.manual_seed(7)
    zeros, after_zeros = content_query_embedding(4, 16, "zeros").weight.detach(), torch.randn(2)
    assert torch.equal(normal, reference) and not zeros.any()
    assert torch.equal(after_normal, after_reference) and torch.equal(after_zeros, after_reference)


def test_content_queries_setting_is_checked():
    with pytest.raises(ValueError, match=r"Expected content_queries in \('normal', 'zeros'\) but got 'zero'"):
        ARNConfig(content_queries="zero")
    with pytest.raises(ValueError, match=r"model\.arch: Expected content_queries in"):
        build.build_model({**SMALL_ARCH, "content_queries": "uniform"}, CATEGORIES)


def test_a_stored_arch_without_content_queries_gets_the_default():
    """Checkpoints written before the setting existed load as they were built: N(0, 1) content queries."""
    stored = {"arch": dict(SMALL_ARCH), "post": {}}
    build.check_stored_settings(stored, "older.ckpt", build.STORED_CONFIGS)
    assert build.as_config(ARNConfig, stored["arch"], "arch").content_queries == "normal"
    assert build.InferenceModule({"arch": stored["arch"], "triplet_categories": CATEGORIES}).arch_config == ARNConfig(
        **SMALL_ARCH
    )


def test_a_detr_prior_with_normal_content_queries_logs_one_warning(checkpoint, caplog):
    path, _ = checkpoint  # its R50 tensors mostly do not fit the small model: the load goes on, skipping them
    for init, warnings in (("normal", 1), ("zeros", 0)):
        model = build.build_model({**SMALL_ARCH, "content_queries": init}, CATEGORIES).model
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="arn_lightning.build"):
            build.load_pretrained(model, str(path))
        found = [r.getMessage() for r in caplog.records if r.name == "arn_lightning.build"]
        assert len(found) == warnings, found
        assert all("model.arch.content_queries is 'normal'" in message for message in found)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="arn_lightning.build"):
        build.load_pretrained(build.build_model(SMALL_ARCH, CATEGORIES).model)  # no DETR prior: nothing to say
    assert not [r for r in caplog.records if r.name == "arn_lightning.build"]
